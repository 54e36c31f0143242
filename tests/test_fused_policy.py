"""fused_linear_policy_loss against the published formula on materialised float64 logits (NumPy).

The reference forms the logits `h @ W + b` in NumPy, takes each sampled
token's log-probability and entropy, and aggregates the clipped surrogate, the
KL penalty and the entropy bonus as `tests/test_rl.py`'s `_np_policy` does;
gradients wrt hidden, head and bias are central differences of it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import jaxkl
from tests.test_rl import _central_diff, _np_policy, _np_token

B, T, D, V = 3, 4, 5, 11


def _inputs(seed, adv_per_token=False):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(B, T, D))
    w = rng.normal(size=(D, V)) * 0.7
    b = rng.normal(size=(V,))
    mask = np.ones((B, T), bool)
    mask[0, 2:] = False
    mask[2, 1:] = False
    tokens = rng.integers(0, V, size=(B, T))
    tokens[~mask] = -1  # padding may hold a token outside [0, V)
    lp, _ = _np_token(h @ w + b, tokens.clip(0))
    old = lp + rng.normal(scale=0.3, size=(B, T))
    ref = lp + rng.normal(scale=0.3, size=(B, T))
    old[~mask] = np.nan  # and any old log-prob
    adv = rng.normal(size=(B, T) if adv_per_token else (B,))
    return h, w, b, tokens, old, ref, adv, mask


def _np_fused(h, w, b, tokens, old, adv, mask, loss_type, temperature=1.0, softcap=None, **kw):
    """The policy loss of the materialised head's log-probs and entropies, float64."""
    lp, ent = _np_token(np.reshape(h, (B, T, D)) @ w + b, tokens.clip(0), temperature, softcap=softcap)
    return _np_policy(np.where(mask, lp, 0.0), old, adv, mask, loss_type, ent=ent, **kw)


CASES = [
    # (loss_type, advantages per token, options); vocab_chunk_size tiles the classes
    ("grpo", False, dict(kl_coef=0.04, kl_estimator="k3", entropy_coef=0.01, temperature=0.7)),
    ("bnpo", True, dict(kl_coef=0.1, kl_estimator="k2", softcap=3.0)),
    ("dapo", False, dict(clip_eps_high=0.28, kl_coef=0.1, kl_estimator="k1", entropy_coef=0.05)),
    ("dr_grpo", True, dict(max_tokens=6, entropy_coef=0.1)),
    ("gspo", False, dict(clip_eps=0.05, kl_coef=0.1, entropy_coef=0.02)),
    ("grpo", True, dict(kl_coef=0.04, entropy_coef=0.01, vocab_chunk_size=4)),
]


@pytest.mark.parametrize("loss_type, adv_per_token, options", CASES)
def test_fused_policy_loss_matches_the_published_formula(x64, loss_type, adv_per_token, options):
    h, w, b, tokens, old, ref, adv, mask = _inputs(sum(map(ord, loss_type)) + adv_per_token, adv_per_token)
    options = dict(options)
    temperature, softcap = options.pop("temperature", 1.0), options.pop("softcap", None)
    vocab_chunk_size = options.pop("vocab_chunk_size", None)

    def ours(h, w, b):
        return jaxkl.fused_linear_policy_loss(
            h, w, tokens, old, adv, head_bias=b, where=mask, loss_type=loss_type, ref_logprobs=ref,
            temperature=temperature, softcap=softcap, chunk_size=5, vocab_chunk_size=vocab_chunk_size, **options,
        )

    np_kw = dict(
        eps_lo=options.get("clip_eps", 0.2), eps_hi=options.get("clip_eps_high"), ref=ref,
        kl_coef=options.get("kl_coef", 0.0), estimator=options.get("kl_estimator", "k3"),
        ent_coef=options.get("entropy_coef", 0.0), max_tokens=options.get("max_tokens"),
        temperature=temperature, softcap=softcap,
    )
    (loss, stats), grads = jax.jit(jax.value_and_grad(ours, (0, 1, 2), has_aux=True))(h, w, b)
    arrays = (h, w, b)

    def reference(i):
        def f(x):
            args = list(arrays)
            args[i] = x
            return _np_fused(*args, tokens, old, adv, mask, loss_type, **np_kw)

        return f

    np.testing.assert_allclose(loss, reference(0)(h), rtol=1e-10)
    for i, (g, x) in enumerate(zip(grads, arrays)):
        np.testing.assert_allclose(g, _central_diff(reference(i), x), rtol=1e-6, atol=1e-9, err_msg=f"argument {i}")
    # Statistics: means over the real tokens of the reference's ratio and KL estimate.
    lp, ent = _np_token(h @ w + b, tokens.clip(0), temperature, softcap=softcap)
    lr = np.where(mask, lp - old, 0.0)
    r = np.exp(lr.sum(1) / mask.sum(1))[:, None] * np.ones((B, T)) if loss_type == "gspo" else np.exp(lr)
    np.testing.assert_allclose(stats.ratio, r[mask].mean(), rtol=1e-10)
    d = (ref - lp)[mask]
    kl = {"k1": -d, "k2": 0.5 * d**2, "k3": np.exp(d) - d - 1}[np_kw["estimator"]]
    np.testing.assert_allclose(stats.kl, kl.mean(), rtol=1e-10)
    want_entropy = ent[mask].mean() if np_kw["ent_coef"] else 0.0  # computed only for the bonus
    np.testing.assert_allclose(stats.entropy, want_entropy, rtol=1e-10)


def _dots(f, *args):
    """Matrix products in the optimised program of `value_and_grad(f)`, loop bodies included."""
    hlo = jax.jit(jax.value_and_grad(f, (0, 1), has_aux=True)).lower(*args).compile().as_text()
    return hlo.count(" dot(")


def test_per_token_loss_types_take_three_matmuls_and_gspo_four():
    h, w, _, tokens, old, _, adv, mask = _inputs(0)
    h, w = h.astype(np.float32), w.astype(np.float32)
    # Two chunks, so that the per-chunk products live in a loop body each; with
    # chunk_size >= D the head's gradient is updated in one product per chunk.
    for loss_type, dots in (("grpo", 3), ("dapo", 3), ("gspo", 4)):
        f = lambda h, w: jaxkl.fused_linear_policy_loss(
            h, w, tokens, old, adv, where=mask, loss_type=loss_type, chunk_size=6, entropy_coef=0.01
        )
        assert _dots(f, h, w) == dots, loss_type


def test_fused_policy_loss_keeps_no_tokens_x_vocabulary_temporary():
    b, t, d, v = 64, 32, 64, 8192
    n = b * t
    args = (
        jax.ShapeDtypeStruct((b, t, d), jnp.float32),
        jax.ShapeDtypeStruct((d, v), jnp.float32),
        jax.ShapeDtypeStruct((b, t), jnp.int32),
        jax.ShapeDtypeStruct((b, t), jnp.float32),
        jax.ShapeDtypeStruct((b,), jnp.float32),
    )
    f = lambda h, w, y, old, adv: jaxkl.fused_linear_policy_loss(h, w, y, old, adv, chunk_size=32, entropy_coef=0.01)[0]
    compiled = jax.jit(jax.value_and_grad(f, argnums=(0, 1))).lower(*args).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < 0.1 * n * v * 4


def test_bf16_head_gives_a_float32_loss_close_to_float32(head_matmuls):
    h, w, b, tokens, old, ref, adv, mask = _inputs(5)
    kw = dict(where=mask, ref_logprobs=ref, kl_coef=0.1, entropy_coef=0.01, chunk_size=4)
    to = lambda x, dt: jnp.asarray(x, dt)
    f = lambda h, w: jaxkl.fused_linear_policy_loss(h, w, tokens, to(old, jnp.float32), to(adv, jnp.float32), **kw)[0]
    h16, w16 = to(h, jnp.bfloat16), to(w, jnp.bfloat16)
    loss16, (gh16, gw16) = jax.jit(jax.value_and_grad(f, (0, 1)))(h16, w16)
    # float32 on the same (rounded) inputs
    loss32, (gh32, gw32) = jax.jit(jax.value_and_grad(f, (0, 1)))(to(h16, jnp.float32), to(w16, jnp.float32))
    assert loss16.dtype == jnp.float32 and gh16.dtype == jnp.bfloat16
    np.testing.assert_allclose(loss16, loss32, rtol=2e-2, atol=2e-3)
    for g16, g32 in ((gh16, gh32), (gw16, gw32)):
        scale = np.max(np.abs(np.asarray(g32)))
        assert np.max(np.abs(np.asarray(g16, np.float32) - g32)) < 0.05 * scale


@pytest.mark.parametrize("loss_type", ["grpo", "gspo"])
def test_sharded_head_equals_unsharded(loss_type):
    shards = 8
    mesh = jax.make_mesh((shards,), ("classes",), axis_types=(AxisType.Auto,))
    rng = np.random.default_rng(7)
    h = rng.normal(size=(2, 3, D)).astype(np.float32)
    w = rng.normal(size=(D, 16)).astype(np.float32)
    b = rng.normal(size=(16,)).astype(np.float32)
    tokens = np.array([[0, 15, 4], [11, 7, 12]])
    old = np.full((2, 3), -2.5, np.float32)
    ref = np.full((2, 3), -2.7, np.float32)
    kw = dict(loss_type=loss_type, ref_logprobs=ref, kl_coef=0.1, entropy_coef=0.02, softcap=3.0, chunk_size=4)
    adv = np.array([1.0, -0.5], np.float32)

    def loss(axis_name):
        return lambda h, w, b: jaxkl.fused_linear_policy_loss(h, w, tokens, old, adv, head_bias=b, axis_name=axis_name, **kw)

    def sharded(h, w, b):
        specs = (P(), P(None, "classes"), P("classes"))
        return jax.shard_map(loss("classes"), mesh=mesh, in_specs=specs, out_specs=P())(h, w, b)

    step = jax.jit(jax.value_and_grad(sharded, (0, 1, 2), has_aux=True))
    (got, got_stats), got_grads = step(h, w, b)
    (want, want_stats), want_grads = jax.jit(jax.value_and_grad(loss(None), (0, 1, 2), has_aux=True))(h, w, b)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, r in zip(got_stats + got_grads, want_stats + want_grads):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    assert "all-gather" not in step.lower(h, w, b).compile().as_text()


def test_bad_arguments_name_themselves():
    h, w, _, tokens, old, ref, adv, mask = _inputs(1)
    call = lambda **kw: jaxkl.fused_linear_policy_loss(**(dict(hidden=h, head_weight=w, tokens=tokens,
                                                              old_logprobs=old, advantages=adv) | kw))
    with pytest.raises(ValueError, match=r"hidden must be \[B, T, D\]"):
        call(hidden=h.reshape(B * T, D))
    with pytest.raises(ValueError, match="tokens"):
        call(tokens=tokens[:, :2])
    with pytest.raises(ValueError, match="old_logprobs"):
        call(old_logprobs=old[:, :2])
    with pytest.raises(ValueError, match="advantages"):
        call(advantages=adv[:2])
    with pytest.raises(ValueError, match="kl_coef > 0 needs ref_logprobs"):
        call(kl_coef=0.1)
    with pytest.raises(ValueError, match="loss_type"):
        call(loss_type="ppo2")
    with pytest.raises(ValueError, match="temperature"):
        call(temperature=0.0)
    with pytest.raises(ValueError, match="head_weight"):
        call(head_weight=w[:2])
