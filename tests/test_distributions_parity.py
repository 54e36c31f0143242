"""What users of torch.distributions, TFP/distrax and SciPy expect, against SciPy in float64.

New families against scipy.stats (densities, entropies, moments, samples),
every analytic cross-family KL against quadrature over p's quantiles, the
degenerate parameters (probability 0 and 1), mixed dtypes, `probs=`
constructors, integer labels of any dtype, and fitting the new families.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from jaxkl.distributions import (
    Bernoulli,
    Beta,
    Binomial,
    Categorical,
    Cauchy,
    Exponential,
    Gamma,
    Geometric,
    Gumbel,
    Independent,
    Laplace,
    LogNormal,
    MultivariateNormalDiag,
    MultivariateNormalTriL,
    Normal,
    Poisson,
    StudentT,
    Uniform,
    has_kl,
    kl_divergence,
)
from jaxkl.fit import fit
from tests import kl_table
from tests.test_distributions_kl import _mvn_kl_numpy

# ------------------------------------------------------------- new families

# name: (jaxkl distribution, scipy frozen distribution, points to evaluate)
FAMILIES = {
    "student_t": (lambda: StudentT(3.5, 0.5, 2.0), stats.t(3.5, 0.5, 2.0), [-4.0, 0.5, 3.0]),
    "log_normal": (lambda: LogNormal(0.3, 0.6), stats.lognorm(0.6, scale=np.exp(0.3)), [0.2, 1.0, 4.0]),
    "uniform": (lambda: Uniform(-1.0, 3.0), stats.uniform(-1.0, 4.0), [-1.0, 0.0, 2.9]),
    "cauchy": (lambda: Cauchy(1.0, 0.5), stats.cauchy(1.0, 0.5), [-3.0, 1.0, 2.0]),
    "gumbel": (lambda: Gumbel(-0.5, 1.5), stats.gumbel_r(-0.5, 1.5), [-3.0, 0.0, 4.0]),
    "poisson": (lambda: Poisson(3.5), stats.poisson(3.5), [0.0, 3.0, 11.0]),
    "geometric": (lambda: Geometric(probs=0.3), stats.geom(0.3, loc=-1), [0.0, 2.0, 9.0]),
    "binomial": (lambda: Binomial(7, probs=0.35), stats.binom(7, 0.35), [0.0, 3.0, 7.0]),
}
DISCRETE = ("poisson", "geometric", "binomial")
OUTSIDE_SUPPORT = DISCRETE + ("log_normal", "uniform")
# Samplers written here; the others call one jax.random sampler each (whose loops are slow to
# compile), so for them only the shape and dtype are checked, without compiling.
SAMPLED = ("cauchy", "geometric", "gumbel", "log_normal", "uniform")
SAMPLED_TYPES = (Cauchy, Geometric, Gumbel, LogNormal, Uniform)


def _outside(name):
    return {"log_normal": [-0.5], "uniform": [-1.5, 3.5]}.get(name, [-0.5, 1.5])  # 1.5: no count


@pytest.fixture(scope="module")
def summaries():
    """Every family's methods in float64, as ONE compiled call (eager ops compile one by one)."""

    def summary(d, x, key):
        methods = (d.log_prob(x), d.entropy(), d.mean(), d.variance(), d.stddev())
        return methods + (d.sample(key, (4000,)) if type(d) in SAMPLED_TYPES else None,)

    with jax.enable_x64(True):
        args = {
            name: (make(), np.array(points + _outside(name)), jax.random.key(1))
            for name, (make, _, points) in FAMILIES.items()
        }
        out = jax.jit(lambda args: {name: summary(*a) for name, a in args.items()})(args)
        return jax.tree.map(np.asarray, out)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_matches_scipy(name, summaries):
    _, ref, points = FAMILIES[name]
    x = np.array(points + _outside(name))
    log_prob, entropy, mean, variance, stddev, draws = summaries[name]
    ref_log_prob = ref.logpmf(x) if name in DISCRETE else ref.logpdf(x)
    np.testing.assert_allclose(log_prob, ref_log_prob, rtol=1e-10)
    if name in OUTSIDE_SUPPORT:
        np.testing.assert_array_equal(log_prob[len(points) :], -np.inf)
    np.testing.assert_allclose(entropy, ref.entropy(), rtol=1e-9)
    np.testing.assert_allclose(mean, ref.mean(), rtol=1e-10)
    np.testing.assert_allclose(variance, ref.var(), rtol=1e-10)
    np.testing.assert_allclose(stddev, ref.std(), rtol=1e-10)

    d = FAMILIES[name][0]()
    assert jax.eval_shape(lambda d: d.sample(jax.random.key(0), (7,)), d).shape == (7,)
    if name not in SAMPLED:
        return
    n = len(draws)
    if name == "cauchy":  # no mean: the sample median, whose sd is pi * scale / (2 sqrt(n))
        assert abs(np.median(draws) - ref.median()) < 5 * np.pi * 0.5 / (2 * np.sqrt(n))
    else:
        assert abs(draws.mean() - ref.mean()) < 5 * ref.std() / np.sqrt(n)
    if name in DISCRETE:
        assert (draws == np.floor(draws)).all() and (draws >= 0).all()


def test_moments_that_do_not_exist(x64):
    df = np.array([0.8, 1.5, 3.0])
    d = StudentT(df, 0.0, 2.0)
    ref = stats.t(df, 0.0, 2.0)
    # undefined for df <= 1: NaN, as torch and as SciPy's Cauchy (SciPy's t says +inf for the mean)
    np.testing.assert_array_equal(d.mean(), [np.nan, 0.0, 0.0])
    np.testing.assert_array_equal(d.variance(), ref.var())  # NaN, inf, 2^2 * 3
    assert np.isnan(Cauchy(0.0, 1.0).mean()) and np.isnan(Cauchy(0.0, 1.0).variance())


def test_poisson_entropy_both_branches(x64):
    rate = np.array([0.05, 3.0, 99.9, 100.0, 150.0, 2000.0])
    entropy = lambda a: Poisson(a).entropy()  # noqa: E731
    value, grad = jax.jit(lambda a: (entropy(a), jax.vmap(jax.grad(entropy))(a)))(rate)
    np.testing.assert_allclose(value, stats.poisson(rate).entropy(), rtol=1e-9)
    # the derivative by central differences of SciPy's entropy, in both branches
    h = 1e-4 * rate
    fd = (stats.poisson(rate + h).entropy() - stats.poisson(rate - h).entropy()) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-5)


def test_independent_matches_sum_of_scipy(x64):
    loc, scale = np.array([[0.0, 1.0, -2.0], [0.5, 0.5, 0.5]]), np.array([1.0, 2.0, 0.5])
    d = Independent(Normal(loc, scale))
    assert d.batch_shape == (2,) and d.event_shape == (3,)
    x = np.array([0.3, -1.0, 2.0])
    q = Independent(Normal(np.zeros(3), 1.0))
    mvn = MultivariateNormalDiag(loc, jnp.broadcast_to(scale, loc.shape))
    log_prob, entropy, kl, mvn_log_prob = jax.jit(
        lambda d, q, mvn: (d.log_prob(x), d.entropy(), kl_divergence(d, q), mvn.log_prob(x))
    )(d, q, mvn)
    np.testing.assert_allclose(log_prob, stats.norm(loc, scale).logpdf(x).sum(-1), rtol=1e-12)
    np.testing.assert_allclose(entropy, stats.norm(loc, scale).entropy().sum(-1), rtol=1e-12)
    np.testing.assert_allclose(log_prob, mvn_log_prob, rtol=1e-12)
    ref = sum(_quad_kl(stats.norm(loc[1, i], scale[i]), stats.norm(0, 1)) for i in range(3))
    np.testing.assert_allclose(kl[1], ref, rtol=1e-7)
    assert jax.eval_shape(lambda d: d.sample(jax.random.key(0), (5,)), d).shape == (5, 2, 3)
    with pytest.raises(ValueError, match="reinterpreted_batch_ndims"):
        Independent(Normal(0.0, 1.0))
    with pytest.raises(NotImplementedError, match="different numbers"):
        kl_divergence(Independent(mvn, 0), d)


# ------------------------------------------------------- analytic KL pairs


def _quad_kl(sp, sq):
    """KL(p || q) as the integral of log p - log q over p's quantiles u in (0, 1)."""

    def integrand(u):
        x = sp.ppf(u)
        return sp.logpdf(x) - sq.logpdf(x)

    value, _ = integrate.quad(integrand, 0.0, 1.0, limit=400, epsabs=1e-11, epsrel=1e-10)
    return value


def _sum_kl(sp, sq, support):
    """KL(p || q) of count distributions as a sum over `support`."""
    lp, lq = sp.logpmf(support), sq.logpmf(support)
    mass = lp > -np.inf  # 0 log 0 = 0 where p has no mass
    return np.sum(np.exp(lp[mass]) * (lp[mass] - lq[mass]))


N, SN = (0.4, 1.3), stats.norm(0.4, 1.3)
# (() -> (jaxkl p, jaxkl q), scipy p, scipy q): the analytic cross pairs and the new same-family pairs
CONTINUOUS_PAIRS = {
    "beta_exponential": (lambda: (Beta(2.0, 3.0), Exponential(1.5)), stats.beta(2, 3), stats.expon(scale=1 / 1.5)),
    "beta_gamma": (lambda: (Beta(2.0, 3.0), Gamma(1.7, 2.0)), stats.beta(2, 3), stats.gamma(1.7, scale=0.5)),
    "beta_normal": (lambda: (Beta(2.0, 3.0), Normal(*N)), stats.beta(2, 3), SN),
    "beta_uniform": (lambda: (Beta(2.0, 3.0), Uniform(-0.5, 1.0)), stats.beta(2, 3), stats.uniform(-0.5, 1.5)),
    "exponential_gamma": (lambda: (Exponential(1.5), Gamma(1.7, 2.0)), stats.expon(scale=1 / 1.5), stats.gamma(1.7, scale=0.5)),
    "exponential_gumbel": (lambda: (Exponential(1.5), Gumbel(0.3, 1.2)), stats.expon(scale=1 / 1.5), stats.gumbel_r(0.3, 1.2)),
    "exponential_normal": (lambda: (Exponential(1.5), Normal(*N)), stats.expon(scale=1 / 1.5), SN),
    "exponential_laplace": (lambda: (Exponential(1.5), Laplace(0.6, 0.8)), stats.expon(scale=1 / 1.5), stats.laplace(0.6, 0.8)),
    "gamma_exponential": (lambda: (Gamma(2.5, 1.2), Exponential(0.7)), stats.gamma(2.5, scale=1 / 1.2), stats.expon(scale=1 / 0.7)),
    "gamma_gumbel": (lambda: (Gamma(2.5, 1.2), Gumbel(0.3, 1.2)), stats.gamma(2.5, scale=1 / 1.2), stats.gumbel_r(0.3, 1.2)),
    "gamma_normal": (lambda: (Gamma(2.5, 1.2), Normal(*N)), stats.gamma(2.5, scale=1 / 1.2), SN),
    "gumbel_normal": (lambda: (Gumbel(0.3, 1.2), Normal(*N)), stats.gumbel_r(0.3, 1.2), SN),
    "laplace_normal": (lambda: (Laplace(-0.3, 0.8), Normal(*N)), stats.laplace(-0.3, 0.8), SN),
    "laplace_gumbel": (lambda: (Laplace(-0.3, 0.8), Gumbel(0.3, 1.2)), stats.laplace(-0.3, 0.8), stats.gumbel_r(0.3, 1.2)),
    "normal_gumbel": (lambda: (Normal(*N), Gumbel(0.3, 1.2)), SN, stats.gumbel_r(0.3, 1.2)),
    "normal_laplace": (lambda: (Normal(*N), Laplace(-0.3, 0.8)), SN, stats.laplace(-0.3, 0.8)),
    "log_normal_exponential": (lambda: (LogNormal(0.2, 0.5), Exponential(0.7)), stats.lognorm(0.5, scale=np.exp(0.2)), stats.expon(scale=1 / 0.7)),
    "log_normal_gamma": (lambda: (LogNormal(0.2, 0.5), Gamma(2.5, 1.2)), stats.lognorm(0.5, scale=np.exp(0.2)), stats.gamma(2.5, scale=1 / 1.2)),
    "log_normal_normal": (lambda: (LogNormal(0.2, 0.5), Normal(*N)), stats.lognorm(0.5, scale=np.exp(0.2)), SN),
    "uniform_beta": (lambda: (Uniform(0.2, 0.9), Beta(2.0, 3.0)), stats.uniform(0.2, 0.7), stats.beta(2, 3)),
    "uniform_exponential": (lambda: (Uniform(0.2, 2.9), Exponential(0.7)), stats.uniform(0.2, 2.7), stats.expon(scale=1 / 0.7)),
    "uniform_gamma": (lambda: (Uniform(0.2, 2.9), Gamma(2.5, 1.2)), stats.uniform(0.2, 2.7), stats.gamma(2.5, scale=1 / 1.2)),
    "uniform_gumbel": (lambda: (Uniform(-1.0, 2.0), Gumbel(0.3, 1.2)), stats.uniform(-1, 3), stats.gumbel_r(0.3, 1.2)),
    "uniform_laplace": (lambda: (Uniform(-1.0, 2.0), Laplace(-0.3, 0.8)), stats.uniform(-1, 3), stats.laplace(-0.3, 0.8)),
    "uniform_normal": (lambda: (Uniform(-1.0, 2.0), Normal(*N)), stats.uniform(-1, 3), SN),
    "cauchy_cauchy": (lambda: (Cauchy(0.5, 0.7), Cauchy(-1.0, 2.0)), stats.cauchy(0.5, 0.7), stats.cauchy(-1, 2)),
    "gumbel_gumbel": (lambda: (Gumbel(0.3, 1.2), Gumbel(-0.4, 0.7)), stats.gumbel_r(0.3, 1.2), stats.gumbel_r(-0.4, 0.7)),
    "log_normal_log_normal": (lambda: (LogNormal(0.2, 0.5), LogNormal(-0.1, 0.9)), stats.lognorm(0.5, scale=np.exp(0.2)), stats.lognorm(0.9, scale=np.exp(-0.1))),
    "uniform_uniform": (lambda: (Uniform(-1.0, 2.0), Uniform(-1.5, 2.5)), stats.uniform(-1, 3), stats.uniform(-1.5, 4)),
}


@jax.jit
def _kl_and_cross_entropy(pairs):
    return [(kl_divergence(p, q), p.cross_entropy(q)) for p, q in pairs]


@pytest.fixture(scope="module")
def continuous_kls():
    """KL and cross-entropy of every pair in float64, as one compiled call."""
    with jax.enable_x64(True):
        names = sorted(CONTINUOUS_PAIRS)
        values = _kl_and_cross_entropy([CONTINUOUS_PAIRS[n][0]() for n in names])
        return dict(zip(names, jax.tree.map(np.asarray, values)))


@pytest.mark.parametrize("name", sorted(CONTINUOUS_PAIRS))
def test_continuous_kl_matches_quadrature(name, continuous_kls):
    _, sp, sq = CONTINUOUS_PAIRS[name]
    kl, cross_entropy = continuous_kls[name]
    np.testing.assert_allclose(kl, _quad_kl(sp, sq), rtol=1e-7, atol=1e-10)
    # cross-entropy = H(p) + KL, against -E_p[log q] by the same quadrature
    cross, _ = integrate.quad(lambda u: -sq.logpdf(sp.ppf(u)), 0.0, 1.0, limit=400, epsabs=1e-11)
    np.testing.assert_allclose(cross_entropy, cross, rtol=1e-7, atol=1e-10)


def test_discrete_kl_matches_sums(x64):
    k = np.arange(400)
    cases = [
        (Poisson(3.5), Poisson(1.2), stats.poisson(3.5), stats.poisson(1.2)),
        (Geometric(probs=0.3), Geometric(probs=0.6), stats.geom(0.3, loc=-1), stats.geom(0.6, loc=-1)),
        (Binomial(7, probs=0.35), Binomial(7, probs=0.8), stats.binom(7, 0.35), stats.binom(7, 0.8)),
        (Binomial(4, probs=0.35), Binomial(9, probs=0.5), stats.binom(4, 0.35), stats.binom(9, 0.5)),
        (Bernoulli(probs=0.3), Poisson(0.8), stats.bernoulli(0.3), stats.poisson(0.8)),
    ]
    cases.append((Binomial(9, probs=0.5), Binomial(4, probs=0.35), None, None))
    values = jax.jit(lambda pairs: [kl_divergence(p, q) for p, q in pairs])([c[:2] for c in cases])
    for kl, (_, _, sp, sq) in zip(values[:-1], cases):
        np.testing.assert_allclose(kl, _sum_kl(sp, sq, k), rtol=1e-10)
    assert float(values[-1]) == np.inf  # n_p > n_q: p's top counts are impossible under q


def test_kl_gradients(x64):
    """Reverse-mode derivatives of a few cross pairs against central differences."""

    def kls(x):  # parameters of two pairs
        return jnp.stack([
            kl_divergence(Normal(x[2], x[3]), Laplace(x[4], x[5])),
            kl_divergence(Uniform(x[6], x[7]), Gamma(x[0], x[1])),
        ])

    x = np.array([2.0, 3.0, 0.4, 1.3, -0.3, 0.8, 0.2, 2.9])
    jac = jax.jit(jax.jacrev(kls))(x)
    h = 1e-6
    shifted = x + h * np.concatenate([np.eye(len(x)), -np.eye(len(x))])
    values = np.asarray(jax.jit(jax.vmap(kls))(shifted))
    fd = (values[: len(x)] - values[len(x) :]).T / (2 * h)
    np.testing.assert_allclose(jac, fd, rtol=1e-6, atol=1e-8)


def test_mvn_diag_and_tril_both_ways(x64):
    rng = np.random.default_rng(0)
    tril = np.tril(rng.normal(size=(3, 3)), -1) + np.diag(rng.uniform(0.5, 2, 3))
    diag = rng.uniform(0.5, 2, 3)
    m1, m2 = rng.normal(size=3), rng.normal(size=3)
    t = MultivariateNormalTriL(m2, tril)

    @jax.jit
    def both_ways(s):
        d = MultivariateNormalDiag(m1, s)
        return kl_divergence(d, t), kl_divergence(t, d)

    cov_d, cov_t = np.diag(diag**2), tril @ tril.T
    forward, reverse = both_ways(diag)
    np.testing.assert_allclose(forward, _mvn_kl_numpy(m1, cov_d, m2, cov_t), rtol=1e-10)
    np.testing.assert_allclose(reverse, _mvn_kl_numpy(m2, cov_t, m1, cov_d), rtol=1e-10)
    # d KL(diag || t) / d scale_diag = s (Sigma_t^{-1})_ii - 1 / s
    grad = jax.jit(jax.grad(lambda s: both_ways(s)[0]))(diag)
    np.testing.assert_allclose(grad, diag * np.diag(np.linalg.inv(cov_t)) - 1 / diag, rtol=1e-10)


# The pairs of torch.distributions.kl (torch 2.x) among the families jaxkl has.
TORCH_PAIRS = [
    "Bernoulli Bernoulli", "Beta Beta", "Binomial Binomial", "Categorical Categorical",
    "Cauchy Cauchy", "Dirichlet Dirichlet", "Exponential Exponential", "Gamma Gamma",
    "Geometric Geometric", "Gumbel Gumbel", "Laplace Laplace", "Normal Normal",
    "Poisson Poisson", "Uniform Uniform", "Independent Independent",
    "MultivariateNormalTriL MultivariateNormalTriL",
    "Bernoulli Poisson", "Beta Exponential", "Beta Gamma", "Beta Normal", "Beta Uniform",
    "Exponential Beta", "Exponential Uniform", "Exponential Gamma", "Exponential Gumbel",
    "Exponential Normal", "Gamma Beta", "Gamma Uniform", "Gamma Exponential", "Gamma Gumbel",
    "Gamma Normal", "Gumbel Beta", "Gumbel Exponential", "Gumbel Gamma", "Gumbel Uniform",
    "Gumbel Normal", "Laplace Beta", "Laplace Exponential", "Laplace Gamma", "Laplace Uniform",
    "Laplace Normal", "Normal Beta", "Normal Exponential", "Normal Gamma", "Normal Uniform",
    "Normal Gumbel", "Normal Laplace", "Poisson Bernoulli", "Poisson Binomial", "Uniform Beta",
    "Uniform Exponential", "Uniform Gamma", "Uniform Gumbel", "Uniform Normal",
]


def test_torch_pairs_are_registered():
    import jaxkl.distributions as jd
    from jaxkl.distributions._kl import _lookup

    missing = [pair for pair in TORCH_PAIRS if _lookup(*(getattr(jd, n) for n in pair.split())) is None]
    assert not missing


# (p, q, scipy p, scipy q): q has no density on part of p's support
INFINITE = [
    (Normal(0.0, 1.0), Exponential(1.0), stats.norm(), stats.expon()),
    (Laplace(0.0, 1.0), Beta(2.0, 2.0), stats.laplace(), stats.beta(2, 2)),
    (Gumbel(0.0, 1.0), Gamma(2.0, 1.0), stats.gumbel_r(), stats.gamma(2)),
    (Exponential(1.0), Uniform(0.0, 5.0), stats.expon(), stats.uniform(0, 5)),
    (Gamma(2.0, 1.0), Beta(2.0, 2.0), stats.gamma(2), stats.beta(2, 2)),
    (Poisson(2.0), Binomial(5, probs=0.5), stats.poisson(2), stats.binom(5, 0.5)),
    (Poisson(2.0), Bernoulli(0.0), stats.poisson(2), stats.bernoulli(0.5)),
    (Uniform(-1.0, 1.0), Exponential(1.0), stats.uniform(-1, 2), stats.expon()),
    (Uniform(-1.0, 1.0), Gamma(2.0, 1.0), stats.uniform(-1, 2), stats.gamma(2)),
    (Uniform(0.5, 1.5), Beta(2.0, 2.0), stats.uniform(0.5, 1), stats.beta(2, 2)),
    (Beta(2.0, 2.0), Uniform(0.1, 2.0), stats.beta(2, 2), stats.uniform(0.1, 1.9)),
    (Uniform(-1.0, 1.0), Uniform(0.0, 2.0), stats.uniform(-1, 2), stats.uniform(0, 2)),
]


# p's polynomial tails against q's exponential ones: E_p[-log q] diverges
HEAVY = [(Cauchy(0.0, 1.0), Normal(0.0, 1.0)), (Laplace(0.0, 1.0), Gumbel(0.0, 0.9))]


@jax.jit
def _infinite_kls(pairs):
    grads = (  # +inf pairs have zero gradient, not NaN
        jax.grad(lambda lo: kl_divergence(Uniform(lo, 1.0), Exponential(1.0)))(-0.5),
        jax.grad(lambda b: kl_divergence(Laplace(0.0, b), Gumbel(0.0, 0.9)))(1.0),
    )
    return [kl_divergence(p, q) for p, q in pairs], grads


def test_infinite_pairs():
    kls, grads = _infinite_kls([(p, q) for p, q, _, _ in INFINITE] + HEAVY)
    for kl, (p, q, sp, sq) in zip(kls, INFINITE):
        # independent evidence: SciPy's draws of p land where SciPy's density of q is 0
        x = sp.rvs(size=2000, random_state=np.random.default_rng(0))
        log_q = sq.logpmf(x) if hasattr(sq, "logpmf") else sq.logpdf(x)
        assert (log_q == -np.inf).any(), (p, q)
        assert float(kl) == np.inf, (p, q)
    np.testing.assert_array_equal(kls[len(INFINITE) :], np.inf)
    np.testing.assert_array_equal(grads, 0.0)
    # heavy tails: E_p[-log q] over p's quantiles grows without bound toward the tails
    sp, sq = stats.cauchy(0, 1), stats.norm(0, 1)
    partial = [integrate.quad(lambda u: -sq.logpdf(sp.ppf(u)), e, 1 - e)[0] for e in (1e-3, 1e-6)]
    assert partial[1] > 10 * partial[0] > 0
    # and the Laplace MGF at -1/s, E[exp(-x / s)], diverges for scale 1 >= s = 0.9
    tail = [integrate.quad(lambda x: stats.laplace.pdf(x) * np.exp(-x / 0.9), -c, 0)[0] for c in (50, 500)]
    assert tail[1] > 1e10 * tail[0]


# ------------------------------------------------------ degenerate parameters


@jax.jit
def _bernoulli_edges(inf):
    one, zero, half = Bernoulli(inf), Bernoulli(-inf), Bernoulli(0.0)
    return {
        "entropy": jnp.stack([one.entropy(), zero.entropy(), Bernoulli(probs=1.0).entropy()]),
        "kl one one": kl_divergence(one, one),
        "kl one zero": kl_divergence(one, zero),
        "kl one half": kl_divergence(one, half),
        "log_prob": one.log_prob(jnp.array([1.0, 0.0])),
        # d/dl KL(Bern(1) || Bern(sigmoid(l))) = d/dl -log sigmoid(l) = sigmoid(l) - 1
        "grad kl": jax.grad(lambda l: kl_divergence(one, Bernoulli(l)))(0.0),
        "grad entropy": jax.grad(lambda l: Bernoulli(l).entropy())(inf),
    }


def test_bernoulli_probability_one_is_not_nan():
    """Regression: logits=+inf gave NaN for the entropy and both KLs."""
    r = _bernoulli_edges(jnp.inf)
    np.testing.assert_array_equal(r["entropy"], 0.0)
    assert float(r["kl one one"]) == 0.0 and float(r["kl one zero"]) == np.inf
    np.testing.assert_allclose(r["kl one half"], np.log(2.0), rtol=1e-6)
    np.testing.assert_array_equal(r["log_prob"], [0.0, -np.inf])
    np.testing.assert_allclose(r["grad kl"], -0.5, rtol=1e-6)
    assert np.isfinite(r["grad entropy"])


@jax.jit
def _count_edges(inf):
    certain, half = Geometric(inf), Geometric(probs=0.5)
    zero, one = Binomial(5, probs=0.0), Binomial(5, inf)
    point = Categorical(probs=jnp.array([1.0, 0.0, 0.0]))
    return {
        "zeros": jnp.stack([
            certain.entropy(), certain.mean(), certain.variance(), kl_divergence(certain, certain),
            certain.log_prob(0.0), certain.sample(jax.random.key(0)),
            zero.entropy(), one.entropy(), kl_divergence(zero, zero), kl_divergence(one, one),
            zero.log_prob(0.0), one.log_prob(5.0), point.entropy(), kl_divergence(point, point),
        ]),
        "infs": jnp.stack([
            -certain.log_prob(1.0), kl_divergence(half, certain), kl_divergence(zero, one),
        ]),
        "kl certain half": kl_divergence(certain, half),
        # 5 times the Bernoulli's d/dl -log sigmoid(l) = sigmoid(l) - 1
        "grad": jax.grad(lambda l: kl_divergence(one, Binomial(5, l)))(0.0),
    }


def test_count_families_at_probability_one_and_zero():
    r = _count_edges(jnp.inf)
    np.testing.assert_array_equal(r["zeros"], 0.0)
    np.testing.assert_array_equal(r["infs"], np.inf)
    np.testing.assert_allclose(r["kl certain half"], np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(r["grad"], -2.5, rtol=1e-6)
    np.testing.assert_array_equal(Geometric(probs=1.0).logits, np.inf)


# ------------------------------------------------- constructors and dtypes


def test_probs_constructors_match_logits(x64):
    p = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(Bernoulli(probs=p).logits, special.logit(p), rtol=1e-12)
    np.testing.assert_allclose(Bernoulli(probs=p).probs, p, rtol=1e-12)
    w = np.array([1.0, 3.0, 0.0])
    np.testing.assert_allclose(Categorical(probs=w).probs, w / w.sum(), rtol=1e-12)
    with pytest.raises(TypeError, match="exactly one"):
        Bernoulli(0.0, probs=0.5)
    with pytest.raises(TypeError, match="exactly one"):
        Categorical()
    with pytest.raises(ValueError, match=r"probs must be in \[0, 1\]"):
        Bernoulli(probs=1.5)
    with pytest.raises(ValueError, match="probs must be >= 0"):
        Categorical(probs=jnp.array([-0.1, 1.1]))


def test_categorical_labels_of_any_integer_dtype():
    logits = jnp.linspace(-1.0, 1.0, 300)
    ref = special.log_softmax(np.asarray(logits, np.float64))
    dtypes = [jnp.int8, jnp.uint8, jnp.int16, jnp.uint16, jnp.int32, jnp.uint32]
    labels = {}
    for dtype in dtypes:  # in range, then -1 (if signed) and 300 (if it fits): both -inf
        info = jnp.iinfo(dtype)
        values = [0, 5, min(int(info.max), 250)] + [v for v in (-1, 300) if info.min <= v <= info.max]
        labels[np.dtype(dtype).name] = jnp.asarray(values, dtype)
    got = jax.jit(lambda labels: {k: Categorical(logits).log_prob(v) for k, v in labels.items()})(labels)
    for name, values in labels.items():
        values = np.asarray(values)
        inside = (values >= 0) & (values < 300)
        expected = np.where(inside, ref[np.where(inside, values, 0)], -np.inf)
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, err_msg=name)


def test_categorical_int64_labels(x64):
    logits = jnp.zeros(4)
    got = Categorical(logits).log_prob(jnp.array([1, 2**40, 2**32 + 1], jnp.int64))
    np.testing.assert_array_equal(got, [np.log(0.25), -np.inf, -np.inf])
    got = Categorical(logits).log_prob(jnp.array([3, 2**63], jnp.uint64))
    np.testing.assert_allclose(got, [np.log(0.25), -np.inf])


def test_mvn_tril_mixed_dtypes():
    """Regression: triangular_solve raised TypeError on mixed parameter and value dtypes."""
    loc, tril = np.array([0.3, -0.2]), np.array([[1.0, 0.0], [0.4, 0.8]])
    x = np.array([0.5, 1.0])
    ref = stats.multivariate_normal(loc, tril @ tril.T).logpdf(x)
    with jax.numpy_dtype_promotion("standard"):  # what users run with
        d16 = MultivariateNormalTriL(jnp.asarray(loc, jnp.bfloat16), jnp.asarray(tril, jnp.bfloat16))
        got = d16.log_prob(jnp.asarray(x, jnp.float32))
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, ref, rtol=2e-2)
        with jax.enable_x64(True):
            d32 = MultivariateNormalTriL(jnp.asarray(loc, jnp.float32), jnp.asarray(tril, jnp.float32))
            got = d32.log_prob(jnp.asarray(x, jnp.float64))
            np.testing.assert_allclose(got, ref, rtol=1e-6)
            d64 = MultivariateNormalTriL(jnp.asarray(loc + 1, jnp.float64), jnp.asarray(2 * tril))
            ref_kl = _mvn_kl_numpy(loc, tril @ tril.T, loc + 1, 4 * tril @ tril.T)
            np.testing.assert_allclose(kl_divergence(d32, d64), ref_kl, rtol=1e-6)
            np.testing.assert_allclose(
                kl_divergence(d64, d32), _mvn_kl_numpy(loc + 1, 4 * tril @ tril.T, loc, tril @ tril.T), rtol=1e-6
            )


# ------------------------------------------------------------------ fitting


def test_fit_uniform_to_normal_analytic():
    # argmin_{l,h} KL(U(l,h) || N(m, s)): centred on m, width sqrt(12) s (the variance matches)
    r = fit(Normal(1.0, 0.5), Uniform(0.0, 1.0), steps=800, progress=False)
    assert r.estimator == "analytic"
    np.testing.assert_allclose([r.dist.low, r.dist.high], [1 - 3**0.5 * 0.5, 1 + 3**0.5 * 0.5], atol=2e-3)


def test_fit_binomial_to_samples_is_maximum_likelihood():
    samples = np.random.default_rng(0).binomial(6, 0.7, 3000).astype(np.float32)
    r = fit(samples, Binomial(6, 0.0), objective="forward_kl", steps=600, progress=False)
    assert r.estimator == "mc" and r.dist.total_count == 6  # static: the fitter leaves it alone
    np.testing.assert_allclose(r.dist.probs, samples.mean() / 6, rtol=2e-3)  # the MLE


def test_fit_independent_analytic():
    target = Independent(Normal(jnp.array([1.0, -2.0]), jnp.array([0.5, 2.0])))
    r = fit(target, Independent(Normal(jnp.zeros(2), jnp.ones(2))), steps=600, progress=False)
    assert r.estimator == "analytic"
    np.testing.assert_allclose(r.dist.base.loc, [1.0, -2.0], atol=1e-3)
    np.testing.assert_allclose(r.dist.base.scale, [0.5, 2.0], atol=1e-3)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_new_family_has_unconstrained_parameters(name):
    from jaxkl.fit._transforms import constrain, unconstrain

    d = FAMILIES[name][0]()
    free = unconstrain(d)
    back = constrain(free)
    assert type(back) is type(d)
    for a, b in zip(jax.tree.leaves(d), jax.tree.leaves(back)):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    # any unconstrained point maps to valid parameters (the constructor's checks pass)
    constrain(jax.tree.map(lambda u: u - 3.0, free)).replace()  # replace() validates


# ---------------------------------------------------------------- KL table


def test_kl_table_in_docs_is_generated_from_the_registry():
    """Regenerate with `python -m tests.kl_table` when this fails."""
    with open(kl_table.PATH, encoding="utf-8") as f:
        assert f.read() == kl_table.render(), "docs KL table is stale: run python -m tests.kl_table"
