"""Fused linear + loss against unfused references built here from materialised logits.

Values are checked against NumPy (float64) written from PyTorch's documented
``F.cross_entropy`` formula; gradients against ``jax.grad`` of the unfused loss
built from ``jaxkl.log_softmax`` (a different code path: no chunking, no custom
VJP). bf16 tolerance: the fused path multiplies in bf16 with float32
accumulation, the reference in float32 from the same bf16-rounded inputs, so
values agree to ~1e-2 relative and gradients to ~2e-2 of their scale.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkl
from jaxkl._fused import class_tile
from tests import reference as ref

N, D, V = 37, 16, 50  # N is not a multiple of the chunk sizes used below


def _problem(seed=0, n=N, d=D, v=V, scale=0.5):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(n, d)).astype(np.float32)
    w = (rng.normal(size=(d, v)) * scale).astype(np.float32)
    b = rng.normal(size=(v,)).astype(np.float32)
    y = rng.integers(0, v, size=n).astype(np.int32)
    return h, w, b, y


def _numpy_ce(h, w, b, y, *, ignore_index=None, eps=0.0, z=0.0, reduction="mean", where=None):
    """PyTorch F.cross_entropy (no class weights) on materialised float64 logits, plus z-loss."""
    logits = h.astype(np.float64) @ w.astype(np.float64)
    if b is not None:
        logits = logits + b
    m = logits.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[:, 0]
    logp = logits - lse[:, None]
    valid = (y >= 0) & (y < logits.shape[1])
    nll = np.where(valid, -logp[np.arange(len(y)), np.where(valid, y, 0)], np.nan)
    loss = (1 - eps) * nll + eps * (-logp.mean(-1)) + z * lse**2
    keep = np.ones(len(y), bool) if ignore_index is None else y != ignore_index
    if where is not None:
        keep &= where
    return ref.reduce(np.where(keep, loss, 0.0), reduction, keep.sum())


def _unfused_ce(h, w, b, y, *, ignore_index=None, eps=0.0, z=0.0, reduction="mean", where=None):
    """The same loss in JAX on materialised logits, for reference gradients."""
    logits = h @ w if b is None else h @ w + b[None, :]
    logp = jaxkl.log_softmax(logits)
    lse = jaxkl.logsumexp(logits)
    picked = jnp.take_along_axis(logp, jnp.clip(y, 0, logits.shape[1] - 1)[:, None], -1)[:, 0]
    loss = (1 - eps) * -picked + eps * -jnp.mean(logp, -1) + z * lse**2
    keep = jnp.ones(y.shape, bool) if ignore_index is None else y != ignore_index
    if where is not None:
        keep = keep & where
    return jaxkl.reduce(loss, reduction, where=keep)


ALL = dict(ignore_index=3, eps=0.2, z=1e-4, use_where=True)
# (options, reduction, chunk_size) against the NumPy formula; every option under every
# reduction, fused against unfused, is tests/test_fused_parity.py.
CASES = [
    (dict(ignore_index=-100), "mean", 64),
    (dict(z=1e-3), "batchmean", 6),
    (ALL, "none", 6),
    (ALL, "mean", 8),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_cross_entropy_matches_unfused(case):
    options, reduction, chunk_size = CASES[case]
    opts = dict(options)
    h, w, b, y = _problem(case)
    where = None
    if opts.pop("use_where", False):
        where = np.arange(N) % 3 != 0
    if opts.get("ignore_index") is not None:
        y[::4] = opts["ignore_index"]
    kw = dict(
        ignore_index=opts.get("ignore_index"),
        label_smoothing=opts.get("eps", 0.0),
        z_loss=opts.get("z", 0.0),
        reduction=reduction,
        where=None if where is None else jnp.asarray(where),
    )

    def fused(h, w, b):
        out = jaxkl.fused_linear_cross_entropy(h, w, jnp.asarray(y), head_bias=b, chunk_size=chunk_size, **kw)
        return out.sum() if reduction == "none" else out

    ref_kw = dict(opts, reduction=reduction, where=kw["where"])

    def unfused(h, w, b):
        return _unfused_ce(h, w, b, jnp.asarray(y), **ref_kw).sum()

    value = jaxkl.fused_linear_cross_entropy(h, w, y, head_bias=b, chunk_size=chunk_size, **kw)
    np.testing.assert_allclose(
        value, _numpy_ce(h, w, b, y, **dict(opts, reduction=reduction, where=where)), rtol=2e-6, atol=1e-6
    )
    got = jax.jit(jax.grad(fused, argnums=(0, 1, 2)))(h, w, b)
    want = jax.jit(jax.grad(unfused, argnums=(0, 1, 2)))(h, w, b)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_no_bias_and_chunk_larger_than_rows():
    h, w, _, y = _problem(7, n=5)
    value = jaxkl.fused_linear_cross_entropy(h, w, y, chunk_size=1000)
    np.testing.assert_allclose(value, _numpy_ce(h, w, None, y), rtol=2e-6)
    default = jaxkl.fused_linear_cross_entropy(h, w, y)
    np.testing.assert_allclose(default, value, rtol=1e-6)


def test_out_of_range_label_is_nan_for_that_example_only():
    h, w, b, y = _problem(1)
    y[[2, 5]] = [V, -1]  # one past the end, and -1 (which optax would wrap to V-1)
    rows = jaxkl.fused_linear_cross_entropy(h, w, y, head_bias=b, reduction="none", chunk_size=8)
    assert np.isnan(rows[2]) and np.isnan(rows[5])
    assert np.isfinite(np.delete(np.asarray(rows), [2, 5])).all()
    assert np.isnan(jaxkl.fused_linear_cross_entropy(h, w, y, head_bias=b))
    # Masking the bad examples out gives a finite loss and a finite gradient.
    keep = np.isin(np.arange(N), [2, 5], invert=True)
    loss = lambda w: jaxkl.fused_linear_cross_entropy(h, w, y, where=jnp.asarray(keep), chunk_size=8)
    value, grad = jax.value_and_grad(loss)(w)
    np.testing.assert_allclose(value, _numpy_ce(h, w, None, y, where=keep), rtol=2e-6)
    assert np.isfinite(grad).all()


def test_all_ignored_mean_is_zero_with_zero_gradient():
    h, w, b, _ = _problem(2)
    y = np.full(N, -100, np.int32)
    loss = lambda w: jaxkl.fused_linear_cross_entropy(h, w, y, ignore_index=-100)
    value, grad = jax.value_and_grad(loss)(w)
    assert value == 0.0 and not np.asarray(grad).any()


def test_shift_invariance_of_huge_logits():
    # A bias of 1e4 on every class: the row max is subtracted, so the only change
    # is the rounding of the logits themselves (float32 ulp at 1e4 is ~1e-3; the
    # mean of such roundings is ~1e-5). Without the max shift it would be ~1e-3.
    h, w, b, y = _problem(3)
    base = jaxkl.fused_linear_cross_entropy(h, w, y, head_bias=b, chunk_size=8)
    shifted = jaxkl.fused_linear_cross_entropy(h, w, y, head_bias=b + np.float32(1e4), chunk_size=8)
    np.testing.assert_allclose(shifted, base, atol=1e-4)


def test_bfloat16_within_documented_tolerance(head_matmuls):
    h, w, b, y = _problem(4)
    hb, wb, bb = (jnp.asarray(x, jnp.bfloat16) for x in (h, w, b))
    f32 = [np.asarray(x, np.float32) for x in (hb, wb, bb)]
    loss = lambda h, w, b: jaxkl.fused_linear_cross_entropy(h, w, y, head_bias=b, chunk_size=8)
    value, grads = jax.value_and_grad(loss, argnums=(0, 1, 2))(hb, wb, bb)
    assert value.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in grads)
    np.testing.assert_allclose(np.float32(value), _numpy_ce(*f32, y), rtol=1e-2)
    want = jax.jit(jax.grad(lambda *a: _unfused_ce(*a, jnp.asarray(y)), argnums=(0, 1, 2)))(*f32)
    for g, r in zip(grads, want):
        np.testing.assert_allclose(np.float32(g), r, atol=2e-2 * float(np.abs(r).max()))


def test_bad_arguments_raise_at_trace_time():
    h, w, b, y = _problem(5)
    with pytest.raises(ValueError, match="hidden.shape"):
        jaxkl.fused_linear_cross_entropy(h, w.T, y)
    with pytest.raises(TypeError, match="labels must be an integer array"):
        jaxkl.fused_linear_cross_entropy(h, w, y.astype(np.float32))
    with pytest.raises(ValueError, match=r"labels.shape=\(36,\) must equal hidden.shape\[:-1\]"):
        jaxkl.fused_linear_cross_entropy(h, w, y[:-1])
    with pytest.raises(ValueError, match="head_bias"):
        jaxkl.fused_linear_cross_entropy(h, w, y, head_bias=b[:-1])
    with pytest.raises(ValueError, match="weight.shape"):
        jaxkl.fused_linear_cross_entropy(h, w, y, weight=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="chunk_size"):
        jaxkl.fused_linear_cross_entropy(h, w, y, chunk_size=0)
    with pytest.raises(ValueError, match="label_smoothing"):
        jaxkl.fused_linear_cross_entropy(h, w, y, label_smoothing=1.5)
    with pytest.raises(ValueError, match="reduction"):
        jaxkl.fused_linear_cross_entropy(h, w, y, reduction="avg")


def _temp_bytes(fn, *args):
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compiled_temp_memory_below_one_logits_array(reduction):
    n, d, v = 1024, 32, 4096
    sd = jax.ShapeDtypeStruct
    args = (sd((n, d), jnp.float32), sd((d, v), jnp.float32), sd((n,), jnp.int32))
    one_logits = n * v * 4

    def fused(h, w, y):
        return jaxkl.fused_linear_cross_entropy(h, w, y, chunk_size=64, reduction=reduction).sum()

    def unfused(h, w, y):
        return _unfused_ce(h, w, None, y, reduction=reduction).sum()

    fused_temp = _temp_bytes(jax.value_and_grad(fused, argnums=(0, 1)), *args)
    assert fused_temp < one_logits / 4, (fused_temp, one_logits)
    # The check has teeth: the unfused gradient does hold N x V temporaries.
    assert _temp_bytes(jax.value_and_grad(unfused, argnums=(0, 1)), *args) >= one_logits


@pytest.mark.parametrize(
    "options", [{"chunk_size": 16}, {"chunk_size": 16, "vocab_chunk_size": 1024}, {}],
    ids=["chunks", "chunks-and-tiles", "one-chunk"],
)
def test_every_matmul_contracts_its_left_operands_last_axis(options):
    """`d head = hidden.T @ d logits` runs on a transposed copy of the chunk's hidden states.

    A dot contracting its left operand's first axis ran at half speed on CPU
    (see `jaxkl._chunks.transposed`); untiled, tiled and in one chunk, every
    product of the compiled step must contract `lhs` axis 1.
    """
    n, d, v = 64, 32, 4096
    sd = jax.ShapeDtypeStruct
    args = (sd((n, d), jnp.float32), sd((d, v), jnp.float32), sd((n,), jnp.int32))
    step = jax.value_and_grad(lambda h, w, y: jaxkl.fused_linear_cross_entropy(h, w, y, **options), (0, 1))
    hlo = jax.jit(step).lower(*args).compile().as_text()
    contracted = re.findall(r"lhs_contracting_dims=\{(\d+)\}", hlo)
    assert len(contracted) >= 3, hlo  # the logits, d hidden and d head at least
    assert set(contracted) == {"1"}, contracted


# ------------------------------------------------------------------ distillation


def _unfused_distillation(hs, ws, ht, wt, y, *, T, divergence, beta, alpha):
    s = hs @ ws
    t = jax.lax.stop_gradient(ht @ wt)
    ls, lt = jaxkl.log_softmax(s / T), jaxkl.log_softmax(t / T)
    ps, pt = jnp.exp(ls), jnp.exp(lt)
    if divergence == "forward_kl":
        soft = jnp.sum(pt * (lt - ls), -1)
    elif divergence == "reverse_kl":
        soft = jnp.sum(ps * (ls - lt), -1)
    else:
        lm = jnp.log(beta * pt + (1 - beta) * ps)
        soft = beta * jnp.sum(pt * (lt - lm), -1) + (1 - beta) * jnp.sum(ps * (ls - lm), -1)
    loss = T**2 * soft
    if y is not None:
        ce = -jnp.take_along_axis(jaxkl.log_softmax(s), y[:, None], -1)[:, 0]
        loss = (1 - alpha) * ce + alpha * loss
    return loss


@pytest.mark.parametrize("divergence, with_labels", [("forward_kl", False), ("js", True)])
def test_distillation_matches_unfused(divergence, with_labels):
    rng = np.random.default_rng(11)
    n, ds, dt, v = 29, 8, 12, 40
    hs, ht = rng.normal(size=(n, ds)).astype(np.float32), rng.normal(size=(n, dt)).astype(np.float32)
    ws = (rng.normal(size=(ds, v)) * 0.3).astype(np.float32)
    wt = (rng.normal(size=(dt, v)) * 0.3).astype(np.float32)
    y = jnp.asarray(rng.integers(0, v, n)) if with_labels else None
    opts = dict(T=2.0, divergence=divergence, beta=0.3, alpha=0.6)

    def fused(hs, ws, ht, wt):
        return jaxkl.fused_linear_distillation_loss(
            hs, ws, ht, wt, temperature=2.0, divergence=divergence, beta=0.3, labels=y,
            alpha=0.6, chunk_size=7,
        )

    def unfused(hs, ws, ht, wt):
        return jnp.sum(_unfused_distillation(hs, ws, ht, wt, y, **opts)) / n

    value, grads = jax.jit(jax.value_and_grad(fused, argnums=(0, 1, 2, 3)))(hs, ws, ht, wt)
    ref_value, ref_grads = jax.jit(jax.value_and_grad(unfused, argnums=(0, 1)))(hs, ws, ht, wt)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for g, r in zip(grads[:2], ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    # The teacher gets no gradient.
    assert not np.asarray(grads[2]).any() and not np.asarray(grads[3]).any()
    rows = jaxkl.fused_linear_distillation_loss(
        hs, ws, ht, wt, temperature=2.0, divergence=divergence, beta=0.3, labels=y, alpha=0.6,
        reduction="none", chunk_size=5,
    )
    np.testing.assert_allclose(rows, _unfused_distillation(hs, ws, ht, wt, y, **opts), rtol=1e-5, atol=1e-6)


def test_distillation_identical_heads_is_zero():
    h, w, _, _ = _problem(6)
    value = jaxkl.fused_linear_distillation_loss(h, w, h, w, temperature=3.0, chunk_size=8)
    np.testing.assert_allclose(value, 0.0, atol=1e-6)


def test_distillation_memory_and_errors():
    n, d, v = 1024, 32, 4096
    sd = jax.ShapeDtypeStruct
    args = (sd((n, d), jnp.float32), sd((d, v), jnp.float32)) * 2

    def fused(hs, ws, ht, wt):
        return jaxkl.fused_linear_distillation_loss(hs, ws, ht, wt, chunk_size=64)

    # Two heads' chunks (student and teacher logits) are live at once.
    assert _temp_bytes(jax.value_and_grad(fused, argnums=(0, 1)), *args) < n * v * 4 / 2
    h, w, _, _ = _problem(6)
    with pytest.raises(ValueError, match="divergence"):
        jaxkl.fused_linear_distillation_loss(h, w, h, w, divergence="kl")
    with pytest.raises(ValueError, match="share N and V"):
        jaxkl.fused_linear_distillation_loss(h, w, h[:-1], w)
    with pytest.raises(ValueError, match="temperature"):
        jaxkl.fused_linear_distillation_loss(h, w, h, w, temperature=0.0)


def test_js_beta_weights_the_teacher_in_both_distillation_losses():
    # beta is the teacher's weight in M = beta * teacher + (1 - beta) * student,
    # for the fused and the materialised-logits loss alike (JS_beta(teacher, student)).
    rng = np.random.default_rng(14)
    n, d, v, beta, T = 11, 6, 20, 0.3, 1.5
    hs, ht = rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32)
    ws, wt = ((rng.normal(size=(d, v)) * 0.5).astype(np.float32) for _ in range(2))
    kw = dict(temperature=T, divergence="js", beta=beta, reduction="none")
    fused = jaxkl.fused_linear_distillation_loss(hs, ws, ht, wt, chunk_size=4, **kw)
    plain = jaxkl.distillation_loss(jnp.asarray(hs) @ ws, jnp.asarray(ht) @ wt, **kw)
    # Independent float64 reference with the teacher weighted by beta.
    def probs(h, w):
        z = h.astype(np.float64) @ w.astype(np.float64) / T
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p_s, p_t = probs(hs, ws), probs(ht, wt)
    m = beta * p_t + (1 - beta) * p_s
    kl = lambda p, q: np.sum(p * np.log(p / q), -1)
    want = T**2 * (beta * kl(p_t, m) + (1 - beta) * kl(p_s, m))
    np.testing.assert_allclose(fused, want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(plain, want, rtol=1e-5, atol=1e-7)
    # The check has teeth: the other convention (beta on the student) differs.
    m_swapped = (1 - beta) * p_t + beta * p_s
    swapped = T**2 * ((1 - beta) * kl(p_t, m_swapped) + beta * kl(p_s, m_swapped))
    assert np.abs(swapped - want).max() > 1e-3


def test_default_tiles_only_when_the_tokens_take_several_chunks():
    """A single chunk reads the head once: tiling it would only add the fourth matmul."""
    assert class_tile(None, None, 32, 262144, 128, None) is None  # 32 tokens: one chunk
    assert class_tile(None, None, 4096, 262144, 128, None) == 16384
    assert class_tile(None, 4096, 4096, 262144, 128, None) is None  # the caller's one chunk
    assert class_tile(1000, None, 32, 262144, 128, None) == 1000  # an explicit tile is kept
    assert class_tile(None, None, 4096, 262144, 128, "model") is None  # sharded: no tiles
