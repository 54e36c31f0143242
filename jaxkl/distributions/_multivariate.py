"""Vector-valued families: diagonal and full-covariance Normals, Dirichlet."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln, xlogy

from ._base import LOWER_CHOLESKY, POSITIVE, REAL, Distribution

_LOG_TWO_PI = math.log(2.0 * math.pi)


class _VectorEvent(Distribution):
    """Shared by families whose draws are vectors of the last parameter axis."""

    @property
    def event_shape(self):
        name = self._params[0][0]
        return tuple(getattr(self, name).shape[-1:])


class MultivariateNormalDiag(_VectorEvent):
    r"""Multivariate Normal with diagonal covariance `diag(scale_diag**2)`.

    $$
    \log p(x) = \sum_{i=1}^d \Big[-\tfrac12\big(\tfrac{x_i-\mu_i}{\sigma_i}\big)^2
    - \log\sigma_i\Big] - \tfrac d2 \log 2\pi
    $$

    Args:
      loc: `[..., d]` mean.
      scale_diag: `[..., d]` standard deviations `> 0`; batch dims broadcast.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from jaxkl.distributions import MultivariateNormalDiag
      >>> d = MultivariateNormalDiag(jnp.zeros(3), jnp.ones(3))
      >>> d.event_shape, d.batch_shape
      ((3,), ())
      >>> print(np.asarray(d.log_prob(jnp.zeros(3))).round(4), np.asarray(d.entropy()).round(4))
      -2.7568 4.2568

    References:
      Bishop, "Pattern Recognition and Machine Learning" (2006), section 2.3.
    """

    _params = (("loc", 1, REAL), ("scale_diag", 1, POSITIVE))

    def __init__(self, loc: Any, scale_diag: Any):
        self._set_params(loc=loc, scale_diag=scale_diag)

    def log_prob(self, x):
        x, shape = self._value(x)
        z = (x - self._param("loc", shape)) / self._param("scale_diag", shape)
        scale = self._param("scale_diag", shape)
        return jnp.sum(-0.5 * z * z - jnp.log(scale), axis=-1) - 0.5 * x.shape[-1] * _LOG_TWO_PI

    def sample(self, key, shape=()):
        shape = self._sample_shape(shape)
        eps = jax.random.normal(key, shape, self.dtype)
        return self._param("loc", shape) + self._param("scale_diag", shape) * eps

    def entropy(self):
        d = self.loc.shape[-1]
        return 0.5 * d * (1.0 + _LOG_TWO_PI) + jnp.sum(jnp.log(self.scale_diag), axis=-1)

    def mean(self):
        return self.loc

    def variance(self):
        return jnp.square(self.scale_diag)

    def covariance(self) -> jax.Array:
        """`[..., d, d]` covariance matrix."""
        v = self.variance()
        return v[..., :, None] * jnp.eye(v.shape[-1], dtype=v.dtype)


def _solve_lower(tril: jax.Array, b: jax.Array) -> jax.Array:
    """`tril^{-1} b` for `b` of shape `[..., d]` or `[..., d, k]` with equal batch dims.

    The two are promoted to one dtype first (`triangular_solve` does not promote).
    """
    dtype = jnp.promote_types(tril.dtype, b.dtype)
    return jax.lax.linalg.triangular_solve(tril.astype(dtype), b.astype(dtype), left_side=True, lower=True)


class MultivariateNormalTriL(_VectorEvent):
    r"""Multivariate Normal with covariance `L L^T` given by its Cholesky factor `L`.

    $$
    \log p(x) = -\tfrac12 \lVert L^{-1}(x-\mu)\rVert^2 - \sum_i \log L_{ii}
    - \tfrac d2 \log 2\pi, \qquad H = \tfrac d2(1+\log 2\pi) + \sum_i \log L_{ii}
    $$

    Args:
      loc: `[..., d]` mean.
      scale_tril: `[..., d, d]` lower-triangular with a positive diagonal (so
        `L L^T` is positive definite); batch dims broadcast against `loc`.

    Raises:
      ValueError: concrete `scale_tril` with a diagonal entry `<= 0` or a
        non-zero above the diagonal, or mismatched `d`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from jaxkl.distributions import MultivariateNormalTriL
      >>> L = jnp.array([[1.0, 0.0], [0.5, 2.0]])
      >>> d = MultivariateNormalTriL(jnp.zeros(2), L)
      >>> print(d.covariance())
      [[1.   0.5 ]
       [0.5  4.25]]
      >>> print(np.asarray(d.log_prob(jnp.zeros(2))).round(4))
      -2.531

    References:
      Rasmussen, Williams, "Gaussian Processes for Machine Learning" (2006), appendix A.
    """

    _params = (("loc", 1, REAL), ("scale_tril", 2, LOWER_CHOLESKY))

    def __init__(self, loc: Any, scale_tril: Any):
        self._set_params(loc=loc, scale_tril=scale_tril)

    def _check_event_shapes(self, events):
        d = tuple(events["loc"])
        if tuple(events["scale_tril"]) != d + d:
            raise ValueError(
                f"MultivariateNormalTriL: scale_tril must end with {d + d} to match loc's "
                f"event shape {d}, got {tuple(events['scale_tril'])}"
            )

    def _tril(self, batch: tuple) -> jax.Array:
        d = self.loc.shape[-1]
        return jnp.broadcast_to(self.scale_tril, tuple(batch) + (d, d))

    def log_prob(self, x):
        x, shape = self._value(x)
        diff = x - self._param("loc", shape)
        z = _solve_lower(self._tril(shape[:-1]), diff[..., None])[..., 0]
        log_det = jnp.sum(jnp.log(jnp.diagonal(self.scale_tril, axis1=-2, axis2=-1)), axis=-1)
        log_det = jnp.broadcast_to(log_det, shape[:-1])
        return -0.5 * jnp.sum(z * z, axis=-1) - log_det - 0.5 * shape[-1] * _LOG_TWO_PI

    def sample(self, key, shape=()):
        shape = self._sample_shape(shape)
        eps = jax.random.normal(key, shape, self.dtype)
        return self._param("loc", shape) + jnp.einsum("...ij,...j->...i", self._tril(shape[:-1]), eps)

    def entropy(self):
        d = self.loc.shape[-1]
        log_diag = jnp.log(jnp.diagonal(self.scale_tril, axis1=-2, axis2=-1))
        return 0.5 * d * (1.0 + _LOG_TWO_PI) + jnp.sum(log_diag, axis=-1)

    def mean(self):
        return self.loc

    def variance(self):
        return jnp.sum(jnp.square(self.scale_tril), axis=-1)

    def covariance(self) -> jax.Array:
        """`[..., d, d]` covariance matrix `L L^T`."""
        return self.scale_tril @ jnp.swapaxes(self.scale_tril, -1, -2)


class Dirichlet(_VectorEvent):
    r"""Dirichlet distribution on the probability simplex.

    $$
    \log p(x) = \sum_i (\alpha_i - 1)\log x_i - \Big[\sum_i \log\Gamma(\alpha_i)
    - \log\Gamma(\alpha_0)\Big], \qquad \alpha_0 = \sum_i \alpha_i
    $$

    $$
    H = \log B(\alpha) + (\alpha_0 - K)\psi(\alpha_0) - \sum_i (\alpha_i - 1)\psi(\alpha_i)
    $$

    Samples are reparameterised (implicitly, through `jax.random.dirichlet`).
    `log_prob` is `-inf` for a negative entry; it does not check that `x` sums to 1.

    Args:
      concentration: `[..., K]` with every entry `> 0`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import numpy as np
      >>> from jaxkl.distributions import Dirichlet
      >>> d = Dirichlet(jnp.array([1.0, 2.0, 3.0]))
      >>> print(np.asarray(d.mean()).round(4), np.asarray(d.log_prob(jnp.array([0.2, 0.3, 0.5]))).round(4))
      [0.1667 0.3333 0.5   ] 1.5041

    References:
      Kotz, Balakrishnan, Johnson, "Continuous Multivariate Distributions" (2000), ch. 49.
    """

    _params = (("concentration", 1, POSITIVE),)

    def __init__(self, concentration: Any):
        self._set_params(concentration=concentration)

    def _log_norm(self, alpha):
        return jnp.sum(gammaln(alpha), axis=-1) - gammaln(jnp.sum(alpha, axis=-1))

    def log_prob(self, x):
        x, shape = self._value(x)
        alpha = self._param("concentration", shape)
        out = jnp.any(x < 0, axis=-1)
        inside = jnp.where(x < 0, 1.0, x)
        value = jnp.sum(xlogy(alpha - 1.0, inside), axis=-1) - self._log_norm(alpha)
        return jnp.where(out, -jnp.inf, value)

    def sample(self, key, shape=()):
        shape = self._sample_shape(shape)
        alpha = self._param("concentration", shape)
        return jax.random.dirichlet(key, alpha, shape[:-1], self.dtype)

    def entropy(self):
        alpha = self.concentration
        total = jnp.sum(alpha, axis=-1)
        k = alpha.shape[-1]
        return (
            self._log_norm(alpha)
            + (total - k) * digamma(total)
            - jnp.sum((alpha - 1.0) * digamma(alpha), axis=-1)
        )

    def mean(self):
        return self.concentration / jnp.sum(self.concentration, axis=-1, keepdims=True)

    def variance(self):
        m = self.mean()
        total = jnp.sum(self.concentration, axis=-1, keepdims=True)
        return m * (1.0 - m) / (total + 1.0)
