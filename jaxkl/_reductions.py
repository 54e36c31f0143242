"""Reducing per-example values to a loss: 'none' | 'sum' | 'mean' | 'batchmean'."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _validate
from ._rowwise import compute_dtype


def reduce(values: ArrayLike, reduction: str = "mean", *, where: ArrayLike | None = None) -> jax.Array:
    r"""Reduce per-example values the way every jaxkl loss does.

    * `"none"`: the values unchanged (masked examples set to 0);
    * `"sum"`: the sum over unmasked examples;
    * `"mean"`: the sum divided by the number of unmasked examples
      (0, not NaN, when every example is masked);
    * `"batchmean"`: the sum divided by the size of the first axis
      (`values.shape[0]`), masked or not — PyTorch's `batchmean`.

    Masked examples contribute nothing to the value *or* the gradient, even if
    their value is NaN or infinite.

    Args:
      values: per-example values, any shape (0-d counts as one example).
      reduction: one of `"none"`, `"sum"`, `"mean"`, `"batchmean"`.
      where: optional boolean mask broadcastable to `values`; `False`
        excludes an example.

    Returns:
      A scalar, or `values`' shape for `"none"`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> v = jnp.array([1.0, 2.0, 6.0])
      >>> print(jaxkl.reduce(v, "mean", where=jnp.array([True, True, False])))
      1.5
      >>> print(jaxkl.reduce(v, "batchmean", where=jnp.array([True, True, False])))
      1.0
    """
    values = _validate.float_array(values, "values")
    reduction = _validate.reduction(reduction)
    where = _validate.mask(where, values.shape)
    if reduction == "none":
        return values if where is None else jnp.where(where, values, jnp.zeros((), values.dtype))
    # Accumulate low-precision values in float32.
    dtype = compute_dtype(values.dtype)
    weights = example_weights(reduction, values.shape, where, dtype=dtype)
    return weighted_sum(values.astype(dtype), weights).astype(values.dtype)


def example_weights(
    reduction: str,
    shape: tuple[int, ...],
    where: jax.Array | None = None,
    counts: jax.Array | None = None,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """Each example's multiplier in a scalar reduction: the loss is `weighted_sum(values, weights)`.

    The one definition of the reductions, shared by [jaxkl.reduce][] and the
    losses whose values are only formed chunk by chunk (the fused heads).
    Excluded examples weigh 0. `counts` is what each kept example counts for
    in `"mean"` (default 1; a class-weighted cross-entropy counts `w_y`, as
    PyTorch does); a mean over nothing is 0.
    """
    kept = jnp.ones(shape, dtype) if where is None else jnp.broadcast_to(where, shape).astype(dtype)
    if reduction == "sum":
        return kept
    if reduction == "batchmean":
        return kept / (shape[0] if shape else 1)
    counted = kept if counts is None else jnp.where(kept == 0, 0.0, kept * counts.astype(dtype))
    denominator = jnp.sum(counted)
    empty = denominator == 0
    return jnp.where(empty, 0.0, kept / jnp.where(empty, 1.0, denominator))


def weighted_sum(values: jax.Array, weights: jax.Array) -> jax.Array:
    """`sum(weights * values)`; a zero weight removes an example even when its value is NaN."""
    return jnp.sum(jnp.where(weights == 0, 0.0, weights * values))
