"""Count families on {0, 1, 2, ...}: Poisson, Geometric, Binomial.

Values are counts held in a floating dtype (as PyTorch's); `log_prob` of a
negative or non-integer value is `-inf`. Geometric and Binomial take logits or
probabilities like [jaxkl.distributions.Bernoulli][], and are exact at
probability 0 and 1 (logits `-inf`/`+inf`). No sampler is reparameterisable.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln, xlogy

from .._logits import entropy_from_logits
from ._base import POSITIVE, Distribution
from ._discrete import BinaryLogits, bernoulli_log_probs

# Poisson entropy: the exact sum below this rate, the asymptotic series above
# (its first omitted term is below 2e-9 nats there).
_POISSON_SERIES_FROM = 100.0
_POISSON_TERMS = 256  # P(k >= 256) < 1e-50 for every rate below 100


def _count_or_nan(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(valid, safe)`: whether `x` is a count, and `x` with 0 in its invalid places."""
    valid = (x >= 0) & (x == jnp.floor(x))
    return valid, jnp.where(valid, x, 0.0)


def times(count: jax.Array, log_term: jax.Array) -> jax.Array:
    """`count * log_term`, 0 where `count == 0` even if `log_term` is `-inf` (value and gradient)."""
    zero = count == 0
    return jnp.where(zero, 0.0, count * jnp.where(zero, 0.0, log_term))


class Poisson(Distribution):
    r"""Poisson distribution with `rate` `lambda > 0`.

    $$
    \log p(k) = k\log\lambda - \lambda - \log k!, \qquad
    \mathbb E[k] = \operatorname{Var}[k] = \lambda
    $$

    The entropy has no closed form: it is the exact sum $-\sum_k p_k\log p_k$
    over $k < 256$ for $\lambda < 100$, and the asymptotic series
    $\tfrac12\log 2\pi e\lambda - \tfrac1{12\lambda} - \tfrac1{24\lambda^2}
    - \tfrac{19}{360\lambda^3}$ above (error below 2e-9 nats).

    Args:
      rate: `lambda > 0`, any shape.

    Examples:
      >>> import numpy as np
      >>> from jaxkl.distributions import Poisson
      >>> d = Poisson(2.0)
      >>> print(np.asarray(d.log_prob(3.0)).round(4), np.asarray(d.entropy()).round(4), d.log_prob(0.5))
      -1.7123 1.7049 -inf

    References:
      Evans, "The entropy of a Poisson distribution", SIAM Review 30 (1988).
    """

    reparameterized = False
    _params = (("rate", 0, POSITIVE),)

    def __init__(self, rate: Any):
        self._set_params(rate=rate)

    def log_prob(self, x):
        x, shape = self._value(x)
        rate = self._param("rate", shape)
        valid, k = _count_or_nan(x)
        return jnp.where(valid, xlogy(k, rate) - rate - gammaln(k + 1.0), -jnp.inf)

    def sample(self, key, shape=()):
        shape = self._sample_shape(shape)
        return jax.random.poisson(key, self._param("rate", shape), shape).astype(self.dtype)

    def entropy(self):
        rate = self.rate
        large = rate >= _POISSON_SERIES_FROM
        small_rate = jnp.where(large, 1.0, rate)  # each branch sees only rates it handles
        k = jnp.arange(_POISSON_TERMS, dtype=rate.dtype).reshape((-1,) + (1,) * rate.ndim)
        small_rate = small_rate[None]
        log_p = xlogy(k, small_rate) - small_rate - gammaln(k + 1.0)
        exact = -jnp.sum(jnp.exp(log_p) * log_p, axis=0)
        big = jnp.where(large, rate, _POISSON_SERIES_FROM)
        series = (
            0.5 * jnp.log(2.0 * math.pi * math.e * big)
            - 1.0 / (12.0 * big)
            - 1.0 / (24.0 * big**2)
            - 19.0 / (360.0 * big**3)
        )
        return jnp.where(large, series, exact)

    def mean(self):
        return self.rate

    def variance(self):
        return self.rate


class Geometric(BinaryLogits):
    r"""Geometric distribution: failures before the first success, success probability `p`.

    $$
    \log p(k) = k\log(1-p) + \log p, \quad k = 0, 1, \dots, \qquad
    H = \frac{-(1-p)\log(1-p) - p\log p}{p}
    $$

    Mean $(1-p)/p$, variance $(1-p)/p^2$ (PyTorch's convention; SciPy's
    `geom` counts trials, `k + 1`). `p = 1` (`logits=+inf`) is the point mass
    at 0; `p` must be `> 0`.

    Args:
      logits: `log p - log(1 - p)`, any shape.
      probs: instead of `logits`, `p` in `(0, 1]`.

    Raises:
      TypeError: neither or both of `logits` and `probs`.

    Examples:
      >>> import numpy as np
      >>> from jaxkl.distributions import Geometric
      >>> d = Geometric(probs=0.25)
      >>> print(np.asarray(d.log_prob(2.0)).round(4), d.mean(), d.variance())
      -1.9617 3.0 12.0

    References:
      Johnson, Kemp, Kotz, "Univariate Discrete Distributions" (2005), section 5.2.
    """

    def log_prob(self, x):
        x, shape = self._value(x)
        log_success, log_failure = bernoulli_log_probs(self._param("logits", shape))
        valid, k = _count_or_nan(x)
        return jnp.where(valid, times(k, log_failure) + log_success, -jnp.inf)

    def sample(self, key, shape=()):
        # floor(E / -log(1 - p)) with E ~ Exp(1) is geometric; -log(1 - p) = softplus(logits)
        shape = self._sample_shape(shape)
        e = jax.random.exponential(key, shape, self.dtype)
        return jnp.floor(e / jax.nn.softplus(self._param("logits", shape)))

    def entropy(self):
        log_success, log_failure = bernoulli_log_probs(self.logits)
        return -log_success - times(self.mean(), log_failure)

    def mean(self):
        return jnp.exp(-self.logits)  # (1 - p) / p

    def variance(self):
        odds = jnp.exp(-self.logits)
        return odds * (1.0 + odds)


class Binomial(BinaryLogits):
    r"""Binomial distribution: successes in `total_count` trials of probability `p`.

    $$
    \log p(k) = \log\binom nk + k\log p + (n-k)\log(1-p), \quad k = 0, \dots, n
    $$

    Mean $np$, variance $np(1-p)$. The entropy is the exact sum over the
    $n + 1$ values. `total_count` is a Python int shared by the whole batch (it
    is static: part of the pytree's structure, not a leaf, so `jit` and the
    fitter leave it alone).

    Args:
      total_count: `n >= 0`, a Python int.
      logits: `log p - log(1 - p)`, any shape.
      probs: instead of `logits`, `p` in `[0, 1]`.

    Raises:
      TypeError: neither or both of `logits` and `probs`, or a non-integer `total_count`.
      ValueError: negative `total_count`.

    Examples:
      >>> import numpy as np
      >>> from jaxkl.distributions import Binomial
      >>> d = Binomial(10, probs=0.3)
      >>> print(np.asarray(d.log_prob(3.0)).round(4), d.mean(), np.asarray(d.entropy()).round(4))
      -1.3212 3.0 1.7791

    References:
      Johnson, Kemp, Kotz, "Univariate Discrete Distributions" (2005), ch. 3.
    """

    _static = ("total_count",)

    def __init__(self, total_count: int, logits: Any = None, *, probs: Any = None):
        if isinstance(total_count, bool) or not isinstance(total_count, int):
            raise TypeError(
                f"Binomial: total_count must be a Python int, got {type(total_count).__name__}"
            )
        if total_count < 0:
            raise ValueError(f"Binomial: total_count must be >= 0, got {total_count}")
        object.__setattr__(self, "total_count", int(total_count))
        super().__init__(logits, probs=probs)

    def log_prob(self, x):
        x, shape = self._value(x)
        log_success, log_failure = bernoulli_log_probs(self._param("logits", shape))
        n = self.total_count
        valid, k = _count_or_nan(x)
        valid = valid & (x <= n)
        k = jnp.where(valid, k, 0.0)
        log_choose = gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0)
        log_choose = jnp.where((k == 0) | (k == n), 0.0, log_choose)  # exact at the ends
        value = log_choose + times(k, log_success) + times(n - k, log_failure)
        return jnp.where(valid, value, -jnp.inf)

    def log_probs_of_counts(self, size: int) -> jax.Array:
        """`[*batch, size]`: `log_prob(k)` for `k = 0, ..., size - 1` (`-inf` above `n`)."""
        k = jnp.arange(size, dtype=self.dtype).reshape((size,) + (1,) * len(self.batch_shape))
        return jnp.moveaxis(self.log_prob(k), 0, -1)

    def sample(self, key, shape=()):
        shape = self._sample_shape(shape)
        p = jax.nn.sigmoid(self._param("logits", shape))
        n = jnp.full(shape, self.total_count, self.dtype)
        return jax.random.binomial(key, n, p, shape, self.dtype)

    def entropy(self):
        return entropy_from_logits(self.log_probs_of_counts(self.total_count + 1))

    def mean(self):
        return self.total_count * self.probs

    def variance(self):
        p = self.probs
        return self.total_count * p * (1.0 - p)
