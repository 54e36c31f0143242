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


def as_array(x: Any, name: str) -> jax.Array:
    """`x` as a JAX array, or a TypeError that names the argument and says what it got.

    `None`, strings and arbitrary objects would otherwise fail deep inside
    `jnp.asarray` with a message that names nothing.
    """
    if isinstance(x, jax.Array):
        return x
    if x is None or isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be an array, got {x!r}")
    try:
        return jnp.asarray(x)
    except (TypeError, ValueError, OverflowError) as e:
        raise TypeError(f"{name} must be an array, got {type(x).__name__} ({e})") from None


def float_array(x: Any, name: str, *, numbers: bool = False) -> jax.Array:
    """`x` as a JAX array of a real floating dtype, or a TypeError naming it.

    With `numbers=True` a Python int or float is accepted too, as a weakly
    typed float that adopts the dtype of the arrays it meets.
    """
    if numbers and isinstance(x, (int, float)) and not isinstance(x, bool):
        return jnp.asarray(float(x))
    x = as_array(x, name)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real floating point, got complex dtype {x.dtype}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} must be a floating-point array, got dtype {x.dtype} "
            f"(convert it, e.g. {name}.astype(jnp.float32))"
        )
    return x


def common_dtype(*arrays: jax.Array, weak_adopts: bool = False) -> Any:
    """The floating dtype mixed inputs are promoted to: the widest (bf16 with f16 gives f32).

    Written out rather than left to `jnp.promote_types` so that it behaves
    the same under `jax_numpy_dtype_promotion="strict"`. With `weak_adopts`
    weakly typed arrays (from Python numbers) take the others' dtype, as
    distribution parameters do (`Normal(0.0, scale_bf16)` stays bfloat16).
    """
    if weak_adopts:
        strong = [a for a in arrays if not getattr(a, "weak_type", False)]
        if not strong:
            return jnp.asarray(0.0).dtype
        arrays = tuple(strong)
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
    where = as_array(where, name)
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


def concrete_number(x: Any, name: str = "value") -> float | None:
    """The Python value of a scalar known at trace time, or None if it is traced.

    `None`, strings and arrays of more than one element raise a TypeError naming `name`.
    """
    if x is None or isinstance(x, (str, bytes)) or np.size(x) != 1:
        raise TypeError(f"{name} must be a number, got {x!r}")
    try:
        return float(x)
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def base(value: Any) -> float | None:
    """Validate a logarithm base: None (nats) or a number > 0 and != 1."""
    if value is None:
        return None
    b = concrete_number(value, "base")
    if b is None:
        raise TypeError("base must be a Python number known at trace time (or None for nats)")
    if not (b > 0 and b != 1 and math.isfinite(b)):
        raise ValueError(f"base must be a finite number > 0 and != 1, got {value!r}")
    return b


def positive(value: Any, name: str) -> float | None:
    """A number > 0; returns None (and checks nothing) when it is traced."""
    v = concrete_number(value, name)
    if v is not None and not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def unit_interval(value: Any, name: str) -> float:
    """A number in [0, 1] known at trace time."""
    v = concrete_number(value, name)
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


def integer_array(
    x: Any, name: str, hint: str = " (for probability targets use cross_entropy_from_logits)"
) -> jax.Array:
    """`x` as a JAX array of a (signed or unsigned) integer dtype, or a TypeError naming it.

    64-bit host integers meet JAX's int32 when x64 is off; `jnp.asarray` would
    wrap them (2**32 becomes class 0). They saturate instead, to the int32
    limits, which lie outside every class range: an out-of-range label stays
    out of range (and `check=True` sees it).
    """
    if not isinstance(x, jax.Array) and x is not None and not isinstance(x, (str, bytes)):
        try:
            host = np.asarray(x)
        except (TypeError, ValueError, OverflowError):
            host = None  # as_array names the argument
        if host is not None and host.dtype.kind in "iu" and not jax.config.jax_enable_x64:
            if host.dtype.itemsize == 8:
                limits = np.iinfo(np.int32)
                if host.dtype.kind == "i":
                    host = np.clip(host, limits.min, limits.max)
                else:
                    host = np.minimum(host, np.asarray(limits.max, host.dtype))
                x = host.astype(np.int32)
    x = as_array(x, name)
    if x.dtype == jnp.bool_ or not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(
            f"{name} must be an integer array of class indices, got dtype {x.dtype}{hint}"
        )
    return x


def nonnegative(value: Any, name: str) -> float:
    """A finite number >= 0 known at trace time."""
    v = concrete_number(value, name)
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
    limits = np.iinfo(np.int64 if jax.config.jax_enable_x64 else np.int32)
    if not limits.min <= value <= limits.max:
        raise ValueError(
            f"{name}={value} does not fit the labels' dtype {limits.dtype} "
            "(enable jax_enable_x64 for 64-bit labels)"
        )
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
    v = concrete_number(value, name)
    if v is None:
        raise TypeError(f"{name} must be a Python number known at trace time, got a traced value")
    if math.isnan(v):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if renyi and v < 0:
        raise ValueError(f"{name} must lie in [0, inf] (jnp.inf included) for a Rényi measure, got {value!r}")
    if not renyi and not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return v


def temperature(value: Any, shape: tuple[int, ...], axis: int, name: str = "temperature") -> Any:
    """A softmax temperature for logits of `shape` with class axis `axis`.

    A number known at trace time comes back as a Python float (> 0 and
    finite, or a ValueError). Otherwise it is an array of one temperature per
    row: broadcastable to `shape` with size 1 along `axis` (e.g. `[N, 1]` for
    `[N, V]` logits); a concrete entry <= 0 raises, and a traced one becomes
    NaN so that its rows are NaN (dividing by it would silently compute the
    divergence of the negated logits).
    """
    if not isinstance(value, jax.Array) and np.ndim(value) == 0:
        return positive(value, name)
    t = float_array(value, name)
    if t.ndim == 0 and not isinstance(t, jax.core.Tracer):
        return positive(t, name)
    try:
        broadcast = np.broadcast_shapes(t.shape, tuple(shape))
    except ValueError:
        broadcast = None
    class_dim = t.ndim - (len(shape) - axis)
    if broadcast != tuple(shape) or (class_dim >= 0 and t.shape[class_dim] != 1):
        raise ValueError(
            f"{name}.shape={t.shape} must be () or broadcast to the logits' shape {tuple(shape)} "
            f"with size 1 along the class axis {axis} (one temperature per row, e.g. "
            f"{tuple(shape[:axis]) + (1,) + tuple(shape[axis + 1:])})"
        )
    if not isinstance(t, jax.core.Tracer):
        values = np.asarray(t)
        if not np.all(np.isfinite(values) & (values > 0)):
            raise ValueError(f"{name} must hold finite numbers > 0, got {values.ravel()[:8]}")
        return t
    return jnp.where(t > 0, t, jnp.nan)


def softcap(value: Any, name: str = "softcap") -> float | None:
    """None, or a finite Python number > 0 known at trace time (a static option)."""
    if value is None:
        return None
    v = concrete_number(value, name)
    if v is None:
        raise TypeError(f"{name} must be None or a Python number known at trace time, got a traced value")
    return positive(v, name)
