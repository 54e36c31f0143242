"""Distillation between two linear heads without materialising either logits array."""

from __future__ import annotations

from typing import Any

import jax

from . import _validate
from ._fused import (
    _chunk_size,
    _logits,
    head_loss,
    label_log_likelihood,
    validate_head,
    validate_labels,
)
from ._logits import js_divergence_from_logits, kl_divergence_from_logits
from ._softmax import logsumexp

DIVERGENCES = ("forward_kl", "reverse_kl", "js")


def _distillation_rows(params, logits, row_extras, teacher_weight):
    """Per-row distillation loss of one chunk of student logits [C, V] (float32)."""
    temperature, divergence, beta, alpha = params
    teacher_hidden, labels = row_extras
    # The teacher is a constant: its chunk of logits is rebuilt here, in the
    # backward pass too, and no cotangent ever reaches it.
    teacher = jax.lax.stop_gradient(_logits(teacher_hidden, teacher_weight, None))
    teacher = teacher.astype(logits.dtype)
    if divergence == "forward_kl":
        soft = kl_divergence_from_logits(teacher, logits, temperature=temperature)
    elif divergence == "reverse_kl":
        soft = kl_divergence_from_logits(logits, teacher, temperature=temperature)
    else:
        soft = js_divergence_from_logits(teacher, logits, beta=beta, temperature=temperature)
    # Hinton et al.: soft-target gradients scale as 1/T^2, so the loss is
    # multiplied by T^2 to keep its weight independent of the temperature.
    soft = soft * temperature**2
    if labels is None:
        return soft
    hard = -label_log_likelihood(logits, labels, logsumexp(logits))
    return (1.0 - alpha) * hard + alpha * soft


def fused_linear_distillation_loss(
    student_hidden: Any,
    student_weight: Any,
    teacher_hidden: Any,
    teacher_weight: Any,
    *,
    temperature: float = 1.0,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    labels: Any = None,
    alpha: float = 0.5,
    chunk_size: int | None = None,
    reduction: str = "batchmean",
    where: Any = None,
) -> jax.Array:
    r"""Knowledge distillation between two linear heads, never forming either N x V logits array.

    With student logits $s_n = h_n W$ and teacher logits $t_n = h'_n W'$,

    $$
    \ell_n = T^2\, D\bigl(\operatorname{softmax}(t_n / T),\ \operatorname{softmax}(s_n / T)\bigr)
    $$

    where $D$ is `KL(teacher || student)` (`"forward_kl"`, Hinton et
    al.), `KL(student || teacher)` (`"reverse_kl"`) or the generalised
    Jensen-Shannon divergence `JS_beta(teacher, student)` with mixture
    `M = beta * teacher + (1 - beta) * student` (`"js"`). With `labels`
    the loss is `(1 - alpha) * CE(s_n, y_n) + alpha * l_n` (the cross-entropy
    at temperature 1). The teacher receives no gradient. Rows are processed
    `chunk_size` at a time, as in [jaxkl.fused_linear_cross_entropy][];
    the soft term reuses the cheap derivatives of
    [jaxkl.kl_divergence_from_logits][] / [jaxkl.js_divergence_from_logits][].

    Args:
      student_hidden: `[N, D]` floating point.
      student_weight: `[D, V]`.
      teacher_hidden: `[N, D']` (the teacher's width may differ).
      teacher_weight: `[D', V]` (same `V`).
      temperature: `T > 0`, divides both logits in the soft term.
      divergence: `"forward_kl"`, `"reverse_kl"` or `"js"`.
      beta: weight of the teacher in the JS mixture
        `M = beta * teacher + (1 - beta) * student`, in `[0, 1]` (the same
        convention as [jaxkl.distillation_loss][]).
      labels: optional `[N]` integer labels for the hard term; out-of-range
        labels give NaN for that example.
      alpha: weight of the soft term when `labels` is given, in `[0, 1]`.
      chunk_size: rows per chunk (`None`: about `2**22 / V`).
      reduction: `"none"`, `"sum"`, `"mean"` or `"batchmean"` (default,
        the sum divided by `N`), as in [jaxkl.reduce][].
      where: optional boolean `[N]` mask of examples to include.

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
    hidden, weight, _ = validate_head(student_hidden, student_weight, None, "student_hidden", "student_weight")
    t_hidden, t_weight, _ = validate_head(teacher_hidden, teacher_weight, None, "teacher_hidden", "teacher_weight")
    n, v = hidden.shape[0], weight.shape[1]
    if t_hidden.shape[0] != n or t_weight.shape[1] != v:
        raise ValueError(
            f"teacher and student must share N and V: student_hidden.shape={hidden.shape}, "
            f"student_weight.shape={weight.shape}, teacher_hidden.shape={t_hidden.shape}, "
            f"teacher_weight.shape={t_weight.shape}"
        )
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    temperature = _validate.positive(temperature, "temperature")
    if temperature is None:
        raise TypeError("temperature must be a Python number known at trace time")
    params = (
        temperature,
        divergence,
        _validate.unit_interval(beta, "beta"),
        _validate.unit_interval(alpha, "alpha"),
    )
    if labels is not None:
        labels = validate_labels(labels, n)
    reduction = _validate.reduction(reduction)
    where = _validate.mask(where, (n,))
    static = (_distillation_rows, params, _chunk_size(chunk_size, n, v, hidden.shape[1]))
    loss = head_loss(static, hidden, weight, None, (t_hidden, labels), t_weight, reduction, where)
    return loss.astype(hidden.dtype)
