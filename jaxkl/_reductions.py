"""Reducing per-example values to a loss: 'none' | 'sum' | 'mean' | 'batchmean'."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from . import _validate
from ._rowwise import compute_dtype


def reduce(values: Any, reduction: str = "mean", *, where: Any = None) -> jax.Array:
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
    if where is not None:
        values = jnp.where(where, values, jnp.zeros((), values.dtype))
    if reduction == "none":
        return values
    # Accumulate low-precision values in float32.
    total = jnp.sum(values.astype(compute_dtype(values.dtype)))
    if reduction == "sum":
        result = total
    elif reduction == "batchmean":
        result = total / (values.shape[0] if values.ndim else 1)
    else:
        if where is None:
            count = jnp.asarray(values.size, total.dtype)
        else:
            count = jnp.sum(jnp.broadcast_to(where, values.shape), dtype=total.dtype)
        result = jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)
    return result.astype(values.dtype)
