"""Analytic KL against independent references: quadrature, NumPy closed forms, Monte Carlo."""

import jax
import jax.test_util
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from jaxkl.distributions import (
    Bernoulli,
    Beta,
    Categorical,
    Dirichlet,
    Exponential,
    Gamma,
    Laplace,
    MultivariateNormalDiag,
    MultivariateNormalTriL,
    Normal,
    StudentT,
    kl_divergence,
    register_kl,
)

# (p, q, scipy p, scipy q, support) -- KL by numerical integration of p log(p/q)
PAIRS = {
    "normal": (Normal(0.3, 1.2), Normal(-1.0, 0.7), stats.norm(0.3, 1.2), stats.norm(-1.0, 0.7)),
    "laplace": (
        Laplace(0.5, 1.0),
        Laplace(-0.2, 2.0),
        stats.laplace(0.5, 1.0),
        stats.laplace(-0.2, 2.0),
    ),
    "exponential": (Exponential(2.0), Exponential(0.5), stats.expon(scale=0.5), stats.expon(scale=2)),
    "gamma": (
        Gamma(2.0, 1.5),
        Gamma(3.5, 0.8),
        stats.gamma(2.0, scale=1 / 1.5),
        stats.gamma(3.5, scale=1 / 0.8),
    ),
    "beta": (Beta(2.0, 3.0), Beta(0.9, 1.7), stats.beta(2.0, 3.0), stats.beta(0.9, 1.7)),
}


def _quad_kl(sp, sq):
    lo, hi = sp.support()
    lo, hi = max(lo, sp.ppf(1e-13)), min(hi, sp.isf(1e-13))
    value, _ = integrate.quad(lambda x: sp.pdf(x) * (sp.logpdf(x) - sq.logpdf(x)), lo, hi, limit=200)
    return value


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_univariate_kl_matches_quadrature(name):
    p, q, sp, sq = PAIRS[name]
    np.testing.assert_allclose(kl_divergence(p, q), _quad_kl(sp, sq), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(kl_divergence(q, p), _quad_kl(sq, sp), rtol=2e-5, atol=1e-6)
    assert float(kl_divergence(p, p)) == 0.0


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_univariate_kl_matches_monte_carlo(name):
    p, q, sp, sq = PAIRS[name]
    n = 50_000
    x = sp.rvs(size=n, random_state=np.random.default_rng(0))
    terms = sp.logpdf(x) - sq.logpdf(x)
    se = terms.std() / np.sqrt(n)
    assert abs(float(kl_divergence(p, q)) - terms.mean()) < 5 * se


def _mvn_kl_numpy(mp, sp, mq, sq):
    d = len(mp)
    inv = np.linalg.inv(sq)
    diff = mq - mp
    return 0.5 * (
        np.trace(inv @ sp)
        + diff @ inv @ diff
        - d
        + np.linalg.slogdet(sq)[1]
        - np.linalg.slogdet(sp)[1]
    )


def test_multivariate_normal_kl(x64):
    rng = np.random.default_rng(0)
    lp, lq = (np.tril(rng.normal(size=(3, 3)), -1) + np.diag(rng.uniform(0.5, 2, 3)) for _ in range(2))
    mp, mq = rng.normal(size=3), rng.normal(size=3)
    got = kl_divergence(MultivariateNormalTriL(mp, lp), MultivariateNormalTriL(mq, lq))
    np.testing.assert_allclose(got, _mvn_kl_numpy(mp, lp @ lp.T, mq, lq @ lq.T), rtol=1e-10)
    sp, sq = rng.uniform(0.5, 2, 3), rng.uniform(0.5, 2, 3)
    got = kl_divergence(MultivariateNormalDiag(mp, sp), MultivariateNormalDiag(mq, sq))
    np.testing.assert_allclose(got, _mvn_kl_numpy(mp, np.diag(sp**2), mq, np.diag(sq**2)), rtol=1e-10)


def test_multivariate_normal_kl_gradient(x64):
    lq = jnp.array([[1.0, 0.0], [0.3, 0.7]])

    def f(loc, tril):
        # check_grads perturbs every entry; only the lower triangle is a parameter
        p = MultivariateNormalTriL(loc, jnp.tril(tril))
        return kl_divergence(p, MultivariateNormalTriL(jnp.ones(2), lq))

    jax.test_util.check_grads(f, (jnp.array([0.2, -0.4]), jnp.array([[1.2, 0.0], [-0.2, 0.9]])), 1)


def test_dirichlet_kl(x64):
    ap, aq = np.array([0.8, 2.0, 4.0]), np.array([1.5, 1.0, 2.5])
    # the closed form (Penny 2001) written out in SciPy
    ref = (
        special.gammaln(ap.sum())
        - special.gammaln(aq.sum())
        - np.sum(special.gammaln(ap))
        + np.sum(special.gammaln(aq))
        + np.sum((ap - aq) * (special.digamma(ap) - special.digamma(ap.sum())))
    )
    np.testing.assert_allclose(kl_divergence(Dirichlet(ap), Dirichlet(aq)), ref, rtol=1e-10)
    # and against Monte Carlo with SciPy's sampler and density
    x = stats.dirichlet(ap).rvs(size=50_000, random_state=np.random.default_rng(1))
    terms = stats.dirichlet(ap).logpdf(x.T) - stats.dirichlet(aq).logpdf(x.T)
    assert abs(ref - terms.mean()) < 5 * terms.std() / np.sqrt(len(terms))


def test_discrete_kl(x64):
    a, b = np.array([[0.0, 1.0, -1.0], [2.0, -np.inf, 0.0]]), np.array([0.5, 0.0, 0.2])
    p, q = special.softmax(a, -1), special.softmax(b)
    np.testing.assert_allclose(
        kl_divergence(Categorical(a), Categorical(b)), special.rel_entr(p, q).sum(-1), rtol=1e-12
    )
    la, lb = np.array([-2.0, 0.0, 30.0]), np.array([1.0, 0.0, -30.0])
    pa, pb = special.expit(la), special.expit(lb)
    ref = special.rel_entr(pa, pb) + special.rel_entr(1 - pa, 1 - pb)
    np.testing.assert_allclose(kl_divergence(Bernoulli(la), Bernoulli(lb)), ref, rtol=1e-10)


def test_batch_shapes_broadcast_and_event_shapes_must_match():
    kl = kl_divergence(Normal(jnp.zeros((3, 1)), 1.0), Normal(jnp.arange(4.0), 1.0))
    np.testing.assert_allclose(kl, np.broadcast_to(0.5 * np.arange(4.0) ** 2, (3, 4)), rtol=1e-6)
    with pytest.raises(ValueError, match="do not broadcast"):
        kl_divergence(Normal(jnp.zeros(3), 1.0), Normal(jnp.zeros(2), 1.0))
    with pytest.raises(ValueError, match="same event shape"):
        kl_divergence(
            MultivariateNormalDiag(jnp.zeros(2), jnp.ones(2)),
            MultivariateNormalDiag(jnp.zeros(3), jnp.ones(3)),
        )


def test_unregistered_pair_names_both_types():
    with pytest.raises(NotImplementedError, match=r"KL\(Normal \|\| StudentT\)"):
        kl_divergence(Normal(0.0, 1.0), StudentT(3.0, 0.0, 1.0))


def test_register_kl_and_subclass_precedence():
    class Half(Normal):
        pass

    assert float(kl_divergence(Half(0.0, 1.0), Normal(1.0, 1.0))) == pytest.approx(0.5)

    @register_kl(Half, Normal)
    def _half(p, q):
        return jnp.full(p.batch_shape, 42.0)

    assert float(kl_divergence(Half(0.0, 1.0), Normal(1.0, 1.0))) == 42.0
    assert float(kl_divergence(Normal(0.0, 1.0), Normal(1.0, 1.0))) == pytest.approx(0.5)
    with pytest.raises(TypeError, match="Distribution subclass"):
        register_kl(int, Normal)


def test_kl_is_jittable_and_nonnegative():
    rng = np.random.default_rng(3)
    loc, scale = rng.normal(size=(2, 64)).astype(np.float32), rng.uniform(0.1, 3, (2, 64))
    kl = jax.jit(kl_divergence)(Normal(loc[0], scale[0]), Normal(loc[1] * 0 + loc[0], scale[0]))
    assert (np.asarray(kl) >= 0).all()
    g = jax.grad(lambda m: kl_divergence(Normal(m, 1.0), Normal(0.0, 2.0)))(1.0)
    np.testing.assert_allclose(g, 1.0 / 4.0, rtol=1e-6)  # d/dm of m^2 / (2 * 2^2)
