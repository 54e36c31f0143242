"""Trace-time argument checks with messages that name the argument.

Everything here runs while JAX traces a function, on shapes, dtypes and Python
numbers only, so it costs nothing at run time and raises before any compile.
Checks on *values* (negative probabilities, rows that do not sum to one) live
in `jaxkl._checks`, because a traced value cannot raise.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

REDUCTIONS = ("none", "sum", "mean", "batchmean")


def float_array(x: Any, name: str) -> jax.Array:
    """`x` as a JAX array of a real floating dtype, or a TypeError naming it."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real floating point, got complex dtype {x.dtype}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} must be a floating-point array, got dtype {x.dtype} "
            f"(convert it, e.g. {name}.astype(jnp.float32))"
        )
    return x


def common_dtype(*arrays: jax.Array) -> Any:
    """The floating dtype mixed inputs are promoted to: the widest (bf16 with f16 gives f32).

    Written out rather than left to `jnp.promote_types` so that it behaves
    the same under `jax_numpy_dtype_promotion="strict"`.
    """
    dtypes = {jnp.dtype(a.dtype) for a in arrays}
    widest = max(dtypes, key=lambda d: d.itemsize)
    if len(dtypes) > 1 and widest.itemsize < 4:
        return jnp.dtype(jnp.float32)
    return widest


def same_shape(a: jax.Array, b: jax.Array, name_a: str, name_b: str) -> None:
    """Refuse to broadcast one distribution against another."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {name_a}.shape={a.shape} "
            f"and {name_b}.shape={b.shape}; jaxkl never broadcasts one against the other "
            "(broadcast explicitly with jnp.broadcast_to if that is what you mean)"
        )


def float_pair(
    a: Any, b: Any, name_a: str, name_b: str, axis: Any, where: Any
) -> tuple[jax.Array, jax.Array, int, jax.Array | None]:
    """Two same-shaped float inputs in one dtype, with their class axis and mask."""
    a = float_array(a, name_a)
    b = float_array(b, name_b)
    same_shape(a, b, name_a, name_b)
    dtype = common_dtype(a, b)
    axis = normalize_axis(axis, a.ndim)
    return a.astype(dtype), b.astype(dtype), axis, mask(where, a.shape)


def normalize_axis(axis: Any, ndim: int, name: str = "axis") -> int:
    """A non-negative axis index, or a ValueError naming the rank."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an input of rank {ndim}")
    return int(axis) % ndim


def mask(where: Any, shape: tuple[int, ...], name: str = "where") -> jax.Array | None:
    """`where` as a boolean array broadcastable to `shape` (None stays None)."""
    if where is None:
        return None
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
        raise TypeError(f"{name} must be a boolean array, got dtype {where.dtype}")
    try:
        broadcast = np.broadcast_shapes(where.shape, shape)
    except ValueError:
        broadcast = None
    if broadcast != tuple(shape):
        raise ValueError(
            f"{name}.shape={where.shape} does not broadcast to the input shape {tuple(shape)}"
        )
    return where


def concrete_number(x: Any) -> float | None:
    """The Python value of a scalar known at trace time, or None if it is traced."""
    try:
        return float(x)
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def base(value: Any) -> float | None:
    """Validate a logarithm base: None (nats) or a number > 0 and != 1."""
    if value is None:
        return None
    b = concrete_number(value)
    if b is None:
        raise TypeError("base must be a Python number known at trace time (or None for nats)")
    if not (b > 0 and b != 1 and math.isfinite(b)):
        raise ValueError(f"base must be a finite number > 0 and != 1, got {value!r}")
    return b


def positive(value: Any, name: str) -> float | None:
    """A number > 0; returns None (and checks nothing) when it is traced."""
    v = concrete_number(value)
    if v is not None and not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def unit_interval(value: Any, name: str) -> float:
    """A number in [0, 1] known at trace time."""
    v = concrete_number(value)
    if v is None:
        raise TypeError(f"{name} must be a Python number known at trace time")
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}")
    return v


def reduction(value: Any) -> str:
    """One of 'none', 'sum', 'mean', 'batchmean'."""
    if value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {value!r}")
    return value


def integer_array(x: Any, name: str) -> jax.Array:
    """`x` as a JAX array of a (signed or unsigned) integer dtype, or a TypeError naming it."""
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_ or not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(
            f"{name} must be an integer array of class indices, got dtype {x.dtype} "
            f"(for probability targets use cross_entropy_from_logits)"
        )
    return x


def nonnegative(value: Any, name: str) -> float:
    """A finite number >= 0 known at trace time."""
    v = concrete_number(value)
    if v is None:
        raise TypeError(f"{name} must be a Python number known at trace time")
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def axis_name(value: Any) -> Any:
    """A mesh axis name (a hashable, e.g. a str), a tuple of them, or None."""
    if value is None:
        return None
    names = value if isinstance(value, tuple) else (value,)
    for n in names:
        try:
            hash(n)
        except TypeError:
            raise TypeError(f"axis_name must be a mesh axis name or a tuple of them, got {value!r}")
    return value


def labels(x: Any, shape: tuple[int, ...], against: str, name: str = "labels") -> jax.Array:
    """Integer class indices of exactly `shape` (`against` says where the shape comes from)."""
    x = integer_array(x, name)
    if x.shape != tuple(shape):
        raise ValueError(
            f"{name}.shape={x.shape} must equal {against}, i.e. {tuple(shape)}; "
            f"jaxkl never broadcasts {name} against logits"
        )
    return x


def optional_int(value: Any, name: str) -> int | None:
    """A Python/NumPy integer or None (e.g. `ignore_index`)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int or None, got {value!r}")
    return int(value)


def positive_int_or_none(value: Any, name: str) -> int | None:
    """A positive Python/NumPy integer or None (e.g. `chunk_size`)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int or None, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int or None, got {value!r}")
    return int(value)


def choice(value: Any, choices: tuple[str, ...], name: str) -> str:
    """One of a fixed set of strings."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def linear_head(
    hidden: Any,
    head_weight: Any,
    head_bias: Any = None,
    hidden_name: str = "hidden",
    weight_name: str = "head_weight",
    bias_name: str = "head_bias",
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """A linear head `hidden [N, D] @ head_weight [D, V] (+ head_bias [V])`, in one dtype."""
    hidden = float_array(hidden, hidden_name)
    head_weight = float_array(head_weight, weight_name)
    if hidden.ndim != 2 or head_weight.ndim != 2 or hidden.shape[1] != head_weight.shape[0]:
        raise ValueError(
            f"{hidden_name} must be [N, D] and {weight_name} [D, V], got "
            f"{hidden_name}.shape={hidden.shape} and {weight_name}.shape={head_weight.shape}"
        )
    arrays = [hidden, head_weight]
    if head_bias is not None:
        head_bias = float_array(head_bias, bias_name)
        if head_bias.shape != (head_weight.shape[1],):
            raise ValueError(
                f"{bias_name} must have shape ({head_weight.shape[1]},) to match "
                f"{weight_name}.shape={head_weight.shape}, got {bias_name}.shape={head_bias.shape}"
            )
        arrays.append(head_bias)
    dtype = common_dtype(*arrays)
    head_bias = None if head_bias is None else head_bias.astype(dtype)
    return hidden.astype(dtype), head_weight.astype(dtype), head_bias


def order(value: Any, name: str = "alpha", *, renyi: bool = False) -> float:
    """The order of a Rényi / Tsallis / Amari measure, a Python number known at trace time.

    Rényi orders (`renyi=True`) lie in [0, inf], `inf` included; other orders
    are any finite real. The kernels branch on the special orders (0, 1, inf),
    so a traced order is refused.
    """
    v = concrete_number(value)
    if v is None:
        raise TypeError(f"{name} must be a Python number known at trace time, got a traced value")
    if math.isnan(v):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if renyi and v < 0:
        raise ValueError(f"{name} must lie in [0, inf] (jnp.inf included) for a Rényi measure, got {value!r}")
    if not renyi and not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return v


def softcap(value: Any, name: str = "softcap") -> float | None:
    """None, or a finite Python number > 0 known at trace time (a static option)."""
    if value is None:
        return None
    v = concrete_number(value)
    if v is None:
        raise TypeError(f"{name} must be None or a Python number known at trace time, got a traced value")
    return positive(v, name)
