"""Cross-entropy with integer labels: `torch.nn.functional.cross_entropy` semantics.

With `P = softmax(x)`, label `y`, class weights `w` (`W = sum w`),
`a = 1 - eps`, `b = eps / K` and `z` the z-loss coefficient, the
per-example value and its derivative are

    l  = a w_y (-log P_y) + b sum_c w_c (-log P_c) + z w_y lse(x)^2
    dl/dx_c = P_c (a w_y + b W + 2 z w_y lse(x)) - a w_y [c = y] - b w_c

The label's logit `x_y` is gathered once per row (O(rows)) outside the row
kernel, so the kernel's per-class work is the log-normaliser alone, plus one
weighted row sum when `label_smoothing` is on. `-log P_y` is formed as
`(max - x_y) + log sum exp(x - max)`, exact in the shift. The rule takes the
label's `-a w_y` from `dx` through a compare fused into its sweep and
leaves the gathered logit's tangent unused, so reverse mode never transposes
the gather (a scatter, which XLA:CPU runs into a rows x classes float32
buffer for 16-bit logits); differentiating the rule itself (higher order)
still sees the value's dependence on the gathered logit.

How the derivative is computed depends on the backend, by measurement:

* Accelerators (the default branch): the rematerialised rule of
  `jaxkl._rowwise.row_kernel`; reverse mode saves O(rows).
* CPU: the exponentials `exp(x - max)` are computed once, unblocked, and
  the gradient is formed from them in place. Under one `jit` XLA:CPU writes
  them into the gradient's own buffer, so the compiled temporaries stay
  O(rows) (as for plain autodiff of `logsumexp(x) - x_y`), and the
  exponentials are not taken a second time: `python -m bench --sweep`
  (jax 0.10.1, 2 cores) measured the rematerialised rule at 0.3-0.7x the
  speed of plain `jnp` autodiff for value and gradient, this one at par
  or better.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike
import numpy as np

from . import _checks, _validate
from ._axes import class_axes
from ._reductions import example_weights, reduce, weighted_sum
from ._rowwise import (
    LOG_NORMALIZER_BLOCKING,
    compute_dtype,
    label_logits,
    label_mask,
    log_normalizer,
    prepare_logits,
    reciprocal_or_zero,
    row_kernel,
    logsumexp_of,
    row_sum,
    shifted_exponentials,
    soft_capped,
    with_tangent,
    zero_where_unused,
)


class LabelOptions(NamedTuple):
    """Static options of the label cross-entropy kernel."""

    axis: int
    axis_name: Any
    keep: float  # a = 1 - label_smoothing: the label's share of the target
    spread: float  # b = label_smoothing / K: every class's share
    z_loss: float


def _along(v: jax.Array, ndim: int, axis: int) -> jax.Array:
    """A length-K vector shaped to broadcast along `axis` of a rank-`ndim` array."""
    shape = [1] * ndim
    shape[axis] = v.shape[0]
    return v.reshape(shape)


def _weighted_gap(static, xs, shift, weight):
    """`sum_c w_c (max - x_c)`: the smoothing term's per-class part, exact in the shift."""
    axis, axis_name = static.axis, static.axis_name
    w = _along(weight, xs.ndim, axis)
    return row_sum(zero_where_unused(w, shift - xs), axis, axis_name)


def label_value(static, normalizer, picked, wy, weight, gap, valid):
    """The per-example loss from the row's `(shift, log_sum)` and the label's logit."""
    axis, axis_name, a, b, z = static
    shift, log_sum = (jnp.squeeze(v, axis) for v in normalizer)
    # An all -inf row has log_sum = -inf: -log P_c is then +inf (the logit is -inf), not NaN.
    finite_log_sum = jnp.where(log_sum == -jnp.inf, 0.0, log_sum)
    value = jnp.zeros(picked.shape, shift.dtype)
    if a:
        value = value + a * zero_where_unused(wy, (shift - picked) + finite_log_sum)
    if b:
        total = row_sum(weight, 0, axis_name)
        value = value + b * (gap + total * finite_log_sum)
    if z:
        value = value + z * zero_where_unused(wy, jnp.square(shift + log_sum))
    # An out-of-range label has a NaN weight: the example is NaN whatever the terms.
    value = jnp.where(jnp.isnan(wy), jnp.nan, value)
    return value if valid is None else jnp.where(valid, value, 0.0)


def _ce_forward(static, x, picked, idx, wy, weight, valid):
    axis, axis_name, b = static.axis, static.axis_name, static.spread
    # The max in the logits' own dtype: converted first, 16-bit logits would be
    # written out whole in float32 for XLA:CPU's reduction (unblocked shapes).
    xs, shift, _, total = shifted_exponentials(x, None, axis, axis_name)
    normalizer = (shift, jnp.log(total))
    gap = _weighted_gap(static, xs, normalizer[0], weight) if b else None
    picked = picked.astype(xs.dtype)
    return label_value(static, normalizer, picked, wy, weight, gap, valid), normalizer


def label_coefficient(static, p, lse, idx, wy, weight, valid, weight_total):
    """`dl/dx_c` given `P` and `lse` (keepdims), for the classes in `weight`.

    `weight` and `idx` may cover a block of the classes (a shard, or a tile of
    the fused head), with `weight_total = sum_c w_c` over all of them.
    """
    axis, _, a, b, z = static
    wy_ = jnp.expand_dims(wy, axis)
    factor = a * wy_
    if b:
        factor = factor + b * weight_total
    if z:
        factor = factor + 2.0 * z * wy_ * lse
    # P_c * factor is 0 where P_c is 0 (a -inf logit), even where the z-loss
    # makes factor infinite (an all -inf row); without z-loss it is finite.
    coef = zero_where_unused(p, factor) if z else p * factor
    if b:
        coef = coef - b * _along(weight, p.ndim, axis)
    if a:
        # The label's term, from dx: the tangent of `picked` (which is dx at the
        # label) is not used, so reverse mode never transposes the gather.
        coef = coef - jnp.where(label_mask(idx, p.shape, axis), a * wy_, 0.0)
    if valid is not None:
        # Ignored and masked examples get exactly zero gradient, even from NaN logits.
        coef = jnp.where(jnp.expand_dims(valid, axis), coef, 0.0)
    return coef


def _ce_tangent_from(static, p, lse, arrays, tangents):
    """`sum_c dl/dx_c dx_c` given `P` and `lse` (keepdims)."""
    _, _, idx, wy, weight, valid = arrays
    total = row_sum(weight, 0, static.axis_name) if static.spread else None
    coef = label_coefficient(static, p, lse, idx, wy, weight, valid, total)
    return with_tangent(coef, tangents[0], static.axis, static.axis_name)


def _ce_tangent(static, arrays, normalizer, tangents):
    x = prepare_logits(arrays[0], None)
    shift, log_sum = normalizer
    p = jnp.exp((x - shift) - jnp.where(log_sum == -jnp.inf, 0.0, log_sum))
    return _ce_tangent_from(static, p, shift + log_sum, arrays, tangents)


def _ce_cpu_jvp(static, arrays, tangents):
    """Value and tangent from one unblocked pass of exponentials (see the module docstring)."""
    axis, axis_name, b = static.axis, static.axis_name, static.spread
    x, picked, _, wy, weight, valid = arrays
    xs, shift, e, total = shifted_exponentials(x, None, axis, axis_name)
    normalizer = (shift, jnp.log(total))
    gap = _weighted_gap(static, xs, shift, weight) if b else None
    value = label_value(static, normalizer, picked.astype(xs.dtype), wy, weight, gap, valid)
    p = e * reciprocal_or_zero(total)
    return value, _ce_tangent_from(static, p, shift + normalizer[1], arrays, tangents)


_cross_entropy = row_kernel(
    _ce_forward,
    _ce_tangent,
    ("full", "row", "row", "row", "class", "row"),
    cpu_jvp=_ce_cpu_jvp,
    **LOG_NORMALIZER_BLOCKING,
)


def _matches(labels: jax.Array, value: int | None) -> jax.Array:
    """`labels == value` without overflowing a narrow integer dtype."""
    info = np.iinfo(labels.dtype)
    if value is None or not info.min <= value <= info.max:
        return jnp.zeros(labels.shape, bool)
    return labels == value


def counted_examples(labels: jax.Array, ignore_index: int | None, where: jax.Array | None) -> jax.Array | None:
    """Examples that count: not `ignore_index` and not masked; None when all do
    (the kernel then spends no select on it)."""
    valid = None
    if ignore_index is not None:
        valid = ~_matches(labels, ignore_index)
    if where is not None:
        where = jnp.broadcast_to(where, labels.shape)
        valid = where if valid is None else valid & where
    return valid


def label_weights(labels: jax.Array, weight: jax.Array | None, local_classes: int, axis_name: Any = None):
    """Class indices local to this shard and each example's weight `w_y`.

    `weight` is the (local) class weight vector, or None for all ones.
    Unsharded, the index is the label itself (0 for out-of-range labels,
    whose `w_y` is NaN: the example is NaN). With `axis_name` this device
    holds the classes `[offset, offset + K_local)`: a label elsewhere gets
    index -1 (matching no local class), and `w_y` is the `psum` of the one
    local lookup.
    """
    shards = 1 if axis_name is None else jax.lax.axis_size(axis_name)
    in_range = (labels >= 0) & (labels < local_classes * shards)
    # Valid labels fit in int32 (K < 2**31); out-of-range ones never index anything.
    idx = jnp.where(in_range, labels, jnp.zeros((), labels.dtype)).astype(jnp.int32)
    if axis_name is not None:
        local = idx - jax.lax.axis_index(axis_name).astype(jnp.int32) * local_classes
        here = in_range & (local >= 0) & (local < local_classes)
        idx = jnp.where(here, local, -1)
    if weight is None:
        wy = jnp.ones(labels.shape)
    elif not local_classes:
        wy = jnp.zeros(labels.shape, weight.dtype)
    elif axis_name is None:
        wy = weight[idx]
    else:
        wy = jax.lax.psum(jnp.where(here, weight[jnp.maximum(idx, 0)], 0.0), axis_name)
    return idx, jnp.where(in_range, wy, jnp.nan)


def label_cross_entropy(
    x: jax.Array,
    labels: jax.Array,
    *,
    axis: int,
    weight: jax.Array | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    where: jax.Array | None = None,
    axis_name: Any = None,
    softcap: float | None = None,
) -> tuple[jax.Array, jax.Array | None, jax.Array]:
    """The per-example label cross-entropy: `(values, valid, w_y)`, values in the compute dtype.

    The one definition that `cross_entropy_loss`, the distillation losses'
    hard term and the fused heads (chunk by chunk) share. Arguments are
    validated by the caller; `weight` is None (all ones) or the class weights
    (local to this shard with `axis_name`) in the compute dtype. `valid` is
    None when every example counts. `softcap` caps the logits first
    (`soft_capped`).
    """
    x = soft_capped(x, softcap)
    local_classes = x.shape[axis]
    # Sharded, the class axis holds K_local of the K = K_local * shards classes.
    shards = 1 if axis_name is None else jax.lax.axis_size(axis_name)
    num_classes = local_classes * shards
    dtype = compute_dtype(x.dtype)
    idx, wy = label_weights(labels, weight, local_classes, axis_name)
    wy = wy.astype(dtype)
    if weight is None:
        weight = jnp.ones((local_classes,), dtype)
    valid = counted_examples(labels, ignore_index, where)
    eps = label_smoothing
    static = LabelOptions(axis, axis_name, 1.0 - eps, eps / num_classes if num_classes else 0.0, z_loss)
    picked = label_logits(x, idx, axis, axis_name) if local_classes else jnp.zeros(labels.shape, x.dtype)
    return _cross_entropy(static, x, picked, idx, wy, weight, valid), valid, wy


class CrossEntropyAux(NamedTuple):
    """Per-token statistics that come with a cross-entropy at no extra pass over the logits.

    Attributes:
      logsumexp: float32 log-normaliser of each example's (capped) logits, labels' shape.
      predicted: int32 arg-max class of each example, labels' shape.
      correct: bool, `predicted == label`, False where ignored or masked.
      z_loss: the z-loss term `z_loss * w_y * logsumexp**2`, reduced like the
        loss (per example for `reduction="none"`; exactly 0 when `z_loss=0`,
        even for a row whose logits are all `-inf`).

    Returned by [jaxkl.cross_entropy_loss][] and
    [jaxkl.fused_linear_cross_entropy][] with `return_aux=True`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> logits = jnp.log(jnp.array([[1.0, 3.0], [2.0, 2.0]]))  # sums 4 and 4: lse = log 4
      >>> loss, aux = jaxkl.cross_entropy_loss(logits, jnp.array([1, 1]), z_loss=0.5, return_aux=True)
      >>> print(aux.logsumexp.round(4), aux.predicted, aux.correct, (aux.z_loss / jnp.log(4.0) ** 2).round(4))
      [1.3863 1.3863] [1 0] [ True False] 0.5
    """

    logsumexp: jax.Array
    predicted: jax.Array
    correct: jax.Array
    z_loss: jax.Array


def _global_argmax(x: jax.Array, axis: int, axis_name: Any) -> jax.Array:
    """int32 arg-max over `axis`; sharded, the first global index of the global max."""
    local = jnp.argmax(x, axis=axis).astype(jnp.int32)
    if axis_name is None:
        return local
    local_max = jnp.max(x, axis=axis)
    best = jax.lax.pmax(local_max, axis_name)
    offset = jax.lax.axis_index(axis_name).astype(jnp.int32) * x.shape[axis]
    candidate = jnp.where(local_max == best, local + offset, jnp.iinfo(jnp.int32).max)
    return jax.lax.pmin(candidate, axis_name)


def label_aux_rows(x, labels, valid, wy, *, axis, z_loss=0.0, axis_name=None, softcap=None):
    """Per-example `(logsumexp, predicted, correct, z_loss term)`, no gradient.

    Called on the same logits as `label_cross_entropy` (in the fused head,
    the same chunk inside the same row function): the reductions read the
    logits already in hand, never a second materialisation.
    """
    x = jax.lax.stop_gradient(prepare_logits(soft_capped(x, softcap), None))
    lse = jnp.squeeze(logsumexp_of(log_normalizer(x, axis, axis_name)), axis)
    return aux_rows_from(lse, _global_argmax(x, axis, axis_name), labels, valid, wy, z_loss)


def aux_rows_from(lse, predicted, labels, valid, wy, z_loss):
    """`label_aux_rows` from each example's log-normaliser and arg-max."""
    correct = predicted == labels
    if z_loss:
        z_rows = z_loss * zero_where_unused(jax.lax.stop_gradient(wy).astype(lse.dtype), jnp.square(lse))
    else:
        # No z-loss, no term: a clean 0, not 0 * lse^2, which is NaN for an
        # all -inf row (lse = -inf, e.g. every class masked).
        z_rows = jnp.zeros(lse.shape, lse.dtype)
    if valid is not None:
        correct = correct & valid
        z_rows = jnp.where(valid, z_rows, 0.0)
    return lse, predicted, correct, z_rows


def per_example(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    where: ArrayLike | None = None,
    check: bool = False,
    axis_name: Any = None,
    softcap: float | None = None,
    return_aux: bool = False,
) -> tuple[jax.Array, jax.Array | None, jax.Array, Any, Any]:
    """Validated arguments through `label_cross_entropy`: `(values, valid, w_y, dtype, aux_rows)`.

    `aux_rows` is `label_aux_rows` of the same logits with `return_aux`, else None.
    """
    x = _validate.float_array(logits, "logits")
    axis = _validate.normalize_axis(axis, x.ndim)
    axis_name = _validate.axis_name(axis_name)
    local_classes = x.shape[axis]
    row_shape = x.shape[:axis] + x.shape[axis + 1 :]
    labels = _validate.labels(labels, row_shape, f"logits.shape={x.shape} without axis={axis}")
    eps = _validate.unit_interval(label_smoothing, "label_smoothing")
    z = _validate.nonnegative(z_loss, "z_loss")
    ignore_index = _validate.optional_int(ignore_index, "ignore_index")
    softcap = _validate.softcap(softcap)
    where = _validate.mask(where, labels.shape)
    if weight is not None:
        weight = class_weights(weight, local_classes, f"axis={axis} of logits.shape={x.shape}", axis_name)
        weight = weight.astype(compute_dtype(x.dtype))
    if check:
        shards = 1 if axis_name is None else jax.lax.axis_size(axis_name)
        _checks.labels(labels, local_classes * shards, ignore_index, where)
    values, valid, wy = label_cross_entropy(
        x,
        labels,
        axis=axis,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=eps,
        z_loss=z,
        where=where,
        axis_name=axis_name,
        softcap=softcap,
    )
    aux_rows = None
    if return_aux:
        aux_rows = label_aux_rows(
            x, labels, valid, wy, axis=axis, z_loss=z, axis_name=axis_name, softcap=softcap
        )
    return values, valid, wy, x.dtype, aux_rows


def class_weights(weight: Any, num_classes: int, along: str, axis_name: Any = None) -> jax.Array:
    """Validated `[K]` class weights, constants of the loss (no gradient, as in PyTorch)."""
    weight = _validate.float_array(weight, "weight")
    if weight.shape != (num_classes,):
        local = "" if axis_name is None else f" (this device's shard of the classes over {axis_name!r})"
        raise ValueError(
            f"weight.shape={weight.shape} must be ({num_classes},): one weight per class "
            f"along {along}{local}"
        )
    return jax.lax.stop_gradient(weight)


def reduce_label_loss(values, valid, wy, reduction: str, weighted: bool) -> jax.Array:
    """PyTorch's reductions of the label cross-entropy: a class-weighted `"mean"` divides by `sum w_y`."""
    if reduction == "none" or not weighted or reduction != "mean":
        return reduce(values, reduction, where=valid)
    weights = example_weights("mean", values.shape, valid, counts=wy, dtype=values.dtype)
    return weighted_sum(values, weights)


def label_aux(aux_rows, valid, wy, reduction: str, weighted: bool) -> CrossEntropyAux:
    """`CrossEntropyAux` from `label_aux_rows`, its z-loss term reduced like the loss."""
    lse, predicted, correct, z_rows = aux_rows
    z_term = reduce_label_loss(z_rows, valid, jax.lax.stop_gradient(wy), reduction, weighted)
    return CrossEntropyAux(lse, predicted, correct, z_term)


@class_axes("logits", masks=(), classes=("weight",))
def cross_entropy_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    axis: int | tuple[int, ...] = -1,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
    where: ArrayLike | None = None,
    check: bool = False,
    axis_name: Any = None,
    softcap: float | None = None,
    return_aux: bool = False,
) -> jax.Array | tuple[jax.Array, CrossEntropyAux]:
    r"""Cross-entropy of logits against integer class labels, as `torch.nn.functional.cross_entropy`.

    Follows PyTorch's `(input, target)` order. With `P = softmax(logits)`,
    label `y`, class weights `w` (all 1 by default), `K` classes and
    `eps = label_smoothing`, the per-example loss is

    $$
    \ell = (1 - \varepsilon)\, w_y\, (-\log P_y)
    + \frac{\varepsilon}{K} \sum_c w_c\, (-\log P_c)
    + z\, w_y \operatorname{logsumexp}(\text{logits})^2
    $$

    i.e. PyTorch's label smoothing (target `(1 - eps) onehot(y) + eps/K`,
    each class weighted by its own `w_c`) plus an optional z-loss (PaLM;
    not in PyTorch; weighted by `w_y` like the main term). Reductions:

    * `"none"`: per-example losses, 0 for ignored/masked examples;
    * `"sum"`: their sum;
    * `"mean"`: PyTorch's weighted mean `sum(l) / sum(w_y)` over examples
      that are neither ignored nor masked (the plain mean without `weight`);
      0, not NaN, when nothing remains (PyTorch gives NaN);
    * `"batchmean"`: the sum divided by `labels.shape[0]`.

    The row maximum is subtracted first: adding `1e4` or `1e5` to float32
    logits changes neither value nor gradient. A `-inf` logit is a class with
    probability 0 (finite, zero gradient unless it is the label, which gives
    `+inf`; with `label_smoothing > 0` the value is `+inf` but the
    gradient stays finite). Reverse mode stores O(rows), not rows x classes.

    **Sharded classes.** With `axis_name` (inside `shard_map`, the class
    axis of `logits` split over that mesh axis in order), `logits` is this
    device's block of `K_local` classes, `[i K_local, (i + 1) K_local)` on
    the device at `lax.axis_index(axis_name) = i`, of
    `K = K_local * lax.axis_size(axis_name)` in all. `labels` are *global*
    class indices, the same on every device, and `weight` is this device's
    *local* `[K_local]` slice of the class weights (shard it like the class
    axis, e.g. `in_specs=P(axis_name)`).
    Row statistics and `w_y` are combined with `lax.pmax`/`lax.psum`;
    the class axis is never gathered. The result is the same on every device.

    **Labels out of range** (`< 0` or `>= K`, other than `ignore_index`)
    never wrap around (optax's and NumPy's indexing would): the example's loss
    is NaN, so a `"mean"`/`"sum"` is NaN too. `check=True` adds a
    `jax.experimental.checkify` check that names the bad label.

    Args:
      logits: `[..., K, ...]` floating point (bf16/f16 are accumulated in f32).
      labels: integer class indices, shape `logits.shape` without `axis`.
      axis: the class axis of `logits`, or a tuple of axes whose product is the classes
        (labels index the classes in the order of those axes flattened; `weight` is then
        flat or shaped like those axes).
      weight: optional `[K]` class weights (treated as constants: no gradient);
        with `axis_name`, the local `[K_local]` slice.
      ignore_index: a label value whose examples contribute nothing and count
        for nothing (PyTorch's default is `-100`; here `None` = none).
      label_smoothing: `eps` in `[0, 1]`.
      z_loss: coefficient `>= 0` of `logsumexp(logits)^2`.
      reduction: `"none"`, `"sum"`, `"mean"` or `"batchmean"`.
      where: optional boolean mask over examples (broadcastable to `labels`);
        `False` acts like `ignore_index`.
      check: add checkify checks that labels are in range (labels excluded by
        `where` or equal to `ignore_index` are not checked).
      axis_name: mesh axis name (or tuple of names) over which `axis` is
        sharded inside `shard_map`, or None.
      softcap: None, or `c > 0`: the logits become $c \tanh(x / c)$
        (Gemma 2's logit soft-capping) before everything else, with the
        exact gradient.
      return_aux: also return a [jaxkl.CrossEntropyAux][] (per-example
        log-normaliser, arg-max, whether it is correct, and the z-loss term
        reduced like the loss), computed from the same logits, without gradient.

    Returns:
      A scalar, or `labels.shape` for `"none"`; dtype of `logits`. With
      `return_aux`, the pair `(loss, aux)`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> logits = jnp.array([[1.0, 2.0, 3.0], [1e4, 1e4 + 1, 1e4 + 2]])
      >>> print(jaxkl.cross_entropy_loss(logits, jnp.array([0, 0]), reduction="none"))
      [2.407606 2.407606]
      >>> w = jnp.array([1.0, 2.0, 3.0])
      >>> print(jaxkl.cross_entropy_loss(logits, jnp.array([0, 2]), weight=w).round(6))
      0.907606
      >>> loss, aux = jaxkl.cross_entropy_loss(logits, jnp.array([2, 0]), softcap=30.0, return_aux=True)
      >>> print(aux.predicted, aux.correct)  # the 1e4 row saturates at the cap: a tie, arg-max 0
      [2 0] [ True  True]

    References:
      PyTorch documentation, `torch.nn.CrossEntropyLoss`; Szegedy et al.,
      "Rethinking the Inception Architecture" (2016) for label smoothing;
      Chowdhery et al., "PaLM" (2022) for the z-loss; Gemma Team, "Gemma 2"
      (2024) for logit soft-capping.
    """
    reduction = _validate.reduction(reduction)
    values, valid, wy, dtype, aux_rows = per_example(
        logits,
        labels,
        axis=axis,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        where=where,
        check=check,
        axis_name=axis_name,
        softcap=softcap,
        return_aux=return_aux,
    )
    loss = reduce_label_loss(values, valid, wy, reduction, weight is not None).astype(dtype)
    return loss if aux_rows is None else (loss, label_aux(aux_rows, valid, wy, reduction, weight is not None))

