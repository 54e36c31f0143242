"""Several class axes: `axis=(1, 2)` means the classes are the product of those axes.

Every kernel reduces over one class axis. A tuple of axes is reduced to that
case at the public entry point: the class axes are moved to the end, in the
order given, and merged into one (`jnp.moveaxis` + `reshape`, free under
`jit`), the kernel runs with `axis=-1`, and an output shaped like the input
(`log_softmax`, `softmax`) is split and moved back. So a tuple gives exactly
the result of moving and flattening the axes by hand.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from . import _validate


def _axes(value: Any, ndim: int) -> tuple[int, ...]:
    axes = tuple(_validate.normalize_axis(a, ndim) for a in value)
    if not axes:
        raise ValueError("axis must name at least one axis, got ()")
    if len(set(axes)) != len(axes):
        raise ValueError(f"axis={value} names the same axis twice")
    return axes


def _merged(x: Any, axes: tuple[int, ...]) -> jnp.ndarray:
    moved = jnp.moveaxis(x, axes, tuple(range(-len(axes), 0)))
    return moved.reshape(moved.shape[: moved.ndim - len(axes)] + (-1,))


def _check_classes(value: Any, name: str, shape: tuple[int, ...], axes: tuple[int, ...], axis: Any, of: str) -> None:
    """A per-class argument must be flat or shaped like the class axes, before it is flattened.

    Flattening alone would take a right-sized array of the wrong shape
    (`(4, 3)` for class axes of sizes `(3, 4)`, or `(1, 12)`) silently.
    """
    along = tuple(shape[a] for a in axes)
    flat = (int(np.prod(along)),)
    got = np.shape(value)
    if got not in (flat, along):
        raise ValueError(
            f"{name}.shape={got} must be {flat} or {along}: one entry per class of the class axes "
            f"axis={tuple(axis)} of {of}.shape={tuple(shape)}, flat or shaped like those axes (in the order given)"
        )


def class_axes(*arrays: str, masks: tuple[str, ...] = ("where",), classes: tuple[str, ...] = (), same_shape: bool = False):
    """Let a kernel take `axis` as an int or a tuple of ints.

    `arrays` name the arguments shaped like the input (the first one fixes
    the shape), `masks` those broadcastable to it, `classes` those with one
    entry per class (e.g. class weights, given in the shape of the class
    axes or flat). `same_shape`: the output is shaped like the input.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            axis = bound.arguments.get("axis", signature.parameters["axis"].default)
            if not isinstance(axis, (tuple, list)):
                return fn(*args, **kwargs)
            first = bound.arguments[arrays[0]]
            first = _validate.float_array(first, arrays[0]) if first is not None else first
            shape = np.shape(first)
            axes = _axes(axis, len(shape))
            for name in arrays:
                value = bound.arguments.get(name)
                if value is not None:
                    if np.shape(value) != shape:
                        _validate.same_shape(jnp.asarray(first), jnp.asarray(value), arrays[0], name)
                    bound.arguments[name] = _merged(value, axes)
            for name in masks:
                value = bound.arguments.get(name)
                if value is not None:
                    mask = _validate.mask(value, shape, name)
                    bound.arguments[name] = _merged(jnp.broadcast_to(mask, shape), axes)
            for name in classes:
                value = bound.arguments.get(name)
                if value is not None:
                    _check_classes(value, name, shape, axes, axis, arrays[0])
                    bound.arguments[name] = jnp.reshape(jnp.asarray(value), (-1,))
            bound.arguments["axis"] = -1
            out = fn(*bound.args, **bound.kwargs)
            if not same_shape:
                return out
            moved = tuple(np.delete(shape, axes)) + tuple(shape[a] for a in axes)
            return jnp.moveaxis(out.reshape(moved), tuple(range(-len(axes), 0)), axes)

        return wrapper

    return wrap

