"""Discrete families parameterised by logits (or probabilities): Categorical and Bernoulli.

Both reuse the core log-space kernels (a Bernoulli is a two-class categorical
with log-probabilities `[-softplus(-l), -softplus(l)]`), so `-inf` logits,
huge logits and the Bernoulli's `+inf` (probability 1) behave as they do in
[jaxkl.entropy_from_logits][]. Neither sampler is reparameterisable.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate
from .._logits import entropy_from_logits
from .._softmax import log_softmax, softmax
from ._base import REAL, Distribution, broadcast_value, is_concrete


def logits_from(owner: str, logits: Any, probs: Any, *, binary: bool) -> Any:
    """The logits of a family given as `logits=` or `probs=` (exactly one).

    `binary`: `probs` is P(x = 1) and the logits are `log p - log(1 - p)`
    (`+inf` at p = 1, `-inf` at p = 0); otherwise `probs` is `[..., K]` and the
    logits are `log p` (normalised later by the log-softmax; `-inf` at 0).
    """
    if (logits is None) == (probs is None):
        raise TypeError(f"{owner}: pass exactly one of logits= and probs=")
    if probs is None:
        return logits
    probs = _validate.float_array(probs, "probs", numbers=True)
    if is_concrete(probs):
        values = np.asarray(probs)
        bad = ~(np.isnan(values) | ((values >= 0) & ((values <= 1) | (not binary))))
        if bad.any():
            bound = "in [0, 1]" if binary else ">= 0"
            raise ValueError(
                f"{owner}: probs must be {bound}; {int(bad.sum())} of {values.size} entries "
                f"are not (first: {values[bad].flat[0].item()!r})"
            )
    if binary:
        return jnp.log(probs) - jnp.log1p(-probs)
    return jnp.log(probs)


def bernoulli_log_probs(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(log P(1), log P(0))` = `(-softplus(-l), -softplus(l))`: exact at `l = +-inf`."""
    return -jax.nn.softplus(-logits), -jax.nn.softplus(logits)


class Categorical(Distribution):
    r"""Categorical distribution over `K` classes, from (unnormalised) logits.

    $$
    \log p(k) = \text{logits}_k - \log\sum_j e^{\text{logits}_j},
    \qquad H = -\sum_k p_k \log p_k
    $$

    Draws are integer class indices (event shape `()`); `log_prob` takes
    labels of any integer dtype, and an index outside `[0, K)` is `-inf`.

    Args:
      logits: `[..., K]`; `-inf` marks a class of probability 0 (`+inf` is
        not a valid logit: give such a distribution as `probs=`).
      probs: instead of `logits`, `[..., K]` non-negative weights (normalised
        here; the logits are `log(probs)`).

    Raises:
      TypeError: neither or both of `logits` and `probs`.
      ValueError: concrete negative `probs`.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import numpy as np
      >>> from jaxkl.distributions import Categorical
      >>> d = Categorical(jnp.log(jnp.array([0.25, 0.75])))
      >>> print(np.asarray(d.log_prob(jnp.array([0, 1]))).round(4), np.asarray(d.entropy()).round(4))
      [-1.3863 -0.2877] 0.5623
      >>> d.sample(jax.random.key(0), (4,)).shape
      (4,)
      >>> print(Categorical(probs=jnp.array([0.0, 1.0])).log_prob(jnp.uint8(1)))
      0.0

    References:
      Cover, Thomas, "Elements of Information Theory" (2006), ch. 2.
    """

    reparameterized = False
    _params = (("logits", 1, REAL),)

    def __init__(self, logits: Any = None, *, probs: Any = None):
        self._set_params(logits=logits_from("Categorical", logits, probs, binary=False))
        if self.num_classes == 0:
            name = "logits" if probs is None else "probs"
            raise ValueError(f"Categorical: {name} must have at least one class, got shape {self.logits.shape}")

    @property
    def num_classes(self) -> int:
        """`K`."""
        return self.logits.shape[-1]

    @property
    def probs(self) -> jax.Array:
        """`softmax(logits)`, shape `[..., K]`."""
        return softmax(self.logits)

    def log_prob(self, x):
        x, shape = broadcast_value(_validate.integer_array(x, "x", hint=""), self.batch_shape, ())
        logp = jnp.broadcast_to(log_softmax(self.logits), shape + (self.num_classes,))
        # compare in the labels' own dtype; K may not fit in it (uint8 labels, K = 300)
        below_k = x < self.num_classes if self.num_classes <= jnp.iinfo(x.dtype).max else True
        valid = (x >= 0) & below_k
        index = jnp.where(valid, x, 0).astype(jnp.int32)[..., None]
        picked = jnp.take_along_axis(logp, index, axis=-1)[..., 0]
        return jnp.where(valid, picked, -jnp.inf)

    def sample(self, key, shape=()):
        shape = self._sample_shape(shape)
        logits = jnp.broadcast_to(self.logits, shape + (self.num_classes,))
        # a row with a NaN logit or no finite one has no distribution: draw -1, not class 0
        valid = ~jnp.any(jnp.isnan(logits), axis=-1) & jnp.any(logits > -jnp.inf, axis=-1)
        return jnp.where(valid, jax.random.categorical(key, logits, axis=-1), -1)

    def entropy(self):
        return entropy_from_logits(self.logits)


class BinaryLogits(Distribution):
    """Families of one success probability `sigmoid(logits)`, given as `logits=` or `probs=`."""

    reparameterized = False
    _params = (("logits", 0, REAL),)

    def __init__(self, logits: Any = None, *, probs: Any = None):
        self._set_params(logits=logits_from(type(self).__name__, logits, probs, binary=True))

    @property
    def probs(self) -> jax.Array:
        """The probability of success (of 1) `sigmoid(logits)`."""
        return jax.nn.sigmoid(self.logits)


def _two_class(logits: jax.Array) -> jax.Array:
    """Bernoulli logits `l` as two-class log-probabilities (of 1 first), finite unless `l = -+inf`."""
    return jnp.stack(bernoulli_log_probs(logits), axis=-1)


class Bernoulli(BinaryLogits):
    r"""Bernoulli distribution of `x in {0, 1}` with `P(x = 1) = sigmoid(logits)`.

    $$
    \log p(1) = -\operatorname{softplus}(-l), \quad
    \log p(0) = -\operatorname{softplus}(l)
    $$

    Draws are `0.0`/`1.0` in the logits' dtype; `log_prob` of any other
    value is `-inf`. `logits = +inf` / `-inf` (probability 1 / 0) are valid:
    entropy 0, KL 0 against itself and `+inf` against the opposite one.

    Args:
      logits: any shape.
      probs: instead of `logits`, `P(x = 1)` in `[0, 1]`.

    Raises:
      TypeError: neither or both of `logits` and `probs`.
      ValueError: concrete `probs` outside `[0, 1]`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from jaxkl.distributions import Bernoulli
      >>> d = Bernoulli(jnp.array([0.0, 2.0]))
      >>> print("mean", np.asarray(d.mean()).round(4))
      mean [0.5    0.8808]
      >>> print("log p(1)", np.asarray(d.log_prob(1.0)).round(4))
      log p(1) [-0.6931 -0.1269]
      >>> print(Bernoulli(probs=1.0).entropy(), Bernoulli(probs=0.25).stddev())
      0.0 0.4330127

    References:
      Murphy, "Probabilistic Machine Learning: An Introduction" (2022), section 2.4.
    """

    def log_prob(self, x):
        x, shape = self._value(x)
        log_one, log_zero = bernoulli_log_probs(self._param("logits", shape))
        return jnp.where(x == 1, log_one, jnp.where(x == 0, log_zero, -jnp.inf))

    def sample(self, key, shape=()):
        shape = self._sample_shape(shape)
        p = jax.nn.sigmoid(self._param("logits", shape))
        # a NaN parameter draws NaN (the draws are floats), not 0
        return jnp.where(jnp.isnan(p), jnp.nan, jax.random.bernoulli(key, p, shape).astype(self.dtype))

    def entropy(self):
        return entropy_from_logits(_two_class(self.logits))

    def mean(self):
        return jax.nn.sigmoid(self.logits)

    def variance(self):
        p = jax.nn.sigmoid(self.logits)
        return p * (1.0 - p)
