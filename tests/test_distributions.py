"""Distribution families against SciPy, plus shapes, checks and transformations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from scipy import special, stats

from jaxkl.distributions import (
    Bernoulli,
    Beta,
    Categorical,
    Dirichlet,
    Exponential,
    Gamma,
    Laplace,
    MixtureSameFamily,
    MultivariateNormalDiag,
    MultivariateNormalTriL,
    Normal,
)

L = np.array([[1.5, 0.0, 0.0], [0.4, 0.8, 0.0], [-0.3, 0.2, 1.1]])

# (distribution, scipy frozen distribution, points to evaluate)
SCALAR_CASES = {
    "normal": (lambda: Normal(0.5, 2.0), stats.norm(0.5, 2.0), [-3.0, 0.5, 4.0]),
    "laplace": (lambda: Laplace(-1.0, 0.7), stats.laplace(-1.0, 0.7), [-3.0, -1.0, 2.0]),
    "exponential": (lambda: Exponential(1.5), stats.expon(scale=1 / 1.5), [0.0, 0.3, 4.0]),
    "gamma": (lambda: Gamma(2.5, 3.0), stats.gamma(2.5, scale=1 / 3.0), [0.01, 0.8, 3.0]),
    "beta": (lambda: Beta(2.0, 5.0), stats.beta(2.0, 5.0), [0.01, 0.3, 0.99]),
}


@pytest.mark.parametrize("name", sorted(SCALAR_CASES))
def test_scalar_families_match_scipy(name, x64):
    make, ref, xs = SCALAR_CASES[name]
    xs = np.array(xs)
    # one compiled call instead of a compile per eager op
    got = jax.jit(lambda d, x: (d.log_prob(x), d.entropy(), d.mean(), d.variance()))(make(), xs)
    want = (ref.logpdf(xs), ref.entropy(), ref.mean(), ref.var())
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10)


@pytest.mark.parametrize("name", sorted(SCALAR_CASES))
def test_samples_have_the_right_moments(name):
    make, ref, _ = SCALAR_CASES[name]
    n = 5_000
    x = np.asarray(make().sample(jax.random.key(1), (n,)), np.float64)
    assert x.shape == (n,)
    se_mean = np.sqrt(ref.var() / n)
    assert abs(x.mean() - ref.mean()) < 5 * se_mean
    # the variance of the sample variance is (m4 - s^4) / n
    m4 = ref.expect(lambda t: (t - ref.mean()) ** 4)
    assert abs(x.var() - ref.var()) < 5 * np.sqrt((m4 - ref.var() ** 2) / n)


def test_out_of_support_is_minus_inf_with_finite_gradient():
    for d, x in [(Exponential(2.0), -1.0), (Gamma(2.0, 1.0), -1.0), (Beta(2.0, 2.0), 1.5)]:
        # The first parameter of each is 2.0: the value at t = 2.0 is d.log_prob(x).
        value, g = jax.jit(jax.value_and_grad(lambda t: d.replace(**{d._params[0][0]: t}).log_prob(x)))(2.0)
        assert value == -jnp.inf
        assert np.isfinite(g)


def test_multivariate_normals_match_scipy(x64):
    loc = np.array([0.5, -1.0, 2.0])
    xs = np.array([[0.0, 0.0, 0.0], [1.0, -2.0, 3.0]])
    tril = MultivariateNormalTriL(loc, L)
    ref = stats.multivariate_normal(loc, L @ L.T)
    np.testing.assert_allclose(tril.log_prob(xs), ref.logpdf(xs), rtol=1e-10)
    np.testing.assert_allclose(tril.entropy(), ref.entropy(), rtol=1e-10)
    np.testing.assert_allclose(tril.covariance(), L @ L.T, rtol=1e-12)
    np.testing.assert_allclose(tril.variance(), np.diag(L @ L.T), rtol=1e-12)
    scale = np.array([0.5, 1.0, 2.0])
    diag = MultivariateNormalDiag(loc, scale)
    ref = stats.multivariate_normal(loc, np.diag(scale**2))
    np.testing.assert_allclose(diag.log_prob(xs), ref.logpdf(xs), rtol=1e-10)
    np.testing.assert_allclose(diag.entropy(), ref.entropy(), rtol=1e-10)


def test_mvn_tril_samples_have_the_covariance():
    d = MultivariateNormalTriL(jnp.zeros(3), jnp.asarray(L, jnp.float32))
    x = np.asarray(d.sample(jax.random.key(0), (40_000,)), np.float64)
    assert x.shape == (40_000, 3)
    # entries of a sample covariance have standard error <= sqrt(2/n) * max variance
    np.testing.assert_allclose(np.cov(x.T), L @ L.T, atol=5 * np.sqrt(2 / 40_000) * 2.5)


def test_dirichlet_matches_scipy(x64):
    alpha = np.array([0.7, 2.0, 3.5])
    d = Dirichlet(alpha)
    ref = stats.dirichlet(alpha)
    x = np.array([0.2, 0.3, 0.5])
    got = jax.jit(lambda d: (d.log_prob(x), d.entropy(), d.mean(), d.variance()))(d)
    want = (ref.logpdf(x), ref.entropy(), ref.mean(), ref.var())
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10)
    s = d.sample(jax.random.key(0), (5, 2))
    assert s.shape == (5, 2, 3)
    np.testing.assert_allclose(np.sum(s, -1), 1.0, rtol=1e-12)


def test_categorical_and_bernoulli(x64):
    logits = np.array([[0.0, 1.0, -2.0], [3.0, -np.inf, 0.0]])
    d = Categorical(logits)
    p = special.softmax(logits, axis=-1)
    assert d.batch_shape == (2,) and d.event_shape == ()
    # one compiled call instead of a compile per eager op
    log_prob, entropy, out_of_range, minus_inf, draws = jax.jit(lambda d: (
        d.log_prob(jnp.array([1, 2])), d.entropy(), d.log_prob(jnp.array([3, 1])), d.log_prob(jnp.array([0, 1])),
        d.sample(jax.random.key(0), (2000,))))(d)
    np.testing.assert_allclose(log_prob, np.log([p[0, 1], p[1, 2]]))
    np.testing.assert_allclose(entropy, [stats.entropy(p[0]), stats.entropy(p[1])])
    assert out_of_range[0] == -jnp.inf  # out of range
    assert minus_inf[1] == -jnp.inf  # a -inf logit
    draws = np.asarray(draws)
    assert draws.shape == (2000, 2) and not (draws[:, 1] == 1).any()
    with pytest.raises(TypeError, match="x must be an integer array of class indices"):
        d.log_prob(jnp.array([0.0, 1.0]))

    b = Bernoulli(np.array([-1.0, 0.0, 4.0]))
    q = special.expit([-1.0, 0.0, 4.0])
    ones, zeros, entropy, variance, halves = jax.jit(
        lambda b: (b.log_prob(1.0), b.log_prob(0.0), b.entropy(), b.variance(), b.log_prob(0.5)))(b)
    np.testing.assert_allclose(ones, np.log(q))
    np.testing.assert_allclose(zeros, np.log1p(-q))
    np.testing.assert_allclose(entropy, stats.bernoulli(q).entropy())
    np.testing.assert_allclose(variance, q * (1 - q))
    assert halves[0] == -jnp.inf


def test_mixture_against_numpy(x64):
    comps = Normal(np.array([0.0, 10.0, 3.0]), np.array([1.0, 2.0, 0.5]))
    w = np.array([0.2, 0.5, 0.3])
    m = MixtureSameFamily(np.log(w), comps)
    x = np.linspace(-3, 13, 7)
    ref = special.logsumexp(
        np.log(w) + stats.norm([0.0, 10.0, 3.0], [1.0, 2.0, 0.5]).logpdf(x[:, None]), axis=-1
    )
    log_prob, m_mean, m_variance, s = jax.jit(
        lambda m: (m.log_prob(x), m.mean(), m.variance(), m.sample(jax.random.key(3), (30_000,))))(m)
    np.testing.assert_allclose(log_prob, ref, rtol=1e-10)
    mean = np.sum(w * [0.0, 10.0, 3.0])
    second = np.sum(w * (np.array([1.0, 4.0, 0.25]) + np.array([0.0, 100.0, 9.0])))
    np.testing.assert_allclose(m_mean, mean)
    np.testing.assert_allclose(m_variance, second - mean**2)
    s = np.asarray(s)
    assert abs(s.mean() - mean) < 5 * np.sqrt((second - mean**2) / 30_000)
    with pytest.raises(NotImplementedError):
        m.entropy()


def test_mixture_of_batched_multivariate_components():
    comps = MultivariateNormalDiag(jnp.zeros((4, 2, 3)), jnp.ones((4, 2, 3)))
    m = MixtureSameFamily(jnp.zeros(2), comps)
    assert m.batch_shape == (4,) and m.event_shape == (3,)
    shapes = jax.eval_shape(
        lambda m: (m.sample(jax.random.key(0), (5,)), m.log_prob(jnp.zeros((5, 4, 3))), m.mean()), m
    )
    assert [s.shape for s in shapes] == [(5, 4, 3), (5, 4), (4, 3)]
    with pytest.raises(ValueError, match="number of components"):
        MixtureSameFamily(jnp.zeros(3), comps)


def test_parameters_broadcast_to_one_batch_shape():
    d = Normal(jnp.zeros((3, 1)), jnp.ones(4))
    assert d.batch_shape == (3, 4) and d.loc.shape == d.scale.shape == (3, 4)
    # Shapes only: traced, not compiled.
    assert jax.eval_shape(lambda d: d.sample(jax.random.key(0), 2), d).shape == (2, 3, 4)
    assert jax.eval_shape(lambda d: d.log_prob(jnp.zeros(4)), d).shape == (3, 4)
    mvn = MultivariateNormalTriL(jnp.zeros((5, 3)), jnp.asarray(L, jnp.float32))
    assert mvn.batch_shape == (5,) and mvn.event_shape == (3,)
    assert jax.eval_shape(lambda d: d.log_prob(jnp.zeros(3)), mvn).shape == (5,)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Normal(0.0, -1.0), "scale must be > 0"),
        (lambda: Normal(0.0, jnp.array([1.0, 0.0])), "1 of 2 entries"),
        (lambda: Laplace(0.0, 0.0), "scale must be > 0"),
        (lambda: Exponential(-2.0), "rate must be > 0"),
        (lambda: Gamma(0.0, 1.0), "concentration must be > 0"),
        (lambda: Beta(1.0, -1.0), "b must be > 0"),
        (lambda: Dirichlet(jnp.array([1.0, 0.0])), "concentration must be > 0"),
        (lambda: MultivariateNormalDiag(jnp.zeros(2), jnp.array([1.0, -1.0])), "scale_diag"),
        (
            lambda: MultivariateNormalTriL(jnp.zeros(2), jnp.array([[1.0, 0.0], [0.0, -1.0]])),
            "positive diagonal",
        ),
        (
            lambda: MultivariateNormalTriL(jnp.zeros(2), jnp.array([[1.0, 0.5], [0.0, 1.0]])),
            "lower triangular",
        ),
        (lambda: Normal(jnp.zeros(3), jnp.ones(2)), r"loc.shape=\(3,\), scale.shape=\(2,\)"),
        (lambda: MultivariateNormalDiag(jnp.zeros(3), jnp.ones(2)), "event shape"),
        (lambda: MultivariateNormalTriL(jnp.zeros(3), jnp.eye(2)), r"\(3, 3\)"),
        (lambda: Dirichlet(1.0), "at least 1 dimension"),
    ],
)
def test_invalid_parameters_raise_at_construction(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_integer_parameters_are_refused():
    with pytest.raises(TypeError, match="loc must be a floating-point array"):
        Normal(jnp.array([0, 1]), 1.0)


def test_traced_values_are_checked_with_checkify():
    def f(scale):
        d = Normal(0.0, scale)
        d.check()
        return d.log_prob(0.0)

    checked = jax.jit(checkify.checkify(f))
    err, _ = checked(-1.0)
    with pytest.raises(checkify.JaxRuntimeError, match="scale must be > 0"):
        err.throw()
    err, value = checked(1.0)
    err.throw()
    np.testing.assert_allclose(value, -0.5 * np.log(2 * np.pi), rtol=1e-6)


def test_pytree_jit_vmap_grad():
    d = Normal(jnp.arange(3.0), jnp.ones(3))
    leaves, tree = jax.tree.flatten(d)
    assert len(leaves) == 2 and isinstance(jax.tree.unflatten(tree, leaves), Normal)
    np.testing.assert_allclose(jax.jit(lambda d: d.entropy())(d), 0.5 * np.log(2 * np.pi * np.e))
    per = jax.vmap(lambda d: d.log_prob(0.0))(d)
    np.testing.assert_allclose(per, stats.norm(np.arange(3.0)).logpdf(0.0), rtol=1e-6)
    g = jax.grad(lambda d: d.log_prob(1.0).sum())(d)
    assert isinstance(g, Normal)
    np.testing.assert_allclose(g.loc, 1.0 - np.arange(3.0), rtol=1e-6)
    with pytest.raises(AttributeError, match="immutable"):
        d.loc = jnp.zeros(3)
    assert d.replace(loc=jnp.ones(3)).loc.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "make, param, dmean",
    [
        # d E[x] / d parameter, from the closed-form mean
        (lambda a: Normal(a, 2.0), 0.5, lambda a: 1.0),
        (lambda a: Gamma(a, 2.0), 1.5, lambda a: 0.5),
        (lambda a: Exponential(a), 2.0, lambda a: -1.0 / a**2),
        (lambda a: Laplace(0.0, a), 1.0, lambda a: 0.0),
    ],
)
def test_samples_are_reparameterised(make, param, dmean):
    n = 2_000

    def sample_mean(a):
        return jnp.mean(make(a).sample(jax.random.key(7), (n,)))

    # one forward-mode pass gives every sample's derivative (their mean's standard error);
    # both modes compiled as one program
    per_sample, estimate = jax.jit(lambda a: (
        jax.jacfwd(lambda a: make(a).sample(jax.random.key(7), (n,)))(a), jax.grad(sample_mean)(a)))(param)
    per_sample, estimate = np.asarray(per_sample), float(estimate)
    se = per_sample.std() / np.sqrt(n)
    assert abs(estimate - dmean(param)) < 5 * se + 1e-6
