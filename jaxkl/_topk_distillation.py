"""Distillation from a teacher's stored top-k log-probabilities (sparse targets).

LLM distillation datasets keep, per token, the teacher's k most likely classes
and their log-probabilities instead of the whole vocabulary. Both tail
policies reduce the comparison to a small distribution over k (or k + 1)
classes, built from the student's full logits with one log-normaliser and a
gather; the divergence itself is jaxkl's logits kernel on those few classes,
so the derivative wrt the student is a softmax times a per-row number plus a
scatter onto the k indices: no rows x V temporary beyond the gradient itself.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from . import _checks, _validate
from ._distillation import distillation_options, divergence_rows, scaled_by_temperature
from ._fused import Head, chunk_rows, head_loss
from ._reductions import reduce
from ._rowwise import compute_dtype
from ._softmax import logsumexp

TAILS = ("bucket", "renormalize")


def _log1mexp(u: jax.Array) -> jax.Array:
    """`log(1 - exp(u))` for `u < 0`; `-inf` (zero gradient) where `u >= 0`.

    Two branches (Maechler, "Accurately Computing log(1 - exp(-|a|))", 2012):
    `log(-expm1(u))` near 0, `log1p(-exp(u))` below `-log 2`.
    """
    inside = u < 0
    safe = jnp.where(inside, u, -1.0)
    value = jnp.where(safe > -math.log(2.0), jnp.log(-jnp.expm1(safe)), jnp.log1p(-jnp.exp(safe)))
    return jnp.where(inside, value, -jnp.inf)


def _gathered(z: jax.Array, indices: jax.Array) -> jax.Array:
    """`z[..., indices]`, NaN (never a wrapped or clamped index) where an index is out of range."""
    in_range = (indices >= 0) & (indices < z.shape[-1])
    picked = jnp.take_along_axis(z, jnp.where(in_range, indices, 0), axis=-1)
    return jnp.where(in_range, picked, jnp.nan)


def topk_rows(z, indices, logprobs, temperature, tail, options):
    """Per-row top-k distillation loss of float32 student logits `z[..., V]`.

    `temperature` is a number or a traced scalar; the teacher (`indices`,
    `logprobs`) gets no gradient.
    """
    logprobs = jax.lax.stop_gradient(logprobs.astype(z.dtype))
    k = indices.shape[-1]
    if tail == "renormalize":
        soft = divergence_rows(_gathered(z, indices), logprobs, temperature, options, -1)
    else:
        # Everything at temperature T: the student's log-probabilities of the k
        # classes, and (unless k = V, where no class is left) of the rest.
        zt = z / temperature
        student = _gathered(zt, indices) - logsumexp(zt)[..., None]
        teacher = logprobs / temperature
        if k != z.shape[-1]:
            student_tail = _log1mexp(logsumexp(student))
            teacher_tail = _log1mexp(logsumexp(logprobs)) / temperature
            student = jnp.concatenate([student, student_tail[..., None]], axis=-1)
            teacher = jnp.concatenate([teacher, teacher_tail[..., None]], axis=-1)
        # The teacher's k + 1 probabilities tempered as p^(1/T), renormalised by the kernel.
        soft = divergence_rows(student, teacher, 1.0, options, -1)
    return scaled_by_temperature(soft, temperature, options)


def _validated(tail, divergence, beta, temperature, scale):
    """`(tail, options, static temperature or None)`."""
    tail = _validate.choice(tail, TAILS, "tail")
    options = distillation_options(divergence, beta, 0.5, scale)
    return tail, options, _validate.positive(temperature, "temperature")


def _teacher(indices, logprobs, row_shape, num_classes, check, where):
    """Validated `[..., k]` teacher arrays for rows of shape `row_shape`, masked rows made harmless.

    Rows excluded by `where` (padding) often hold placeholder indices such as
    -1; `_gathered` turns those into NaN, and although the row's value is
    dropped by the reduction, its NaN would still reach the gradient as
    0 * NaN. So the masked rows' teacher becomes classes `0..k-1` at
    `log(1 / (k + 1))` each (a valid top-k row, with a positive tail)
    before any math, and `check=True` sees only the rows that count.
    """
    indices = _validate.integer_array(indices, "teacher_indices")
    logprobs = _validate.float_array(logprobs, "teacher_logprobs")
    _validate.same_shape(indices, logprobs, "teacher_indices", "teacher_logprobs")
    if indices.shape[:-1] != row_shape or indices.ndim == 0:
        raise ValueError(
            f"teacher_indices.shape={indices.shape} must be the student's rows {row_shape} "
            "plus a last axis of k classes"
        )
    if indices.shape[-1] > num_classes:
        raise ValueError(f"k={indices.shape[-1]} teacher classes exceed the student's {num_classes} classes")
    if where is not None:
        k = indices.shape[-1]
        keep = jnp.broadcast_to(where, row_shape)[..., None]
        placeholder = jnp.broadcast_to(jnp.arange(k, dtype=indices.dtype), indices.shape)
        indices = jnp.where(keep, indices, placeholder)
        logprobs = jnp.where(keep, logprobs, jnp.asarray(-math.log(k + 1), logprobs.dtype))
    if check:
        _checks.top_k_indices(indices, num_classes)
    return indices, logprobs


def topk_distillation_loss(
    student_logits: Any,
    teacher_indices: Any,
    teacher_logprobs: Any,
    *,
    temperature: Any = 1.0,
    tail: str = "bucket",
    divergence: str = "forward_kl",
    beta: float = 0.5,
    scale_by_temperature_squared: bool = True,
    reduction: str = "batchmean",
    where: Any = None,
    check: bool = False,
) -> jax.Array:
    r"""Distillation from a teacher's stored top-k log-probabilities.

    Follows PyTorch's `(input, target)` order: the student's full logits
    `z[..., V]`, then the teacher's `k` class indices and their
    log-probabilities $\log p_i$ (as stored from the teacher's full softmax).
    With temperature $T$ and $s = \operatorname{softmax}(z / T)$:

    * `tail="bucket"`: the `k` classes plus one "everything else" class.
      The teacher's tail is $p_\text{tail} = 1 - \sum_i p_i$ and its $k + 1$
      probabilities are tempered as $p^{1/T}$ and renormalised; the student's
      are $s_i$ on the `k` classes and its remaining mass
      $1 - \sum_i s_i$.
    * `tail="renormalize"`: both renormalised over the `k` classes,
      $\operatorname{softmax}(\log p / T)$ against
      $\operatorname{softmax}(z_{\text{idx}} / T)$.

    The divergence $D$ is the one of [jaxkl.distillation_loss][]:
    `"forward_kl"` $\mathrm{KL}(\text{teacher} \| \text{student})$,
    `"reverse_kl"`, or `"js"` with mixture weight `beta` on the teacher;
    the loss per row is $T^2 D$ (`scale_by_temperature_squared`). With
    `k = V` (every class once) there is no tail and both modes equal
    [jaxkl.distillation_loss][] on the teacher's full log-probabilities.

    The student's tail is computed from its top-k mass as
    $\log(1 - e^{\,\mathrm{lse}(\log s_{\text{idx}})})$ without a rows x V
    mask, so a tail below float32 resolution (~1e-7 of the row) is rounding:
    where it rounds to 0 while the teacher's tail is positive, forward KL is
    `+inf`, as for any KL against a zero. Gradients flow to the student only;
    temporaries are O(rows x k) besides the gradient itself.

    Indices outside `[0, V)` give NaN for that row (never a wrapped index);
    duplicated indices in a row are not a distribution and give a
    meaningless value. `check=True` checks both through
    `jax.experimental.checkify` (see [jaxkl.kl_divergence][]). Rows
    excluded by `where` (padding) give 0 and a zero gradient whatever they
    hold (placeholder indices such as -1, `-inf` log-probabilities, NaN
    logits), and `check=True` ignores them.

    Args:
      student_logits: `[..., V]` floating point (e.g. `[B, S, V]`).
      teacher_indices: `[..., k]` integer class indices.
      teacher_logprobs: `[..., k]` teacher log-probabilities of those classes.
      temperature: $T > 0$, a number or a traced scalar.
      tail: `"bucket"` or `"renormalize"`.
      divergence: `"forward_kl"`, `"reverse_kl"` or `"js"`.
      beta: teacher weight of the JS mixture, in `[0, 1]`.
      scale_by_temperature_squared: multiply by $T^2$ (Hinton et al.).
      reduction: as [jaxkl.reduce][]; default `"batchmean"` (sum / first dimension).
      where: optional boolean mask of rows, shape `student_logits.shape[:-1]`;
        excluded rows give 0 and no gradient whatever they hold.
      check: add checkify checks of the indices (range and duplicates) of the rows kept.

    Returns:
      A scalar, or one value per row for `"none"`; dtype of `student_logits`.

    Raises:
      ValueError: on mismatched shapes, `k > V`, an unknown `tail` or
        `divergence`, or a concrete temperature that is not > 0.
      TypeError: if the indices are not integers or the logits not floating point.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> student = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
      >>> # The teacher kept its top class only: p = 0.8, tail 0.2 vs the student's 0.5 / 0.5.
      >>> idx, lp = jnp.array([[0]]), jnp.log(jnp.array([[0.8]]))
      >>> print(jaxkl.topk_distillation_loss(student, idx, lp).round(6))  # 0.8 log 1.6 + 0.2 log 0.4
      0.192745
      >>> print(jaxkl.topk_distillation_loss(student, idx, lp, tail="renormalize"))
      0.0

    References:
      Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network"
      (2015); Anshumann et al., "Sparse Logit Sampling: Accelerating Knowledge
      Distillation in LLMs" (2025) on the bias of truncated top-k targets.
    """
    z = _validate.float_array(student_logits, "student_logits")
    if z.ndim == 0:
        raise ValueError("student_logits must have a class axis (the last one)")
    tail, options, t = _validated(tail, divergence, beta, temperature, scale_by_temperature_squared)
    reduction = _validate.reduction(reduction)
    where = _validate.mask(where, z.shape[:-1])
    indices, logprobs = _teacher(teacher_indices, teacher_logprobs, z.shape[:-1], z.shape[-1], check, where)
    if where is not None:
        # Masked rows' logits may be anything (inf, NaN): replaced before the
        # math, they give 0 and a zero gradient ("double where"). Only with a
        # mask, so the unmasked path makes no extra pass over rows x V.
        z = jnp.where(jnp.broadcast_to(where, z.shape[:-1])[..., None], z, jnp.zeros((), z.dtype))
    acc = compute_dtype(z.dtype)
    temperature = t if t is not None else jnp.asarray(temperature, acc)
    values = topk_rows(z.astype(acc), indices, logprobs, temperature, tail, options)
    return reduce(values, reduction, where=where).astype(z.dtype)


def _fused_rows(params, logits, row_extras, shared):
    del shared
    return topk_rows(logits, *row_extras, *params)


def fused_linear_topk_distillation_loss(
    hidden: Any,
    head_weight: Any,
    teacher_indices: Any,
    teacher_logprobs: Any,
    *,
    head_bias: Any = None,
    temperature: float = 1.0,
    tail: str = "bucket",
    divergence: str = "forward_kl",
    beta: float = 0.5,
    scale_by_temperature_squared: bool = True,
    chunk_size: int | None = None,
    reduction: str = "batchmean",
    where: Any = None,
    check: bool = False,
) -> jax.Array:
    r"""[jaxkl.topk_distillation_loss][] of a linear student head, never forming its N x V logits.

    The student's logits $z_n = h_n W + b$ are formed `chunk_size` rows at a
    time, reduced to the per-row loss and dropped; the backward pass
    recomputes each chunk, as in [jaxkl.fused_linear_cross_entropy][]. The
    value and gradients equal `topk_distillation_loss(hidden @ head_weight + head_bias,
    ...)`. Gradients flow to `hidden`, `head_weight` and `head_bias`.

    Args:
      hidden: `[N, D]` floating point.
      head_weight: `[D, V]` head matrix.
      teacher_indices: `[N, k]` integer class indices.
      teacher_logprobs: `[N, k]` teacher log-probabilities of those classes.
      head_bias: optional `[V]` head bias.
      temperature: $T > 0$, a Python number (it is static here).
      tail: `"bucket"` or `"renormalize"`.
      divergence: `"forward_kl"`, `"reverse_kl"` or `"js"`.
      beta: teacher weight of the JS mixture, in `[0, 1]`.
      scale_by_temperature_squared: multiply by $T^2$.
      chunk_size: rows per chunk (`None`: as in [jaxkl.fused_linear_cross_entropy][]).
      reduction: as [jaxkl.reduce][]; default `"batchmean"` (sum / N).
      where: optional boolean `[N]` mask of rows; excluded rows give 0 and no
        gradient whatever their teacher indices (e.g. -1 padding).
      check: add checkify checks of the indices (range and duplicates) of the rows kept.

    Returns:
      A scalar, or `[N]` for `reduction="none"`, in the dtype of the head.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> h, w = jnp.ones((1, 1)), jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
      >>> idx, lp = jnp.array([[0]]), jnp.log(jnp.array([[0.8]]))
      >>> print(jaxkl.fused_linear_topk_distillation_loss(h, w, idx, lp).round(6))
      0.192745

    References:
      Hsu et al., "Liger Kernel: Efficient Triton Kernels for LLM Training" (2024).
    """
    hidden, head_weight, head_bias = _validate.linear_head(hidden, head_weight, head_bias)
    n, v = hidden.shape[0], head_weight.shape[1]
    tail, options, t = _validated(tail, divergence, beta, temperature, scale_by_temperature_squared)
    if t is None:
        raise TypeError("temperature must be a Python number known at trace time")
    reduction = _validate.reduction(reduction)
    where = _validate.mask(where, (n,))
    indices, logprobs = _teacher(teacher_indices, teacher_logprobs, (n,), v, check, where)
    static = Head(_fused_rows, (t, tail, options), chunk_rows(chunk_size, n, v, hidden.shape[1]))
    loss = head_loss(static, hidden, head_weight, head_bias, (indices, logprobs), None, reduction, where)
    return loss.astype(hidden.dtype)
