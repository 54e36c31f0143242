"""KL between distributions of different families: `KL(p || q) = -H(p) - E_p[log q]`.

For each family of `q`, `E_p[log q(x)]` needs one or two expectations under
`p` -- its mean and variance (against a Normal), `E[log x]` (a Gamma or a
Beta), `E|x - m|` (a Laplace) or its moment generating function (a Gumbel) --
so each formula is written once, against `q`, and each pair supplies `p`'s
expectations. Where `q` puts no mass on part of `p`'s support, or `p`'s tails
are too heavy for `q`'s, the KL is `+inf` (`infinite`).

The pairs are those of `torch.distributions.kl` for the families jaxkl has,
plus Laplace, Uniform and Exponential against a Laplace or a Gumbel where a
closed form exists. Normal‖Laplace includes the location difference (torch's
formula assumes equal locations).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import betaln, digamma, erf, gammaln, xlogy

from ._counts import Binomial, Poisson
from ._discrete import Bernoulli
from ._kl import _nonnegative, register_kl
from ._univariate import (
    EULER_GAMMA,
    Beta,
    Cauchy,
    Exponential,
    Gamma,
    Gumbel,
    Laplace,
    LogNormal,
    Normal,
    StudentT,
    Uniform,
)

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


def infinite(p, q) -> jax.Array:
    """`+inf`: `q` is 0 on part of `p`'s support, or `E_p[-log q]` diverges (heavy tails)."""
    return jnp.full(p.batch_shape, jnp.inf, p.dtype)


def _kl(p, cross_entropy: jax.Array) -> jax.Array:
    return _nonnegative(cross_entropy - p.entropy())


def _uniform_inside(p: Uniform, outside: jax.Array) -> Uniform:
    """`p` with bounds replaced by (0, 1) where `outside`: the formulas' branch stays finite there."""
    low = jnp.where(outside, 0.0, p.low)
    high = jnp.where(outside, 1.0, p.high)
    return Uniform._tree_unflatten((), (low, high))


def _uniform_mean_log(p: Uniform) -> jax.Array:
    """`E[log x]` for `x ~ U(l, h)`, `0 <= l`."""
    width = p.high - p.low
    return (xlogy(p.high, p.high) - xlogy(p.low, p.low)) / width - 1.0


# ----------------------------------------------------------------- q Normal
# -E_p[log q] = log(sqrt(2 pi) s) + (Var_p + (E_p x - m)^2) / (2 s^2)


@register_kl(Beta, Normal)
@register_kl(Exponential, Normal)
@register_kl(Gamma, Normal)
@register_kl(Gumbel, Normal)
@register_kl(Laplace, Normal)
@register_kl(LogNormal, Normal)
@register_kl(Uniform, Normal)
def _kl_to_normal(p, q):
    second_moment = p.variance() + jnp.square(p.mean() - q.loc)
    cross = _HALF_LOG_TWO_PI + jnp.log(q.scale) + 0.5 * second_moment / jnp.square(q.scale)
    return _kl(p, cross)


# ------------------------------------------------------------ q Exponential
# -E_p[log q] = -log r + r E_p[x]   (p on x >= 0)


@register_kl(Beta, Exponential)
@register_kl(Gamma, Exponential)
@register_kl(LogNormal, Exponential)
def _kl_to_exponential(p, q):
    return _kl(p, q.rate * p.mean() - jnp.log(q.rate))


@register_kl(Uniform, Exponential)
def _kl_uniform_exponential(p, q):
    outside = p.low < 0
    return jnp.where(outside, jnp.inf, _kl_to_exponential(_uniform_inside(p, outside), q))


# ------------------------------------------------------------------ q Gamma
# -E_p[log q] = log Gamma(a) - a log b - (a - 1) E_p[log x] + b E_p[x]


def _to_gamma(p, q, mean_log: jax.Array) -> jax.Array:
    a, b = q.concentration, q.rate
    cross = gammaln(a) - a * jnp.log(b) - (a - 1.0) * mean_log + b * p.mean()
    return _kl(p, cross)


@register_kl(Beta, Gamma)
def _kl_beta_gamma(p, q):
    return _to_gamma(p, q, digamma(p.a) - digamma(p.a + p.b))


@register_kl(Exponential, Gamma)
def _kl_exponential_gamma(p, q):
    return _to_gamma(p, q, -EULER_GAMMA - jnp.log(p.rate))


@register_kl(LogNormal, Gamma)
def _kl_log_normal_gamma(p, q):
    return _to_gamma(p, q, p.loc)


@register_kl(Uniform, Gamma)
def _kl_uniform_gamma(p, q):
    outside = p.low < 0
    inside = _uniform_inside(p, outside)
    return jnp.where(outside, jnp.inf, _to_gamma(inside, q, _uniform_mean_log(inside)))


# ------------------------------------------------------------------- q Beta
# -E_p[log q] = log B(a, b) - (a - 1) E_p[log x] - (b - 1) E_p[log(1 - x)]   (p on [0, 1])


@register_kl(Uniform, Beta)
def _kl_uniform_beta(p, q):
    outside = (p.low < 0) | (p.high > 1)
    inside = _uniform_inside(p, outside)
    mirrored = Uniform._tree_unflatten((), (1.0 - inside.high, 1.0 - inside.low))  # 1 - x
    cross = (
        betaln(q.a, q.b)
        - (q.a - 1.0) * _uniform_mean_log(inside)
        - (q.b - 1.0) * _uniform_mean_log(mirrored)
    )
    return jnp.where(outside, jnp.inf, _kl(inside, cross))


# ---------------------------------------------------------------- q Uniform
# -E_p[log q] = log(h - l) if p's support lies in [l, h]


@register_kl(Beta, Uniform)
def _kl_beta_uniform(p, q):
    inside = (q.low <= 0) & (q.high >= 1)
    return jnp.where(inside, _kl(p, jnp.log(q.high - q.low)), jnp.inf)


# ----------------------------------------------------------------- q Gumbel
# -E_p[log q] = log s + (E_p[x] - m) / s + exp(m / s) M_p(-1 / s),  M_p the MGF of p


def _to_gumbel(p, q, log_mgf) -> jax.Array:
    t = -1.0 / q.scale
    tail = jnp.exp(q.loc / q.scale + log_mgf(t))
    return _kl(p, jnp.log(q.scale) + (p.mean() - q.loc) / q.scale + tail)


@register_kl(Gumbel, Gumbel)
def _kl_gumbel(p, q):
    return _to_gumbel(p, q, lambda t: gammaln(1.0 - p.scale * t) + p.loc * t)


@register_kl(Normal, Gumbel)
def _kl_normal_gumbel(p, q):
    return _to_gumbel(p, q, lambda t: p.loc * t + 0.5 * jnp.square(p.scale * t))


@register_kl(Exponential, Gumbel)
def _kl_exponential_gumbel(p, q):
    return _to_gumbel(p, q, lambda t: -jnp.log1p(-t / p.rate))


@register_kl(Gamma, Gumbel)
def _kl_gamma_gumbel(p, q):
    return _to_gumbel(p, q, lambda t: -p.concentration * jnp.log1p(-t / p.rate))


@register_kl(Uniform, Gumbel)
def _kl_uniform_gumbel(p, q):
    def log_mgf(t):  # log (e^{th} - e^{tl}) / (t (h - l)) for t < 0
        width = p.high - p.low
        return t * p.low + jnp.log(-jnp.expm1(t * width)) - jnp.log(-t * width)

    return _to_gumbel(p, q, log_mgf)


@register_kl(Laplace, Gumbel)
def _kl_laplace_gumbel(p, q):
    # the Laplace MGF e^{mu t} / (1 - b^2 t^2) exists for |t| < 1/b: finite KL iff b < s
    ratio = p.scale / q.scale
    finite = ratio < 1.0
    safe = jnp.where(finite, ratio, 0.5)
    value = _to_gumbel(p, q, lambda t: p.loc * t - jnp.log1p(-jnp.square(safe)))
    return jnp.where(finite, value, jnp.inf)


# ---------------------------------------------------------------- q Laplace
# -E_p[log q] = log 2b + E_p|x - m| / b


def _to_laplace(p, q, mean_abs: jax.Array) -> jax.Array:
    return _kl(p, jnp.log(2.0 * q.scale) + mean_abs / q.scale)


@register_kl(Normal, Laplace)
def _kl_normal_laplace(p, q):
    delta = p.loc - q.loc  # folded normal mean
    mean_abs = p.scale * math.sqrt(2.0 / math.pi) * jnp.exp(
        -0.5 * jnp.square(delta / p.scale)
    ) + delta * erf(delta / (math.sqrt(2.0) * p.scale))
    return _to_laplace(p, q, mean_abs)


@register_kl(Uniform, Laplace)
def _kl_uniform_laplace(p, q):
    above, below = p.high - q.loc, p.low - q.loc
    mean_abs = (above * jnp.abs(above) - below * jnp.abs(below)) / (2.0 * (p.high - p.low))
    return _to_laplace(p, q, mean_abs)


@register_kl(Exponential, Laplace)
def _kl_exponential_laplace(p, q):
    # E|x - m| = E[x] - m + 2 E[(m - x)^+], the last term 0 for m <= 0
    m_plus = jnp.maximum(q.loc, 0.0)
    below = m_plus + jnp.expm1(-p.rate * m_plus) / p.rate
    return _to_laplace(p, q, 1.0 / p.rate - q.loc + 2.0 * below)


# ---------------------------------------------------------------- discrete


@register_kl(Bernoulli, Poisson)
def _kl_bernoulli_poisson(p, q):
    # -E_p[log q] = rate - P(1) log rate  (log 0! = log 1! = 0)
    return _kl(p, q.rate - p.mean() * jnp.log(q.rate))


# ---------------------------------------------------------- support mismatch

_REAL_LINE = (Normal, Laplace, Gumbel, Cauchy, StudentT)
_HALF_LINE = (Exponential, Gamma, LogNormal)
_BOUNDED = (Beta, Uniform)

for _p in _REAL_LINE:
    for _q in _HALF_LINE + _BOUNDED:
        register_kl(_p, _q)(infinite)
for _p in _HALF_LINE:
    for _q in _BOUNDED:
        register_kl(_p, _q)(infinite)
for _q in (Bernoulli, Binomial):  # unbounded counts against bounded ones
    register_kl(Poisson, _q)(infinite)


# polynomial tails against exponential ones: E_p[-log q] diverges
for _p, _q in ((Cauchy, Normal), (Cauchy, Laplace), (Cauchy, Gumbel), (StudentT, Gumbel)):
    register_kl(_p, _q)(infinite)
