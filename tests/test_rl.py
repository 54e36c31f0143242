"""token_logprobs, its fused form, policy_loss and preference_loss against float64 NumPy references.

Each reference is the published formula written out in NumPy; gradients are
compared with central differences of that reference.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.ad_checkpoint import print_saved_residuals

import jaxkl


def _central_diff(f, x, eps=1e-6):
    """Gradient of the scalar NumPy function `f` at the finite entries of `x` (0 elsewhere)."""
    x = np.array(x, np.float64)
    g = np.zeros_like(x)
    for i in zip(*np.nonzero(np.isfinite(x))):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        g[i] = (f(up) - f(down)) / (2 * eps)
    return g


# ------------------------------------------------------------------ token_logprobs


def _np_token(x, y, temperature=1.0, where=None, axis=-1, softcap=None):
    """log softmax(cap(x) / T)[y] and the entropy of softmax(cap(x) / T), float64."""
    x = np.array(x, np.float64)
    if softcap is not None:
        x = softcap * np.tanh(x / softcap)
    z = np.moveaxis(x / temperature, axis, -1)
    if where is not None:
        z = np.where(np.moveaxis(np.broadcast_to(where, x.shape), axis, -1), z, -np.inf)
    m = np.max(z, axis=-1, keepdims=True)
    lse = m + np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True))
    logp = z - lse
    p = np.exp(logp)
    h = -np.sum(p * np.where(p > 0, logp, 0.0), axis=-1)
    return np.take_along_axis(logp, y[..., None], -1)[..., 0], h


def _logits(shape, seed):
    return np.random.default_rng(seed).normal(size=shape) * 2.0


@pytest.mark.parametrize(
    "temperature, masked, axis, softcap",
    [(1.0, False, -1, None), (0.7, True, -1, None), (2.0, False, 0, None), (0.7, True, -1, 1.5)],
)
def test_token_logprobs_values_and_gradients_match_float64_reference(x64, temperature, masked, axis, softcap):
    rng = np.random.default_rng(0)
    x = _logits((2, 3, 6), 0)
    if softcap is None:
        x[0, 1, 2] = -np.inf  # a class with probability 0 (not a token); a cap would make it -softcap
    x = np.moveaxis(x, -1, axis)
    rows = (2, 3)
    k = x.shape[axis]
    y = rng.integers(0, k, size=rows)
    y[0, 1] = 0  # its row has the -inf class
    where = (np.arange(k) != k - 1) if masked else None
    if masked:
        y = np.minimum(y, k - 2)  # tokens on unmasked classes
        where = where if axis == -1 else where[:, None, None]
    c1, c2 = rng.normal(size=rows), rng.normal(size=rows)

    def ours(x):
        lp, h = jaxkl.token_logprobs(
            x, y, temperature=temperature, axis=axis, where=where, return_entropy=True, softcap=softcap
        )
        return jnp.sum(c1 * lp + c2 * h), (lp, h)

    (_, (lp, h)), g = jax.jit(jax.value_and_grad(ours, has_aux=True))(jnp.asarray(x))
    want_lp, want_h = _np_token(x, y, temperature, where, axis, softcap)
    np.testing.assert_allclose(lp, want_lp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h, want_h, rtol=1e-12, atol=1e-12)

    def ref(x):
        a, b = _np_token(x, y, temperature, where, axis, softcap)
        return np.sum(c1 * a + c2 * b)

    want_g = _central_diff(ref, x)
    if masked:  # a masked class is a constant -inf: zero gradient
        want_g = np.where(np.broadcast_to(where, x.shape), want_g, 0.0)
    np.testing.assert_allclose(g, want_g, rtol=1e-6, atol=1e-8)
    assert np.all(np.asarray(g)[~np.isfinite(x)] == 0)
    # Forward mode is the same rule.
    t = np.random.default_rng(1).normal(size=x.shape)
    _, tangent = jax.jit(lambda x, t: jax.jvp(lambda x: ours(x)[0], (x,), (t,)))(jnp.asarray(x), jnp.asarray(t))
    np.testing.assert_allclose(tangent, np.sum(want_g * np.where(np.isfinite(x), t, 0)), rtol=1e-6)


def test_token_on_a_minus_inf_class_and_empty_rows_stay_finite_in_the_gradient():
    x = jnp.array([[0.0, -jnp.inf, 1.0], [-jnp.inf, -jnp.inf, -jnp.inf]])
    y = jnp.array([1, 0])
    lp, h = jax.jit(lambda x: jaxkl.token_logprobs(x, y, return_entropy=True))(x)
    assert lp[0] == -jnp.inf and lp[1] == -jnp.inf and h[1] == 0
    g = jax.jit(jax.grad(lambda x: jnp.sum(jaxkl.token_logprobs(x, y, return_entropy=True)[1])))(x)
    assert np.all(np.isfinite(g)) and np.all(np.asarray(g)[1] == 0)
    # Out-of-range tokens are NaN, never a wrapped index.
    assert np.isnan(jaxkl.token_logprobs(x[:1], jnp.array([3]))[0])


def test_token_logprobs_bf16_returns_float32_close_to_the_reference():
    x = jnp.asarray(_logits((4, 50), 3) * 10, jnp.bfloat16)
    y = jnp.arange(4) * 7
    lp, h = jax.jit(lambda x: jaxkl.token_logprobs(x, y, return_entropy=True))(x)
    assert lp.dtype == h.dtype == jnp.float32
    want_lp, want_h = _np_token(np.asarray(x.astype(jnp.float32)), np.asarray(y))
    np.testing.assert_allclose(lp, want_lp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, want_h, rtol=1e-5, atol=1e-5)
    g = jax.jit(jax.grad(lambda x: jnp.sum(sum(jaxkl.token_logprobs(x, y, return_entropy=True)))))(x)
    assert g.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g, np.float32)))


@pytest.mark.parametrize("entropy", [False, True])
def test_token_logprobs_saves_only_the_inputs_and_per_row_statistics(capsys, entropy):
    rows, classes = 16, 64
    f = lambda x: jnp.sum(jnp.stack(jaxkl.token_logprobs(x, jnp.zeros(rows, jnp.int32), return_entropy=True)))
    if not entropy:
        f = lambda x: jnp.sum(jaxkl.token_logprobs(x, jnp.zeros(rows, jnp.int32)))
    print_saved_residuals(f, jnp.zeros((rows, classes)))
    big = [line for line in capsys.readouterr().out.splitlines() if f"[{rows},{classes}]" in line.split()[0]]
    assert len(big) == 1 and "argument" in big[0], big


# ------------------------------------------------------------------ fused form


@pytest.mark.parametrize("softcap, tile", [(None, None), (2.5, None), (None, 4), (2.5, 5)])
def test_fused_token_logprobs_match_the_reference_and_the_unfused_gradients(x64, softcap, tile):
    # tile: classes per tile (11 classes: 4 + 4 + 3, 5 + 5 + 1), the online statistics across tiles.
    rng = np.random.default_rng(4)
    n, d, v = 7, 3, 11
    h, w, b = rng.normal(size=(n, d)), rng.normal(size=(d, v)), rng.normal(size=v)
    y = rng.integers(0, v, size=n)
    c1, c2 = rng.normal(size=n), rng.normal(size=n)

    def loss(fn):
        def f(h, w, b):
            lp, ent = fn(h, w, b)
            return jnp.sum(c1 * lp + c2 * ent)

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(h, w, b)

    fused = lambda h, w, b: jaxkl.fused_linear_token_logprobs(
        h, w, y, head_bias=b, temperature=1.5, return_entropy=True, chunk_size=3, softcap=softcap,
        vocab_chunk_size=tile,
    )
    unfused = lambda h, w, b: jaxkl.token_logprobs(
        h @ w + b[None, :], y, temperature=1.5, return_entropy=True, softcap=softcap
    )
    value, grads = loss(fused)
    want_lp, want_h = _np_token(h @ w + b, y, 1.5, softcap=softcap)
    lp, ent = jax.jit(fused)(h, w, b)
    np.testing.assert_allclose(lp, want_lp, rtol=1e-12)
    np.testing.assert_allclose(ent, want_h, rtol=1e-12)

    def ref(h_):
        a, e = _np_token(h_ @ w + b, y, 1.5, softcap=softcap)
        return np.sum(c1 * a + c2 * e)

    np.testing.assert_allclose(grads[0], _central_diff(ref, h), rtol=1e-6, atol=1e-8)
    want_value, want_grads = loss(unfused)
    np.testing.assert_allclose(value, want_value, rtol=1e-12)
    for got, want in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_fused_token_logprobs_traced_temperature_and_bad_tokens_alike_with_and_without_tiles():
    rng = np.random.default_rng(6)
    h, w = rng.normal(size=(5, 4)).astype(np.float32), rng.normal(size=(4, 9)).astype(np.float32)
    y = np.array([0, 8, 9, -1, 3])  # 9 and -1 are out of range: NaN, never a wrapped index
    want_lp, want_h = _np_token(h.astype(np.float64) @ w, y.clip(0, 8), 0.6)

    ok = np.array([True, True, False, False, True])
    for tile in (None, 4):
        fused = lambda t: jaxkl.fused_linear_token_logprobs(
            h, w, y, temperature=t, return_entropy=True, vocab_chunk_size=tile
        )
        lp, ent = jax.jit(fused)(jnp.float32(0.6))  # a traced temperature
        assert np.all(np.isnan(np.asarray(lp)[~ok]))
        np.testing.assert_allclose(np.asarray(lp)[ok], want_lp[ok], rtol=1e-5)
        np.testing.assert_allclose(ent, want_h, rtol=1e-5)


@pytest.mark.parametrize("tile", [None, 8])
def test_fused_token_logprobs_bf16_matches_unfused(tile, head_matmuls):
    rng = np.random.default_rng(5)
    h = jnp.asarray(rng.normal(size=(6, 8)), jnp.bfloat16)
    w = jnp.asarray(rng.normal(size=(8, 33)), jnp.bfloat16)
    y = jnp.asarray(rng.integers(0, 33, size=6))
    fused = lambda w: jaxkl.fused_linear_token_logprobs(h, w, y, chunk_size=4, vocab_chunk_size=tile)
    lp, g = jax.jit(lambda w: (fused(w), jax.grad(lambda w: jnp.sum(fused(w)))(w)))(w)
    assert lp.dtype == jnp.float32
    z = jnp.dot(h, w, preferred_element_type=jnp.float32)
    np.testing.assert_allclose(lp, jax.jit(jaxkl.token_logprobs)(z, y), rtol=1e-6, atol=1e-6)
    assert g.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(g, np.float32)))


def test_fused_grpo_step_keeps_no_tokens_x_vocabulary_temporary():
    # value_and_grad of a GRPO loss on fused log-probs (compile only).
    b, t, d, v = 64, 32, 64, 8192
    n = b * t

    def grpo(h, w, y, old, adv):
        lp, ent = jaxkl.fused_linear_token_logprobs(h, w, y, return_entropy=True, chunk_size=32)
        loss, _ = jaxkl.policy_loss(lp.reshape(b, t), old, adv, entropy=ent.reshape(b, t), entropy_coef=0.01)
        return loss

    args = (
        jax.ShapeDtypeStruct((n, d), jnp.float32),
        jax.ShapeDtypeStruct((d, v), jnp.float32),
        jax.ShapeDtypeStruct((n,), jnp.int32),
        jax.ShapeDtypeStruct((b, t), jnp.float32),
        jax.ShapeDtypeStruct((b,), jnp.float32),
    )
    compiled = jax.jit(jax.value_and_grad(grpo, argnums=(0, 1))).lower(*args).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < 0.1 * n * v * 4


# ------------------------------------------------------------------ policy_loss


def _np_policy(lp, old, adv, mask, loss_type, eps_lo=0.2, eps_hi=None, ref=None, kl_coef=0.0,
               estimator="k3", ent=None, ent_coef=0.0, max_tokens=None):
    """The per-token clipped surrogate + KL - entropy, aggregated as the papers / TRL do (float64)."""
    eps_hi = eps_lo if eps_hi is None else eps_hi
    b, t = lp.shape
    m = mask.astype(np.float64)
    a = np.broadcast_to(adv[:, None] if adv.ndim == 1 else adv, lp.shape)
    lr = np.where(mask, lp - old, 0.0)
    n_i = np.maximum(m.sum(1), 1)
    if loss_type == "gspo":
        r = np.broadcast_to(np.exp(lr.sum(1) / n_i)[:, None], lp.shape)
    else:
        r = np.exp(lr)
    per = -np.minimum(r * a, np.clip(r, 1 - eps_lo, 1 + eps_hi) * a)
    if ref is not None:
        d = np.where(mask, ref - lp, 0.0)
        kl = {"k1": -d, "k2": 0.5 * d**2, "k3": np.exp(d) - d - 1}[estimator]
        per = per + kl_coef * kl
    if ent is not None:
        per = per - ent_coef * np.where(mask, ent, 0.0)
    per = np.where(mask, per, 0.0)
    if loss_type in ("grpo", "gspo"):
        return np.mean(per.sum(1) / n_i)
    if loss_type == "dr_grpo":
        return per.sum() / (b * (max_tokens or t))
    return per.sum() / max(m.sum(), 1)


def _policy_inputs(seed, adv_per_token):
    rng = np.random.default_rng(seed)
    b, t = 3, 5
    lp = np.log(rng.uniform(0.05, 0.95, size=(b, t)))
    old = lp + rng.normal(scale=0.3, size=(b, t))
    ref = lp + rng.normal(scale=0.3, size=(b, t))
    ent = rng.uniform(0.5, 2.0, size=(b, t))
    adv = rng.normal(size=(b, t) if adv_per_token else (b,))
    mask = np.ones((b, t), bool)
    mask[0, 3:] = False
    mask[2, 1:] = False
    for x in (lp, old, ref, ent):
        x[~mask] = np.nan  # padding may hold anything
    return lp, old, adv, ref, ent, mask


@pytest.mark.parametrize(
    "loss_type, adv_per_token, options",
    [
        ("grpo", False, dict(kl_coef=0.04, kl_estimator="k3")),
        ("grpo", True, dict(entropy_coef=0.01)),
        ("bnpo", True, dict(kl_coef=0.1, kl_estimator="k2")),
        ("dapo", False, dict(clip_eps_high=0.28, kl_coef=0.1, kl_estimator="k1")),
        ("dr_grpo", True, dict(max_tokens=8, entropy_coef=0.1)),
        ("gspo", False, dict(clip_eps=3e-4, clip_eps_high=4e-4)),
        ("gspo", False, dict(clip_eps=0.5, kl_coef=0.1)),
    ],
)
def test_policy_loss_matches_the_published_formula(x64, loss_type, adv_per_token, options):
    lp, old, adv, ref, ent, mask = _policy_inputs(sum(map(ord, loss_type)), adv_per_token)
    kwargs = dict(options)
    np_kwargs = dict(
        eps_lo=kwargs.get("clip_eps", 0.2), eps_hi=kwargs.get("clip_eps_high"), ref=ref,
        kl_coef=kwargs.get("kl_coef", 0.0), estimator=kwargs.get("kl_estimator", "k3"),
        ent=ent, ent_coef=kwargs.get("entropy_coef", 0.0), max_tokens=kwargs.get("max_tokens"),
    )

    def ours(lp, ent):
        return jaxkl.policy_loss(
            lp, old, adv, where=mask, loss_type=loss_type, ref_logprobs=ref, entropy=ent, **kwargs
        )

    (loss, stats), (g_lp, g_ent) = jax.jit(jax.value_and_grad(ours, argnums=(0, 1), has_aux=True))(lp, ent)
    want = _np_policy(lp, old, adv, mask, loss_type, **np_kwargs)
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    # Central differences on the real tokens; padding gets exactly 0.
    fill = lambda x: np.where(mask, x, np.inf)
    want_g = _central_diff(lambda x: _np_policy(np.where(mask, x, 0), old, adv, mask, loss_type, **np_kwargs), fill(lp))
    np.testing.assert_allclose(g_lp, want_g, rtol=1e-6, atol=1e-9)
    want_ge = _central_diff(
        lambda e: _np_policy(lp, old, adv, mask, loss_type, **(np_kwargs | {"ent": e})), fill(ent)
    )
    np.testing.assert_allclose(g_ent, want_ge, rtol=1e-6, atol=1e-9)
    # Statistics: masked token means.
    a = np.broadcast_to(adv[:, None] if adv.ndim == 1 else adv, lp.shape)
    lr = np.where(mask, lp - old, 0.0)
    r = np.exp(lr.sum(1) / mask.sum(1))[:, None] * np.ones_like(lp) if loss_type == "gspo" else np.exp(lr)
    eps_lo = np_kwargs["eps_lo"]
    eps_hi = eps_lo if np_kwargs["eps_hi"] is None else np_kwargs["eps_hi"]
    np.testing.assert_allclose(stats.ratio, r[mask].mean(), rtol=1e-12)
    np.testing.assert_allclose(stats.clipped_low, ((r < 1 - eps_lo) & (a < 0))[mask].mean())
    np.testing.assert_allclose(stats.clipped_high, ((r > 1 + eps_hi) & (a > 0))[mask].mean())
    d = (ref - lp)[mask]
    kl = {"k1": -d, "k2": 0.5 * d**2, "k3": np.exp(d) - d - 1}[np_kwargs["estimator"]]
    np.testing.assert_allclose(stats.kl, kl.mean(), rtol=1e-12)
    np.testing.assert_allclose(stats.entropy, ent[mask].mean(), rtol=1e-12)


def test_gspo_token_gradient_with_per_token_advantages(x64):
    # GSPO-token: d/d lp_t of -min(s A_t, clip(s) A_t) with s_t = sg[s] pi_t / sg[pi_t] is
    # -A_t s (unclipped branch) per token, averaged over the sequence's tokens and the sequences.
    lp, old, adv, _, _, mask = _policy_inputs(11, True)
    g = jax.jit(jax.grad(lambda x: jaxkl.policy_loss(x, old, adv, where=mask, loss_type="gspo", clip_eps=10.0)[0]))(lp)
    n_i = mask.sum(1)
    s = np.exp(np.where(mask, lp - old, 0).sum(1) / n_i)[:, None]
    want = np.where(mask, -adv * s / n_i[:, None] / lp.shape[0], 0.0)
    np.testing.assert_allclose(g, want, rtol=1e-12)


def test_policy_loss_rejects_bad_arguments():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="advantages.shape"):
        jaxkl.policy_loss(x, x, jnp.zeros(3))
    with pytest.raises(ValueError, match="loss_type"):
        jaxkl.policy_loss(x, x, jnp.zeros(2), loss_type="ppo2")
    with pytest.raises(ValueError, match="ref_logprobs"):
        jaxkl.policy_loss(x, x, jnp.zeros(2), kl_coef=0.1)
    with pytest.raises(ValueError, match="old_logprobs.shape"):
        jaxkl.policy_loss(x, x[:1], jnp.zeros(2))


# ------------------------------------------------------------------ preference_loss


def _np_log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


def _np_preference(c, r, rc, rr, beta, loss_type, eps=0.0, gamma=0.0):
    if loss_type == "simpo":  # Meng et al. eq. (6), with conservative smoothing as in TRL
        z = beta * (c - r) - gamma
        return -(1 - eps) * _np_log_sigmoid(z) - eps * _np_log_sigmoid(-z)
    delta = (c - rc) - (r - rr)
    if loss_type == "sigmoid":  # Rafailov et al. eq. (7); Mitchell's conservative DPO
        return -(1 - eps) * _np_log_sigmoid(beta * delta) - eps * _np_log_sigmoid(-beta * delta)
    if loss_type == "ipo":  # Azar et al. eq. (17)
        return (delta - 1 / (2 * beta)) ** 2
    return np.maximum(0.0, 1 - beta * delta)  # SLiC hinge


@pytest.mark.parametrize(
    "loss_type, beta, eps, gamma",
    [("sigmoid", 0.1, 0.0, 0.0), ("sigmoid", 0.5, 0.2, 0.0), ("ipo", 0.3, 0.0, 0.0),
     ("hinge", 0.7, 0.0, 0.0), ("simpo", 2.0, 0.1, 0.5)],
)
def test_preference_loss_matches_the_published_formula(x64, loss_type, beta, eps, gamma):
    rng = np.random.default_rng(7)
    c, r = rng.normal(-20, 5, size=6), rng.normal(-20, 5, size=6)
    rc, rr = (None, None) if loss_type == "simpo" else (c + rng.normal(size=6), r + rng.normal(size=6))
    kwargs = dict(beta=beta, loss_type=loss_type, label_smoothing=eps, gamma=gamma)
    ours = lambda c, r: jaxkl.preference_loss(c, r, rc, rr, **kwargs)
    value, (gc, gr) = jax.jit(jax.value_and_grad(ours, argnums=(0, 1)))(c, r)
    per = _np_preference(c, r, rc, rr, beta, loss_type, eps, gamma)
    np.testing.assert_allclose(value, per.mean(), rtol=1e-12)
    np.testing.assert_allclose(jaxkl.preference_loss(c, r, rc, rr, reduction="none", **kwargs), per, rtol=1e-12)
    ref = lambda which: lambda x: np.mean(
        _np_preference(x if which == 0 else c, x if which == 1 else r, rc, rr, beta, loss_type, eps, gamma)
    )
    np.testing.assert_allclose(gc, _central_diff(ref(0), c), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(gr, _central_diff(ref(1), r), rtol=1e-6, atol=1e-9)


def test_preference_loss_large_margins_and_bad_arguments():
    c, r = jnp.array([0.0, -1e4]), jnp.array([-1e4, 0.0])
    z = jnp.zeros(2)
    loss = jaxkl.preference_loss(c, r, z, z, beta=1.0, reduction="none")
    np.testing.assert_allclose(loss, [0.0, 1e4])  # no overflow in log sigmoid
    assert np.all(np.isfinite(jax.grad(lambda c: jaxkl.preference_loss(c, r, z, z, beta=1.0))(c)))
    with pytest.raises(ValueError, match="needs ref"):
        jaxkl.preference_loss(c, r)
    with pytest.raises(ValueError, match="simpo"):
        jaxkl.preference_loss(c, r, z, z, loss_type="simpo")
    with pytest.raises(ValueError, match="gamma"):
        jaxkl.preference_loss(c, r, z, z, gamma=1.0)


def test_token_logprobs_options_reject_bad_values_by_name():
    x, y = jnp.zeros((2, 3)), jnp.array([0, 1])
    h, w = jnp.zeros((2, 4)), jnp.zeros((4, 3))
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="softcap"):
            jaxkl.token_logprobs(x, y, softcap=bad)
        with pytest.raises(ValueError, match="softcap"):
            jaxkl.fused_linear_token_logprobs(h, w, y, softcap=bad)
    with pytest.raises(ValueError, match="vocab_chunk_size"):
        jaxkl.fused_linear_token_logprobs(h, w, y, vocab_chunk_size=0)
    with pytest.raises(TypeError, match="axis_name"):
        jaxkl.token_logprobs(x, y, axis_name=["classes"])


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "gspo"])
def test_policy_loss_of_an_empty_batch_is_zero(loss_type):
    empty = jnp.zeros((0, 3))
    loss, stats = jaxkl.policy_loss(empty, empty, jnp.zeros((0,)), loss_type=loss_type)
    g = jax.grad(lambda x: jaxkl.policy_loss(x, empty, jnp.zeros((0,)), loss_type=loss_type)[0])(empty)
    assert float(loss) == 0.0 and g.shape == (0, 3)
    assert float(stats.ratio) == 0.0  # no real token: the means are 0, as reduce's "mean"
