"""The numerics contract of DESIGN.md, one test per row.

Expected values come from closed forms or float64 NumPy references, never from jaxkl.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxkl
from tests import reference as ref

NINF = -np.inf
LOGIT_KERNELS = {
    "entropy_from_logits": lambda a, b: jaxkl.entropy_from_logits(a),
    "cross_entropy_from_logits": lambda a, b: jaxkl.cross_entropy_from_logits(jaxkl.softmax(a), b),
    "kl_divergence_from_logits": jaxkl.kl_divergence_from_logits,
    "js_divergence_from_logits": jaxkl.js_divergence_from_logits,
    "logsumexp": lambda a, b: jaxkl.logsumexp(a) + jaxkl.logsumexp(b),
}
PROB_KERNELS = {
    "entropy": lambda p, q: jaxkl.entropy(p),
    "cross_entropy": jaxkl.cross_entropy,
    "kl_divergence": jaxkl.kl_divergence,
    "js_divergence": jaxkl.js_divergence,
}


def grads(f, *args):
    return jax.grad(lambda *a: jnp.sum(f(*a)), argnums=tuple(range(len(args))))(*args)


def test_kl_identical_with_a_zero_is_zero_with_zero_gradient_at_the_zero():
    p = jnp.array([0.5, 0.5, 0.0])
    assert jaxkl.kl_divergence(p, p) == 0.0
    gp, gq = grads(jaxkl.kl_divergence, p, p)
    assert np.isfinite(gp).all() and np.isfinite(gq).all()
    assert gp[2] == 0.0 and gq[2] == 0.0


def test_kl_with_q_zero_under_p_mass_is_inf_not_nan():
    p, q = jnp.array([0.3, 0.3, 0.4]), jnp.array([0.5, 0.5, 0.0])
    assert jaxkl.kl_divergence(p, q) == np.inf
    gp, _ = grads(jaxkl.kl_divergence, p, q)
    assert not np.isnan(gp).any()


def test_kl_with_a_zero_target_is_finite_and_its_gradient_never_nan():
    p, q = jnp.array([0.0, 0.25, 0.75]), jnp.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(jaxkl.kl_divergence(p, q), ref.kl(p, q), rtol=1e-6)
    gp, gq = grads(jaxkl.kl_divergence, p, q)
    assert np.isfinite(gp).all() and np.isfinite(gq).all()
    assert gp[0] == 0.0  # documented: 0 log 0 has zero gradient


def test_kl_logits_both_neg_inf_contribute_zero_with_zero_gradient():
    a, b = jnp.array([1.0, NINF, 0.5]), jnp.array([0.2, NINF, -1.0])
    expected = ref.kl(ref.softmax([1.0, 0.5]), ref.softmax([0.2, -1.0]))
    np.testing.assert_allclose(jaxkl.kl_divergence_from_logits(a, b), expected, rtol=1e-5)
    ga, gb = grads(jaxkl.kl_divergence_from_logits, a, b)
    assert ga[1] == 0.0 and gb[1] == 0.0
    assert np.isfinite(ga).all() and np.isfinite(gb).all()


def test_kl_logits_p_neg_inf_contributes_zero_and_q_gradient_is_softmax_q():
    a, b = jnp.array([1.0, NINF, 0.5]), jnp.array([0.2, 0.7, -1.0])
    expected = ref.kl(ref.softmax(a), ref.softmax(b))
    np.testing.assert_allclose(jaxkl.kl_divergence_from_logits(a, b), expected, rtol=1e-5)
    _, gb = grads(jaxkl.kl_divergence_from_logits, a, b)
    np.testing.assert_allclose(gb[1], ref.softmax(b)[1], rtol=1e-6)


def test_kl_logits_q_neg_inf_under_p_mass_is_inf_with_documented_gradient():
    a, b = jnp.array([1.0, 0.0, 0.5]), jnp.array([0.2, NINF, -1.0])
    assert jaxkl.kl_divergence_from_logits(a, b) == np.inf
    ga, gb = grads(jaxkl.kl_divergence_from_logits, a, b)
    np.testing.assert_array_equal(ga, 0.0)  # +inf on a neighbourhood: locally constant
    np.testing.assert_allclose(gb, ref.softmax(b) - ref.softmax(a), atol=1e-6)


def test_logsumexp_of_all_neg_inf_is_neg_inf_with_zero_gradient():
    x = jnp.array([NINF, NINF])
    assert jaxkl.logsumexp(x) == -np.inf
    np.testing.assert_array_equal(jax.grad(jaxkl.logsumexp)(x), 0.0)


def test_softmax_masked_huge_logit_gets_zero_gradient():
    x = jnp.array([36.0, 1e4])
    jac = jax.jacrev(lambda x: jaxkl.softmax(x, where=x < 1000))(x)
    assert not np.isnan(jac).any()
    np.testing.assert_array_equal(jac[:, 1], 0.0)
    np.testing.assert_array_equal(jaxkl.softmax(x, where=x < 1000), [1.0, 0.0])


@pytest.mark.parametrize("shift", [0.0, 1e2, 1e4, 1e5])
def test_cross_entropy_is_shift_invariant(shift):
    logits = jnp.array([1.0, 2.0, 3.0], jnp.float32) + shift  # exact in float32
    target = jnp.array([1.0, 0.0, 0.0])
    expected = np.log(np.exp(1.0) + np.exp(2.0) + np.exp(3.0)) - 1.0  # 2.40760596
    np.testing.assert_allclose(jaxkl.cross_entropy_from_logits(target, logits), expected, rtol=2e-7)
    grad = jax.grad(jaxkl.cross_entropy_from_logits, argnums=1)(target, logits)
    np.testing.assert_allclose(grad, ref.softmax([1.0, 2.0, 3.0]) - np.array(target), atol=1e-7)


def test_kl_logits_float32_stays_finite_where_probabilities_underflow():
    a, b = jnp.zeros(2, jnp.float32), jnp.array([0.0, -103.0], jnp.float32)
    expected = 103.0 / 2 - math.log(2.0)  # 0.5 * (-log 2) + 0.5 * (103 - log 2)
    np.testing.assert_allclose(jaxkl.kl_divergence_from_logits(a, b), expected, rtol=1e-6)
    assert all(np.isfinite(g).all() for g in grads(jaxkl.kl_divergence_from_logits, a, b))


def test_kl_of_identical_logits_is_exactly_zero_with_exactly_zero_gradient():
    a = jnp.asarray(ref.random_logits(np.random.default_rng(0), (4, 37)))
    assert (jaxkl.kl_divergence_from_logits(a, a) == 0.0).all()
    ga, gb = grads(jaxkl.kl_divergence_from_logits, a, a)
    assert (ga == 0.0).all() and (gb == 0.0).all()


def test_js_of_disjoint_distributions_is_log2_with_finite_gradient():
    p, q = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    np.testing.assert_allclose(jaxkl.js_divergence(p, q), math.log(2.0), rtol=1e-7)
    assert all(np.isfinite(g).all() for g in grads(jaxkl.js_divergence, p, q))
    a, b = jnp.log(p), jnp.log(q)
    np.testing.assert_allclose(jaxkl.js_divergence_from_logits(a, b), math.log(2.0), rtol=1e-7)
    assert all(np.isfinite(g).all() for g in grads(jaxkl.js_divergence_from_logits, a, b))


def test_entropy_of_a_point_mass_from_logits_is_zero_with_zero_gradient():
    x = jnp.array([0.0, NINF, NINF])
    assert jaxkl.entropy_from_logits(x) == 0.0
    np.testing.assert_array_equal(jax.grad(jaxkl.entropy_from_logits)(x), 0.0)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_many_equal_low_precision_logits(dtype):
    out = jaxkl.log_softmax(jnp.zeros(100_000, dtype))
    assert out.dtype == dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), -math.log(1e5), rtol=float(jnp.finfo(dtype).eps))
    x = jnp.asarray(np.random.default_rng(1).standard_normal(2**17), dtype)
    g = jax.grad(lambda x: jaxkl.log_softmax(x)[0].astype(jnp.float32))(x)
    assert not np.isnan(np.asarray(g, np.float32)).any()


@pytest.mark.parametrize("name", sorted(LOGIT_KERNELS))
def test_nan_logits_give_nan_value_and_gradient(name):
    f = LOGIT_KERNELS[name]
    a, b = jnp.array([0.1, np.nan, 0.3]), jnp.array([0.2, 0.5, -0.3])
    for args in [(a, b), (b, a)]:
        if name == "entropy_from_logits" and args[0] is b:
            continue  # entropy ignores its second argument
        assert np.isnan(f(*args))
        assert any(np.isnan(g).any() for g in grads(f, *args))


@pytest.mark.parametrize("name", sorted(PROB_KERNELS))
def test_nan_probabilities_give_nan_value_and_gradient(name):
    f = PROB_KERNELS[name]
    p, q = jnp.array([0.5, np.nan, 0.0]), jnp.array([0.2, 0.5, 0.3])
    for args in [(p, q), (q, p)]:
        if name == "entropy" and args[0] is q:
            continue
        assert np.isnan(f(*args))
        assert any(np.isnan(g).any() for g in grads(f, *args))


def test_nan_where_p_is_zero_still_propagates():
    p, q = jnp.array([0.0, 1.0]), jnp.array([np.nan, 1.0])
    assert np.isnan(jaxkl.kl_divergence(p, q))
    assert np.isnan(jaxkl.cross_entropy(p, q))


def test_empty_class_axis():
    empty = jnp.zeros((2, 0))
    np.testing.assert_array_equal(jaxkl.kl_divergence(empty, empty), [0.0, 0.0])
    np.testing.assert_array_equal(jaxkl.kl_divergence_from_logits(empty, empty), [0.0, 0.0])
    np.testing.assert_array_equal(jaxkl.entropy(empty), [0.0, 0.0])
    np.testing.assert_array_equal(jaxkl.entropy_from_logits(empty), [0.0, 0.0])
    np.testing.assert_array_equal(jaxkl.logsumexp(empty), [-np.inf, -np.inf])


@pytest.mark.parametrize("name", ["kl_divergence", "kl_divergence_from_logits", "js_divergence", "cross_entropy"])
def test_shapes_that_would_broadcast_are_refused(name):
    with pytest.raises(ValueError, match=r"\(3, 1\).*\(3,\)"):
        getattr(jaxkl, name)(jnp.ones((3, 1)), jnp.ones(3))


@jax.jit
def _all_divergences(a, b):
    p, q = jaxkl.softmax(a), jaxkl.softmax(b)
    kls = (jaxkl.kl_divergence_from_logits(a, b), jaxkl.kl_divergence(p, q))
    jss = (jaxkl.js_divergence_from_logits(a, b), jaxkl.js_divergence(p, q))
    return kls, jss


@given(st.sampled_from([1, 2, 3, 17]), st.integers(0, 2**31 - 1), st.floats(1e-3, 30.0))
def test_random_divergences_are_never_negative_and_js_is_bounded(k, seed, scale):
    rng = np.random.default_rng(seed)
    a = ref.random_logits(rng, (8, k), scale)
    b = np.where(rng.random((8, 1)) < 0.3, a, ref.random_logits(rng, (8, k), scale))  # some equal rows
    kls, jss = _all_divergences(jnp.asarray(a), jnp.asarray(b))
    for kl in kls:
        assert (np.asarray(kl) >= 0).all()
    for js in jss:
        assert ((np.asarray(js) >= 0) & (np.asarray(js) <= np.float32(math.log(2.0)))).all()


def test_cross_entropy_with_neg_inf_logit_on_an_unused_class_is_zero():
    # optax.softmax_cross_entropy returns NaN here.
    target, logits = jnp.array([0.0, 1.0]), jnp.array([NINF, 0.0])
    value, (gp, gy) = jax.value_and_grad(jaxkl.cross_entropy_from_logits, (0, 1))(target, logits)
    assert value == 0.0
    np.testing.assert_array_equal(gy, [0.0, 0.0])
    assert gp[1] == 0.0 and not np.isnan(gp).any()
