"""softcap, return_aux and next-token shift against references materialised in the test.

The references are written here from the definitions (NumPy in float64 for
values; plain `jnp` formulas differentiated by JAX for gradients), never taken
from jaxkl. Both the unfused `cross_entropy_loss` and the fused
`fused_linear_cross_entropy` are checked; `tests/test_fused_parity.py` checks
that the two agree option by option.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkl

B, T, D, V = 2, 5, 4, 9
CAP = 2.0


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    h = (rng.normal(size=(B, T, D)) * 2).astype(np.float32)
    w = rng.normal(size=(D, V)).astype(np.float32)
    y = rng.integers(0, V, size=(B, T)).astype(np.int32)
    y[0, 1] = -100
    return h, w, y


def _numpy_capped_ce(z, y, cap, z_loss=0.0, ignore_index=-100):
    """Per-token loss, log-normaliser and arg-max of capped logits, float64."""
    z = z.astype(np.float64)
    if cap is not None:
        z = cap * np.tanh(z / cap)
    m = z.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[..., 0]
    keep = y != ignore_index
    picked = np.take_along_axis(z, np.where(keep, y, 0)[..., None], -1)[..., 0]
    loss = np.where(keep, lse - picked + z_loss * lse**2, 0.0)
    return loss, lse, z.argmax(-1), keep


def _jnp_capped_ce(z, y, cap, ignore_index=-100):
    """The mean capped cross-entropy in plain jnp: the gradient reference."""
    z = cap * jnp.tanh(z / cap)
    keep = y != ignore_index
    nll = jax.nn.logsumexp(z, -1) - jnp.take_along_axis(z, jnp.where(keep, y, 0)[..., None], -1)[..., 0]
    return jnp.sum(jnp.where(keep, nll, 0.0)) / jnp.sum(keep).astype(nll.dtype)


@pytest.mark.parametrize("fused", [False, True])
def test_softcap_value_and_gradient(fused):
    h, w, y = _inputs(1)

    def loss(h, w):
        if fused:
            return jaxkl.fused_linear_cross_entropy(h, w, y, ignore_index=-100, softcap=CAP, chunk_size=3)
        return jaxkl.cross_entropy_loss(h @ w, y, ignore_index=-100, softcap=CAP)

    value, grads = jax.jit(jax.value_and_grad(loss, (0, 1)))(h, w)
    expected, _, _, keep = _numpy_capped_ce(h @ w, y, CAP)
    np.testing.assert_allclose(value, expected.sum() / keep.sum(), rtol=1e-5)
    ref_grads = jax.grad(lambda h, w: _jnp_capped_ce(h @ w, y, CAP), (0, 1))(h, w)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)


def test_softcap_edges_unfused():
    # A -inf logit becomes -cap (a finite, zero-gradient class); huge logits
    # saturate at +cap; the gradient stays finite and matches d/dz of c tanh(z/c).
    z = np.array([[0.5, -np.inf, 1.0, -2.0], [1e4, 1e4, -1e4, 3.0]], np.float32)
    y = np.array([2, 3])
    loss = lambda z: jaxkl.cross_entropy_loss(z, y, softcap=CAP, reduction="sum")
    value, grad = jax.jit(jax.value_and_grad(loss))(z)
    expected, _, _, _ = _numpy_capped_ce(z, y, CAP)
    np.testing.assert_allclose(value, expected.sum(), rtol=1e-6)
    zc = CAP * np.tanh(z.astype(np.float64) / CAP)
    p = np.exp(zc - zc.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    dz = (p - np.eye(4)[y]) * (1 - np.tanh(z.astype(np.float64) / CAP) ** 2)
    np.testing.assert_allclose(grad, dz, atol=1e-6)


def test_softcap_bfloat16_fused(head_matmuls):
    h, w, y = _inputs(2)
    got = jaxkl.fused_linear_cross_entropy(
        jnp.asarray(h, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16), y, ignore_index=-100, softcap=CAP
    )
    assert got.dtype == jnp.bfloat16
    hb = np.asarray(jnp.asarray(h, jnp.bfloat16), np.float64)
    wb = np.asarray(jnp.asarray(w, jnp.bfloat16), np.float64)
    expected, _, _, keep = _numpy_capped_ce(hb @ wb, y, CAP)
    np.testing.assert_allclose(float(got), expected.sum() / keep.sum(), rtol=1e-2)


@pytest.mark.parametrize("fused, tile", [(False, None), (True, None), (True, 4)])
def test_aux_against_numpy(fused, tile):
    h, w, y = _inputs(3)
    where = np.ones((B, T), bool)
    where[1, 2] = False
    kw = dict(ignore_index=-100, z_loss=0.05, softcap=CAP, where=where, return_aux=True)
    if fused:
        loss, aux = jaxkl.fused_linear_cross_entropy(h, w, y, chunk_size=4, vocab_chunk_size=tile, **kw)
    else:
        loss, aux = jaxkl.cross_entropy_loss(h @ w, y, **kw)
    rows, lse, predicted, keep = _numpy_capped_ce(h @ w, y, CAP, z_loss=0.05)
    keep &= where
    np.testing.assert_allclose(loss, np.where(keep, rows, 0).sum() / keep.sum(), rtol=1e-5)
    assert aux.logsumexp.dtype == jnp.float32 and aux.predicted.dtype == jnp.int32
    np.testing.assert_allclose(aux.logsumexp, lse, rtol=1e-5)
    np.testing.assert_array_equal(aux.predicted, predicted)
    np.testing.assert_array_equal(aux.correct, keep & (predicted == y))
    np.testing.assert_allclose(aux.z_loss, (0.05 * lse**2 * keep).sum() / keep.sum(), rtol=1e-5)


def test_aux_adds_no_gradient_and_no_matmul():
    h, w, y = _inputs(4)

    def loss(h, w, aux):
        out = jaxkl.fused_linear_cross_entropy(h, w, y, ignore_index=-100, z_loss=0.1, return_aux=aux, chunk_size=4)
        return out[0] if aux else out

    with_aux, without = (jax.jit(jax.grad(lambda h, w, a=a: loss(h, w, a), (0, 1))) for a in (True, False))
    for g, r in zip(with_aux(h, w), without(h, w)):
        np.testing.assert_array_equal(g, r)
    # The aux statistics come from the logits already in the sweep: no extra matmul.
    count = lambda f: f.lower(h, w).as_text().count("dot_general")
    assert count(with_aux) == count(without)


@pytest.mark.parametrize("tile", [None, 4])
def test_shift_is_next_token_loss(tile):
    h, w, y = _inputs(5)

    def fused(h, w):
        return jaxkl.fused_linear_cross_entropy(
            h, w, y, ignore_index=-100, shift=True, softcap=CAP, chunk_size=3, vocab_chunk_size=tile
        )

    def reference(h, w):
        # Materialised: drop the last position's logits and the first label.
        return _jnp_capped_ce(h[:, :-1] @ w, y[:, 1:], CAP)

    value, grads = jax.jit(jax.value_and_grad(fused, (0, 1)))(h, w)
    expected, _, _, keep = _numpy_capped_ce(h[:, :-1] @ w, y[:, 1:], CAP)
    np.testing.assert_allclose(value, expected.sum() / keep.sum(), rtol=1e-5)
    for g, r in zip(grads, jax.grad(reference, (0, 1))(h, w)):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)
    rows = jaxkl.fused_linear_cross_entropy(
        h, w, y, ignore_index=-100, shift=True, reduction="none", vocab_chunk_size=tile
    )
    assert rows.shape == (B, T)
    np.testing.assert_array_equal(rows[:, -1], 0.0)
    np.testing.assert_allclose(rows[:, :-1], _numpy_capped_ce(h[:, :-1] @ w, y[:, 1:], None)[0], rtol=1e-5)


def test_distillation_softcap_against_numpy():
    rng = np.random.default_rng(6)
    s, t = (rng.normal(size=(3, V)).astype(np.float32) * 4 for _ in range(2))
    temperature = 1.5

    def log_softmax(z):
        z = CAP * np.tanh(z.astype(np.float64) / CAP) / temperature
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    ls, lt = log_softmax(s), log_softmax(t)
    expected = (np.exp(lt) * (lt - ls)).sum(-1).mean() * temperature**2
    got = jaxkl.distillation_loss(s, t, temperature=temperature, softcap=CAP)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bad_options_raise():
    h, w, y = _inputs(7)
    with pytest.raises(ValueError, match="softcap"):
        jaxkl.fused_linear_cross_entropy(h, w, y, softcap=0.0)
    with pytest.raises(ValueError, match="softcap"):
        jaxkl.cross_entropy_loss(h @ w, y, softcap=-1.0)
    with pytest.raises(TypeError, match="softcap"):
        jax.jit(lambda c: jaxkl.distillation_loss(h @ w, h @ w, softcap=c))(2.0)
    with pytest.raises(ValueError, match="vocab_chunk_size"):
        jaxkl.fused_linear_cross_entropy(h, w, y, vocab_chunk_size=0)
    with pytest.raises(ValueError, match="position axis"):
        jaxkl.fused_linear_cross_entropy(h[0, 0], w, y[0, 0], shift=True)
