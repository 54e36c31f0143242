"""Discrete families parameterised by logits: Categorical and Bernoulli.

Both reuse the core log-space kernels (a Bernoulli is a two-class categorical
with logits `[l, 0]`), so `-inf` logits and huge logits behave as they do in
[jaxkl.entropy_from_logits][]. Neither sampler is reparameterisable.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .._logits import entropy_from_logits
from .._softmax import log_softmax, softmax
from ._base import REAL, Distribution, broadcast_value


def _integer_value(x: Any, name: str = "x") -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{name} must hold integer class indices, got dtype {x.dtype}")
    return x


class Categorical(Distribution):
    r"""Categorical distribution over `K` classes, from (unnormalised) logits.

    $$
    \log p(k) = \text{logits}_k - \log\sum_j e^{\text{logits}_j},
    \qquad H = -\sum_k p_k \log p_k
    $$

    Draws are integer class indices (event shape `()`); `log_prob` of an
    index outside `[0, K)` is `-inf`.

    Args:
      logits: `[..., K]`; `-inf` marks a class of probability 0.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> import numpy as np
      >>> from jaxkl.distributions import Categorical
      >>> d = Categorical(jnp.log(jnp.array([0.25, 0.75])))
      >>> print(np.asarray(d.log_prob(jnp.array([0, 1]))).round(4), np.asarray(d.entropy()).round(4))
      [-1.3863 -0.2877] 0.5623
      >>> d.sample(jax.random.key(0), (4,)).shape
      (4,)

    References:
      Cover, Thomas, "Elements of Information Theory" (2006), ch. 2.
    """

    reparameterized = False
    _params = (("logits", 1, REAL),)

    def __init__(self, logits: Any):
        self._set_params(logits=logits)

    @property
    def num_classes(self) -> int:
        """`K`."""
        return self.logits.shape[-1]

    @property
    def probs(self) -> jax.Array:
        """`softmax(logits)`, shape `[..., K]`."""
        return softmax(self.logits)

    def log_prob(self, x):
        x, shape = broadcast_value(_integer_value(x), self.batch_shape, ())
        logp = jnp.broadcast_to(log_softmax(self.logits), shape + (self.num_classes,))
        valid = (x >= 0) & (x < self.num_classes)
        index = jnp.where(valid, x, 0)[..., None]
        picked = jnp.take_along_axis(logp, index, axis=-1)[..., 0]
        return jnp.where(valid, picked, -jnp.inf)

    def sample(self, key, shape=()):
        shape = self._sample_shape(shape)
        logits = jnp.broadcast_to(self.logits, shape + (self.num_classes,))
        return jax.random.categorical(key, logits, axis=-1)

    def entropy(self):
        return entropy_from_logits(self.logits)


def _two_class(logits: jax.Array) -> jax.Array:
    """Bernoulli logits `l` as two-class logits `[l, 0]` (probability of 1 first)."""
    return jnp.stack([logits, jnp.zeros_like(logits)], axis=-1)


class Bernoulli(Distribution):
    r"""Bernoulli distribution of `x in {0, 1}` with `P(x = 1) = sigmoid(logits)`.

    $$
    \log p(1) = -\operatorname{softplus}(-l), \quad
    \log p(0) = -\operatorname{softplus}(l)
    $$

    Draws are `0.0`/`1.0` in the logits' dtype; `log_prob` of any other
    value is `-inf`.

    Args:
      logits: any shape.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from jaxkl.distributions import Bernoulli
      >>> d = Bernoulli(jnp.array([0.0, 2.0]))
      >>> print("mean", np.asarray(d.mean()).round(4))
      mean [0.5    0.8808]
      >>> print("log p(1)", np.asarray(d.log_prob(1.0)).round(4))
      log p(1) [-0.6931 -0.1269]

    References:
      Murphy, "Probabilistic Machine Learning: An Introduction" (2022), section 2.4.
    """

    reparameterized = False
    _params = (("logits", 0, REAL),)

    def __init__(self, logits: Any):
        self._set_params(logits=logits)

    def log_prob(self, x):
        x, shape = self._value(x)
        logits = self._param("logits", shape)
        value = jnp.where(x == 1, -jax.nn.softplus(-logits), -jax.nn.softplus(logits))
        return jnp.where((x == 0) | (x == 1), value, -jnp.inf)

    def sample(self, key, shape=()):
        shape = self._sample_shape(shape)
        p = jax.nn.sigmoid(self._param("logits", shape))
        return jax.random.bernoulli(key, p, shape).astype(self.dtype)

    def entropy(self):
        return entropy_from_logits(_two_class(self.logits))

    def mean(self):
        return jax.nn.sigmoid(self.logits)

    def variance(self):
        p = jax.nn.sigmoid(self.logits)
        return p * (1.0 - p)
