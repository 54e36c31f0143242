"""logsumexp, log_softmax and softmax against SciPy, with masks, axes and derivatives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.test_util import check_grads
from scipy import special

import jaxkl
from tests import reference as ref

PRIMITIVES = {
    "logsumexp": (jaxkl.logsumexp, lambda x, axis: special.logsumexp(x, axis=axis)),
    "log_softmax": (jaxkl.log_softmax, ref.log_softmax),
    "softmax": (jaxkl.softmax, ref.softmax),
}


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_matches_scipy(name, axis):
    ours, theirs = PRIMITIVES[name]
    x = ref.random_logits(np.random.default_rng(0), (3, 5, 4), scale=10.0)
    np.testing.assert_allclose(ours(jnp.asarray(x), axis), theirs(x, axis), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_where_equals_dropping_the_masked_classes(name):
    ours, theirs = PRIMITIVES[name]
    rng = np.random.default_rng(1)
    x = ref.random_logits(rng, (6,), scale=5.0)
    keep = np.array([True, False, True, True, False, True])
    got = np.asarray(ours(jnp.asarray(x), where=jnp.asarray(keep)))
    want = theirs(x[keep], -1)
    if name == "logsumexp":
        np.testing.assert_allclose(got, want, rtol=1e-6)
    else:
        np.testing.assert_allclose(got[keep], want, rtol=1e-6, atol=1e-7)
        assert (got[~keep] == (-np.inf if name == "log_softmax" else 0.0)).all()


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_masked_classes_get_zero_gradient_even_with_huge_logits(name):
    f = PRIMITIVES[name][0]
    x = jnp.array([[0.5, 3e4, -1.0], [2.0, 1.0, 1e30]])
    keep = jnp.array([[True, False, True], [True, True, False]])
    weights = jnp.asarray(np.random.default_rng(2).standard_normal((2, 3)), jnp.float32)

    def loss(x):
        y = f(x, where=keep)
        y = jnp.where(jnp.isfinite(y), y, 0.0)  # a masked log_softmax output is -inf
        return jnp.sum(y * (weights if y.ndim == 2 else weights[:, 0]))

    g = jax.grad(loss)(x)
    assert np.isfinite(g).all()
    assert (np.asarray(g)[~np.asarray(keep)] == 0).all()


def test_fully_masked_rows_give_neutral_values_and_zero_gradient():
    x = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    keep = jnp.array([[True, True], [False, False]])
    np.testing.assert_array_equal(jaxkl.logsumexp(x, where=keep)[1], -np.inf)
    np.testing.assert_array_equal(jaxkl.softmax(x, where=keep)[1], [0.0, 0.0])
    np.testing.assert_array_equal(jaxkl.log_softmax(x, where=keep)[1], [-np.inf, -np.inf])
    for f in (jaxkl.logsumexp, jaxkl.softmax):
        g = jax.grad(lambda x: jnp.sum(f(x, where=keep)[1]))(x)
        np.testing.assert_array_equal(g, 0.0)


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
@pytest.mark.parametrize("shift", [1e4, 1e5])
def test_shift_invariance_of_values_and_gradients(name, shift):
    f = PRIMITIVES[name][0]
    x = jnp.array([[1.0, 2.0, 3.0], [-4.0, 0.5, 0.25]], jnp.float32)  # exact after the shift
    w = jnp.array([[0.3, -1.0, 2.0], [1.0, 1.0, -0.5]], jnp.float32)

    def loss(x):
        y = f(x)
        return jnp.sum(y * (w if y.ndim == 2 else w[:, 0]))

    base_value, shifted_value = f(x), f(x + shift)
    if name == "logsumexp":
        shifted_value = shifted_value - shift
        np.testing.assert_allclose(shifted_value, base_value, atol=float(shift) * 1.2e-7)
    else:
        np.testing.assert_allclose(shifted_value, base_value, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(loss)(x + shift), jax.grad(loss)(x), rtol=1e-6, atol=1e-7)


def test_softmax_jacobian_matches_closed_form():
    x = jnp.array([0.3, -1.2, 2.0, 0.0])
    p = ref.softmax(np.asarray(x))
    np.testing.assert_allclose(jax.jacrev(jaxkl.softmax)(x), np.diag(p) - np.outer(p, p), atol=1e-7)
    np.testing.assert_allclose(jax.jacfwd(jaxkl.log_softmax)(x), np.eye(4) - p[None, :], atol=1e-7)


def test_logsumexp_hessian_is_the_softmax_covariance():
    x = jnp.array([0.3, -1.2, 2.0])
    p = ref.softmax(np.asarray(x))
    np.testing.assert_allclose(jax.jit(jax.hessian(jaxkl.logsumexp))(x), np.diag(p) - np.outer(p, p), atol=1e-6)


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_check_grads_second_order_float64(name, x64):
    f = PRIMITIVES[name][0]
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 5)))
    keep = jnp.array([True, True, False, True, True])
    check_grads(jax.jit(lambda x: f(x, where=keep)), (x,), order=2, modes=("fwd", "rev"))
    check_grads(jax.jit(lambda x: f(x, axis=0)), (x,), order=2, modes=("rev",))


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_jit_vmap_and_checkpoint_agree_with_eager(name):
    f = PRIMITIVES[name][0]
    x = jnp.asarray(ref.random_logits(np.random.default_rng(4), (3, 7)))
    eager = f(x)
    # Every transformation in one compiled program; only `eager` runs op by op.
    jitted, vmapped, g, g_ckpt = jax.jit(lambda x: (
        f(x),
        jax.vmap(f)(x),
        jax.grad(lambda x: jnp.sum(jnp.sin(f(x))))(x),
        jax.grad(lambda x: jnp.sum(jnp.sin(jax.checkpoint(f)(x))))(x),
    ))(x)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    np.testing.assert_allclose(vmapped, eager, rtol=1e-6)
    np.testing.assert_allclose(g_ckpt, g, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_low_precision_in_low_precision_out(name, dtype):
    f = PRIMITIVES[name][0]
    x = ref.random_logits(np.random.default_rng(5), (4, 300))
    out = f(jnp.asarray(x, dtype))
    assert out.dtype == dtype
    want = PRIMITIVES[name][1](np.asarray(jnp.asarray(x, dtype), np.float64), -1)
    np.testing.assert_allclose(np.asarray(out, np.float64), want, rtol=2 * float(jnp.finfo(dtype).eps), atol=1e-3)


@given(st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_softmax_rows_sum_to_one(k, seed):
    x = jnp.asarray(ref.random_logits(np.random.default_rng(seed), (3, k), scale=20.0))
    np.testing.assert_allclose(jnp.sum(jaxkl.softmax(x), -1), 1.0, rtol=1e-6)
