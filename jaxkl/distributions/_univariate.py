"""Scalar continuous families: Normal, Laplace, Cauchy, Gumbel, StudentT, LogNormal,
Uniform, Exponential, Gamma, Beta.

Every sampler is reparameterised: location-scale families by construction,
Gamma, Beta and StudentT through JAX's implicitly reparameterised samplers
(`jax.random.gamma` is differentiable in its shape parameter).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import betaln, digamma, gammaln, xlog1py, xlogy

from ._base import POSITIVE, REAL, Distribution, above

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)
EULER_GAMMA = 0.57721566490153286061


def _outside(x: jax.Array, low: float, high: float | None = None) -> jax.Array:
    """True where `x` is outside the support `[low, high]`."""
    out = x < low
    return out if high is None else out | (x > high)


class _LocationScale(Distribution):
    """`loc + scale * standard draw`: reparameterised by construction."""

    _params = (("loc", 0, REAL), ("scale", 0, POSITIVE))
    _standard: Any = None  # jax.random sampler of the standard (loc 0, scale 1) member

    def __init__(self, loc: Any, scale: Any):
        self._set_params(loc=loc, scale=scale)

    def _loc_scale(self, shape):
        return self._param("loc", shape), self._param("scale", shape)

    def sample(self, key, shape=()):
        shape = self._sample_shape(shape)
        loc, scale = self._loc_scale(shape)
        return loc + scale * self._standard(key, shape, self.dtype)

    def mean(self):
        return self.loc


class Normal(_LocationScale):
    r"""Normal (Gaussian) distribution `N(loc, scale**2)`.

    $$
    \log p(x) = -\tfrac12 \big(\tfrac{x-\mu}{\sigma}\big)^2 - \log\sigma
    - \tfrac12 \log 2\pi, \qquad H = \tfrac12 \log(2\pi e \sigma^2)
    $$

    Args:
      loc: mean `mu`, any shape.
      scale: standard deviation `sigma > 0`; broadcast against `loc` to give
        the batch shape.

    Raises:
      ValueError: concrete `scale <= 0` or shapes that do not broadcast.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import numpy as np
      >>> from jaxkl.distributions import Normal
      >>> d = Normal(0.0, jnp.array([1.0, 2.0]))
      >>> d.batch_shape
      (2,)
      >>> print(np.asarray(d.log_prob(0.0)).round(4))
      [-0.9189 -1.6121]
      >>> d.sample(jax.random.key(0), (5,)).shape
      (5, 2)

    References:
      Bishop, "Pattern Recognition and Machine Learning" (2006), section 2.3.
    """

    def log_prob(self, x):
        x, shape = self._value(x)
        loc, scale = self._loc_scale(shape)
        z = (x - loc) / scale
        return -0.5 * z * z - jnp.log(scale) - _HALF_LOG_TWO_PI

    _standard = staticmethod(jax.random.normal)

    def entropy(self):
        return 0.5 + _HALF_LOG_TWO_PI + jnp.log(self.scale)

    def variance(self):
        return jnp.square(self.scale)


class Laplace(_LocationScale):
    r"""Laplace distribution with location `loc` and scale `b`.

    $$
    \log p(x) = -\frac{|x-\mu|}{b} - \log 2b, \qquad H = 1 + \log 2b
    $$

    Args:
      loc: location (the mean and median), any shape.
      scale: `b > 0`; broadcast against `loc`.

    Examples:
      >>> import numpy as np
      >>> from jaxkl.distributions import Laplace
      >>> d = Laplace(1.0, 2.0)
      >>> print(np.asarray(d.log_prob(1.0)).round(4), d.variance())
      -1.3863 8.0

    References:
      Kotz, Kozubowski, Podgorski, "The Laplace Distribution and Generalizations" (2001).
    """

    def log_prob(self, x):
        x, shape = self._value(x)
        loc, scale = self._loc_scale(shape)
        return -jnp.abs(x - loc) / scale - jnp.log(2.0 * scale)

    _standard = staticmethod(jax.random.laplace)

    def entropy(self):
        return 1.0 + jnp.log(2.0 * self.scale)

    def variance(self):
        return 2.0 * jnp.square(self.scale)


class Exponential(Distribution):
    r"""Exponential distribution with `rate` (inverse scale), support `x >= 0`.

    $$
    \log p(x) = \log\lambda - \lambda x, \qquad H = 1 - \log\lambda
    $$

    Args:
      rate: `lambda > 0`, any shape.

    Examples:
      >>> import numpy as np
      >>> from jaxkl.distributions import Exponential
      >>> d = Exponential(2.0)
      >>> print(np.asarray(d.log_prob(0.5)).round(4), d.mean(), d.log_prob(-1.0))
      -0.3069 0.5 -inf

    References:
      Johnson, Kotz, Balakrishnan, "Continuous Univariate Distributions", vol. 1, ch. 19.
    """

    _params = (("rate", 0, POSITIVE),)

    def __init__(self, rate: Any):
        self._set_params(rate=rate)

    def log_prob(self, x):
        x, shape = self._value(x)
        rate = self._param("rate", shape)
        inside = jnp.where(_outside(x, 0.0), 0.0, x)  # double where: no NaN gradient outside
        return jnp.where(_outside(x, 0.0), -jnp.inf, jnp.log(rate) - rate * inside)

    def sample(self, key, shape=()):
        shape = self._sample_shape(shape)
        return jax.random.exponential(key, shape, self.dtype) / self._param("rate", shape)

    def entropy(self):
        return 1.0 - jnp.log(self.rate)

    def mean(self):
        return 1.0 / self.rate

    def variance(self):
        return 1.0 / jnp.square(self.rate)


class Gamma(Distribution):
    r"""Gamma distribution with `concentration` (shape) `alpha` and `rate` `beta`.

    $$
    \log p(x) = \alpha\log\beta + (\alpha-1)\log x - \beta x - \log\Gamma(\alpha)
    $$

    $$
    H = \alpha - \log\beta + \log\Gamma(\alpha) + (1-\alpha)\psi(\alpha)
    $$

    Samples are reparameterised (implicitly, through `jax.random.gamma`).

    Args:
      concentration: `alpha > 0`.
      rate: `beta > 0`; broadcast against `concentration`.

    Examples:
      >>> import numpy as np
      >>> from jaxkl.distributions import Gamma
      >>> d = Gamma(2.0, 4.0)
      >>> print(d.mean(), d.variance(), np.asarray(d.log_prob(0.25)).round(4))
      0.5 0.125 0.3863

    References:
      Figurnov, Mohamed, Mnih, "Implicit Reparameterization Gradients" (NeurIPS 2018).
    """

    _params = (("concentration", 0, POSITIVE), ("rate", 0, POSITIVE))

    def __init__(self, concentration: Any, rate: Any):
        self._set_params(concentration=concentration, rate=rate)

    def log_prob(self, x):
        x, shape = self._value(x)
        a, b = self._param("concentration", shape), self._param("rate", shape)
        inside = jnp.where(_outside(x, 0.0), 1.0, x)
        value = xlogy(a, b) + xlogy(a - 1.0, inside) - b * inside - gammaln(a)
        return jnp.where(_outside(x, 0.0), -jnp.inf, value)

    def sample(self, key, shape=()):
        shape = self._sample_shape(shape)
        g = jax.random.gamma(key, self._param("concentration", shape), shape, self.dtype)
        return g / self._param("rate", shape)

    def entropy(self):
        a, b = self.concentration, self.rate
        return a - jnp.log(b) + gammaln(a) + (1.0 - a) * digamma(a)

    def mean(self):
        return self.concentration / self.rate

    def variance(self):
        return self.concentration / jnp.square(self.rate)


class Beta(Distribution):
    r"""Beta distribution on `[0, 1]` with concentrations `a` and `b`.

    $$
    \log p(x) = (a-1)\log x + (b-1)\log(1-x) - \log B(a, b)
    $$

    $$
    H = \log B(a,b) - (a-1)\psi(a) - (b-1)\psi(b) + (a+b-2)\psi(a+b)
    $$

    Samples are reparameterised (implicitly, through `jax.random.beta`).

    Args:
      a: concentration of `x`, `> 0`.
      b: concentration of `1 - x`, `> 0`; broadcast against `a`.

    Examples:
      >>> import numpy as np
      >>> from jaxkl.distributions import Beta
      >>> d = Beta(2.0, 2.0)
      >>> print(d.mean(), np.asarray(d.variance()).round(4), np.asarray(d.log_prob(0.5)).round(4))
      0.5 0.05 0.4055

    References:
      Johnson, Kotz, Balakrishnan, "Continuous Univariate Distributions", vol. 2, ch. 25.
    """

    _params = (("a", 0, POSITIVE), ("b", 0, POSITIVE))

    def __init__(self, a: Any, b: Any):
        self._set_params(a=a, b=b)

    def log_prob(self, x):
        x, shape = self._value(x)
        a, b = self._param("a", shape), self._param("b", shape)
        out = _outside(x, 0.0, 1.0)
        inside = jnp.where(out, 0.5, x)
        value = xlogy(a - 1.0, inside) + xlog1py(b - 1.0, -inside) - betaln(a, b)
        return jnp.where(out, -jnp.inf, value)

    def sample(self, key, shape=()):
        shape = self._sample_shape(shape)
        a, b = self._param("a", shape), self._param("b", shape)
        return jax.random.beta(key, a, b, shape, self.dtype)

    def entropy(self):
        a, b = self.a, self.b
        return (
            betaln(a, b)
            - (a - 1.0) * digamma(a)
            - (b - 1.0) * digamma(b)
            + (a + b - 2.0) * digamma(a + b)
        )

    def mean(self):
        return self.a / (self.a + self.b)

    def variance(self):
        total = self.a + self.b
        return self.a * self.b / (jnp.square(total) * (total + 1.0))



class Cauchy(_LocationScale):
    r"""Cauchy distribution with location `loc` and scale `gamma`.

    $$
    \log p(x) = -\log\pi\gamma - \log\Big(1 + \big(\tfrac{x-x_0}{\gamma}\big)^2\Big),
    \qquad H = \log 4\pi\gamma
    $$

    The mean and variance do not exist: both are NaN (as in SciPy; PyTorch's
    `variance` is `inf`).

    Args:
      loc: location (the median), any shape.
      scale: `gamma > 0`; broadcast against `loc`.

    Examples:
      >>> import numpy as np
      >>> from jaxkl.distributions import Cauchy
      >>> print(np.asarray(Cauchy(0.0, 1.0).log_prob(1.0)).round(4), Cauchy(0.0, 1.0).mean())
      -1.8379 nan

    References:
      Johnson, Kotz, Balakrishnan, "Continuous Univariate Distributions", vol. 1, ch. 16.
    """

    _standard = staticmethod(jax.random.cauchy)

    def log_prob(self, x):
        x, shape = self._value(x)
        loc, scale = self._loc_scale(shape)
        z = (x - loc) / scale
        return -jnp.log(math.pi * scale) - jnp.log1p(z * z)

    def entropy(self):
        return jnp.log(4.0 * math.pi * self.scale)

    def mean(self):
        return jnp.full_like(self.loc, jnp.nan)

    def variance(self):
        return jnp.full_like(self.loc, jnp.nan)


class Gumbel(_LocationScale):
    r"""Gumbel (type I extreme value, maximum) distribution with location `loc` and scale `beta`.

    $$
    \log p(x) = -z - e^{-z} - \log\beta, \quad z = \tfrac{x-\mu}{\beta}, \qquad
    H = \log\beta + \gamma + 1
    $$

    with $\gamma$ the Euler–Mascheroni constant; mean $\mu + \gamma\beta$,
    variance $\pi^2\beta^2/6$.

    Args:
      loc: location (the mode), any shape.
      scale: `beta > 0`; broadcast against `loc`.

    Examples:
      >>> import numpy as np
      >>> from jaxkl.distributions import Gumbel
      >>> print(np.asarray(Gumbel(0.0, 1.0).log_prob(0.0)).round(4), np.asarray(Gumbel(0.0, 1.0).mean()).round(4))
      -1.0 0.5772

    References:
      Johnson, Kotz, Balakrishnan, "Continuous Univariate Distributions", vol. 2, ch. 22.
    """

    _standard = staticmethod(jax.random.gumbel)

    def log_prob(self, x):
        x, shape = self._value(x)
        loc, scale = self._loc_scale(shape)
        z = (x - loc) / scale
        return -z - jnp.exp(-z) - jnp.log(scale)

    def entropy(self):
        return jnp.log(self.scale) + (EULER_GAMMA + 1.0)

    def mean(self):
        return self.loc + EULER_GAMMA * self.scale

    def variance(self):
        return (math.pi**2 / 6.0) * jnp.square(self.scale)


class StudentT(Distribution):
    r"""Student's t distribution with `df` degrees of freedom, location `loc` and scale `sigma`.

    $$
    \log p(x) = \log\Gamma\big(\tfrac{\nu+1}2\big) - \log\Gamma\big(\tfrac\nu2\big)
    - \tfrac12\log\nu\pi - \log\sigma - \tfrac{\nu+1}2 \log\Big(1 + \tfrac{z^2}{\nu}\Big)
    $$

    $$
    H = \tfrac{\nu+1}2\Big[\psi\big(\tfrac{\nu+1}2\big) - \psi\big(\tfrac\nu2\big)\Big]
    + \tfrac12\log\nu + \log B\big(\tfrac\nu2, \tfrac12\big) + \log\sigma
    $$

    with $z = (x-\mu)/\sigma$. The mean is `loc` for $\nu > 1$ (NaN otherwise,
    as PyTorch); the variance $\sigma^2\nu/(\nu-2)$ for $\nu > 2$, `inf` for
    $1 < \nu \le 2$, NaN otherwise (as SciPy and PyTorch). Samples are reparameterised in
    all three parameters.

    Args:
      df: degrees of freedom `nu > 0`.
      loc: location.
      scale: `sigma > 0`; the three broadcast to the batch shape.

    Examples:
      >>> import numpy as np
      >>> from jaxkl.distributions import StudentT
      >>> d = StudentT(3.0, 0.0, 1.0)
      >>> print(np.asarray(d.log_prob(0.0)).round(4), d.variance())
      -1.0009 3.0

    References:
      Johnson, Kotz, Balakrishnan, "Continuous Univariate Distributions", vol. 2, ch. 28.
    """

    _params = (("df", 0, POSITIVE), ("loc", 0, REAL), ("scale", 0, POSITIVE))

    def __init__(self, df: Any, loc: Any, scale: Any):
        self._set_params(df=df, loc=loc, scale=scale)

    def log_prob(self, x):
        x, shape = self._value(x)
        df, loc, scale = (self._param(n, shape) for n in ("df", "loc", "scale"))
        z = (x - loc) / scale
        half = 0.5 * (df + 1.0)
        norm = gammaln(half) - gammaln(0.5 * df) - 0.5 * jnp.log(df * math.pi) - jnp.log(scale)
        return norm - half * jnp.log1p(z * z / df)

    def sample(self, key, shape=()):
        shape = self._sample_shape(shape)
        df, loc, scale = (self._param(n, shape) for n in ("df", "loc", "scale"))
        return loc + scale * jax.random.t(key, df, shape, self.dtype)

    def entropy(self):
        df = self.df
        half = 0.5 * (df + 1.0)
        return (
            half * (digamma(half) - digamma(0.5 * df))
            + 0.5 * jnp.log(df)
            + betaln(0.5 * df, 0.5)
            + jnp.log(self.scale)
        )

    def mean(self):
        return jnp.where(self.df > 1.0, self.loc, jnp.nan)

    def variance(self):
        df = self.df
        finite = jnp.square(self.scale) * df / jnp.where(df > 2.0, df - 2.0, 1.0)
        return jnp.where(df > 2.0, finite, jnp.where(df > 1.0, jnp.inf, jnp.nan))


class LogNormal(Distribution):
    r"""Log-normal distribution: `exp` of a `Normal(loc, scale)` draw, support `x > 0`.

    $$
    \log p(x) = -\tfrac12\Big(\tfrac{\log x-\mu}{\sigma}\Big)^2 - \log\sigma
    - \tfrac12\log 2\pi - \log x, \qquad H = \mu + \tfrac12\log(2\pi e\sigma^2)
    $$

    Mean $e^{\mu+\sigma^2/2}$, variance $(e^{\sigma^2}-1)e^{2\mu+\sigma^2}$.

    Args:
      loc: `mu`, the mean of `log x`.
      scale: `sigma > 0`, the standard deviation of `log x`.

    Examples:
      >>> import numpy as np
      >>> from jaxkl.distributions import LogNormal
      >>> d = LogNormal(0.0, 1.0)
      >>> print(np.asarray(d.log_prob(1.0)).round(4), np.asarray(d.mean()).round(4), d.log_prob(-1.0))
      -0.9189 1.6487 -inf

    References:
      Johnson, Kotz, Balakrishnan, "Continuous Univariate Distributions", vol. 1, ch. 14.
    """

    _params = (("loc", 0, REAL), ("scale", 0, POSITIVE))

    def __init__(self, loc: Any, scale: Any):
        self._set_params(loc=loc, scale=scale)

    def log_prob(self, x):
        x, shape = self._value(x)
        loc, scale = self._param("loc", shape), self._param("scale", shape)
        out = _outside(x, 0.0) | (x == 0)
        log_x = jnp.log(jnp.where(out, 1.0, x))  # double where: no NaN gradient outside
        z = (log_x - loc) / scale
        value = -0.5 * z * z - jnp.log(scale) - _HALF_LOG_TWO_PI - log_x
        return jnp.where(out, -jnp.inf, value)

    def sample(self, key, shape=()):
        shape = self._sample_shape(shape)
        eps = jax.random.normal(key, shape, self.dtype)
        return jnp.exp(self._param("loc", shape) + self._param("scale", shape) * eps)

    def entropy(self):
        return self.loc + 0.5 + _HALF_LOG_TWO_PI + jnp.log(self.scale)

    def mean(self):
        return jnp.exp(self.loc + 0.5 * jnp.square(self.scale))

    def variance(self):
        s2 = jnp.square(self.scale)
        return jnp.expm1(s2) * jnp.exp(2.0 * self.loc + s2)


class Uniform(Distribution):
    r"""Continuous uniform distribution on `[low, high]`.

    $$
    \log p(x) = -\log(h - l) \text{ on } [l, h], \qquad H = \log(h - l)
    $$

    Samples `low + (high - low) * u` are reparameterised in both bounds. The
    fitter keeps `high > low` by fitting `high - low` through a softplus.

    Args:
      low: lower bound, any shape.
      high: upper bound, `> low`; broadcast against `low`.

    Raises:
      ValueError: concrete `high <= low`.

    Examples:
      >>> import numpy as np
      >>> from jaxkl.distributions import Uniform
      >>> d = Uniform(1.0, 3.0)
      >>> print(np.asarray(d.log_prob(2.0)).round(4), d.mean(), np.asarray(d.variance()).round(4))
      -0.6931 2.0 0.3333

    References:
      Johnson, Kotz, Balakrishnan, "Continuous Univariate Distributions", vol. 2, ch. 26.
    """

    _params = (("low", 0, REAL), ("high", 0, above("low")))

    def __init__(self, low: Any, high: Any):
        self._set_params(low=low, high=high)

    def log_prob(self, x):
        x, shape = self._value(x)
        low, high = self._param("low", shape), self._param("high", shape)
        return jnp.where((x < low) | (x > high), -jnp.inf, -jnp.log(high - low))

    def sample(self, key, shape=()):
        shape = self._sample_shape(shape)
        low, high = self._param("low", shape), self._param("high", shape)
        return low + (high - low) * jax.random.uniform(key, shape, self.dtype)

    def entropy(self):
        return jnp.log(self.high - self.low)

    def mean(self):
        return 0.5 * (self.low + self.high)

    def variance(self):
        return jnp.square(self.high - self.low) / 12.0
