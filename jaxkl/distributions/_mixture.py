"""Finite mixtures of one family: `p(x) = sum_k w_k p_k(x)` with `w = softmax(logits)`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _validate
from .._softmax import log_softmax, logsumexp, softmax
from ._base import REAL, Distribution, broadcast_value


class MixtureSameFamily(Distribution):
    r"""Mixture of `K` components of one family, weighted by `softmax(mixture_logits)`.

    $$
    \log p(x) = \log\sum_{k=1}^K \operatorname{softmax}(\text{mixture\_logits})_k\,
    p_k(x)
    $$

    $$
    \mathbb E[x] = \sum_k w_k \mu_k, \qquad
    \operatorname{Var}[x] = \sum_k w_k(\sigma_k^2 + \mu_k^2) - \mathbb E[x]^2
    $$

    The mixture's batch shape is the components' batch shape without its last
    axis (the `K` components). Sampling picks a component per draw, so it is
    not reparameterised in the weights; the entropy has no closed form (raises
    `NotImplementedError`), and there is no analytic KL between mixtures.

    Args:
      mixture_logits: `[..., K]` unnormalised log-weights; broadcast to
        `components.batch_shape`.
      components: a distribution whose batch shape ends with `K`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from jaxkl.distributions import MixtureSameFamily, Normal
      >>> p = MixtureSameFamily(jnp.zeros(2), Normal(jnp.array([0.0, 10.0]), 1.0))
      >>> print(p.mean(), p.variance(), np.asarray(p.log_prob(0.0)).round(4))
      5.0 26.0 -1.6121

    References:
      McLachlan, Peel, "Finite Mixture Models" (2000), ch. 1.
    """

    reparameterized = False
    _params = (("mixture_logits", 1, REAL),)

    def __init__(self, mixture_logits: Any, components: Distribution):
        if not isinstance(components, Distribution):
            raise TypeError(f"components must be a jaxkl distribution, got {type(components)}")
        logits = _validate.float_array(mixture_logits, "mixture_logits", numbers=True)
        batch = components.batch_shape
        if logits.ndim < 1 or not batch or logits.shape[-1] != batch[-1]:
            raise ValueError(
                f"mixture_logits.shape={logits.shape} must end with the number of components, "
                f"the last axis of components.batch_shape={batch}"
            )
        try:
            shape = np.broadcast_shapes(logits.shape, batch)
        except ValueError:
            shape = None
        if shape != batch:
            raise ValueError(
                f"mixture_logits.shape={logits.shape} does not broadcast to "
                f"components.batch_shape={batch}"
            )
        logits = jnp.broadcast_to(logits.astype(components.dtype), batch)
        object.__setattr__(self, "mixture_logits", logits)
        object.__setattr__(self, "components", components)

    def _tree_flatten(self):
        return (self.mixture_logits, self.components), None

    @classmethod
    def _tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        object.__setattr__(obj, "mixture_logits", children[0])
        object.__setattr__(obj, "components", children[1])
        return obj

    def replace(self, **params):
        values = {"mixture_logits": self.mixture_logits, "components": self.components}
        unknown = set(params) - set(values)
        if unknown:
            raise TypeError(f"MixtureSameFamily has no parameter(s) {sorted(unknown)}")
        values.update(params)
        return MixtureSameFamily(**values)

    def check(self):
        self.components.check()

    @property
    def batch_shape(self):
        return self.components.batch_shape[:-1]

    @property
    def event_shape(self):
        return self.components.event_shape

    @property
    def dtype(self):
        return self.components.dtype

    @property
    def weights(self) -> jax.Array:
        """Mixture weights `softmax(mixture_logits)`, shape `[..., K]`."""
        return softmax(self.mixture_logits)

    def _component_axis(self) -> int:
        return -1 - len(self.event_shape)

    def log_prob(self, x):
        x = jnp.asarray(x)
        x, shape = broadcast_value(x, self.batch_shape, self.event_shape)
        per_component = self.components.log_prob(jnp.expand_dims(x, self._component_axis()))
        log_w = jnp.broadcast_to(log_softmax(self.mixture_logits), per_component.shape)
        return logsumexp(per_component + log_w, axis=-1)

    def sample(self, key, shape=()):
        shape = self._sample_shape(shape)[: -len(self.batch_shape + self.event_shape) or None]
        key_component, key_draw = jax.random.split(key)
        draws = self.components.sample(key_draw, shape)  # shape + batch + (K,) + event
        logits = jnp.broadcast_to(self.mixture_logits, shape + self.components.batch_shape)
        index = jax.random.categorical(key_component, logits, axis=-1)
        index = index.reshape(index.shape + (1,) * (1 + len(self.event_shape)))
        picked = jnp.take_along_axis(draws, index, axis=self._component_axis())
        return jnp.squeeze(picked, axis=self._component_axis())

    def _weighted(self, values: jax.Array) -> jax.Array:
        w = self.weights.reshape(self.weights.shape + (1,) * len(self.event_shape))
        return jnp.sum(jnp.broadcast_to(w, values.shape) * values, axis=self._component_axis())

    def mean(self):
        return self._weighted(self.components.mean())

    def variance(self):
        m = self.components.mean()
        second = self._weighted(self.components.variance() + jnp.square(m))
        return second - jnp.square(self.mean())
