"""Unconstrained parameterisation of distributions, for gradient-based fitting.

Each parameter's declared constraint picks a bijection from the real numbers:
`real` is left alone, `positive` goes through softplus, and a
`lower_cholesky` factor keeps its strictly lower part and puts its diagonal
through softplus, and `above:<name>` (an upper bound) is the other parameter
plus a softplus. The unconstrained values are held in an object of the same
distribution type (built without validation), so optax sees the same pytree.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..distributions import Distribution, Independent, MixtureSameFamily
from ..distributions._base import ABOVE, LOWER_CHOLESKY, POSITIVE, REAL


def _inverse_softplus(y: jax.Array) -> jax.Array:
    # log(exp(y) - 1) written so that it neither overflows for large y nor
    # loses precision for small y.
    return y + jnp.log(-jnp.expm1(-y))


def _with_diagonal(x: jax.Array, fn) -> jax.Array:
    diagonal = fn(jnp.diagonal(x, axis1=-2, axis2=-1))
    eye = jnp.broadcast_to(jnp.eye(x.shape[-1], dtype=bool), x.shape)
    on_diagonal = jnp.broadcast_to(diagonal[..., None], x.shape)
    return jnp.where(eye, on_diagonal, jnp.tril(x, -1))


_FORWARD = {
    REAL: lambda u: u,
    POSITIVE: jax.nn.softplus,
    LOWER_CHOLESKY: lambda u: _with_diagonal(u, jax.nn.softplus),
}
_INVERSE = {
    REAL: lambda x: x,
    POSITIVE: _inverse_softplus,
    LOWER_CHOLESKY: lambda x: _with_diagonal(x, _inverse_softplus),
}


def _map(dist: Distribution, table, inverse: bool = False) -> Distribution:
    if isinstance(dist, MixtureSameFamily):
        children = (dist.mixture_logits, _map(dist.components, table, inverse))
        return MixtureSameFamily._tree_unflatten(None, children)
    if isinstance(dist, Independent):
        return dist._rebuild((_map(dist.base, table, inverse),))
    if not dist._params or type(dist)._tree_flatten is not Distribution._tree_flatten:
        raise TypeError(
            f"cannot fit a {type(dist).__name__}: it does not declare its parameters "
            "through Distribution._params"
        )
    mapped = {}
    for name, _, constraint in dist._params:
        x = getattr(dist, name)
        if constraint.startswith(ABOVE):
            # x = other + softplus(u): the lower bound is the other parameter's constrained value
            other = constraint[len(ABOVE) :]
            if inverse:
                mapped[name] = _inverse_softplus(x - getattr(dist, other))
            else:
                mapped[name] = mapped[other] + jax.nn.softplus(x)
        elif constraint in table:
            mapped[name] = table[constraint](x)
        else:
            raise TypeError(f"no unconstrained transform for constraint {constraint!r} ({name})")
    return dist._rebuild([mapped[name] for name, _, _ in dist._params])


def unconstrain(dist: Distribution) -> Distribution:
    """The unconstrained parameters of `dist`, held in an object of the same type."""
    return _map(dist, _INVERSE, inverse=True)


def constrain(free: Distribution) -> Distribution:
    """Inverse of `unconstrain`: a valid distribution from unconstrained values."""
    return _map(free, _FORWARD)
