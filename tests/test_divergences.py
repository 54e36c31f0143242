"""Probability kernels against SciPy, properties and derivatives at the edges."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads
from scipy import special, stats

import jaxkl
from tests import reference as ref


def _probs(seed, shape=(4, 7), zeros=True):
    rng = np.random.default_rng(seed)
    return ref.random_probs(rng, shape, zeros), ref.random_probs(rng, shape, False)


@pytest.mark.parametrize("base", [None, 2, 10])
def test_entropy_matches_scipy_stats_entropy(base):
    p, _ = _probs(0)
    np.testing.assert_allclose(jaxkl.entropy(jnp.asarray(p), base=base), stats.entropy(p, base=base, axis=-1), rtol=1e-5)


@pytest.mark.parametrize("base", [None, 2])
def test_kl_matches_rel_entr_and_scipy_stats_entropy(base):
    p, q = _probs(1)
    got = jaxkl.kl_divergence(jnp.asarray(p), jnp.asarray(q), base=base)
    np.testing.assert_allclose(got, stats.entropy(p, q, base=base, axis=-1), rtol=1e-5)
    if base is None:
        np.testing.assert_allclose(got, special.rel_entr(p, q).sum(-1), rtol=1e-5)


def test_cross_entropy_and_js_match_references():
    p, q = _probs(2)
    np.testing.assert_allclose(jaxkl.cross_entropy(jnp.asarray(p), jnp.asarray(q)), ref.cross_entropy(p, q), rtol=1e-5)
    for beta in (0.5, 0.25):
        np.testing.assert_allclose(
            jaxkl.js_divergence(jnp.asarray(p), jnp.asarray(q), beta=beta), ref.js(p, q, beta), rtol=1e-5, atol=1e-7
        )
    # SciPy's jensenshannon is the square root of the divergence (base e by default).
    from scipy.spatial.distance import jensenshannon

    np.testing.assert_allclose(
        jnp.sqrt(jaxkl.js_divergence(jnp.asarray(p), jnp.asarray(q))), jensenshannon(p, q, axis=-1), rtol=1e-5
    )


@pytest.mark.parametrize("axis", [0, 1])
def test_axis_and_where(axis):
    p, q = _probs(3, (5, 6))
    got = jaxkl.kl_divergence(jnp.asarray(p), jnp.asarray(q), axis=axis)
    np.testing.assert_allclose(got, ref.kl(p, q, axis), rtol=1e-5)
    keep = np.array([True, False, True, True, False, True])
    masked = jaxkl.cross_entropy(jnp.asarray(p), jnp.asarray(q), where=jnp.asarray(keep))
    np.testing.assert_allclose(masked, ref.cross_entropy(p[:, keep], q[:, keep]), rtol=1e-5)


@given(st.integers(0, 2**31 - 1))
def test_properties(seed):
    p, q = map(jnp.asarray, _probs(seed))
    kl = jaxkl.kl_divergence(p, q)
    assert (np.asarray(kl) >= 0).all()
    np.testing.assert_array_equal(jaxkl.kl_divergence(p, p), 0.0)
    np.testing.assert_allclose(kl, jaxkl.cross_entropy(p, q) - jaxkl.entropy(p), atol=1e-5)
    js = jaxkl.js_divergence(p, q)
    np.testing.assert_allclose(js, jaxkl.js_divergence(q, p), rtol=1e-5, atol=1e-7)
    assert ((np.asarray(js) >= 0) & (np.asarray(js) <= np.float32(math.log(2)))).all()


def test_gradients_follow_the_formulas():
    p, q = _probs(4)
    gp, gq = jax.grad(lambda p, q: jnp.sum(jaxkl.kl_divergence(p, q)), (0, 1))(jnp.asarray(p), jnp.asarray(q))
    used = p > 0
    np.testing.assert_allclose(np.asarray(gp)[used], np.log(p[used] / q[used]) + 1, rtol=1e-5)
    assert (np.asarray(gp)[~used] == 0).all()
    np.testing.assert_allclose(gq, -p / q, rtol=1e-5)
    gp, gq = jax.grad(lambda p, q: jnp.sum(jaxkl.cross_entropy(p, q)), (0, 1))(jnp.asarray(p), jnp.asarray(q))
    np.testing.assert_allclose(gp, -np.log(q), rtol=1e-5)  # finite, also where p = 0
    np.testing.assert_allclose(gq, -p / q, rtol=1e-5)


def test_check_grads_second_order_float64(x64):
    # Interior points: finite differences must not step outside [0, 1].
    p, q = (0.5 * x.astype(np.float64) + 0.5 / x.shape[-1] for x in _probs(5, zeros=False))
    # Forward mode to first order, reverse mode to second (reverse over reverse). The four
    # functions are the four outputs of one program, compiled once per derivative: forward
    # mode compares each output's tangent, reverse mode draws a random cotangent per output.
    every = jax.jit(lambda p, q: (jaxkl.kl_divergence(p, q), jaxkl.cross_entropy(p, q),
                                  jaxkl.js_divergence(p, q), jaxkl.entropy(p)))
    check_grads(every, (p, q), order=1, modes=("fwd",))
    check_grads(every, (p, q), order=2, modes=("rev",))


def test_zero_targets_never_give_nan_gradients():
    p, q = jnp.array([0.0, 0.5, 0.5]), jnp.array([0.0, 0.2, 0.8])
    for f in (jaxkl.kl_divergence, jaxkl.cross_entropy, jaxkl.js_divergence):
        for g in jax.grad(lambda p, q: f(p, q), (0, 1))(p, q):
            assert not np.isnan(g).any(), f.__name__
    assert not np.isnan(jax.grad(jaxkl.entropy)(p)).any()
    hess = jax.jit(jax.hessian(jaxkl.kl_divergence))(p, q)
    assert not np.isnan(hess).any()


def test_negative_probabilities_are_not_clipped():
    assert np.isnan(jaxkl.kl_divergence(jnp.array([-0.1, 1.1]), jnp.array([0.5, 0.5])))
    assert np.isnan(jaxkl.entropy(jnp.array([-0.1, 1.1])))


def test_bfloat16_in_bfloat16_out():
    p, q = _probs(6, (3, 64))
    out = jaxkl.kl_divergence(jnp.asarray(p, jnp.bfloat16), jnp.asarray(q, jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), ref.kl(p, q), rtol=2**-6, atol=2e-3)


def test_transformations_agree_with_eager():
    p, q = map(jnp.asarray, _probs(7))
    for f in (jaxkl.kl_divergence, jaxkl.js_divergence, jaxkl.cross_entropy):
        np.testing.assert_allclose(jax.jit(f)(p, q), f(p, q), rtol=1e-6)
        np.testing.assert_allclose(jax.vmap(f)(p, q), f(p, q), rtol=1e-6)
        rev = jax.jit(jax.jacrev(f, argnums=1))(p[0], q[0])
        fwd = jax.jit(jax.jacfwd(f, argnums=1))(p[0], q[0])
        np.testing.assert_allclose(rev, fwd, rtol=1e-6)
