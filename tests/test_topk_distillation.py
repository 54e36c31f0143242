"""topk_distillation_loss and its fused head against materialised formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify

import jaxkl

ROWS, V, K, T = 6, 12, 4, 2.0


def _numpy_loss(z, idx, lp, t, tail, divergence, beta=0.5):
    """batchmean of T^2 D(teacher, student) in float64 NumPy, with the full student softmax."""
    z, lp = np.asarray(z, np.float64), np.asarray(lp, np.float64)
    total = 0.0
    for zr, ir, lr in zip(z, np.asarray(idx), lp):
        s = np.exp(zr / t - np.max(zr / t))
        s /= s.sum()
        if tail == "renormalize":
            p = np.exp(lr / t) / np.exp(lr / t).sum()
            q = np.exp(zr[ir] / t) / np.exp(zr[ir] / t).sum()
        else:
            p_k = np.exp(lr)
            p = np.append(p_k, 1.0 - p_k.sum()) ** (1.0 / t)
            p /= p.sum()
            outside = np.ones(len(zr), bool)
            outside[ir] = False
            q = np.append(s[ir], s[outside].sum())  # the tail summed class by class
        kl = lambda a, b: np.sum(a * np.log(a / b))
        if divergence == "forward_kl":
            d = kl(p, q)
        elif divergence == "reverse_kl":
            d = kl(q, p)
        else:
            m = beta * p + (1 - beta) * q
            d = beta * kl(p, m) + (1 - beta) * kl(q, m)
        total += t * t * d
    return total / len(z)


def _jnp_loss(z, idx, lp, t, tail):
    """Forward KL written with a rows x V mask and plain autodiff (the materialised peer)."""
    ls = jax.nn.log_softmax(z / t)
    picked = jnp.take_along_axis(ls, idx, axis=-1)
    if tail == "renormalize":
        student, teacher = jax.nn.log_softmax(picked * 1.0), jax.nn.log_softmax(lp / t)
    else:
        outside = jnp.ones(z.shape, bool).at[jnp.arange(z.shape[0])[:, None], idx].set(False)
        s_tail = jax.nn.logsumexp(jnp.where(outside, ls, -jnp.inf), axis=-1)
        t_tail = jnp.log1p(-jnp.sum(jnp.exp(lp), axis=-1)) / t
        student = jnp.concatenate([picked, s_tail[:, None]], axis=-1)
        teacher = jax.nn.log_softmax(jnp.concatenate([lp / t, t_tail[:, None]], axis=-1))
    return t * t * jnp.sum(jnp.exp(teacher) * (teacher - student)) / z.shape[0]


def _teacher(seed=0, k=K):
    """Student logits and the teacher's top-k (indices, log-probabilities) of its own logits."""
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(ROWS, V)) * 2).astype(np.float32)
    teacher = jax.nn.log_softmax(jnp.asarray(rng.normal(size=(ROWS, V)) * 2, jnp.float32))
    lp, idx = jax.lax.top_k(teacher, k)
    return jnp.asarray(z), idx, lp, teacher


LOSS = jax.jit(
    jax.value_and_grad(
        lambda z, i, lp, t, tail, div: jaxkl.topk_distillation_loss(z, i, lp, temperature=t, tail=tail, divergence=div)
    ),
    static_argnums=(4, 5),
)


CASES = [("bucket", "forward_kl"), ("bucket", "reverse_kl"), ("bucket", "js"), ("renormalize", "js")]


@pytest.mark.parametrize(("tail", "divergence"), CASES)
def test_values_match_the_materialised_formula(tail, divergence):
    z, idx, lp, _ = _teacher()
    value, _ = LOSS(z, idx, lp, jnp.float32(T), tail, divergence)
    np.testing.assert_allclose(value, _numpy_loss(z, idx, lp, T, tail, divergence), rtol=2e-5)


@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
def test_gradient_matches_autodiff_of_the_materialised_formula(tail):
    z, idx, lp, _ = _teacher(seed=1)
    value, grad = LOSS(z, idx, lp, jnp.float32(T), tail, "forward_kl")
    want, want_grad = jax.jit(jax.value_and_grad(_jnp_loss), static_argnums=(3, 4))(z, idx, lp, T, tail)
    np.testing.assert_allclose(value, want, rtol=2e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-6)
    if tail == "renormalize":  # only the teacher's classes are compared
        outside = np.ones(z.shape, bool)
        np.put_along_axis(outside, np.asarray(idx), False, axis=-1)
        assert not np.any(np.asarray(grad)[outside])


@pytest.mark.parametrize(("tail", "divergence"), [("bucket", "forward_kl"), ("renormalize", "js")])
def test_every_class_reproduces_distillation_loss(tail, divergence):
    z, idx, lp, teacher = _teacher(seed=2, k=V)
    value, grad = LOSS(z, idx, lp, jnp.float32(T), tail, divergence)
    f = lambda z: jaxkl.distillation_loss(z, teacher, temperature=T, divergence=divergence)
    want, want_grad = jax.jit(jax.value_and_grad(f))(z)
    np.testing.assert_allclose(value, want, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-7)


def test_checkify_catches_repeated_and_out_of_range_indices():
    z, idx, lp, _ = _teacher()
    checked = checkify.checkify(jax.jit(lambda z, i: jaxkl.topk_distillation_loss(z, i, lp, check=True)))
    err, _ = checked(z, idx)
    err.throw()  # the true top-k passes
    err, _ = checked(z, idx.at[2, 3].set(idx[2, 0]))
    with pytest.raises(checkify.JaxRuntimeError, match="twice in one row"):
        err.throw()
    err, _ = checked(z, idx.at[1, 1].set(V))
    with pytest.raises(checkify.JaxRuntimeError, match=r"outside \[0, 12\)"):
        err.throw()
    # Unchecked, an out-of-range index is NaN for its row, never a wrapped class.
    per_row = jax.jit(lambda z, i: jaxkl.topk_distillation_loss(z, i, lp, reduction="none"))(z, idx.at[1, 1].set(-1))
    assert np.isnan(per_row[1]) and np.all(np.isfinite(np.delete(np.asarray(per_row), 1)))


def test_sequence_shape_mask_and_low_precision():
    z, idx, lp, _ = _teacher(seed=3)
    z3, idx3, lp3 = (a.reshape((2, 3) + a.shape[1:]) for a in (z, idx, lp))
    where = jnp.asarray([[True, False, True], [True, True, False]])

    @jax.jit
    def losses(z, z3, z16, lp16):
        return (
            jaxkl.topk_distillation_loss(z3, idx3, lp3, temperature=T, where=where, reduction="sum"),
            jaxkl.topk_distillation_loss(z, idx, lp, temperature=T, reduction="none"),
            jaxkl.topk_distillation_loss(z16, idx, lp16, temperature=T),
        )

    z16, lp16 = z.astype(jnp.bfloat16), lp.astype(jnp.bfloat16)
    got, per_row, low = losses(z, z3, z16, lp16)
    np.testing.assert_allclose(got, jnp.sum(jnp.where(where.reshape(-1), per_row, 0.0)), rtol=1e-6)
    assert low.dtype == jnp.bfloat16
    np.testing.assert_allclose(float(low), _numpy_loss(z16, idx, lp16, T, "bucket", "forward_kl"), rtol=1e-2)


@pytest.mark.parametrize("reduction", ["batchmean", "none"])
def test_fused_head_matches_the_materialised_head(reduction):
    z, idx, lp, _ = _teacher(seed=4)
    rng = np.random.default_rng(4)
    h = jnp.asarray(rng.normal(size=(ROWS, 5)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(5, V)), jnp.float32)
    b = jnp.asarray(rng.normal(size=(V,)), jnp.float32)
    where = jnp.asarray(np.arange(ROWS) != 2)
    weights = jnp.arange(1.0, ROWS + 1.0) if reduction == "none" else jnp.float32(1.0)

    def fused(h, w, b):
        loss = jaxkl.fused_linear_topk_distillation_loss(
            h, w, idx, lp, head_bias=b, temperature=T, chunk_size=4, reduction=reduction, where=where
        )
        return jnp.sum(loss * weights)

    def plain(h, w, b):
        loss = jaxkl.topk_distillation_loss(h @ w + b[None, :], idx, lp, temperature=T, reduction=reduction, where=where)
        return jnp.sum(loss * weights)

    got, got_grads = jax.jit(jax.value_and_grad(fused, argnums=(0, 1, 2)))(h, w, b)
    want, want_grads = jax.jit(jax.value_and_grad(plain, argnums=(0, 1, 2)))(h, w, b)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, r in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)


def test_gradient_temporaries_are_rows_by_k():
    # 256 x 32768 float32 student logits (32 MiB), k = 64: compile only.
    rows, classes, k = 256, 32768, 64
    args = (
        jax.ShapeDtypeStruct((rows, classes), jnp.float32),
        jax.ShapeDtypeStruct((rows, k), jnp.int32),
        jax.ShapeDtypeStruct((rows, k), jnp.float32),
    )
    step = jax.jit(jax.value_and_grad(lambda z, i, lp: jaxkl.topk_distillation_loss(z, i, lp, temperature=T)))
    temp = step.lower(*args).compile().memory_analysis().temp_size_in_bytes
    assert temp < 0.1 * rows * classes * 4, temp


def test_bad_arguments_name_themselves():
    z, idx, lp, _ = _teacher()
    with pytest.raises(ValueError, match="tail"):
        jaxkl.topk_distillation_loss(z, idx, lp, tail="drop")
    with pytest.raises(ValueError, match="divergence"):
        jaxkl.topk_distillation_loss(z, idx, lp, divergence="tv")
    with pytest.raises(ValueError, match="teacher_indices.shape"):
        jaxkl.topk_distillation_loss(z, idx[:3], lp[:3])
    with pytest.raises(TypeError, match="teacher_indices must be an integer"):
        jaxkl.topk_distillation_loss(z, lp, lp)
    fused = lambda t: jaxkl.fused_linear_topk_distillation_loss(z[:, :3], jnp.ones((3, V)), idx, lp, temperature=t)
    with pytest.raises(TypeError, match="Python number"):
        jax.jit(fused)(2.0)


def _padded(idx, lp, z, keep):
    """Rows excluded by `keep` filled as padding often is: indices -1, log-probabilities -inf, NaN logits."""
    where = jnp.asarray(keep)
    return (
        jnp.where(where[:, None], idx, -1),
        jnp.where(where[:, None], lp, -jnp.inf),
        jnp.where(where[:, None], z, jnp.nan),
        where,
    )


@pytest.mark.parametrize("tail", ["bucket", "renormalize"])
def test_masked_padding_rows_with_index_minus_one_give_zero_value_and_gradient(tail):
    # Regression: one row excluded by `where` whose indices were -1 made the
    # whole gradient NaN (the out-of-range gather is NaN, and 0 * NaN = NaN).
    z, idx, lp, _ = _teacher(seed=5)
    keep = np.arange(ROWS) % 3 != 1
    idx_p, lp_p, z_p, where = _padded(idx, lp, z, keep)
    loss = lambda z: jaxkl.topk_distillation_loss(z, idx_p, lp_p, temperature=T, tail=tail, where=where)
    got, grad = jax.jit(jax.value_and_grad(loss))(z_p)
    # The materialised formula on the kept rows alone; batchmean still divides by all rows.
    kept = np.flatnonzero(keep)
    share = len(kept) / ROWS
    want = _numpy_loss(z[kept], idx[kept], lp[kept], T, tail, "forward_kl") * share
    np.testing.assert_allclose(got, want, rtol=1e-5)
    want_grad = jax.grad(lambda zk: _jnp_loss(zk, idx[kept], lp[kept], T, tail) * share)(z[kept])
    np.testing.assert_allclose(np.asarray(grad)[kept], want_grad, rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(grad)[~keep] == 0.0)
    # An unmasked out-of-range index keeps its documented NaN.
    assert np.isnan(jaxkl.topk_distillation_loss(z, idx.at[0, 0].set(-1), lp, tail=tail))


def test_fused_head_masked_padding_rows_with_index_minus_one():
    z, idx, lp, _ = _teacher(seed=6)
    rng = np.random.default_rng(6)
    h = jnp.asarray(rng.normal(size=(ROWS, 5)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(5, V)), jnp.float32)
    keep = np.arange(ROWS) % 2 == 0
    idx_p, lp_p, _, where = _padded(idx, lp, z, keep)
    fused = lambda h, w: jaxkl.fused_linear_topk_distillation_loss(h, w, idx_p, lp_p, temperature=T, chunk_size=4, where=where)
    got, (gh, gw) = jax.jit(jax.value_and_grad(fused, argnums=(0, 1)))(h, w)
    kept = np.flatnonzero(keep)
    plain = lambda h, w: _jnp_loss(h[kept] @ w, idx[kept], lp[kept], T, "bucket") * len(kept) / ROWS
    want, (wh, ww) = jax.value_and_grad(plain, argnums=(0, 1))(h, w)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(gh)[kept], wh[kept], rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(gh)[~keep] == 0.0)
    np.testing.assert_allclose(gw, ww, rtol=1e-4, atol=1e-6)


def test_checkify_skips_masked_rows():
    z, idx, lp, _ = _teacher()
    keep = np.arange(ROWS) != 4
    idx_p, lp_p, _, where = _padded(idx, lp, z, keep)
    checked = checkify.checkify(jax.jit(lambda i, w: jaxkl.topk_distillation_loss(z, i, lp_p, check=True, where=w)))
    err, value = checked(idx_p, where)
    err.throw()  # the -1 padding is masked
    assert np.isfinite(value)
    err, _ = checked(idx_p, jnp.ones(ROWS, bool))
    with pytest.raises(checkify.JaxRuntimeError, match="first offending index is -1"):
        err.throw()
