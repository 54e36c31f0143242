"""Fused = unfused, option for option.

Each fused head loss must equal its unfused loss applied to the materialised
logits `hidden @ head_weight (+ head_bias)`: the same value and the same
gradients wrt `hidden`, `head_weight` and `head_bias`, for every option the
unfused loss takes. N = 7 rows in chunks of 3 exercises the padded last chunk.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkl

N, D, V = 7, 5, 11
CHUNK = 3


def _head(seed):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(N, D)).astype(np.float32)
    w = rng.normal(size=(D, V)).astype(np.float32)
    b = rng.normal(size=(V,)).astype(np.float32)
    return h, w, b


def _value_and_grads(f, args):
    """`f(*args)` and the gradient of its sum wrt every argument, in one compile."""
    argnums = tuple(range(len(args)))
    both = lambda *a: (f(*a), jax.grad(lambda *b: jnp.sum(f(*b)), argnums)(*a))
    return jax.jit(both)(*args)


def _assert_same(fused, unfused, args):
    """Values and gradients wrt every argument agree (float32 tolerances)."""
    value_f, grads_f = _value_and_grads(fused, args)
    value_u, grads_u = _value_and_grads(unfused, args)
    np.testing.assert_allclose(value_f, value_u, rtol=2e-5, atol=2e-6)
    for gf, gu in zip(grads_f, grads_u):
        np.testing.assert_allclose(gf, gu, rtol=2e-4, atol=2e-5)


REDUCTIONS = ("none", "sum", "mean", "batchmean")


def _cases(options, all_reductions_for):
    """Every option under its loss's default reduction; one option under all four."""
    cases = [(name, None) for name in sorted(options) if name != all_reductions_for]
    return cases + [(all_reductions_for, r) for r in REDUCTIONS]


LABELS = np.array([0, 3, 10, 2, 2, 7, 5])
MASK = np.array([True, True, False, True, True, True, False])
CLASS_WEIGHT = np.linspace(0.2, 2.0, V).astype(np.float32)

CE_OPTIONS = {
    "defaults": {},
    "weight": {"weight": CLASS_WEIGHT},
    "ignore_index": {"ignore_index": 2},
    "label_smoothing": {"label_smoothing": 0.2},
    "z_loss": {"z_loss": 1e-2},
    "where": {"where": MASK},
    "softcap": {"softcap": 1.5},
    "everything": {
        "weight": CLASS_WEIGHT,
        "ignore_index": 2,
        "label_smoothing": 0.1,
        "z_loss": 1e-3,
        "where": MASK,
        "softcap": 4.0,
    },
}


# Class tiles of 4 of the 11 classes: two full tiles and a partial one; with
# chunks of CHUNK tokens, and with all N tokens in one chunk (whose backward
# writes each tile's block of `d head` instead of adding to it).
TILED = [
    ("label_smoothing", "sum", 4, CHUNK),
    ("everything", "none", 4, CHUNK),
    ("everything", "mean", 4, CHUNK),
    ("everything", "mean", 4, N),
]


@pytest.mark.parametrize(
    "option, reduction, tile, chunk", [(o, r, None, CHUNK) for o, r in _cases(CE_OPTIONS, "everything")] + TILED
)
def test_fused_cross_entropy_equals_unfused(option, reduction, tile, chunk):
    kw = dict(CE_OPTIONS[option], reduction=reduction or "mean")
    h, w, b = _head(1)

    def fused(h, w, b):
        return jaxkl.fused_linear_cross_entropy(
            h, w, LABELS, head_bias=b, chunk_size=chunk, vocab_chunk_size=tile, **kw
        )

    def unfused(h, w, b):
        return jaxkl.cross_entropy_loss(h @ w + b[None, :], LABELS, **kw)

    _assert_same(fused, unfused, (h, w, b))


def test_fused_cross_entropy_class_weights_are_pytorch_weights():
    # The reference is PyTorch's weighted mean written out in NumPy: sum(w_y l_y) / sum(w_y).
    h, w, b = _head(2)
    z = (h @ w + b[None, :]).astype(np.float64)
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    nll = lse - z[np.arange(N), LABELS]
    wy = CLASS_WEIGHT[LABELS]
    expected = (wy * nll).sum() / wy.sum()
    got = jaxkl.fused_linear_cross_entropy(h, w, LABELS, head_bias=b, weight=CLASS_WEIGHT, chunk_size=CHUNK)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


DISTILLATION_OPTIONS = {
    "defaults": {},
    "temperature": {"temperature": 2.5},
    "reverse_kl": {"divergence": "reverse_kl", "temperature": 1.5},
    "js": {"divergence": "js", "beta": 0.3},
    "tvd": {"divergence": "tvd", "temperature": 2.0},
    "skew_kl": {"divergence": "skew_kl", "skew": 0.3},
    "skew_reverse_kl": {"divergence": "skew_reverse_kl", "skew": 0.2, "temperature": 1.5},
    "labels": {"labels": LABELS, "alpha": 0.7, "temperature": 2.0},
    "unscaled": {"temperature": 3.0, "scale_by_temperature_squared": False},
    "where": {"where": MASK},
    "softcap": {"softcap": 1.5, "labels": LABELS, "divergence": "js"},
}


@pytest.mark.parametrize("option, reduction", _cases(DISTILLATION_OPTIONS, "labels"))
def test_fused_distillation_equals_unfused(option, reduction):
    kw = dict(DISTILLATION_OPTIONS[option], reduction=reduction or "batchmean")
    h, w, _ = _head(3)
    th, tw, _ = _head(4)

    def fused(h, w):
        return jaxkl.fused_linear_distillation_loss(h, w, th, tw, chunk_size=CHUNK, **kw)

    def unfused(h, w):
        return jaxkl.distillation_loss(h @ w, th @ tw, **kw)

    _assert_same(fused, unfused, (h, w))


@pytest.mark.parametrize("divergence", ["forward_kl", "js"])
def test_fused_distillation_takes_a_traced_temperature(divergence):
    h, w, _ = _head(5)
    th, tw, _ = _head(6)

    @jax.jit
    def both(h, w, temperature):
        kw = dict(temperature=temperature, divergence=divergence, labels=LABELS, alpha=0.6)
        fused = jaxkl.fused_linear_distillation_loss(h, w, th, tw, chunk_size=CHUNK, **kw)
        unfused = jaxkl.distillation_loss(h @ w, th @ tw, **kw)
        return fused, unfused

    for t in (0.5, 4.0):
        fused, unfused = both(h, w, jnp.float32(t))
        np.testing.assert_allclose(fused, unfused, rtol=2e-5)
    grad_f, grad_u = jax.jit(lambda h, t: (jax.grad(lambda h: both(h, w, t)[0])(h),
                                           jax.grad(lambda h: both(h, w, t)[1])(h)))(h, jnp.float32(2.0))
    np.testing.assert_allclose(grad_f, grad_u, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("reduction, tile", [("none", None), ("mean", 4)])
def test_fused_cross_entropy_aux_equals_unfused(reduction, tile):
    kw = dict(weight=CLASS_WEIGHT, ignore_index=2, z_loss=1e-2, where=MASK, softcap=3.0, reduction=reduction)
    h, w, b = _head(7)

    @jax.jit  # both in one program
    def both(h, w, b):
        fused = jaxkl.fused_linear_cross_entropy(
            h, w, LABELS, head_bias=b, chunk_size=CHUNK, vocab_chunk_size=tile, return_aux=True, **kw
        )
        return fused, jaxkl.cross_entropy_loss(h @ w + b[None, :], LABELS, return_aux=True, **kw)

    (loss_f, aux_f), (loss_u, aux_u) = both(h, w, b)
    np.testing.assert_allclose(loss_f, loss_u, rtol=2e-5, atol=2e-6)
    for name, f, u in zip(aux_f._fields, aux_f, aux_u):
        assert f.dtype == u.dtype and f.shape == u.shape, name
        np.testing.assert_allclose(f, u, rtol=2e-5, atol=2e-6, err_msg=name)
