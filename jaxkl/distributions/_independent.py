"""`Independent`: the last batch dimensions of a distribution reinterpreted as event dimensions."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ._base import Distribution


class Independent(Distribution):
    r"""A distribution whose last `reinterpreted_batch_ndims` batch dims become event dims.

    $$
    \log p(x) = \sum_{i} \log p_i(x_i), \qquad H = \sum_i H_i, \qquad
    \mathrm{KL}(p\,\|\,q) = \sum_i \mathrm{KL}(p_i\,\|\,q_i)
    $$

    the sums running over the reinterpreted dimensions. A batch of 3 Normals
    becomes one distribution over vectors of length 3 (as
    `torch.distributions.Independent` and `tfp.distributions.Independent`).
    `Independent(Normal(loc, scale), 1)` has the density of
    [jaxkl.distributions.MultivariateNormalDiag][].

    Args:
      base: a distribution with at least `reinterpreted_batch_ndims` batch dims.
      reinterpreted_batch_ndims: how many trailing batch dims to move (default 1).

    Raises:
      TypeError: `base` is not a jaxkl distribution.
      ValueError: `reinterpreted_batch_ndims` is negative or larger than
        `len(base.batch_shape)`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from jaxkl.distributions import Independent, Normal, kl_divergence
      >>> p = Independent(Normal(jnp.zeros((2, 3)), 1.0))
      >>> p.batch_shape, p.event_shape
      ((2,), (3,))
      >>> print(np.asarray(p.log_prob(jnp.zeros(3))).round(4))
      [-2.7568 -2.7568]
      >>> print(kl_divergence(p, Independent(Normal(jnp.ones(3), 1.0))))
      [1.5 1.5]

    References:
      Dillon et al., "TensorFlow Distributions" (2017), section 3.3.
    """

    _params = ()

    def __init__(self, base: Distribution, reinterpreted_batch_ndims: int = 1):
        if not isinstance(base, Distribution):
            raise TypeError(f"base must be a jaxkl distribution, got {type(base).__name__}")
        ndims = reinterpreted_batch_ndims
        if isinstance(ndims, bool) or not isinstance(ndims, int) or not 0 <= ndims <= len(base.batch_shape):
            raise ValueError(
                f"reinterpreted_batch_ndims must be an int in [0, {len(base.batch_shape)}] "
                f"(the base's batch shape is {base.batch_shape}), got {ndims!r}"
            )
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "reinterpreted_batch_ndims", ndims)

    def _tree_flatten(self):
        return (self.base,), (self.reinterpreted_batch_ndims,)

    @classmethod
    def _tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        object.__setattr__(obj, "base", children[0])
        object.__setattr__(obj, "reinterpreted_batch_ndims", aux[0])
        return obj

    def replace(self, **params: Any) -> Independent:
        values = {"base": self.base, "reinterpreted_batch_ndims": self.reinterpreted_batch_ndims}
        unknown = set(params) - set(values)
        if unknown:
            raise TypeError(f"Independent has no parameter(s) {sorted(unknown)}")
        values.update(params)
        return Independent(**values)

    def check(self) -> None:
        self.base.check()

    @property
    def reparameterized(self) -> bool:  # type: ignore[override]
        return self.base.reparameterized

    @property
    def _split(self) -> int:
        return len(self.base.batch_shape) - self.reinterpreted_batch_ndims

    @property
    def batch_shape(self):
        return self.base.batch_shape[: self._split]

    @property
    def event_shape(self):
        return self.base.batch_shape[self._split :] + self.base.event_shape

    @property
    def dtype(self):
        return self.base.dtype

    def _broadcast_batch(self, batch: tuple) -> Independent:
        if self.batch_shape == tuple(batch):
            return self
        reinterpreted = self.base.batch_shape[self._split :]
        return self._rebuild((self.base._broadcast_batch(tuple(batch) + reinterpreted),))

    def _sum_reinterpreted(self, values: jax.Array) -> jax.Array:
        axes = tuple(range(values.ndim - self.reinterpreted_batch_ndims, values.ndim))
        return jnp.sum(values, axis=axes)

    def log_prob(self, x):
        return self._sum_reinterpreted(self.base.log_prob(x))

    def sample(self, key, shape=()):
        return self.base.sample(key, shape)

    def entropy(self):
        return self._sum_reinterpreted(self.base.entropy())

    def mean(self):
        return self.base.mean()

    def variance(self):
        return self.base.variance()
