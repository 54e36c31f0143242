"""Scalar continuous families: Normal, Laplace, Exponential, Gamma, Beta.

Every sampler is reparameterised: location-scale families by construction,
Gamma and Beta through JAX's implicitly reparameterised samplers
(`jax.random.gamma` is differentiable in its shape parameter).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import betaln, digamma, gammaln, xlog1py, xlogy

from ._base import POSITIVE, REAL, Distribution

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


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

