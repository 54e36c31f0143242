"""Opt-in value checks through `jax.experimental.checkify`.

A traced value cannot raise, so kernels never inspect values on their own;
with `check=True` they add `checkify.check` calls instead. Run the
function under `checkify.checkify` (any `jit` inside or outside) and call
`err.throw()`; eagerly, a failed check raises at once. Without `check=True`
invalid values are not clipped or repaired: they give NaN (negative
probabilities) or a value that is not a divergence (rows not summing to 1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from ._rowwise import compute_dtype


def row_sum_tolerance(dtype) -> float:
    """How far a row may be from summing to 1: sqrt(eps) of the input dtype."""
    return float(jnp.finfo(dtype).eps) ** 0.5


def probabilities(p: jax.Array, name: str, axis: int, where: jax.Array | None) -> None:
    """Check that `p` is non-negative and each (unmasked, non-empty) row sums to 1."""
    tol = row_sum_tolerance(p.dtype)
    p = p.astype(compute_dtype(p.dtype))
    if where is not None:
        p = jnp.where(where, p, 0.0)
    checkify.check(
        jnp.all(jnp.isnan(p) | (p >= 0)),
        f"{name} has a negative entry (smallest is {{}})",
        jnp.min(p, initial=jnp.inf),
    )
    total = jnp.sum(p, axis=axis)
    if where is None:
        used = jnp.full(total.shape, p.shape[axis] > 0)
    else:
        used = jnp.any(jnp.broadcast_to(where, p.shape), axis=axis)
    error = jnp.where(used, jnp.abs(total - 1.0), 0.0)
    checkify.check(
        jnp.all(jnp.isnan(error) | (error <= tol)),
        f"{name} has a row that does not sum to 1 (worst is off by {{}}, tolerance {tol:.3g})",
        jnp.max(error, initial=0.0),
    )


def labels(
    labels: jax.Array, num_classes: int, ignore_index: int | None, where: jax.Array | None = None
) -> None:
    """Check that every label is a class index in `[0, num_classes)` or `ignore_index`.

    Labels excluded by `where` (broadcastable to `labels`) are not checked:
    they take no part in the loss, and padding often holds placeholders.
    """
    if labels.size == 0:
        return
    ok = (labels >= 0) & (labels < num_classes)
    if ignore_index is not None:
        ok = ok | (labels == ignore_index)
    if where is not None:
        ok = ok | ~jnp.broadcast_to(where, labels.shape)
    checkify.check(
        jnp.all(ok),
        f"labels has an entry outside [0, {num_classes}) that is not ignore_index={ignore_index} "
        "(first offending label is {})",
        jnp.where(jnp.any(~ok), labels.ravel()[jnp.argmin(ok.ravel())], 0),
    )


def top_k_indices(indices: jax.Array, num_classes: int) -> None:
    """Check that each row of `indices[..., k]` holds distinct classes in `[0, num_classes)`."""
    if indices.size == 0:
        return
    ok = (indices >= 0) & (indices < num_classes)
    checkify.check(
        jnp.all(ok),
        f"teacher_indices has an entry outside [0, {num_classes}) (first offending index is {{}})",
        jnp.where(jnp.any(~ok), indices.ravel()[jnp.argmin(ok.ravel())], 0),
    )
    ordered = jnp.sort(indices, axis=-1)
    repeated = ordered[..., 1:] == ordered[..., :-1]
    checkify.check(
        ~jnp.any(repeated),
        "teacher_indices has a class twice in one row (first repeated class is {})",
        jnp.where(jnp.any(repeated), ordered[..., 1:].ravel()[jnp.argmax(repeated.ravel())], 0),
    )
