"""The pytree base class every distribution family derives from.

A family declares its parameters once, as `(name, event_ndims, constraint)`
triples; from that the base class derives everything generic:

* pytree registration (parameters are the leaves, so `jit`/`vmap`/`grad`
  see straight through a distribution);
* conversion to arrays of one floating dtype and *explicit* broadcasting of the
  parameters to a common batch shape (event dimensions must match exactly);
* value checks: a `ValueError` at construction when the values are concrete,
  and [jaxkl.distributions.Distribution.check][] (`checkify`) when they are traced;
* immutability, `replace` and `batch_shape`/`event_shape`.

Unflattening bypasses `__init__` on purpose: JAX rebuilds pytrees with
tracers, `None` or sentinel objects as leaves, which must not be validated.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from .. import _validate

REAL = "real"
POSITIVE = "positive"
LOWER_CHOLESKY = "lower_cholesky"
ABOVE = "above:"  # "above:low": greater than the (earlier) parameter `low`


def above(name: str) -> str:
    """The constraint "greater than the parameter `name`" (declared earlier in `_params`)."""
    return ABOVE + name


def is_concrete(*arrays: Any) -> bool:
    """True when every array holds a value now (no tracer), so it can be inspected."""
    return not any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(arrays))


def broadcast_value(x: jax.Array, batch_shape: tuple, event_shape: tuple, name: str = "x"):
    """Broadcast a value `[sample..., batch..., event...]` explicitly; return it and its shape."""
    x = jnp.asarray(x)
    event_ndim = len(event_shape)
    if tuple(x.shape[x.ndim - event_ndim :]) != tuple(event_shape) or x.ndim < event_ndim:
        raise ValueError(
            f"{name}.shape={x.shape} must end with the event shape {tuple(event_shape)}"
        )
    try:
        shape = np.broadcast_shapes(x.shape, tuple(batch_shape) + tuple(event_shape))
    except ValueError:
        raise ValueError(
            f"{name}.shape={x.shape} does not broadcast against the batch shape "
            f"{tuple(batch_shape)} (event shape {tuple(event_shape)})"
        ) from None
    return jnp.broadcast_to(x, shape), shape


class Distribution:
    """Base class: an immutable pytree of parameters with a batch and an event shape.

    Subclasses set `_params` (`(name, event_ndims, constraint)` triples with
    constraint `"real"`, `"positive"`, `"lower_cholesky"` or `"above:<name>"`,
    greater than an earlier parameter), optionally `_static` (names of
    hashable attributes carried as pytree metadata, not leaves), call
    `self._set_params(...)` in `__init__` and implement the methods that
    make sense for them; they become pytrees automatically. Parameters are
    broadcast to one batch shape at construction, and concrete values that
    break a constraint raise `ValueError`. Draws have shape
    `sample_shape + batch_shape + event_shape`; `log_prob` drops the event
    dimensions.

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxkl.distributions import Distribution
      >>> class Uniform01(Distribution):
      ...     _params = (("logit_shift", 0, "real"),)
      ...     def __init__(self, logit_shift):
      ...         self._set_params(logit_shift=logit_shift)
      ...     def log_prob(self, x):
      ...         x, shape = self._value(x)
      ...         return jnp.where((x >= 0) & (x <= 1), 0.0, -jnp.inf)
      >>> Uniform01(jnp.zeros(3)).batch_shape
      (3,)

    References:
      The batch/event shape semantics of TensorFlow Probability: Dillon et al.,
      "TensorFlow Distributions" (2017).
    """

    _params: ClassVar[tuple[tuple[str, int, str], ...]] = ()
    _static: ClassVar[tuple[str, ...]] = ()
    reparameterized: ClassVar[bool] = True
    """Whether `sample` is differentiable in the parameters (reparameterised)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node(cls, cls._tree_flatten, cls._tree_unflatten)

    # ----------------------------------------------------------------- pytree

    def _tree_flatten(self):
        children = tuple(getattr(self, name) for name, _, _ in self._params)
        return children, tuple(getattr(self, name) for name in self._static)

    @classmethod
    def _tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        for name, value in zip(cls._static, aux):
            object.__setattr__(obj, name, value)
        for (name, _, _), child in zip(cls._params, children):
            object.__setattr__(obj, name, child)
        return obj

    def _rebuild(self, children) -> Distribution:
        """The same type and static attributes with new leaves (no validation)."""
        return type(self)._tree_unflatten(self._tree_flatten()[1], children)

    def _broadcast_batch(self, batch: tuple) -> Distribution:
        """This distribution with its parameters broadcast to the batch shape `batch`."""
        if self.batch_shape == tuple(batch):
            return self
        if not self._params or type(self)._tree_flatten is not Distribution._tree_flatten:
            raise ValueError(
                f"cannot broadcast {type(self).__name__} from {self.batch_shape} to {batch}"
            )
        children = []
        for name, event_ndims, _ in self._params:
            x = getattr(self, name)
            children.append(jnp.broadcast_to(x, tuple(batch) + x.shape[x.ndim - event_ndims :]))
        return self._rebuild(children)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable; use .replace({name}=...)")

    def replace(self, **params: Any) -> Distribution:
        """A copy with some parameters replaced (validated like the constructor)."""
        values = {name: getattr(self, name) for name, _, _ in self._params}
        values.update((name, getattr(self, name)) for name in self._static)
        unknown = set(params) - set(values)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no parameter(s) {sorted(unknown)}")
        values.update(params)
        return type(self)(**values)

    # ----------------------------------------------------------- construction

    def _set_params(self, **values: Any) -> None:
        """Convert, check shapes, broadcast to one batch shape and check values."""
        arrays = {}
        for name, event_ndims, _ in self._params:
            x = _validate.float_array(values[name], name, numbers=True)
            if x.ndim < event_ndims:
                raise ValueError(
                    f"{name} must have at least {event_ndims} dimension(s), got shape {x.shape}"
                )
            arrays[name] = x
        dtype = _validate.common_dtype(*arrays.values(), weak_adopts=True)
        events = {
            name: arrays[name].shape[arrays[name].ndim - nd :] for name, nd, _ in self._params
        }
        self._check_event_shapes(events)
        batches = {name: arrays[name].shape[: arrays[name].ndim - nd] for name, nd, _ in self._params}
        try:
            batch = np.broadcast_shapes(*batches.values())
        except ValueError:
            shapes = ", ".join(f"{n}.shape={arrays[n].shape}" for n in arrays)
            raise ValueError(
                f"{type(self).__name__}: parameter batch shapes do not broadcast ({shapes})"
            ) from None
        for name, x in arrays.items():
            x = x if x.dtype == dtype and not getattr(x, "weak_type", False) else x.astype(dtype)
            shape = batch + events[name]
            object.__setattr__(self, name, x if x.shape == shape else jnp.broadcast_to(x, shape))
        if is_concrete(*arrays.values()):
            # concrete values are checked in NumPy: no device round trip, no compiles
            for ok, message, value in self._constraints(np):
                ok = np.asarray(ok)
                if not ok.all():
                    bad = np.asarray(value)[~ok]
                    raise ValueError(
                        f"{type(self).__name__}: {message}; {bad.size} of {ok.size} "
                        f"entries are not (first: {bad.flat[0].item()!r})"
                    )

    def _check_event_shapes(self, events: dict[str, tuple]) -> None:
        """All parameters must agree on the event size (overridden by families that differ)."""
        shapes = {tuple(s) for s in events.values() if len(s)}
        if len(shapes) > 1:
            raise ValueError(
                f"{type(self).__name__}: parameters disagree on the event shape: "
                + ", ".join(f"{n} ends with {tuple(s)}" for n, s in events.items())
            )

    def _constraints(self, xp: Any = jnp) -> list[tuple[jax.Array, str, jax.Array]]:
        """`(ok_mask, message, checked_values)` triples, computed with `xp` (jnp or np)."""
        out = []
        for name, _, constraint in self._params:
            x = xp.asarray(getattr(self, name))
            if constraint == POSITIVE:
                out.append((xp.isnan(x) | (x > 0), f"{name} must be > 0", x))
            elif constraint == LOWER_CHOLESKY:
                diag = xp.diagonal(x, axis1=-2, axis2=-1)
                upper = xp.triu(x, 1)
                out.append(
                    (
                        xp.isnan(diag) | (diag > 0),
                        f"{name} must have a positive diagonal (a Cholesky factor of a "
                        "positive-definite covariance)",
                        diag,
                    )
                )
                out.append((upper == 0, f"{name} must be lower triangular (0 above the diagonal)", upper))
            elif constraint.startswith(ABOVE):
                other = constraint[len(ABOVE) :]
                ok = xp.isnan(x) | (x > xp.asarray(getattr(self, other)))
                out.append((ok, f"{name} must be > {other}", x))
        return out

    def check(self) -> None:
        """Value checks through `checkify`, for parameters that are traced.

        Concrete parameters are already checked by the constructor. Under
        `jit`, wrap the function in `jax.experimental.checkify.checkify`
        and call `err.throw()`.
        """
        for ok, message, _ in self._constraints():
            checkify.check(jnp.all(ok), f"{type(self).__name__}: {message}")

    # ----------------------------------------------------------------- shapes

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The shape of the batch of distributions (parameters' shape without event dims)."""
        if not self._params:
            raise TypeError(f"{type(self).__name__} has no parameters: instantiate a family, e.g. Normal")
        name, event_ndims, _ = self._params[0]
        x = getattr(self, name)
        return tuple(x.shape[: x.ndim - event_ndims])

    @property
    def event_shape(self) -> tuple[int, ...]:
        """The shape of one draw."""
        return ()

    @property
    def dtype(self):
        """The floating dtype of the parameters."""
        return getattr(self, self._params[0][0]).dtype

    def __repr__(self) -> str:
        try:
            shapes = (self.batch_shape, self.event_shape, self.dtype)
        except (AttributeError, TypeError, IndexError):  # leaves replaced by non-arrays
            return f"{type(self).__name__}{self._tree_flatten()[0]!r}"
        del shapes
        return (
            f"{type(self).__name__}(batch_shape={self.batch_shape}, "
            f"event_shape={self.event_shape}, dtype={self.dtype})"
        )

    # ---------------------------------------------------------------- methods

    def log_prob(self, x: Any) -> jax.Array:
        """Log density (or mass) of `x`; shape `x.shape` without the event dims."""
        raise NotImplementedError(f"{type(self).__name__} has no log_prob")

    def prob(self, x: Any) -> jax.Array:
        """`exp(log_prob(x))`."""
        return jnp.exp(self.log_prob(x))

    def sample(self, key: jax.Array, shape: tuple[int, ...] = ()) -> jax.Array:
        """Draws of shape `shape + batch_shape + event_shape`."""
        raise NotImplementedError(f"{type(self).__name__} has no sample")

    def entropy(self) -> jax.Array:
        """Differential (or Shannon) entropy in nats, one per batch member."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form entropy")

    def mean(self) -> jax.Array:
        """The mean, shape `batch_shape + event_shape`."""
        raise NotImplementedError(f"{type(self).__name__} has no mean")

    def variance(self) -> jax.Array:
        """The (marginal) variance, shape `batch_shape + event_shape`."""
        raise NotImplementedError(f"{type(self).__name__} has no variance")

    def stddev(self) -> jax.Array:
        """The (marginal) standard deviation `sqrt(variance())`."""
        return jnp.sqrt(self.variance())

    def cross_entropy(self, other: Distribution) -> jax.Array:
        r"""Cross-entropy $H(p, q) = -\mathbb E_{x\sim p}[\log q(x)] = H(p) + \mathrm{KL}(p\,\|\,q)$ in nats.

        `self` is `p`. Analytic wherever `entropy` has a closed form and
        [jaxkl.distributions.kl_divergence][] is registered for the pair.

        Args:
          other: the distribution `q`; batch shapes broadcast as in
            [jaxkl.distributions.kl_divergence][].

        Returns:
          One value per batch member, `+inf` where `q` puts no mass on part of
          `p`'s support.

        Raises:
          NotImplementedError: no entropy or no analytic KL for the pair.

        Examples:
          >>> import numpy as np
          >>> from jaxkl.distributions import Normal
          >>> print(np.asarray(Normal(0.0, 1.0).cross_entropy(Normal(0.0, 2.0))).round(4))
          1.7371

        References:
          Cover, Thomas, "Elements of Information Theory" (2006), section 2.3.
        """
        from ._kl import kl_divergence  # the registry imports the families, not the reverse

        kl = kl_divergence(self, other)
        return jnp.broadcast_to(self.entropy(), kl.shape) + kl

    # -------------------------------------------------------------- helpers

    def _value(self, x: Any) -> tuple[jax.Array, tuple]:
        """`x` as a float array broadcast against batch + event, in the parameters' dtype."""
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(self.dtype)
        x = x.astype(jnp.promote_types(x.dtype, self.dtype))
        return broadcast_value(x, self.batch_shape, self.event_shape)

    def _param(self, name: str, shape: tuple) -> jax.Array:
        """A parameter broadcast to `shape` (sample dims in front)."""
        return jnp.broadcast_to(getattr(self, name), shape)

    def _sample_shape(self, shape: Any) -> tuple[int, ...]:
        if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
            shape = (shape,)
        ok = isinstance(shape, (tuple, list)) and all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0 for n in shape
        )
        if not ok:
            raise TypeError(f"sample shape must be an int >= 0 or a tuple of them, got {shape!r}")
        return tuple(int(n) for n in shape) + self.batch_shape + self.event_shape

