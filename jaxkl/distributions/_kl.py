"""Analytic KL divergence between distributions, through an extensible registry.

`kl_divergence(p, q)` finds the function registered for the pair of types
(walking both classes' MROs, most specific first), broadcasts the two batch
shapes explicitly and calls it. This module holds the registry and the
same-family closed forms; `_kl_cross` adds pairs of different families. Each value is clamped at 0 (rounding can otherwise give a
tiny negative) while its gradient stays the formula's.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import betaln, digamma, gammaln

from .._logits import kl_divergence_from_logits
from .._rowwise import clip_value_only
from ._base import Distribution
from ._counts import Binomial, Geometric, Poisson, times
from ._discrete import Bernoulli, Categorical, _two_class, bernoulli_log_probs
from ._independent import Independent
from ._multivariate import Dirichlet, MultivariateNormalDiag, MultivariateNormalTriL, _solve_lower
from ._univariate import Beta, Cauchy, Exponential, Gamma, Laplace, LogNormal, Normal, Uniform

KLFunction = Callable[[Distribution, Distribution], jax.Array]
_REGISTRY: dict[tuple[type, type], KLFunction] = {}


def register_kl(type_p: type, type_q: type) -> Callable[[KLFunction], KLFunction]:
    """Decorator registering `fn(p, q)` as the analytic `KL(p || q)` for two types.

    The function receives two distributions whose batch shapes have already
    been broadcast to a common shape and returns one value per batch member.
    A registration for a subclass takes precedence over one for its base class;
    registering a pair again replaces the earlier function.

    Args:
      type_p: class of the first argument (a [jaxkl.distributions.Distribution][] subclass).
      type_q: class of the second argument.

    Returns:
      The decorator (it returns the function unchanged).

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from jaxkl.distributions import Exponential, Gamma, kl_divergence, register_kl
      >>> @register_kl(Exponential, Gamma)
      ... def _kl_exponential_gamma(p, q):  # Exponential(l) is Gamma(1, l)
      ...     return kl_divergence(Gamma(jnp.ones_like(p.rate), p.rate), q)
      >>> print(kl_divergence(Exponential(1.0), Gamma(1.0, 1.0)))
      0.0

    References:
      The same design as `torch.distributions.kl.register_kl` and
      `tfp.distributions.RegisterKL`.
    """
    for t, name in ((type_p, "type_p"), (type_q, "type_q")):
        if not (isinstance(t, type) and issubclass(t, Distribution)):
            raise TypeError(f"{name} must be a jaxkl Distribution subclass, got {t!r}")

    def decorator(fn: KLFunction) -> KLFunction:
        _REGISTRY[(type_p, type_q)] = fn
        return fn

    return decorator


def _distributions(p: Any, q: Any) -> None:
    for name, d in (("p", p), ("q", q)):
        if not isinstance(d, Distribution):
            raise TypeError(f"{name} must be a jaxkl distribution, got {type(d).__name__}")


def _lookup(type_p: type, type_q: type) -> KLFunction | None:
    for tp in type_p.__mro__:
        for tq in type_q.__mro__:
            fn = _REGISTRY.get((tp, tq))
            if fn is not None:
                return fn
    return None


def has_kl(p: Distribution, q: Distribution) -> bool:
    """Whether [jaxkl.distributions.kl_divergence][] has a closed form for the types of `p` and `q`.

    Args:
      p: a distribution.
      q: a distribution.

    Returns:
      `True` if a function is registered for the pair (or for base classes of it).

    Examples:
      >>> from jaxkl.distributions import Normal, StudentT, has_kl
      >>> has_kl(Normal(0.0, 1.0), Normal(1.0, 1.0)), has_kl(Normal(0.0, 1.0), StudentT(3.0, 0.0, 1.0))
      (True, False)

    References:
      See [jaxkl.distributions.register_kl][].
    """
    _distributions(p, q)
    return _lookup(type(p), type(q)) is not None


def kl_divergence(p: Distribution, q: Distribution) -> jax.Array:
    r"""Analytic `KL(p || q)` in nats for a registered pair of distribution types.

    $$
    \mathrm{KL}(p\,\|\,q) = \mathbb E_{x\sim p}\big[\log p(x) - \log q(x)\big]
    $$

    Closed forms are built in for every same-family pair except StudentT and
    mixtures (Categorical, Bernoulli and Binomial through
    [jaxkl.kl_divergence_from_logits][]), for the cross-family pairs of
    `torch.distributions` (Beta‖Normal, Gamma‖Exponential, Normal‖Laplace, …,
    and `+inf` where `q`'s support misses part of `p`'s) and for
    MultivariateNormalDiag‖MultivariateNormalTriL both ways: the full table
    is in the docs, "KL pairs". Add others with
    [jaxkl.distributions.register_kl][]. The batch shapes of `p` and `q` are broadcast
    against each other (explicitly, as NumPy does); event shapes must match.

    Args:
      p: a distribution with batch shape `B1`.
      q: a distribution with batch shape `B2` broadcastable with `B1`.

    Returns:
      `broadcast(B1, B2)`-shaped KL values, `>= 0` (`+inf` where `q`
      puts no mass on part of `p`'s support).

    Raises:
      NotImplementedError: no KL is registered for `(type(p), type(q))`.
      ValueError: batch shapes that do not broadcast, or different event shapes.

    Examples:
      >>> import numpy as np
      >>> from jaxkl.distributions import Normal, kl_divergence
      >>> print(np.asarray(kl_divergence(Normal(0.0, 1.0), Normal(1.0, 2.0))).round(4))
      0.4431

    References:
      Kullback, Leibler, "On Information and Sufficiency" (1951); closed forms in
      Gil, Alajaji, Linder, "Renyi divergence measures for commonly used univariate
      continuous distributions" (2013) and Penny, "KL-divergences of Normal, Gamma,
      Dirichlet and Wishart densities" (2001).
    """
    _distributions(p, q)
    fn = _lookup(type(p), type(q))
    if fn is None:
        raise NotImplementedError(
            f"no analytic KL is registered for KL({type(p).__name__} || {type(q).__name__}); "
            "register one with @jaxkl.distributions.register_kl"
            f"({type(p).__name__}, {type(q).__name__}) or use a Monte Carlo estimate"
        )
    if p.event_shape != q.event_shape:
        raise ValueError(
            f"p and q must have the same event shape, got {p.event_shape} and {q.event_shape}"
        )
    try:
        batch = np.broadcast_shapes(p.batch_shape, q.batch_shape)
    except ValueError:
        raise ValueError(
            f"batch shapes of p {p.batch_shape} and q {q.batch_shape} do not broadcast"
        ) from None
    return fn(p._broadcast_batch(batch), q._broadcast_batch(batch))


def _nonnegative(value: jax.Array) -> jax.Array:
    return clip_value_only(value, 0.0, None)


def _normal_terms(loc_p, scale_p, loc_q, scale_q):
    ratio = scale_p / scale_q
    delta = (loc_p - loc_q) / scale_q
    return 0.5 * (jnp.square(ratio) - 1.0 + jnp.square(delta)) - jnp.log(ratio)


@register_kl(Normal, Normal)
def _kl_normal(p, q):
    return _nonnegative(_normal_terms(p.loc, p.scale, q.loc, q.scale))


@register_kl(MultivariateNormalDiag, MultivariateNormalDiag)
def _kl_mvn_diag(p, q):
    terms = _normal_terms(p.loc, p.scale_diag, q.loc, q.scale_diag)
    return _nonnegative(jnp.sum(terms, axis=-1))


def _as_tril(d: MultivariateNormalDiag | MultivariateNormalTriL) -> MultivariateNormalTriL:
    if isinstance(d, MultivariateNormalTriL):
        return d
    eye = jnp.eye(d.scale_diag.shape[-1], dtype=d.scale_diag.dtype)
    return MultivariateNormalTriL._tree_unflatten((), (d.loc, d.scale_diag[..., None] * eye))


@register_kl(MultivariateNormalDiag, MultivariateNormalTriL)
@register_kl(MultivariateNormalTriL, MultivariateNormalDiag)
@register_kl(MultivariateNormalTriL, MultivariateNormalTriL)
def _kl_mvn_tril(p, q):
    p, q = _as_tril(p), _as_tril(q)
    d = p.loc.shape[-1]
    m = _solve_lower(q.scale_tril, p.scale_tril)  # Lq^{-1} Lp: trace term is its Frobenius norm
    z = _solve_lower(q.scale_tril, (q.loc - p.loc)[..., None])[..., 0]
    log_diag_p = jnp.log(jnp.diagonal(p.scale_tril, axis1=-2, axis2=-1))
    log_diag_q = jnp.log(jnp.diagonal(q.scale_tril, axis1=-2, axis2=-1))
    value = 0.5 * (jnp.sum(jnp.square(m), axis=(-2, -1)) + jnp.sum(jnp.square(z), axis=-1) - d)
    return _nonnegative(value + jnp.sum(log_diag_q - log_diag_p, axis=-1))


@register_kl(Laplace, Laplace)
def _kl_laplace(p, q):
    distance = jnp.abs(p.loc - q.loc)
    ratio = p.scale / q.scale
    value = -jnp.log(ratio) + distance / q.scale + ratio * jnp.exp(-distance / p.scale) - 1.0
    return _nonnegative(value)


@register_kl(Exponential, Exponential)
def _kl_exponential(p, q):
    ratio = q.rate / p.rate
    return _nonnegative(ratio - 1.0 - jnp.log(ratio))


@register_kl(Gamma, Gamma)
def _kl_gamma(p, q):
    ap, bp, aq, bq = p.concentration, p.rate, q.concentration, q.rate
    value = (
        (ap - aq) * digamma(ap)
        - gammaln(ap)
        + gammaln(aq)
        + aq * (jnp.log(bp) - jnp.log(bq))
        + ap * (bq - bp) / bp
    )
    return _nonnegative(value)


@register_kl(Beta, Beta)
def _kl_beta(p, q):
    total_p = p.a + p.b
    value = (
        betaln(q.a, q.b)
        - betaln(p.a, p.b)
        + (p.a - q.a) * digamma(p.a)
        + (p.b - q.b) * digamma(p.b)
        + (q.a - p.a + q.b - p.b) * digamma(total_p)
    )
    return _nonnegative(value)


@register_kl(Dirichlet, Dirichlet)
def _kl_dirichlet(p, q):
    ap, aq = p.concentration, q.concentration
    total_p = jnp.sum(ap, axis=-1)
    value = (
        gammaln(total_p)
        - gammaln(jnp.sum(aq, axis=-1))
        - jnp.sum(gammaln(ap) - gammaln(aq), axis=-1)
        + jnp.sum((ap - aq) * (digamma(ap) - digamma(total_p)[..., None]), axis=-1)
    )
    return _nonnegative(value)


@register_kl(Categorical, Categorical)
def _kl_categorical(p, q):
    return kl_divergence_from_logits(p.logits, q.logits)


@register_kl(Bernoulli, Bernoulli)
def _kl_bernoulli(p, q):
    return kl_divergence_from_logits(_two_class(p.logits), _two_class(q.logits))


@register_kl(LogNormal, LogNormal)
def _kl_log_normal(p, q):  # KL is invariant under the bijection exp
    return _nonnegative(_normal_terms(p.loc, p.scale, q.loc, q.scale))


@register_kl(Cauchy, Cauchy)
def _kl_cauchy(p, q):
    # Chyzak, Nielsen, "A closed-form formula for the Kullback-Leibler divergence
    # between Cauchy distributions" (2019)
    spread = jnp.square(p.scale + q.scale) + jnp.square(p.loc - q.loc)
    return _nonnegative(jnp.log(spread) - jnp.log(4.0 * p.scale * q.scale))


@register_kl(Uniform, Uniform)
def _kl_uniform(p, q):
    inside = (q.low <= p.low) & (p.high <= q.high)
    value = jnp.log(q.high - q.low) - jnp.log(p.high - p.low)
    return jnp.where(inside, _nonnegative(value), jnp.inf)


@register_kl(Poisson, Poisson)
def _kl_poisson(p, q):
    return _nonnegative(p.rate * (jnp.log(p.rate) - jnp.log(q.rate)) - p.rate + q.rate)


@register_kl(Geometric, Geometric)
def _kl_geometric(p, q):
    # E_p[log p] - E_p[log q] with E_p[k] = (1 - p) / p; 0 * log 0 terms are 0
    log_success_q, log_failure_q = bernoulli_log_probs(q.logits)
    cross = -times(p.mean(), log_failure_q) - log_success_q
    return _nonnegative(cross - p.entropy())


@register_kl(Binomial, Binomial)
def _kl_binomial(p, q):
    if p.total_count == q.total_count:  # n * KL of one trial
        kl = kl_divergence_from_logits(_two_class(p.logits), _two_class(q.logits))
        return p.total_count * kl
    # different n: the finite sum over every count either can take (+inf where p's exceed q's n)
    size = max(p.total_count, q.total_count) + 1
    return kl_divergence_from_logits(p.log_probs_of_counts(size), q.log_probs_of_counts(size))


@register_kl(Independent, Independent)
def _kl_independent(p, q):
    if p.reinterpreted_batch_ndims != q.reinterpreted_batch_ndims:
        raise NotImplementedError(
            "KL between Independent distributions that reinterpret different numbers of batch "
            f"dims ({p.reinterpreted_batch_ndims} and {q.reinterpreted_batch_ndims})"
        )
    return p._sum_reinterpreted(kl_divergence(p.base, q.base))
