"""Knowledge distillation and consistency (UDA) losses on top of the logits kernels.

Both losses compare a model's logits with fixed target logits (a teacher, or
the model's own prediction on a clean input), so the target is wrapped in
`jax.lax.stop_gradient` and the divergence comes from the O(rows)-residual
kernels in `jaxkl._logits`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _validate
from ._axes import class_axes
from ._cross_entropy_loss import label_cross_entropy
from ._logits import js_divergence_from_logits, kl_divergence_from_logits, log_mixture, temperature_scale
from ._logits_f import total_variation_from_logits
from ._reductions import reduce
from ._rowwise import clip_value, compute_dtype, log_normalizer, prepare_logits, row_sum, soft_capped, zero_where_unused
from ._softmax import log_softmax

DIVERGENCES = ("forward_kl", "reverse_kl", "js", "tvd", "skew_kl", "skew_reverse_kl")


class DistillationOptions(NamedTuple):
    """The static options of a distillation loss (validated)."""

    divergence: str = "forward_kl"
    beta: float = 0.5
    alpha: float = 0.5
    scale_by_temperature_squared: bool = True
    skew: float = 0.1
    softcap: float | None = None  # caps both logits before the temperature
    axis_name: Any = None  # the class axis is sharded over this mesh axis (fused heads)


def distillation_options(
    divergence, beta, alpha, scale_by_temperature_squared, skew=0.1, softcap=None, axis_name=None
) -> DistillationOptions:
    """Validate the options shared by the unfused and fused distillation losses."""
    return DistillationOptions(
        _validate.choice(divergence, DIVERGENCES, "divergence"),
        _validate.unit_interval(beta, "beta"),
        _validate.unit_interval(alpha, "alpha"),
        bool(scale_by_temperature_squared),
        _validate.unit_interval(skew, "skew"),
        _validate.softcap(softcap),
        _validate.axis_name(axis_name),
    )


def skewed_kl(x, y, weight_of_x: float, temperature, axis: int, axis_name: Any = None) -> jax.Array:
    """`KL(X || w X + (1 - w) Y)` per example, `X = softmax(x / T)`, `Y = softmax(y / T)`.

    The skew divergences of DistiLLM. The log-mixture is formed from jaxkl's
    log-softmax (exact at `-inf`); the derivative is plain autodiff through
    it, which keeps a few rows x classes arrays for the backward pass.
    """
    if weight_of_x == 1.0:
        return jnp.zeros(x.shape[:axis] + x.shape[axis + 1 :], compute_dtype(x.dtype))
    if weight_of_x == 0.0:
        return kl_divergence_from_logits(x, y, axis=axis, temperature=temperature, axis_name=axis_name)
    scale, (x, y) = temperature_scale(temperature, x, y)
    logx = log_softmax(prepare_logits(x, None, scale), axis, axis_name=axis_name)
    logy = log_softmax(prepare_logits(y, None, scale), axis, axis_name=axis_name)
    logm = log_mixture(logx, logy, weight_of_x)
    return clip_value(row_sum(zero_where_unused(jnp.exp(logx), logx - logm), axis, axis_name), 0.0, None)


def divergence_rows(student, teacher, temperature, options: DistillationOptions, axis: int) -> jax.Array:
    """The chosen divergence between `softmax(teacher / T)` and `softmax(student / T)`, per example."""
    kw = dict(axis=axis, temperature=temperature, axis_name=options.axis_name)
    if options.divergence == "forward_kl":
        return kl_divergence_from_logits(teacher, student, **kw)
    if options.divergence == "reverse_kl":
        return kl_divergence_from_logits(student, teacher, **kw)
    if options.divergence == "js":
        return js_divergence_from_logits(teacher, student, beta=options.beta, **kw)
    if options.divergence == "tvd":
        return total_variation_from_logits(teacher, student, **kw)
    # Both skews compare with the mixture M = skew * teacher + (1 - skew) * student.
    if options.divergence == "skew_kl":
        return skewed_kl(teacher, student, options.skew, temperature, axis, options.axis_name)
    return skewed_kl(student, teacher, 1.0 - options.skew, temperature, axis, options.axis_name)


def scaled_by_temperature(soft: jax.Array, temperature, options: DistillationOptions) -> jax.Array:
    """`soft * T**2` when `options.scale_by_temperature_squared` (Hinton et al.:
    soft-target gradients scale as 1/T^2; the factor keeps their weight
    independent of the temperature)."""
    if not options.scale_by_temperature_squared:
        return soft
    t = _validate.concrete_number(temperature, "temperature")
    if t is None:
        return soft * jnp.square(jnp.asarray(temperature, soft.dtype))
    if t == 1.0:
        return soft
    if t * t < float(jnp.finfo(soft.dtype).tiny):
        # T**2 underflows: T**2 * D_T -> 0 as T -> 0 (D_T grows like 1 / T, and
        # is +inf once 1 / T overflows), so the limit 0 is returned; NaN stays NaN.
        return jnp.where(jnp.isnan(soft), soft, jnp.zeros_like(soft))
    return soft * (t * t)


def soft_term(student, teacher, temperature, options: DistillationOptions, axis: int) -> jax.Array:
    """The soft term per example, in the compute dtype; every distillation loss takes it from here."""
    soft = divergence_rows(student, teacher, temperature, options, axis).astype(compute_dtype(student.dtype))
    return scaled_by_temperature(soft, temperature, options)


def distillation_rows(
    student, teacher, labels, temperature, options: DistillationOptions, axis: int, where=None
) -> jax.Array:
    """The per-example distillation loss, in the compute dtype: the one definition.

    `distillation_loss` applies it to whole arrays, the fused head chunk by
    chunk. `teacher` must already be constant (`stop_gradient`);
    `temperature` is a Python number or a traced scalar. With
    `options.softcap` both logits are soft-capped first (`soft_capped`), the
    hard term sees the capped student. `where` (the example mask, or None)
    reaches the hard term, so that a masked example's label (an ignore index
    such as -100, out of range here) gets no NaN into the gradient.
    """
    student, teacher = soft_capped(student, options.softcap), soft_capped(teacher, options.softcap)
    acc = compute_dtype(student.dtype)
    soft_weight = 1.0 if labels is None else options.alpha
    values = jnp.zeros(student.shape[:axis] + student.shape[axis + 1 :], acc)
    if soft_weight:
        values = values + soft_weight * soft_term(student, teacher, temperature, options, axis)
    if labels is not None and options.alpha < 1.0:
        hard, _, _ = label_cross_entropy(student, labels, axis=axis, axis_name=options.axis_name, where=where)
        values = values + (1.0 - options.alpha) * hard
    return values


def _model_and_target(x, target, name_x, name_target, axis, where):
    """Validated logits pair (target without gradient), class axis and example mask.

    Masked examples' logits are replaced by zeros before any math (the
    "double where"): the reduction drops their value, but a NaN or an
    infinity there (padding) would otherwise still reach the gradient as
    0 * NaN. Without a mask nothing is added: no extra pass over the logits.
    """
    x, target, axis, _ = _validate.float_pair(x, target, name_x, name_target, axis, None)
    where = _validate.mask(where, x.shape[:axis] + x.shape[axis + 1 :])
    if where is not None:
        keep = jnp.expand_dims(jnp.broadcast_to(where, x.shape[:axis] + x.shape[axis + 1 :]), axis)
        zero = jnp.zeros((), x.dtype)
        x, target = jnp.where(keep, x, zero), jnp.where(keep, target, zero)
    return x, jax.lax.stop_gradient(target), axis, where, x.dtype


@class_axes("student_logits", "teacher_logits", masks=())
def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    temperature: float = 1.0,
    labels: ArrayLike | None = None,
    alpha: float = 0.5,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    skew: float = 0.1,
    scale_by_temperature_squared: bool = True,
    reduction: str = "batchmean",
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] = -1,
    softcap: float | None = None,
) -> jax.Array:
    r"""Knowledge-distillation loss between temperature-softened student and teacher.

    Follows PyTorch's `(input, target)` order: student first. With
    `S = softmax(student_logits / T)` and `P = softmax(teacher_logits / T)`
    the soft part per example is

    * `"forward_kl"`: $\mathrm{KL}(P \,\|\, S)$ (Hinton et al.; what
      `F.kl_div(log_softmax(s/T), softmax(t/T))` computes);
    * `"reverse_kl"`: $\mathrm{KL}(S \,\|\, P)$ (mode-seeking);
    * `"js"`: generalised JSD $\beta\,\mathrm{KL}(P\|M) + (1-\beta)\,\mathrm{KL}(S\|M)$
      with $M = \beta P + (1-\beta) S$, i.e. `JS_beta(teacher, student)`
      with `beta` the teacher's weight (the GKD convention; `beta` of 0 or
      1 makes it identically 0);
    * `"tvd"`: total variation $\tfrac12 \sum_i |P_i - S_i|$ (see
      [jaxkl.total_variation_from_logits][]);
    * `"skew_kl"`: $\mathrm{KL}(P \,\|\, M_\lambda)$ and `"skew_reverse_kl"`:
      $\mathrm{KL}(S \,\|\, M_\lambda)$, both against the mixture
      $M_\lambda = \lambda P + (1-\lambda) S$ with $\lambda$ = `skew`
      (DistiLLM's skew KL with $\alpha = \lambda$; its skew reverse KL with
      $\alpha = 1 - \lambda$). `skew` = 0 gives forward KL and 1 gives 0 for
      `"skew_kl"`; the derivative is autodiff through jaxkl's `log_softmax`
      (a few rows x classes arrays kept for the backward pass),

    times $T^2$ when `scale_by_temperature_squared` (soft gradients
    shrink like $1/T^2$; the factor keeps their size comparable to the
    hard loss's as `T` changes). With `labels`, the per-example loss is

    $$
    (1 - \alpha)\, \mathrm{CE}(\text{student\_logits}, y) + \alpha\, \text{soft}
    $$

    with the hard cross-entropy at temperature 1 (as
    [jaxkl.cross_entropy_loss][]; out-of-range labels give NaN). The
    teacher gets no gradient (`stop_gradient`).

    Args:
      student_logits: `[..., K, ...]` floating point.
      teacher_logits: same shape as `student_logits`.
      temperature: `T > 0` dividing both logits for the soft part.
      labels: optional integer labels, shape of the logits without `axis`.
      alpha: weight of the soft part in `[0, 1]` (used only with `labels`).
      divergence: `"forward_kl"`, `"reverse_kl"`, `"js"`, `"tvd"`, `"skew_kl"` or `"skew_reverse_kl"`.
      beta: weight of the teacher in the JS mixture
        `M = beta * teacher + (1 - beta) * student`, in `[0, 1]` (the same
        convention as [jaxkl.fused_linear_distillation_loss][]).
      skew: weight $\lambda$ of the teacher in the skew divergences' mixture, in `[0, 1]`.
      scale_by_temperature_squared: multiply the soft part by `T**2`.
      reduction: over examples, as [jaxkl.reduce][] (default
        `"batchmean"`: sum over examples divided by the first dimension).
      where: optional boolean mask over examples (shape of the logits without
        `axis`); masked examples give 0 and no gradient, whatever their logits
        (NaN, infinite) or labels (e.g. an ignore index such as -100).
      axis: the class axis, or a tuple of axes whose product is the classes.
      softcap: None, or `c > 0`: both logits become $c \tanh(z / c)$
        (Gemma 2's logit soft-capping) before the temperature and before
        the hard term, with the exact gradient.

    Returns:
      A scalar, or one value per example for `"none"`; dtype of the logits.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> student = jnp.array([[4.0, 3.9, 1.0]])
      >>> teacher = jnp.array([[5.0, 4.0, 0.1]])
      >>> print(jaxkl.distillation_loss(student, teacher, temperature=1.0).round(6))
      0.100483
      >>> print(jaxkl.distillation_loss(student, teacher, temperature=5.0, labels=jnp.array([0]), alpha=0.9).round(5))
      0.29002

    References:
      Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network"
      (2015); Agarwal et al., "On-Policy Distillation of Language Models:
      Learning from Self-Generated Mistakes" (GKD, ICLR 2024) for the JS variant;
      Ko et al., "DistiLLM: Towards Streamlined Distillation for Large Language
      Models" (ICML 2024) for the skew divergences.
    """
    s, t, axis, where, dtype = _model_and_target(
        student_logits, teacher_logits, "student_logits", "teacher_logits", axis, where
    )
    options = distillation_options(divergence, beta, alpha, scale_by_temperature_squared, skew, softcap)
    reduction = _validate.reduction(reduction)
    _validate.positive(temperature, "temperature")
    if labels is not None:
        labels = _validate.labels(
            labels, s.shape[:axis] + s.shape[axis + 1 :], f"student_logits.shape={s.shape} without axis={axis}"
        )
    values = distillation_rows(s, t, labels, temperature, options, axis, where)
    return reduce(values, reduction, where=where).astype(dtype)


@class_axes("logits", "target_logits", masks=())
def consistency_loss(
    logits: ArrayLike,
    target_logits: ArrayLike,
    *,
    temperature: float = 1.0,
    confidence_threshold: float | None = None,
    reduction: str = "mean",
    where: ArrayLike | None = None,
    axis: int | tuple[int, ...] = -1,
) -> jax.Array:
    r"""Unsupervised consistency loss of UDA: KL from a sharpened, confident target.

    Follows the `(input, target)` order. Per example,

    $$
    \ell = \mathrm{KL}\big(\operatorname{softmax}(t / T) \,\|\, \operatorname{softmax}(x)\big)
    $$

    with `x = logits` (e.g. the prediction on an augmented input) and
    `t = target_logits` (the prediction on the clean input) held fixed
    (`stop_gradient`); `T < 1` sharpens the target. With
    `confidence_threshold = c` an example is **masked out** unless the largest
    probability of the *unsharpened* `softmax(t)` is strictly above `c`
    (UDA's confidence-based masking). Reductions:

    * `"mean"`: sum over kept examples / number of kept examples (0, not
      NaN, when none is kept);
    * `"batchmean"`: sum over kept examples / the batch size
      (`logits.shape[0]`), the original UDA normalisation;
    * `"sum"`, `"none"` (masked examples are 0).

    Args:
      logits: model logits `[..., K, ...]`.
      target_logits: target logits, same shape (no gradient flows into them).
      temperature: `T > 0` dividing `target_logits` only.
      confidence_threshold: `None` (keep all) or a number in `[0, 1]`.
      reduction: `"none"`, `"sum"`, `"mean"` or `"batchmean"`.
      where: optional boolean mask over examples, combined with the confidence
        mask; masked examples give 0 and no gradient, whatever their logits.
      axis: the class axis, or a tuple of axes whose product is the classes.

    Returns:
      A scalar, or one value per example for `"none"`; dtype of `logits`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> x = jnp.array([[1.0, 0.0], [0.0, 0.0]])
      >>> t = jnp.array([[3.0, 0.0], [0.1, 0.0]])  # max probs 0.953 and 0.525
      >>> print(jaxkl.consistency_loss(x, t, temperature=0.4, confidence_threshold=0.8).round(6))
      0.309116

    References:
      Xie et al., "Unsupervised Data Augmentation for Consistency Training"
      (NeurIPS 2020).
    """
    x, t, axis, where, dtype = _model_and_target(
        logits, target_logits, "logits", "target_logits", axis, where
    )
    reduction = _validate.reduction(reduction)
    # UDA sharpens the target alone: its logits are divided by T, the model's
    # are not. The division happens in the compute dtype (float32 for 16-bit
    # logits): rounding t / T back to bfloat16 moved the loss by ~1e-2
    # relative. The kernel then meets a float32 target and 16-bit logits and
    # works in float32, as it would anyway.
    t_acc = t.astype(compute_dtype(t.dtype))
    scale, (sharpened,) = temperature_scale(temperature, t_acc, axis=axis)
    if scale != 1.0:
        sharpened = sharpened * jnp.asarray(scale, t_acc.dtype)
    values = kl_divergence_from_logits(sharpened, x, axis=axis)
    if confidence_threshold is not None:
        threshold = _validate.unit_interval(confidence_threshold, "confidence_threshold")
        # max softmax(t) = exp(max t - logsumexp t) = exp(-log_sum): one per-row statistic.
        _, log_sum = log_normalizer(prepare_logits(t, None), axis)
        confident = jnp.squeeze(jnp.exp(-log_sum), axis) > threshold
        where = confident if where is None else confident & jnp.broadcast_to(where, confident.shape)
    return reduce(values, reduction, where=where).astype(dtype)
