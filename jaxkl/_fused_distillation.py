"""Distillation between two linear heads without materialising either logits array."""

from __future__ import annotations

from typing import Any

import jax
from jax.typing import ArrayLike

from . import _validate
from ._distillation import distillation_options, distillation_rows
from ._fused import Head, chunk_rows, head_loss, head_logits


def _distillation_rows(static, logits, row_extras, shared):
    """`distillation_rows` of one chunk of student logits [C, V]: the unfused loss's own rows."""
    options, static_temperature = static
    teacher_hidden, labels = row_extras
    teacher_weight, traced_temperature = shared
    # The teacher is a constant: its chunk of logits is rebuilt here, in the
    # backward pass too, and no cotangent ever reaches it.
    teacher = jax.lax.stop_gradient(head_logits(teacher_hidden, teacher_weight, None)).astype(logits.dtype)
    temperature = static_temperature if traced_temperature is None else traced_temperature
    return distillation_rows(logits, teacher, labels, temperature, options, axis=1)


def fused_linear_distillation_loss(
    student_hidden: ArrayLike,
    student_head_weight: ArrayLike,
    teacher_hidden: ArrayLike,
    teacher_head_weight: ArrayLike,
    *,
    temperature: Any = 1.0,
    labels: ArrayLike | None = None,
    alpha: float = 0.5,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    skew: float = 0.1,
    scale_by_temperature_squared: bool = True,
    reduction: str = "batchmean",
    where: ArrayLike | None = None,
    chunk_size: int | None = None,
    softcap: float | None = None,
    axis_name: Any = None,
) -> jax.Array:
    r"""Knowledge distillation between two linear heads, never forming either N x V logits array.

    With student logits $s_n = h_n W$ and teacher logits $t_n = h'_n W'$,

    $$
    \ell_n = T^2\, D\bigl(\operatorname{softmax}(t_n / T),\ \operatorname{softmax}(s_n / T)\bigr)
    $$

    where $D$ is `KL(teacher || student)` (`"forward_kl"`, Hinton et
    al.), `KL(student || teacher)` (`"reverse_kl"`) or the generalised
    Jensen-Shannon divergence `JS_beta(teacher, student)` with mixture
    `M = beta * teacher + (1 - beta) * student` (`"js"`), or total variation
    (`"tvd"`) or the skew divergences (`"skew_kl"`, `"skew_reverse_kl"`) of
    [jaxkl.distillation_loss][]. With `labels`
    the loss is `(1 - alpha) * CE(s_n, y_n) + alpha * l_n` (the cross-entropy
    at temperature 1). Every option means what it means in
    [jaxkl.distillation_loss][], and the per-row loss is the same function,
    applied to `chunk_size` rows at a time as in
    [jaxkl.fused_linear_cross_entropy][]: neither N x V logits array is
    ever formed. The teacher receives no gradient; neither does a traced
    `temperature` (in [jaxkl.distillation_loss][] it does).

    Args:
      student_hidden: `[N, D]` floating point.
      student_head_weight: `[D, V]`.
      teacher_hidden: `[N, D']` (the teacher's width may differ).
      teacher_head_weight: `[D', V]` (same `V`).
      temperature: `T > 0`, divides both logits in the soft term; a Python
        number or a traced scalar (e.g. under `jit`).
      labels: optional `[N]` integer labels for the hard term; out-of-range
        labels give NaN for that example.
      alpha: weight of the soft term when `labels` is given, in `[0, 1]`.
      divergence: `"forward_kl"`, `"reverse_kl"`, `"js"`, `"tvd"`, `"skew_kl"` or `"skew_reverse_kl"`.
      beta: weight of the teacher in the JS mixture
        `M = beta * teacher + (1 - beta) * student`, in `[0, 1]`.
      skew: weight of the teacher in the skew divergences' mixture, in `[0, 1]`.
      scale_by_temperature_squared: multiply the soft term by `T**2`.
      reduction: `"none"`, `"sum"`, `"mean"` or `"batchmean"` (default,
        the sum divided by `N`), as in [jaxkl.reduce][].
      where: optional boolean `[N]` mask of examples to include.
      chunk_size: rows per chunk (`None`: as in [jaxkl.fused_linear_cross_entropy][]).
      softcap: None, or `c > 0`: both heads' logits become $c \tanh(z / c)$
        (Gemma 2) before everything else, as in [jaxkl.distillation_loss][].
      axis_name: inside `shard_map`, the mesh axis over which both heads'
        classes are split (`student_head_weight[:, V_local]` and
        `teacher_head_weight[:, V_local]`, the same slice on each device);
        `labels` are global. Row statistics cross devices as O(N) scalars and
        `d student_hidden` is one `psum`; no logits are gathered. The rows may
        be split over a data axis too, as in
        [jaxkl.fused_linear_cross_entropy][]. None: unsharded.

    Returns:
      A scalar, or `[N]` for `reduction="none"`, in the student's dtype.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> h = jnp.ones((2, 1)); teacher_w = jnp.array([[0.0, jnp.log(3.0)]])
      >>> # Student uniform, teacher [1/4, 3/4]: KL = (3/4) log 3 - log 2 per row.
      >>> print(jaxkl.fused_linear_distillation_loss(h, jnp.zeros((1, 2)), h, teacher_w).round(5))
      0.13081

    References:
      Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015).
      Hsu et al., "Liger Kernel: Efficient Triton Kernels for LLM Training" (2024).
      Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models" (2024).
    """
    hidden, weight, _ = _validate.linear_head(
        student_hidden, student_head_weight, None, "student_hidden", "student_head_weight"
    )
    t_hidden, t_weight, _ = _validate.linear_head(
        teacher_hidden, teacher_head_weight, None, "teacher_hidden", "teacher_head_weight"
    )
    n, v = hidden.shape[0], weight.shape[1]
    if t_hidden.shape[0] != n or t_weight.shape[1] != v:
        raise ValueError(
            f"teacher and student must share N and V: student_hidden.shape={hidden.shape}, "
            f"student_head_weight.shape={weight.shape}, teacher_hidden.shape={t_hidden.shape}, "
            f"teacher_head_weight.shape={t_weight.shape}"
        )
    options = distillation_options(
        divergence, beta, alpha, scale_by_temperature_squared, skew, softcap, axis_name
    )
    static_temperature = _validate.positive(temperature, "temperature")
    # A traced temperature travels with the arrays (it receives no gradient here).
    traced_temperature = None if static_temperature is not None else jax.numpy.asarray(temperature)
    if labels is not None:
        labels = _validate.labels(labels, (n,), "student_hidden.shape[:1]")
    reduction = _validate.reduction(reduction)
    where = _validate.mask(where, (n,))
    if labels is not None and where is not None:
        # An excluded example's label (often an ignore index such as -100) would put
        # NaN into the hard term, and 0 * NaN into the gradient: score class 0 instead.
        labels = jax.numpy.where(where, labels, 0)
    rows = chunk_rows(chunk_size, n, v, hidden.shape[1])
    static = Head(_distillation_rows, (options, static_temperature), rows, axis_name=options.axis_name)
    shared = (t_weight, traced_temperature)
    loss = head_loss(static, hidden, weight, None, (t_hidden, labels), shared, reduction, where)
    return loss.astype(hidden.dtype)
