"""Fused heads at the edges of their shapes, against plain jnp on materialised logits.

* `"batchmean"` with `hidden` `[B, T, D]` divides by `B`, as the unfused loss does on logits
  `[B, T, V]` (docs/conventions.md: the sum over `values.shape[0]`), and so does the
  return_aux z-loss term, which is "reduced like the loss";
* a hidden size `D = 0`: the logits are the bias alone (zero without one), with gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkl

B, T, D, V = 3, 5, 4, 7
CLASS_WEIGHT = np.linspace(0.5, 2.0, V).astype(np.float32)


def _problem(seed, d=D):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(B, T, d)).astype(np.float32)
    w = rng.normal(size=(d, V)).astype(np.float32)
    b = rng.normal(size=(V,)).astype(np.float32)
    y = rng.integers(0, V, size=(B, T)).astype(np.int32)
    y[0, 1] = -100
    return h, w, b, y


def _reference(h, w, b, y, *, weight, smoothing, z_loss, shift):
    """`(sum of per-token losses / B, sum of z-loss terms / B)` from `[B, T, V]` logits (plain jnp)."""
    z = jnp.einsum("btd,dv->btv", h, w) + b[None, None, :]
    if shift:  # position t against label t + 1; the last position counts for nothing
        y = jnp.concatenate([y[:, 1:], jnp.full((y.shape[0], 1), -100, y.dtype)], axis=1)
    cw = jnp.ones((V,), jnp.float32) if weight is None else jnp.asarray(weight)
    lse = jax.scipy.special.logsumexp(z, axis=-1)
    keep = y != -100
    yc = jnp.where(keep, y, 0)
    wy = cw[yc]
    picked = jnp.take_along_axis(z, yc[..., None], -1)[..., 0]
    smooth = jnp.sum(cw[None, None, :] * (lse[..., None] - z), -1) / V
    rows = (1 - smoothing) * wy * (lse - picked) + smoothing * smooth + z_loss * wy * lse**2
    z_rows = z_loss * wy * lse**2
    return jnp.sum(jnp.where(keep, rows, 0.0)) / B, jnp.sum(jnp.where(keep, z_rows, 0.0)) / B


OPTIONS = {
    "plain": dict(),
    "z_loss": dict(z_loss=0.05),
    "weighted_smoothed": dict(weight=CLASS_WEIGHT, label_smoothing=0.1, z_loss=0.05),
    "shift": dict(shift=True, z_loss=0.05),
    "class_tiles": dict(z_loss=0.05, label_smoothing=0.1, vocab_chunk_size=3, chunk_size=4),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_batchmean_of_token_grids_divides_by_the_batch_like_the_unfused_loss(name):
    opts = OPTIONS[name]
    h, w, b, y = _problem(list(OPTIONS).index(name))

    def fused(h, w, b):
        loss, aux = jaxkl.fused_linear_cross_entropy(
            h, w, y, head_bias=b, ignore_index=-100, reduction="batchmean", return_aux=True, **opts
        )
        return loss, aux.z_loss

    def reference(h, w, b):
        return _reference(
            h, w, b, jnp.asarray(y), weight=opts.get("weight"), smoothing=opts.get("label_smoothing", 0.0),
            z_loss=opts.get("z_loss", 0.0), shift=opts.get("shift", False),
        )

    (got, got_z), got_grads = jax.value_and_grad(fused, (0, 1, 2), has_aux=True)(h, w, b)
    (want, want_z), want_grads = jax.value_and_grad(reference, (0, 1, 2), has_aux=True)(h, w, b)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(got_z, want_z, rtol=1e-5, atol=1e-7)
    for g, r in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)


def test_batchmean_of_token_grids_equals_the_unfused_cross_entropy_loss():
    # The same comparison against jaxkl's own unfused loss on the materialised logits.
    h, w, b, y = _problem(7)
    kw = dict(ignore_index=-100, reduction="batchmean", z_loss=0.05, return_aux=True)
    loss, aux = jaxkl.fused_linear_cross_entropy(h, w, y, head_bias=b, **kw)
    want, want_aux = jaxkl.cross_entropy_loss(jnp.einsum("btd,dv->btv", h, w) + b[None, None, :], y, **kw)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    np.testing.assert_allclose(aux.z_loss, want_aux.z_loss, rtol=1e-5)


def _zero_width_cases(h, w, b, y):
    """Every fused head at D = 0, as `(name, fn(h, w, b) -> scalar, reference(b) -> scalar)`."""
    n = y.size
    h2, y1 = h.reshape(n, 0), y.reshape(n)
    old = jnp.full((B, T), -2.0, jnp.float32)
    adv = jnp.linspace(-1.0, 1.0, B, dtype=jnp.float32)
    coef = jnp.linspace(0.5, 1.5, n, dtype=jnp.float32)
    th = jnp.asarray(np.random.default_rng(3).normal(size=(n, 2)), jnp.float32)
    tw = jnp.asarray(np.random.default_rng(4).normal(size=(2, V)), jnp.float32)

    def logp_of(b):
        return jax.nn.log_softmax(jnp.broadcast_to(b, (n, V)))

    def ce_ref(b):
        lp = logp_of(b)
        keep = y1 != -100
        picked = jnp.take_along_axis(lp, jnp.where(keep, y1, 0)[:, None], -1)[:, 0]
        return -jnp.sum(jnp.where(keep, picked, 0.0)) / jnp.sum(keep.astype(jnp.float32))

    def token_ref(b):
        lp = logp_of(b)
        picked = jnp.take_along_axis(lp, jnp.clip(y1, 0)[:, None], -1)[:, 0]
        ent = -jnp.sum(jnp.exp(lp) * lp, -1)
        return jnp.sum(coef * picked + ent)

    def policy_ref(b):
        lp = jnp.take_along_axis(logp_of(b), jnp.clip(y1, 0)[:, None], -1)[:, 0].reshape(B, T)
        r = jnp.exp(lp - old)
        a = adv[:, None]
        return jnp.mean(-jnp.minimum(r * a, jnp.clip(r, 0.8, 1.2) * a))

    def distillation_ref(b):
        logq = jnp.zeros((n, V)) - jnp.log(V)  # the student's logits are all 0: uniform
        logp = jax.nn.log_softmax(th @ tw)
        return jnp.sum(jnp.exp(logp) * (logp - logq)) / n

    tokens = jnp.clip(y1, 0)
    return [
        ("cross_entropy", lambda h, w, b: jaxkl.fused_linear_cross_entropy(
            h, w, y, head_bias=b, ignore_index=-100), ce_ref),
        ("cross_entropy_tiled", lambda h, w, b: jaxkl.fused_linear_cross_entropy(
            h, w, y, head_bias=b, ignore_index=-100, vocab_chunk_size=3, chunk_size=4), ce_ref),
        ("token_logprobs", lambda h, w, b: _token_total(h.reshape(n, 0), w, b, tokens, coef, None), token_ref),
        ("token_logprobs_tiled", lambda h, w, b: _token_total(h.reshape(n, 0), w, b, tokens, coef, 3), token_ref),
        ("policy", lambda h, w, b: jaxkl.fused_linear_policy_loss(
            h, w, y.clip(0), old, adv, head_bias=b)[0], policy_ref),
        ("distillation", lambda h, w, b: jaxkl.fused_linear_distillation_loss(h.reshape(n, 0), w, th, tw)
            + 0.0 * jnp.sum(b), distillation_ref),
    ]


def _token_total(h, w, b, tokens, coef, tiles):
    lp, ent = jaxkl.fused_linear_token_logprobs(
        h, w, tokens, head_bias=b, return_entropy=True, vocab_chunk_size=tiles, chunk_size=4 if tiles else None
    )
    return jnp.sum(coef * lp + ent)


NAMES = ["cross_entropy", "cross_entropy_tiled", "token_logprobs", "token_logprobs_tiled", "policy", "distillation"]


@pytest.mark.parametrize("name", NAMES)
def test_zero_hidden_size_gives_the_bias_only_answer(name):
    h, w, b, y = _problem(11, d=0)
    assert h.shape == (B, T, 0) and w.shape == (0, V)
    _, fused, reference = dict((c[0], c) for c in _zero_width_cases(h, w, b, y))[name]
    value, (d_h, d_w, d_b) = jax.value_and_grad(fused, (0, 1, 2))(h, w, b)
    want, want_db = jax.value_and_grad(reference)(b)
    np.testing.assert_allclose(value, want, rtol=1e-5)
    assert d_h.shape == h.shape and d_w.shape == w.shape
    np.testing.assert_allclose(d_b, want_db, rtol=1e-4, atol=1e-6)


def test_fused_distillation_masked_rows_with_ignore_labels_have_a_finite_gradient():
    """A -100 label on a row excluded by `where` must not reach the gradient."""
    rng = np.random.default_rng(7)
    n, d, v = 6, 4, 5
    h, th = (jnp.asarray(rng.normal(size=(n, d)), jnp.float32) for _ in range(2))
    w, tw = (jnp.asarray(rng.normal(size=(d, v)), jnp.float32) for _ in range(2))
    labels = jnp.asarray([1, -100, 2, 0, -100, 4])
    keep = labels >= 0

    def fused(h, w):
        return jaxkl.fused_linear_distillation_loss(
            h, w, th, tw, labels=labels, alpha=0.5, where=keep, reduction="sum"
        )

    def reference(h, w):
        # Forward KL(teacher || student) at T = 1 plus label cross-entropy, kept rows only.
        s, t = jax.nn.log_softmax(h @ w), jax.nn.log_softmax(th @ tw)
        kl = jnp.sum(jnp.exp(t) * (t - s), axis=-1)
        ce = -jnp.take_along_axis(s, jnp.where(keep, labels, 0)[:, None], axis=-1)[:, 0]
        return jnp.sum(jnp.where(keep, 0.5 * kl + 0.5 * ce, 0.0))

    value, grads = jax.value_and_grad(fused, argnums=(0, 1))(h, w)
    want, want_grads = jax.value_and_grad(reference, argnums=(0, 1))(h, w)
    np.testing.assert_allclose(value, want, rtol=1e-5)
    for got, ref in zip(grads, want_grads):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


def test_fused_cross_entropy_check_skips_labels_excluded_by_where():
    from jax.experimental import checkify

    rng = np.random.default_rng(8)
    h = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
    labels = jnp.asarray([0, 99, 2, 1])

    def loss(keep):
        return jaxkl.fused_linear_cross_entropy(h, w, labels, where=keep, check=True)

    checked = checkify.checkify(loss, errors=checkify.user_checks)
    err, _ = jax.jit(checked)(jnp.asarray([True, False, True, True]))
    err.throw()  # the out-of-range label is excluded: no error
    err, _ = jax.jit(checked)(jnp.ones(4, bool))
    with pytest.raises(Exception):
        err.throw()
