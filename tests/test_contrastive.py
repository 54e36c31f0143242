"""contrastive_loss against the materialised N x N formula, sharded and unsharded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import jaxkl


def _numpy_loss(x, y, t, symmetric=True, where=None):
    """InfoNCE in float64 NumPy from the whole similarity matrix: mean over kept pairs."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = x.shape[0]
    keep = np.ones(n, bool) if where is None else np.asarray(where)
    s = x @ y.T / t
    s = np.where(keep[:, None] & keep[None, :], s, -np.inf)

    def lse(a, axis):
        m = np.max(a, axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        with np.errstate(divide="ignore"):  # an all-masked line: log 0 = -inf
            return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))

    d = np.sum(x * y, axis=1) / t
    values = lse(s, 1) - d
    if symmetric:
        values = 0.5 * (values + lse(s, 0) - d)
    return np.sum(np.where(keep, values, 0.0)) / max(keep.sum(), 1)


def _jnp_loss(x, y, t, symmetric=True, where=None):
    """The same formula in jnp, differentiated by plain autodiff (the materialised peer)."""
    n = x.shape[0]
    keep = jnp.ones(n, bool) if where is None else where
    s = jnp.where(keep[:, None] & keep[None, :], x @ y.T / t, -jnp.inf)
    d = jnp.diagonal(x @ y.T) / t
    values = jax.nn.logsumexp(s, axis=1) - d
    if symmetric:
        values = 0.5 * (values + jax.nn.logsumexp(s, axis=0) - d)
    return jnp.sum(jnp.where(keep, values, 0.0)) / jnp.maximum(jnp.sum(keep, dtype=values.dtype), 1.0)


def _pairs(n=13, d=4, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(dtype)
    y = (x + 0.7 * rng.normal(size=(n, d))).astype(dtype)
    return jnp.asarray(x), jnp.asarray(y)


GRAD = jax.jit(
    jax.value_and_grad(
        lambda x, y, t, w, symmetric, chunk: jaxkl.contrastive_loss(
            x, y, temperature=t, symmetric=symmetric, where=w, chunk_size=chunk
        ),
        argnums=(0, 1, 2),
    ),
    static_argnums=(4, 5),
)
REF_GRAD = jax.jit(jax.value_and_grad(_jnp_loss, argnums=(0, 1, 2)), static_argnums=(3,))


@pytest.mark.parametrize(("symmetric", "masked"), [(True, True), (False, False)])
@pytest.mark.parametrize("chunk", [5, None])
def test_value_and_gradients_match_the_materialised_formula(symmetric, masked, chunk):
    # N = 13 with strips of 5 rows: the last strip is padded; chunk None: one
    # strip holds the whole matrix. The temperature is a traced argument (a
    # learnable logit scale) and gets its gradient.
    x, y = _pairs()
    where = jnp.asarray(np.arange(13) % 4 != 1) if masked else None
    t = jnp.float32(0.3)
    value, grads = GRAD(x, y, t, where, symmetric, chunk)
    np.testing.assert_allclose(value, _numpy_loss(x, y, 0.3, symmetric, where), rtol=2e-6)
    want, want_grads = REF_GRAD(x, y, t, symmetric, where)
    np.testing.assert_allclose(value, want, rtol=2e-6)
    for got, ref in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-6)
    if masked:  # a pair out of the batch gets no gradient at all
        assert not np.any(grads[0][1]) and not np.any(grads[1][1])


def test_duplicated_embeddings():
    # Repeated pairs make off-diagonal similarities equal to the positive one.
    x, y = _pairs(seed=2)
    x, y = x.at[5].set(x[2]), y.at[5].set(y[2])
    x = x.at[7].set(x[0])
    value, grads = GRAD(x, y, jnp.float32(1.0), None, True, 5)
    want, want_grads = REF_GRAD(x, y, jnp.float32(1.0), True, None)
    np.testing.assert_allclose(value, want, rtol=2e-6)
    for got, ref in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_inputs_accumulate_in_float32(dtype):
    x, y = _pairs(seed=4)
    x, y = x.astype(dtype), y.astype(dtype)
    value, grads = GRAD(x, y, jnp.float32(0.2), None, True, 5)
    assert value.dtype == dtype and grads[0].dtype == dtype and grads[2].dtype == jnp.float32
    x32, y32 = x.astype(jnp.float32), y.astype(jnp.float32)
    want, want_grads = REF_GRAD(x32, y32, jnp.float32(0.2), True, None)
    np.testing.assert_allclose(float(value), _numpy_loss(x32, y32, 0.2), rtol=1e-2)
    for got, ref in zip(grads, want_grads, strict=True):
        scale = float(jnp.max(jnp.abs(ref)))
        np.testing.assert_allclose(np.asarray(got, np.float32), ref, atol=2e-2 * scale)


@pytest.mark.parametrize("chunk", [5, None])
def test_huge_similarities_and_an_empty_batch(chunk):
    x, y = _pairs(seed=5)
    value, grads = GRAD(x * 100.0, y * 100.0, jnp.float32(0.01), None, True, chunk)
    want, _ = REF_GRAD(x * 100.0, y * 100.0, jnp.float32(0.01), True, None)
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)
    np.testing.assert_allclose(value, want, rtol=1e-5)
    nothing = jnp.zeros(13, bool)
    value, grads = GRAD(x, y, jnp.float32(1.0), nothing, True, chunk)
    assert float(value) == 0.0 and all(not np.any(g) for g in grads)


def test_reductions():
    x, y = _pairs(seed=6)
    where = jnp.asarray(np.arange(13) < 10)

    @jax.jit
    def reduced(x, y):
        return {r: jaxkl.contrastive_loss(x, y, reduction=r, where=where) for r in ("none", "sum", "batchmean")}

    out = reduced(x, y)
    assert out["none"].shape == (13,) and not np.any(out["none"][10:])
    np.testing.assert_allclose(out["sum"], _numpy_loss(x, y, 1.0, True, where) * 10, rtol=1e-5)
    np.testing.assert_allclose(out["batchmean"], out["sum"] / 13, rtol=1e-6)


def test_bad_arguments_name_themselves():
    x, y = _pairs()
    with pytest.raises(ValueError, match="same shape"):
        jaxkl.contrastive_loss(x, y[:4])
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        jaxkl.contrastive_loss(x[0], y[0])
    with pytest.raises(ValueError, match="temperature"):
        jaxkl.contrastive_loss(x, y, temperature=0.0)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        jaxkl.contrastive_loss(jnp.ones((2, 2), jnp.int32), y[:2, :2])


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((8,), ("batch",), axis_types=(AxisType.Auto,))


def test_sharded_ring_equals_the_unsharded_loss(mesh):
    # 8 devices x 5 pairs, strips of 2 rows; the temperature is replicated and
    # learnable. One objective mixes the global mean and the per-pair values.
    x, y = _pairs(n=40, d=6, seed=7)
    where = jnp.asarray(np.arange(40) % 7 != 3)

    def both(x, y, t, w, **sharding):
        def loss(reduction):
            return jaxkl.contrastive_loss(x, y, temperature=t, where=w, reduction=reduction, **sharding)

        return loss("mean"), loss("none")

    sharded_losses = jax.shard_map(
        lambda x, y, t, w: both(x, y, t, w, chunk_size=2, axis_name="batch"),
        mesh=mesh,
        in_specs=(P("batch"), P("batch"), P(), P("batch")),
        out_specs=(P(), P("batch")),
    )

    def objective(losses):
        return lambda x, y, t: (lambda m, v: m + 0.1 * jnp.sum(v))(*losses(x, y, t, where))

    got, got_grads = jax.jit(jax.value_and_grad(objective(sharded_losses), argnums=(0, 1, 2)))(x, y, 0.4)
    want, want_grads = jax.jit(jax.value_and_grad(objective(both), argnums=(0, 1, 2)))(x, y, 0.4)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for g, w in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(w))))


def test_compiled_temporaries_stay_below_two_percent_of_one_similarity_matrix():
    # N = 16384, D = 256 float32 (one N x N array is 1 GiB). Compile only.
    n, d = 16384, 256
    emb = jax.ShapeDtypeStruct((n, d), jnp.float32)
    t = jax.ShapeDtypeStruct((), jnp.float32)
    step = jax.jit(jax.value_and_grad(lambda x, y, t: jaxkl.contrastive_loss(x, y, temperature=t), argnums=(0, 1, 2)))
    temp = step.lower(emb, emb, t).compile().memory_analysis().temp_size_in_bytes
    assert temp <= 0.02 * n * n * 4, temp / 2**20


@pytest.mark.parametrize(("symmetric", "masked"), [(True, True), (False, False)])
def test_forward_mode_through_the_strips(symmetric, masked):
    # Regression: above one strip (N > ~724 by default) the loss used a
    # custom_vjp, so jax.jvp / jacfwd raised. N = 1000 takes two strips of 520 rows.
    x, y = _pairs(n=1000, d=8, seed=11)
    x, y = x / 2, y / 2
    where = jnp.asarray(np.arange(1000) % 9 != 4) if masked else None
    rng = np.random.default_rng(11)
    tx, ty = (jnp.asarray(rng.normal(size=(1000, 8)), jnp.float32) for _ in range(2))

    def loss(x, y, t):
        return jaxkl.contrastive_loss(x, y, temperature=t, symmetric=symmetric, where=where)

    def plain(x, y, t):
        return _jnp_loss(x, y, t, symmetric, where)

    got, got_t = jax.jit(lambda *a: jax.jvp(loss, a, (tx, ty, jnp.float32(0.1))))(x, y, jnp.float32(0.3))
    want, want_t = jax.jvp(plain, (x, y, jnp.float32(0.3)), (tx, ty, jnp.float32(0.1)))
    np.testing.assert_allclose(got, _numpy_loss(x, y, 0.3, symmetric, where), rtol=2e-6)
    np.testing.assert_allclose(got_t, want_t, rtol=1e-4)
    # A central difference of the float64 NumPy loss along the same direction.
    h = 1e-3
    fd = (
        _numpy_loss(np.asarray(x, np.float64) + h * np.asarray(tx), np.asarray(y, np.float64) + h * np.asarray(ty), 0.3 + 0.1 * h, symmetric, where)
        - _numpy_loss(np.asarray(x, np.float64) - h * np.asarray(tx), np.asarray(y, np.float64) - h * np.asarray(ty), 0.3 - 0.1 * h, symmetric, where)
    ) / (2 * h)
    np.testing.assert_allclose(got_t, fd, rtol=1e-3)
    # jacfwd and reverse-over-forward (the temperature's curvature) agree with the materialised peer.
    jac = jax.jit(jax.jacfwd(loss, argnums=2))(x, y, jnp.float32(0.3))
    np.testing.assert_allclose(jac, jax.grad(plain, argnums=2)(x, y, jnp.float32(0.3)), rtol=1e-4)
    curvature = jax.jit(jax.hessian(loss, argnums=2))(x, y, jnp.float32(0.3))
    np.testing.assert_allclose(curvature, jax.hessian(plain, argnums=2)(x, y, jnp.float32(0.3)), rtol=1e-3)
    # Reverse mode through the strips still matches too (it transposes the same rule).
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, y, jnp.float32(0.3))
    for g, w in zip(grads, jax.grad(plain, argnums=(0, 1, 2))(x, y, jnp.float32(0.3)), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-7)


def test_forward_mode_in_bfloat16_and_with_a_static_temperature():
    x, y = _pairs(n=800, d=8, seed=12, dtype=np.float32)
    x16, y16 = x.astype(jnp.bfloat16), y.astype(jnp.bfloat16)
    tx = jnp.asarray(np.random.default_rng(12).normal(size=(800, 8)), jnp.bfloat16)
    got, got_t = jax.jvp(lambda x: jaxkl.contrastive_loss(x, y16, temperature=0.5, chunk_size=96), (x16,), (tx,))
    assert got.dtype == got_t.dtype == jnp.bfloat16
    f32 = lambda x: _jnp_loss(x, y16.astype(jnp.float32), 0.5)
    want, want_t = jax.jvp(f32, (x16.astype(jnp.float32),), (tx.astype(jnp.float32),))
    np.testing.assert_allclose(float(got), float(want), rtol=1e-2)
    np.testing.assert_allclose(float(got_t), float(want_t), rtol=2e-2, atol=1e-3)


def test_accelerator_branch_of_the_16_bit_forward_pass(monkeypatch):
    # On CPU 16-bit embeddings are converted to float32 before the strips; the
    # accelerators' (default) branch keeps them as they are. Run that branch here.
    from jaxkl import _contrastive

    x, y = _pairs(n=800, d=8, seed=13)
    x16, y16 = x.astype(jnp.bfloat16), y.astype(jnp.bfloat16)

    def run():
        step = jax.jit(jax.value_and_grad(lambda x, y: jaxkl.contrastive_loss(x, y, temperature=0.5, chunk_size=96), (0, 1)))
        return step(x16, y16)

    cpu = run()
    monkeypatch.setattr(_contrastive, "_forward_here", _contrastive._forward)
    default = run()
    for a, b in zip(jax.tree.leaves(default), jax.tree.leaves(cpu), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=2e-2, atol=2e-4)
