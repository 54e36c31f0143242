"""kl_estimate: unbiasedness and gradient claims checked by sampling against closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jaxkl

estimate = jax.jit(jaxkl.kl_estimate, static_argnames=("estimator", "reduction"))

# q = N(MU_Q, 1) samples; p = N(0, SIGMA_P^2). SIGMA_P^2 < 2 keeps E_q[r^2] finite,
# so k3 (which contains r = p/q) has a finite variance and a standard error.
MU_Q, SIGMA_P, SAMPLES = 0.3, 1.2, 200_000


def gaussian_log_density(x, mu, sigma):
    return -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)


def analytic_kl(mu_q, sigma_q, mu_p, sigma_p):
    """KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2)) in closed form."""
    return math.log(sigma_p / sigma_q) + (sigma_q**2 + (mu_q - mu_p) ** 2) / (2 * sigma_p**2) - 0.5


def _samples(seed, mu=MU_Q):
    x = mu + np.random.default_rng(seed).standard_normal(SAMPLES)
    return x


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_unbiased_for_the_value(estimator):
    x = _samples(0)
    log_q = gaussian_log_density(x, MU_Q, 1.0).astype(np.float32)
    log_p = gaussian_log_density(x, 0.0, SIGMA_P).astype(np.float32)
    values = np.asarray(estimate(log_q, log_p, estimator=estimator, reduction="none"), np.float64)
    standard_error = values.std() / math.sqrt(SAMPLES)
    truth = analytic_kl(MU_Q, 1.0, 0.0, SIGMA_P)
    assert abs(values.mean() - truth) < 4 * standard_error, (values.mean(), truth, standard_error)
    np.testing.assert_allclose(estimate(log_q, log_p, estimator=estimator), values.mean(), rtol=1e-4)


def test_k2_is_biased_but_close_for_close_distributions():
    x = _samples(1)
    log_q = gaussian_log_density(x, MU_Q, 1.0)
    log_p = gaussian_log_density(x, 0.0, SIGMA_P)
    values = 0.5 * (log_p - log_q) ** 2  # what k2 is, in float64
    got = estimate(log_q.astype(np.float32), log_p.astype(np.float32), estimator="k2")
    np.testing.assert_allclose(got, values.mean(), rtol=1e-4)
    truth = analytic_kl(MU_Q, 1.0, 0.0, SIGMA_P)
    assert abs(values.mean() - truth) > 4 * values.std() / math.sqrt(SAMPLES)  # biased
    assert abs(values.mean() - truth) < 0.5 * truth  # but of the right size


@pytest.mark.parametrize(
    "estimator,loss_gradient",
    [
        ("k1", lambda mu: 0.0),  # E_q[grad log q] = 0
        ("k2", lambda mu: mu / SIGMA_P**2),  # grad KL(q_mu || p)
        ("k3", lambda mu: mu),  # grad KL(p || q_mu)
        ("score", lambda mu: mu / SIGMA_P**2),  # stop_gradient(k1) * log q: grad KL(q_mu || p)
    ],
)
def test_gradients_as_a_loss_with_samples_held_fixed(estimator, loss_gradient):
    mu = 1.0
    x = jnp.asarray(_samples(2, mu), jnp.float32)  # drawn from q_mu, then constants
    log_p = gaussian_log_density(x, 0.0, SIGMA_P)

    def per_sample(m):
        log_q = gaussian_log_density(x, m, 1.0)
        if estimator == "score":
            k1 = jaxkl.kl_estimate(log_q, log_p, estimator="k1", reduction="none")
            return jax.lax.stop_gradient(k1) * log_q
        return jaxkl.kl_estimate(log_q, log_p, estimator=estimator, reduction="none")

    grads = np.asarray(jax.jit(jax.jacfwd(per_sample))(jnp.float32(mu)), np.float64)
    standard_error = grads.std() / math.sqrt(SAMPLES)
    assert abs(grads.mean() - loss_gradient(mu)) < 4 * standard_error + 1e-6, (grads.mean(), standard_error)


def test_k3_has_no_cancellation_near_zero():
    log_r = np.array([1e-6, -1e-6, 3e-4, -3e-4, 0.02, -0.07, 0.09999, 0.1, -0.1, 0.5, -2.0, 8.0], np.float32)
    zeros = np.zeros_like(log_r)
    got = np.asarray(estimate(zeros, log_r, estimator="k3", reduction="none"), np.float64)
    x = log_r.astype(np.float64)
    want = np.array([math.fsum(xi**n / math.factorial(n) for n in range(2, 40)) for xi in x])
    np.testing.assert_allclose(got, want, rtol=2e-6)
    naive = np.expm1(log_r) - log_r  # float32, as a one-liner would compute it
    assert np.max(np.abs(naive / want - 1)) > 1e-2  # what the test guards against


def test_k3_precision_in_float64(x64):
    x = np.array([1e-9, -1e-5, 0.05, -0.09, 0.3])
    got = np.asarray(jaxkl.kl_estimate(np.zeros_like(x), x, reduction="none"))
    want = np.array([math.fsum(xi**n / math.factorial(n) for n in range(2, 40)) for xi in x])
    np.testing.assert_allclose(got, want, rtol=1e-13)


@given(hnp.arrays(np.float32, 16, elements=st.floats(-30, 30, width=32)))
def test_k2_and_k3_are_nonnegative(log_r):
    zeros = np.zeros_like(log_r)
    for estimator in ("k2", "k3"):
        assert np.all(np.asarray(estimate(zeros, log_r, estimator=estimator, reduction="none")) >= 0)


def test_edges_mask_bf16_and_errors():
    log_q = jnp.array([0.0, 0.0, -jnp.inf, 0.0])
    log_p = jnp.array([-jnp.inf, 0.5, 0.0, jnp.nan])
    values = estimate(log_q, log_p, reduction="none")
    assert values[0] == jnp.inf and values[2] == jnp.inf and jnp.isnan(values[3])
    keep = jnp.array([False, True, False, False])
    loss, grad = jax.value_and_grad(estimate)(log_q, log_p, where=keep)
    np.testing.assert_allclose(loss, math.expm1(0.5) - 0.5, rtol=1e-6)
    assert np.all(np.isfinite(grad))
    bf = estimate(jnp.zeros(4, jnp.bfloat16), jnp.full(4, 0.25, jnp.bfloat16))
    assert bf.dtype == jnp.bfloat16
    np.testing.assert_allclose(float(bf), math.expm1(0.25) - 0.25, rtol=1e-2)
    with pytest.raises(ValueError, match="estimator"):
        jaxkl.kl_estimate(log_q, log_p, estimator="k4")
    with pytest.raises(ValueError, match=r"log_q.shape=\(4,\)"):
        jaxkl.kl_estimate(log_q, log_p[:3])
    with pytest.raises(TypeError, match="log_p"):
        jaxkl.kl_estimate(log_q, jnp.zeros(4, jnp.int32))
