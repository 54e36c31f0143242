"""Policy-gradient (PPO / GRPO family) and preference (DPO family) losses on token log-probabilities.

Both are thin layers over per-token or per-sequence log-probabilities, which
come from [jaxkl.token_logprobs][] (or its fused form). The definitions follow
TRL (`GRPOTrainer`, `DPOTrainer`, `CPOTrainer`) where the papers leave a
choice open; each docstring says which.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _validate
from ._estimators import ESTIMATORS, kl_estimate
from ._reductions import reduce
from ._rowwise import compute_dtype

POLICY_LOSS_TYPES = ("grpo", "bnpo", "dapo", "dr_grpo", "gspo")
PREFERENCE_LOSS_TYPES = ("sigmoid", "ipo", "hinge", "simpo")


class PolicyStats(NamedTuple):
    """Diagnostics of [jaxkl.policy_loss][]: means over the real (`where`) tokens, without gradient.

    Attributes:
      ratio: mean importance ratio `r` (the sequence ratio for `"gspo"`).
      clipped_low: fraction of tokens with `r < 1 - clip_eps` and a negative advantage.
      clipped_high: fraction of tokens with `r > 1 + clip_eps_high` and a positive advantage.
      kl: mean per-token KL estimate to the reference (0 without `ref_logprobs`).
      entropy: mean entropy (0 without `entropy`).

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> logprobs = jnp.log(jnp.array([[0.5, 0.25]]))
      >>> loss, stats = jaxkl.policy_loss(logprobs, logprobs, jnp.array([1.0]))
      >>> print(stats.ratio, stats.clipped_low, stats.clipped_high)
      1.0 0.0 0.0
    """

    ratio: jax.Array
    clipped_low: jax.Array
    clipped_high: jax.Array
    kl: jax.Array
    entropy: jax.Array


def _log_probability(x: Any, name: str) -> jax.Array:
    """A log-probability array; `+inf` (which no probability has) becomes NaN, so that
    the clipping of a ratio never turns it into a finite loss."""
    x = _validate.float_array(x, name)
    return jnp.where(x == jnp.inf, jnp.nan, x)


def _token_array(x: Any, name: str, shape: tuple[int, ...] | None) -> jax.Array:
    x = _log_probability(x, name)
    if shape is None:
        if x.ndim != 2:
            raise ValueError(f"{name} must be [B, T] (sequences x tokens), got {name}.shape={x.shape}")
    elif x.shape != shape:
        raise ValueError(f"{name}.shape={x.shape} must equal logprobs.shape={shape}")
    return x


def _token_mean(x: jax.Array, where: jax.Array) -> jax.Array:
    """Mean over the real tokens (0 when there are none)."""
    return reduce(x, "mean", where=where)


def policy_loss(
    logprobs: ArrayLike,
    old_logprobs: ArrayLike,
    advantages: ArrayLike,
    *,
    where: ArrayLike | None = None,
    loss_type: str = "grpo",
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    ref_logprobs: ArrayLike | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    entropy: ArrayLike | None = None,
    entropy_coef: float = 0.0,
    max_tokens: int | None = None,
) -> tuple[jax.Array, PolicyStats]:
    r"""Clipped policy-gradient loss of PPO / GRPO and its variants, with a KL penalty and an entropy bonus.

    For sequence $i$, token $t$, with $r_{i,t} = \exp(\log\pi_{i,t} - \log\pi^{\text{old}}_{i,t})$
    (`old_logprobs` are constants), advantage $A$ (per sequence `[B]` or per token
    `[B, T]`), $\varepsilon_{lo}$ = `clip_eps` and $\varepsilon_{hi}$ =
    `clip_eps_high` (default `clip_eps`), the per-token loss is

    $$
    \ell_{i,t} = -\min\bigl(r_{i,t} A,\ \operatorname{clip}(r_{i,t}, 1 - \varepsilon_{lo}, 1 + \varepsilon_{hi})\, A\bigr)
    + \beta\, k_{i,t} - c_H\, H_{i,t}
    $$

    where $k$ is the per-token estimate of $\mathrm{KL}(\pi \,\|\, \pi_{\text{ref}})$ by
    [jaxkl.kl_estimate][] (`kl_estimator`, e.g. k3 $= e^{\log\pi_{\text{ref}} - \log\pi} -
    (\log\pi_{\text{ref}} - \log\pi) - 1$) with $\beta$ = `kl_coef`, and $H$ the
    per-token `entropy` with $c_H$ = `entropy_coef` (both added before aggregation,
    as in TRL). `loss_type` decides how the tokens ($m_{i,t}$ = `where`, $T_i = \sum_t m_{i,t}$) are aggregated:

    * `"grpo"`: $\frac1B \sum_i \frac{1}{T_i} \sum_t m_{i,t}\ell_{i,t}$ — each sequence's mean (Shao et al.);
    * `"bnpo"`, `"dapo"`: $\sum_{i,t} m_{i,t}\ell_{i,t} / \sum_{i,t} m_{i,t}$ — the token mean
      (DAPO pairs it with a larger `clip_eps_high`, "clip-higher");
    * `"dr_grpo"`: $\sum_{i,t} m_{i,t}\ell_{i,t} / (B L)$ with $L$ = `max_tokens` (default `T`) (Dr. GRPO);
    * `"gspo"`: the ratio is the sequence's, $s_i = \exp\bigl(\frac1{T_i}\sum_t m_{i,t}
      (\log\pi_{i,t} - \log\pi^{\text{old}}_{i,t})\bigr)$, clipped per sequence and used
      at every token as GSPO-token's $s_{i,t} = \operatorname{sg}[s_i]\, \pi_{i,t} /
      \operatorname{sg}[\pi_{i,t}]$ (equal to $s_i$ in value; the gradient flows per token),
      then `"grpo"` aggregation.

    Sequences with no real token contribute 0 (and count in `"grpo"`'s $1/B$, as in TRL).
    Masked tokens may hold anything (NaN, `-inf`): they get exactly zero value and gradient.
    Accumulated in float32 for 16-bit inputs.

    Args:
      logprobs: `[B, T]` log-probabilities of the sampled tokens under the policy
        (e.g. from [jaxkl.token_logprobs][]); the only input that receives a gradient
        besides `entropy`.
      old_logprobs: `[B, T]` the same under the sampling policy (no gradient).
      advantages: `[B]` (one per sequence, e.g. GRPO's group-normalised reward) or `[B, T]` (no gradient).
      where: optional boolean `[B, T]`, `True` for real completion tokens.
      loss_type: `"grpo"`, `"bnpo"`, `"dapo"`, `"dr_grpo"` or `"gspo"`.
      clip_eps: $\varepsilon_{lo} \ge 0$.
      clip_eps_high: $\varepsilon_{hi} \ge 0$; None uses `clip_eps`.
      ref_logprobs: optional `[B, T]` log-probabilities under the reference model (no gradient).
      kl_coef: $\beta \ge 0$; needs `ref_logprobs` when positive.
      kl_estimator: `"k1"`, `"k2"` or `"k3"` (see [jaxkl.kl_estimate][] for what each one's gradient estimates).
      entropy: optional `[B, T]` per-token entropy of the policy (e.g. from
        `token_logprobs(..., return_entropy=True)`); receives a gradient.
      entropy_coef: $c_H \ge 0$; needs `entropy` when positive.
      max_tokens: the `"dr_grpo"` constant (the generation budget); None uses `T`.

    Returns:
      `(loss, stats)`: the scalar loss (dtype of `logprobs`) and a [jaxkl.PolicyStats][].

    Raises:
      ValueError: for a shape mismatch, an unknown `loss_type` or `kl_estimator`, a
        negative coefficient, or a positive coefficient without its input.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxkl
      >>> lp = jnp.log(jnp.array([[0.5, 0.4], [0.3, 0.9]]))
      >>> old = jnp.log(jnp.array([[0.4, 0.4], [0.3, 0.6]]))
      >>> loss, stats = jaxkl.policy_loss(lp, old, jnp.array([1.0, -1.0]))
      >>> # Sequence 0 (A = 1): r = [1.25, 1], the first clipped to 1.2 -> mean -1.1;
      >>> # sequence 1 (A = -1): r = [1, 1.5], min(-1.5, -1.2) keeps -1.5 -> mean 1.25.
      >>> print(f"{loss:.4f} {stats.ratio:.4f} {stats.clipped_high}")
      0.0750 1.1875 0.25
      >>> print(jax.grad(lambda x: jaxkl.policy_loss(x, old, jnp.array([1.0, -1.0]))[0])(lp).round(4))
      [[-0.    -0.25 ]
       [ 0.25   0.375]]

    References:
      Schulman et al., "Proximal Policy Optimization Algorithms" (2017).
      Shao et al., "DeepSeekMath" (2024), GRPO. Yu et al., "DAPO" (2025).
      Liu et al., "Understanding R1-Zero-Like Training: A Critical Perspective" (2025), Dr. GRPO.
      Zheng et al., "Group Sequence Policy Optimization" (2025), GSPO.
      TRL `GRPOTrainer` (loss types and the placement of the KL and entropy terms).
    """
    lp = _token_array(logprobs, "logprobs", None)
    shape = lp.shape
    options = policy_options(loss_type, clip_eps, clip_eps_high, kl_coef, kl_estimator, entropy_coef, max_tokens)
    old, adv, ref, mask = policy_inputs(shape, old_logprobs, advantages, where, ref_logprobs, options)
    if entropy is not None:
        entropy = _token_array(entropy, "entropy", shape)
    elif entropy_coef:
        raise ValueError("entropy_coef > 0 needs entropy")
    dtype = _validate.common_dtype(*(a for a in (lp, old, adv, ref, entropy) if a is not None))
    old, adv, ref = prepared(old, adv, ref, mask, compute_dtype(dtype))
    lp = real_tokens(lp, mask, old.dtype)
    ent = jnp.zeros(shape, old.dtype) if entropy is None else real_tokens(entropy, mask, old.dtype)
    log_ratio = lp - old
    if options.loss_type == "gspo":
        seq_log_ratio = jnp.sum(log_ratio, axis=1) / jnp.maximum(jnp.sum(mask, axis=1).astype(old.dtype), 1.0)
        # GSPO-token: sg[s_i] * pi_t / sg[pi_t], the sequence ratio in value, per-token in gradient.
        log_ratio = jax.lax.stop_gradient(seq_log_ratio)[:, None] + (lp - jax.lax.stop_gradient(lp))
    per_token, ratio, kl = token_losses(options, log_ratio, lp, adv, ref, ent, mask)
    loss = jnp.sum(token_weights(options, mask, old.dtype) * per_token)
    return loss.astype(dtype), policy_stats(options, ratio, adv, kl, ent, mask)


class PolicyOptions(NamedTuple):
    """The validated static options of a policy loss (hashable)."""

    loss_type: str
    eps_low: float
    eps_high: float
    kl_coef: float
    kl_estimator: str
    entropy_coef: float
    max_tokens: int | None


def policy_options(loss_type, clip_eps, clip_eps_high, kl_coef, kl_estimator, entropy_coef, max_tokens) -> PolicyOptions:
    eps_low = _validate.nonnegative(clip_eps, "clip_eps")
    return PolicyOptions(
        _validate.choice(loss_type, POLICY_LOSS_TYPES, "loss_type"),
        eps_low,
        eps_low if clip_eps_high is None else _validate.nonnegative(clip_eps_high, "clip_eps_high"),
        _validate.nonnegative(kl_coef, "kl_coef"),
        _validate.choice(kl_estimator, ESTIMATORS, "kl_estimator"),
        _validate.nonnegative(entropy_coef, "entropy_coef"),
        _validate.positive_int_or_none(max_tokens, "max_tokens"),
    )


def policy_inputs(shape, old_logprobs, advantages, where, ref_logprobs, options):
    """Validated `(old, advantages, ref or None, mask)` for log-probs of `shape` `[B, T]`."""
    old = _token_array(old_logprobs, "old_logprobs", shape)
    adv = _validate.float_array(advantages, "advantages")
    if adv.shape not in (shape[:1], shape):
        raise ValueError(f"advantages.shape={adv.shape} must be [B]={shape[:1]} or [B, T]={shape}")
    if ref_logprobs is not None:
        ref_logprobs = _token_array(ref_logprobs, "ref_logprobs", shape)
    elif options.kl_coef:
        raise ValueError("kl_coef > 0 needs ref_logprobs")
    where = _validate.mask(where, shape)
    mask = jnp.ones(shape, bool) if where is None else jnp.broadcast_to(where, shape)
    return old, adv, ref_logprobs, mask


def real_tokens(x, mask, dtype):
    """`x` where `mask`, 0 elsewhere: padding may hold anything (NaN, -inf), and the
    select keeps its value and gradient exactly 0 (the "double where")."""
    return jnp.where(mask, x.astype(dtype), 0.0)


def prepared(old, adv, ref, mask, dtype):
    """The constants of the loss in `dtype`, padding zeroed, advantages broadcast to `[B, T]`."""
    old = jax.lax.stop_gradient(real_tokens(old, mask, dtype))
    adv = jax.lax.stop_gradient(adv.astype(dtype))
    adv = jnp.broadcast_to(adv[:, None] if adv.ndim == 1 else adv, mask.shape)
    ref = None if ref is None else jax.lax.stop_gradient(real_tokens(ref, mask, dtype))
    return old, adv, ref


def token_losses(options, log_ratio, lp, adv, ref, ent, mask):
    """Per-token `(loss l, ratio r, KL estimate k)`, elementwise; `l` is 0 at padding.

    The one definition of the per-token term that `policy_loss` and the fused
    policy loss share (any shape: `[B, T]` or a chunk of flattened tokens).
    """
    ratio = jnp.exp(log_ratio)
    clipped = jnp.clip(ratio, 1.0 - options.eps_low, 1.0 + options.eps_high)
    per_token = -jnp.minimum(ratio * adv, clipped * adv)
    kl = jnp.zeros_like(per_token)
    if ref is not None:
        kl = kl_estimate(lp, ref, estimator=options.kl_estimator, reduction="none", where=mask)
        if options.kl_coef:
            per_token = per_token + options.kl_coef * kl
    if options.entropy_coef:
        per_token = per_token - options.entropy_coef * ent
    return jnp.where(mask, per_token, 0.0), ratio, kl


def token_weights(options, mask, dtype):
    """`c[B, T]` with the loss `sum(c * l)` for each `loss_type` (0 at padding).

    `"grpo"` (and `"gspo"`): `1 / (B T_i)`; `"dr_grpo"`: `1 / (B L)`;
    `"bnpo"`/`"dapo"`: one over the number of real tokens. Known before any
    log-prob is, so a fused loss can take each token's gradient as it goes.
    """
    m = mask.astype(dtype)
    b, t = mask.shape
    if options.loss_type in ("grpo", "gspo"):
        return m / (b * jnp.maximum(jnp.sum(m, axis=1, keepdims=True), 1.0))
    if options.loss_type == "dr_grpo":
        return m / (b * (t if options.max_tokens is None else options.max_tokens))
    return m / jnp.maximum(jnp.sum(m), 1.0)


def policy_stats(options, ratio, adv, kl, ent, mask) -> PolicyStats:
    """The diagnostics, means over the real tokens, without gradient."""
    stats = PolicyStats(
        ratio=_token_mean(ratio, mask),
        clipped_low=_token_mean(((ratio < 1.0 - options.eps_low) & (adv < 0)).astype(ratio.dtype), mask),
        clipped_high=_token_mean(((ratio > 1.0 + options.eps_high) & (adv > 0)).astype(ratio.dtype), mask),
        kl=_token_mean(kl, mask),
        entropy=_token_mean(ent, mask),
    )
    return jax.tree_util.tree_map(jax.lax.stop_gradient, stats)


def preference_loss(
    chosen_logps: ArrayLike,
    rejected_logps: ArrayLike,
    ref_chosen_logps: ArrayLike | None = None,
    ref_rejected_logps: ArrayLike | None = None,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    gamma: float = 0.0,
    reduction: str = "mean",
) -> jax.Array:
    r"""Preference-optimisation loss on sequence log-probabilities: DPO (with label smoothing), IPO, hinge, SimPO.

    With per-pair sequence log-probabilities of the chosen ($c$) and rejected ($r$)
    responses under the policy and the reference, the margin is

    $$
    \Delta = (\log\pi(c) - \log\pi_{\text{ref}}(c)) - (\log\pi(r) - \log\pi_{\text{ref}}(r))
    $$

    and, with $\sigma$ the logistic function, $\beta$ = `beta`, $\varepsilon$ = `label_smoothing`:

    * `"sigmoid"` (DPO; conservative DPO for $\varepsilon > 0$):
      $-(1 - \varepsilon)\log\sigma(\beta\Delta) - \varepsilon\log\sigma(-\beta\Delta)$;
    * `"ipo"`: $(\Delta - \frac{1}{2\beta})^2$, on the log-probabilities as given
      (pass length-normalised ones for the IPO paper's per-token average, as TRL does);
    * `"hinge"` (SLiC): $\max(0,\ 1 - \beta\Delta)$;
    * `"simpo"` (no reference; pass length-normalised log-probabilities
      $\frac{1}{|y|}\log\pi(y)$): with $\Delta = \log\pi(c) - \log\pi(r)$,
      $-(1 - \varepsilon)\log\sigma(\beta\Delta - \gamma) - \varepsilon\log\sigma(-(\beta\Delta - \gamma))$
      — the margin $\gamma$ = `gamma` is *not* scaled by $\beta$ (TRL's `CPOTrainer`
      writes it as `gamma_beta_ratio` = $\gamma/\beta$ inside $\beta(\cdot)$; same value).

    `log σ` is computed as `-softplus(-x)`: no overflow for large margins. The
    reference log-probabilities receive no gradient.

    Args:
      chosen_logps: `[B]` (any shape) sequence log-probabilities of the chosen responses.
      rejected_logps: same shape, of the rejected responses.
      ref_chosen_logps: the reference model's, same shape; required except for `"simpo"`.
      ref_rejected_logps: likewise.
      beta: $\beta > 0$.
      loss_type: `"sigmoid"`, `"ipo"`, `"hinge"` or `"simpo"`.
      label_smoothing: $\varepsilon \in [0, 1]$, the assumed rate of flipped labels
        (`"sigmoid"` and `"simpo"`; must be 0 for the others).
      gamma: SimPO's target margin $\gamma \ge 0$ (`"simpo"` only).
      reduction: `"mean"`, `"sum"`, `"batchmean"` or `"none"`, as [jaxkl.reduce][].

    Returns:
      The loss (scalar, or the input shape for `"none"`), in the inputs' dtype.

    Raises:
      ValueError: for shape mismatches, an unknown `loss_type`, a missing (or, for
        `"simpo"`, a superfluous) reference, or an option the loss type does not take.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> c, r = jnp.array([-5.0, -7.0]), jnp.array([-6.0, -6.0])
      >>> # Margins 0.5 and -0.5: (softplus(-0.5) + softplus(0.5)) / 2.
      >>> print(jaxkl.preference_loss(c, r, jnp.array([-5.5, -6.5]), jnp.array([-6.0, -6.0]), beta=1.0).round(4))
      0.7241

    References:
      Rafailov et al., "Direct Preference Optimization" (2023); Mitchell, "A note on DPO
      with noisy preferences" (2023), conservative DPO. Azar et al., "A General Theoretical
      Paradigm to Understand Learning from Human Preferences" (2023), IPO. Zhao et al.,
      "SLiC-HF" (2023), hinge. Meng et al., "SimPO" (2024). TRL `DPOTrainer`, `CPOTrainer`.
    """
    loss_type = _validate.choice(loss_type, PREFERENCE_LOSS_TYPES, "loss_type")
    chosen = _log_probability(chosen_logps, "chosen_logps")
    rejected = _log_probability(rejected_logps, "rejected_logps")
    _validate.same_shape(chosen, rejected, "chosen_logps", "rejected_logps")
    arrays = [chosen, rejected]
    has_ref = (ref_chosen_logps is not None, ref_rejected_logps is not None)
    if loss_type == "simpo":
        if any(has_ref):
            raise ValueError("loss_type='simpo' uses no reference: leave ref_chosen_logps and ref_rejected_logps None")
    else:
        if not all(has_ref):
            raise ValueError(f"loss_type={loss_type!r} needs ref_chosen_logps and ref_rejected_logps")
        for x, name in ((ref_chosen_logps, "ref_chosen_logps"), (ref_rejected_logps, "ref_rejected_logps")):
            x = _log_probability(x, name)
            _validate.same_shape(chosen, x, "chosen_logps", name)
            arrays.append(x)
    beta = _validate.positive(beta, "beta")
    if beta is None:
        raise TypeError("beta must be a Python number known at trace time")
    eps = _validate.unit_interval(label_smoothing, "label_smoothing")
    gamma = _validate.nonnegative(gamma, "gamma")
    if eps and loss_type not in ("sigmoid", "simpo"):
        raise ValueError(f"label_smoothing applies to 'sigmoid' and 'simpo', not {loss_type!r}")
    if gamma and loss_type != "simpo":
        raise ValueError(f"gamma is SimPO's margin; loss_type={loss_type!r} takes none")
    reduction = _validate.reduction(reduction)

    dtype = _validate.common_dtype(*arrays)
    acc = compute_dtype(dtype)
    c, r, *refs = (x.astype(acc) for x in arrays)
    margin = c - r
    if refs:
        ref_c, ref_r = (jax.lax.stop_gradient(x) for x in refs)
        margin = margin - (ref_c - ref_r)
    if loss_type == "ipo":
        values = jnp.square(margin - 1.0 / (2.0 * beta))
    elif loss_type == "hinge":
        values = jax.nn.relu(1.0 - beta * margin)
    else:
        z = beta * margin - gamma
        # -log sigmoid(z) = softplus(-z); the smoothing term only when it is on (0 * inf = NaN).
        values = (1.0 - eps) * jax.nn.softplus(-z)
        if eps:
            values = values + eps * jax.nn.softplus(z)
    return reduce(values, reduction).astype(dtype)
