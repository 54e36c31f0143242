"""Logits kernels against float64 NumPy references, their properties and their derivatives."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads

import jaxkl
from tests import reference as ref

KERNELS = {
    "entropy": (
        lambda a, b, **kw: jaxkl.entropy_from_logits(a, **kw),
        lambda a, b, axis=-1: ref.entropy(ref.softmax(a, axis), axis),
    ),
    "cross_entropy": (
        lambda a, b, **kw: jaxkl.cross_entropy_from_logits(
            jaxkl.softmax(a, axis=kw.get("axis", -1), where=kw.get("where")), b, **kw
        ),
        lambda a, b, axis=-1: ref.cross_entropy(ref.softmax(a, axis), ref.softmax(b, axis), axis),
    ),
    "kl": (
        jaxkl.kl_divergence_from_logits,
        lambda a, b, axis=-1: ref.kl(ref.softmax(a, axis), ref.softmax(b, axis), axis),
    ),
    "js": (
        jaxkl.js_divergence_from_logits,
        lambda a, b, axis=-1: ref.js(ref.softmax(a, axis), ref.softmax(b, axis), 0.5, axis),
    ),
}


def _pair(seed, shape=(4, 9), scale=3.0):
    rng = np.random.default_rng(seed)
    return ref.random_logits(rng, shape, scale), ref.random_logits(rng, shape, scale)


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("axis", [0, -1])
def test_matches_reference(name, axis):
    ours, theirs = KERNELS[name]
    a, b = _pair(0, (5, 6, 7))
    got = jax.jit(lambda a, b: ours(a, b, axis=axis))(a, b)
    np.testing.assert_allclose(got, theirs(a, b, axis), rtol=1e-5, atol=1e-6)
    assert got.shape == np.sum(a, axis=axis).shape


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_axis_equals_moveaxis(name):
    ours = KERNELS[name][0]
    a, b = map(jnp.asarray, _pair(1, (3, 8, 2)))
    along_1, moved = jax.jit(lambda a, b: (ours(a, b, axis=1), ours(jnp.moveaxis(a, 1, -1), jnp.moveaxis(b, 1, -1))))(a, b)
    np.testing.assert_allclose(along_1, moved, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_where_equals_filtering(name):
    ours, theirs = KERNELS[name]
    a, b = _pair(2, (1, 8))
    keep = np.array([True, True, False, True, False, True, True, True])
    got = jax.jit(lambda a, b, keep: ours(a, b, where=keep))(a, b, keep)
    np.testing.assert_allclose(got, theirs(a[:, keep], b[:, keep]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_base_converts_units(name):
    ours = KERNELS[name][0]
    a, b = map(jnp.asarray, _pair(3))
    nats, bits, digits = jax.jit(lambda a, b: (ours(a, b), ours(a, b, base=2), ours(a, b, base=10)))(a, b)
    np.testing.assert_allclose(bits, nats / math.log(2), rtol=1e-6)
    np.testing.assert_allclose(digits, nats / math.log(10), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_log_probabilities_are_accepted_unchanged(name):
    ours = KERNELS[name][0]
    a, b = map(jnp.asarray, _pair(4))
    from_log_probs, from_logits = jax.jit(lambda a, b: (ours(jaxkl.log_softmax(a), jaxkl.log_softmax(b)), ours(a, b)))(a, b)
    np.testing.assert_allclose(from_log_probs, from_logits, rtol=1e-5, atol=1e-6)


# Every kernel on the same inputs in one compiled program (the examples below call it many times).
all_kernels = jax.jit(lambda a, b: {name: ours(a, b) for name, (ours, _) in KERNELS.items()})


@given(st.integers(0, 2**31 - 1), st.sampled_from([1.0, -7.5, 1e3]))
def test_per_row_shift_invariance(seed, shift):
    a, b = _pair(seed, (3, 6))
    shifts = shift * np.array([[1.0], [0.0], [-2.0]], np.float32)
    moved = all_kernels(jnp.asarray(a + shifts), jnp.asarray(b - shifts))
    unmoved = all_kernels(jnp.asarray(a), jnp.asarray(b))
    for name in KERNELS:
        # Adding c to logits rounds them by ~eps * |c|; the values move no more than that.
        np.testing.assert_allclose(moved[name], unmoved[name], atol=2e-6 * (1 + abs(shift)), err_msg=name)


@given(st.integers(0, 2**31 - 1))
def test_kl_is_cross_entropy_minus_entropy(seed):
    a, b = map(jnp.asarray, _pair(seed))
    p = jaxkl.softmax(a)
    kl = jaxkl.kl_divergence_from_logits(a, b)
    np.testing.assert_allclose(
        kl, jaxkl.cross_entropy_from_logits(p, b) - jaxkl.entropy_from_logits(a), atol=2e-5
    )


@given(st.integers(0, 2**31 - 1))
def test_js_is_symmetric_at_one_half_and_beta_swaps_otherwise(seed):
    a, b = map(jnp.asarray, _pair(seed))
    np.testing.assert_allclose(
        jaxkl.js_divergence_from_logits(a, b), jaxkl.js_divergence_from_logits(b, a), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        jaxkl.js_divergence_from_logits(a, b, beta=0.2),
        jaxkl.js_divergence_from_logits(b, a, beta=0.8),
        rtol=1e-5,
        atol=1e-7,
    )


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.7, 1.0])
def test_generalized_js_matches_reference(beta):
    a, b = _pair(5)
    got = jaxkl.js_divergence_from_logits(jnp.asarray(a), jnp.asarray(b), beta=beta)
    np.testing.assert_allclose(got, ref.js(ref.softmax(a), ref.softmax(b), beta), rtol=1e-5, atol=1e-7)


def test_temperature_divides_both_logits():
    a, b = _pair(6)
    for t in (0.5, 4.0):
        np.testing.assert_allclose(
            jaxkl.kl_divergence_from_logits(jnp.asarray(a), jnp.asarray(b), temperature=t),
            ref.kl(ref.softmax(a / t), ref.softmax(b / t)),
            rtol=1e-5,
        )
        np.testing.assert_allclose(
            jaxkl.js_divergence_from_logits(jnp.asarray(a), jnp.asarray(b), temperature=t),
            ref.js(ref.softmax(a / t), ref.softmax(b / t)),
            rtol=1e-5,
        )


def test_traced_temperature_is_differentiated(x64):
    a, b = map(lambda x: jnp.asarray(x, jnp.float64), _pair(7))

    def f(t):
        return jnp.sum(jaxkl.kl_divergence_from_logits(a, b, temperature=t))

    t, h = 2.0, 1e-6
    jf = jax.jit(f)
    numeric = (jf(t + h) - jf(t - h)) / (2 * h)
    np.testing.assert_allclose(jax.jit(jax.grad(f))(t), numeric, rtol=1e-6)
    np.testing.assert_allclose(jf(t), f(t), rtol=1e-12)


def test_analytic_gradients(derivative_rule):
    a, b = _pair(8)
    p, q = ref.softmax(a), ref.softmax(b)
    kl = ref.kl(p, q)[:, None]
    target = ref.random_probs(np.random.default_rng(9), a.shape, zeros=True)
    # A -inf logit where the target is 0: 0 log 0 contributes nothing, d/dp is 0 there.
    b_inf = np.where(target == 0, -np.inf, b)
    ce_grad = jax.grad(lambda t, y: jnp.sum(jaxkl.cross_entropy_from_logits(t, y)), (0, 1))

    @jax.jit  # every gradient in one program
    def gradients(a, b, target, b_inf):
        kl_grads = jax.grad(lambda a, b: jnp.sum(jaxkl.kl_divergence_from_logits(a, b)), (0, 1))(a, b)
        entropy_grad = jax.grad(lambda a: jnp.sum(jaxkl.entropy_from_logits(a)))(a)
        return kl_grads, entropy_grad, ce_grad(target, b), ce_grad(target, b_inf)

    (ga, gb), ge, (gp, gy), (gp_inf, gy_inf) = gradients(a, b, target, b_inf)
    np.testing.assert_allclose(gb, q - p, atol=1e-6)
    np.testing.assert_allclose(ga, p * (np.log(p) - np.log(q) - kl), atol=1e-6)
    h = ref.entropy(p)[:, None]
    np.testing.assert_allclose(ge, -p * (np.log(p) + h), atol=1e-6)
    np.testing.assert_allclose(gy, target.sum(-1, keepdims=True) * q - target, atol=1e-6)
    np.testing.assert_allclose(gp, -np.log(q), rtol=1e-5)
    q_inf = ref.softmax(b_inf)
    gp, gy = gp_inf, gy_inf
    np.testing.assert_allclose(gy, target.sum(-1, keepdims=True) * q_inf - target, atol=1e-6)
    np.testing.assert_allclose(gp, np.where(target == 0, 0.0, -np.log(np.where(target == 0, 1.0, q_inf))), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_check_grads_second_order_float64(name, x64):
    ours = KERNELS[name][0]
    rng = np.random.default_rng(10)
    a, b = rng.standard_normal((2, 5)), rng.standard_normal((2, 5))
    keep = jnp.array([True, False, True, True, True])
    f = jax.jit(lambda a, b: ours(a, b, where=keep))
    # Forward mode to first order, reverse mode to second (reverse over reverse): the other
    # pairings of modes repeat the same rules and doubled this test's time.
    check_grads(f, (a, b), order=1, modes=("fwd",))
    check_grads(f, (a, b), order=2, modes=("rev",))


def test_check_grads_with_temperature_and_beta(x64):
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    check_grads(jax.jit(lambda a, b: jaxkl.js_divergence_from_logits(a, b, beta=0.3, temperature=2.0)), (a, b), order=2, modes=("rev",))
    check_grads(jax.jit(lambda a, b: jaxkl.kl_divergence_from_logits(a, b, temperature=0.5, axis=0)), (a, b), order=2, modes=("rev",))


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_transformations_agree_with_eager(name):
    ours = KERNELS[name][0]
    a, b = map(jnp.asarray, _pair(12, (3, 6)))
    eager = ours(a, b)
    row = lambda a, b: ours(a[0], b[0])  # noqa: E731

    @jax.jit  # every transformation in one compiled program
    def transformed(a, b):
        return {
            "jit": ours(a, b),
            "vmap": jax.vmap(ours)(a, b),
            "rev": jax.jacrev(row, argnums=(0, 1))(a, b),
            "fwd": jax.jacfwd(row, argnums=(0, 1))(a, b),
            "checkpoint": jax.grad(lambda a, b: jnp.sum(jax.checkpoint(ours)(a, b)), (0, 1))(a, b),
            "grad": jax.grad(lambda a, b: jnp.sum(ours(a, b)), (0, 1))(a, b),
            "hessian": jax.hessian(lambda a: ours(a, b[0]))(a[0]),
        }

    out = transformed(a, b)
    np.testing.assert_allclose(out["jit"], eager, rtol=1e-6)
    np.testing.assert_allclose(out["vmap"], eager, rtol=1e-6)
    for r, f in zip(out["rev"], out["fwd"]):
        np.testing.assert_allclose(r, f, rtol=1e-5, atol=1e-7)
    for x, y in zip(out["checkpoint"], out["grad"]):
        np.testing.assert_allclose(x, y, rtol=1e-6)
    hess = out["hessian"]
    np.testing.assert_allclose(hess, hess.T, rtol=1e-4, atol=1e-6)


def test_kl_hessian_at_equal_logits_is_the_fisher_information():
    b = jnp.array([0.2, -0.4, 1.0])
    q = ref.softmax(np.asarray(b))
    fisher = np.diag(q) - np.outer(q, q)
    hessian = jax.jit(jax.hessian(lambda a: jaxkl.kl_divergence_from_logits(a, b)))(b)
    np.testing.assert_allclose(hessian, fisher, atol=1e-6)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_bfloat16_in_bfloat16_out_within_rounding(name):
    ours = KERNELS[name][0]
    a, b = _pair(13, (4, 512))
    a16, b16 = jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16)

    @jax.jit  # one program: the bfloat16 value, its float32 reference and the bfloat16 gradients
    def run(a16, b16):
        grads = jax.grad(lambda a, b: jnp.sum(ours(a, b).astype(jnp.float32)), (0, 1))(a16, b16)
        return ours(a16, b16), ours(a16.astype(jnp.float32), b16.astype(jnp.float32)), grads

    out, exact, grads = run(a16, b16)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), exact, rtol=2 ** -7, atol=1e-3)
    assert all(g.dtype == jnp.bfloat16 and np.isfinite(np.asarray(g, np.float32)).all() for g in grads)


def test_mixed_precision_inputs_promote_explicitly():
    a, b = _pair(14)
    out = jaxkl.kl_divergence_from_logits(jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.float32))
    assert out.dtype == jnp.float32
