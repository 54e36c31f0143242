"""A policy-gradient loss straight from the hidden states, its gradient taken in the forward sweep.

`policy_loss(fused_linear_token_logprobs(...))` costs four matmuls per step:
the log-probs' cotangent is only known in the backward pass, which must
therefore recompute each chunk's logits. But for the per-token loss types
(GRPO, BNPO/DAPO, Dr. GRPO) the loss is `sum_t c_t l_t` with weights `c_t`
known from the mask alone, and `l_t` depends on token `t`'s own log-prob and
entropy only. So each chunk's gradient is known as soon as its logits are:
the fused head's scalar path (`head_total`) takes it during the forward sweep,
as the fused cross-entropy does, for three matmuls in all. GSPO (a sequence
ratio) and class-tiled heads (which need every tile's log-sum-exp before any
tile's gradient) take the composition instead.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _validate
from ._fused import Head, chunk_rows, class_tile, head_total
from ._fused_token_logprobs import TokenHead, fused_linear_token_logprobs, token_head, token_rows
from ._policy import (
    PolicyOptions,
    PolicyStats,
    policy_inputs,
    policy_loss,
    policy_options,
    policy_stats,
    prepared,
    real_tokens,
    token_losses,
    token_weights,
)
from ._rowwise import compute_dtype


class PolicyHead(NamedTuple):
    """The static options of the fused policy rows."""

    token: TokenHead
    policy: PolicyOptions


def _policy_rows(params, logits, extras, traced_temperature):
    """Each token's loss term of one chunk of float32 logits `[C, V]`; aux: its log-prob and entropy."""
    tokens, old, adv, ref, mask = extras
    values = token_rows(params.token, logits, tokens, traced_temperature)
    if params.token.entropy:
        lp, ent = real_tokens(values[:, 0], mask, old.dtype), real_tokens(values[:, 1], mask, old.dtype)
    else:
        lp = real_tokens(values, mask, old.dtype)
        ent = jnp.zeros_like(lp)
    per_token, _, _ = token_losses(params.policy, lp - old, lp, adv, ref, ent, mask)
    return per_token, (lp, ent)


def fused_linear_policy_loss(
    hidden: ArrayLike,
    head_weight: ArrayLike,
    tokens: ArrayLike,
    old_logprobs: ArrayLike,
    advantages: ArrayLike,
    *,
    head_bias: ArrayLike | None = None,
    temperature: Any = 1.0,
    where: ArrayLike | None = None,
    loss_type: str = "grpo",
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    ref_logprobs: ArrayLike | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    entropy_coef: float = 0.0,
    max_tokens: int | None = None,
    chunk_size: int | None = None,
    softcap: float | None = None,
    vocab_chunk_size: int | None = None,
    axis_name: Any = None,
) -> tuple[jax.Array, PolicyStats]:
    r"""[jaxkl.policy_loss][] of a linear head's sampled tokens, fused: three matmuls per step, no N x V array.

    With $z = (h W + b) / T$ per token, $\log\pi_{i,t} = \log\operatorname{softmax}(z_{i,t})_{y_{i,t}}$
    and $H_{i,t}$ the entropy of $\operatorname{softmax}(z_{i,t})$, the loss is

    $$
    \mathcal{L} = \sum_{i,t} c_{i,t}\, \ell_{i,t}, \qquad
    \ell_{i,t} = -\min\bigl(r_{i,t} A,\ \operatorname{clip}(r_{i,t}, 1 - \varepsilon_{lo}, 1 + \varepsilon_{hi})\, A\bigr)
    + \beta\, k_{i,t} - c_H\, H_{i,t}
    $$

    with $r_{i,t} = \exp(\log\pi_{i,t} - \log\pi^{\text{old}}_{i,t})$: every
    option and every `loss_type` means exactly what it means in
    [jaxkl.policy_loss][] ($c_{i,t} = m_{i,t} / (B\, T_i)$ for `"grpo"`, $m_{i,t}
    / \sum m$ for `"bnpo"`/`"dapo"`, $m_{i,t} / (B L)$ for `"dr_grpo"`), and the
    result equals `policy_loss(fused_linear_token_logprobs(hidden, head_weight,
    tokens, return_entropy=...), ...)`, values and gradients.

    What differs is the cost. In the composition the log-probs' cotangent
    arrives only in the backward pass, which recomputes every chunk's logits:
    four matmuls. Here the weights $c_{i,t}$ depend on the mask alone and
    $\ell_{i,t}$ on token $(i, t)$ only, so each chunk's gradient is taken in
    the forward sweep, as soon as its logits exist (the scalar fused
    cross-entropy's trick), and the backward pass only scales it: three
    matmuls, as for materialised logits. Memory stays O(N·D + D·V): the saved
    gradients are `[N, D]` and a float32 `[D, V]`. `"gspo"` (a ratio per
    sequence, known only after all its tokens) and class-tiled heads (every
    tile's log-sum-exp is needed before any tile's gradient; large
    vocabularies with more than one chunk of tokens, see `vocab_chunk_size`)
    run as the composition instead, with the same results.

    The entropy is computed only when `entropy_coef > 0` (otherwise
    `stats.entropy` is 0, as in [jaxkl.policy_loss][] without `entropy`).

    Args:
      hidden: `[B, T, D]` floating point: the policy's final hidden states at
        the positions that predict each completion token.
      head_weight: `[D, V]` head matrix (`D` first, as in `hidden @ head_weight`).
      tokens: `[B, T]` integer sampled tokens; outside `[0, V)` gives NaN
        unless masked by `where`.
      old_logprobs: `[B, T]` log-probabilities under the sampling policy (no gradient).
      advantages: `[B]` or `[B, T]` (no gradient).
      head_bias: optional `[V]` head bias.
      temperature: `T > 0`, the sampling temperature; a Python number or a
        traced scalar (no gradient).
      where: optional boolean `[B, T]`, `True` for real completion tokens;
        padding may hold any token and any old log-prob.
      loss_type: `"grpo"`, `"bnpo"`, `"dapo"`, `"dr_grpo"` or `"gspo"`.
      clip_eps: $\varepsilon_{lo} \ge 0$.
      clip_eps_high: $\varepsilon_{hi} \ge 0$; None uses `clip_eps`.
      ref_logprobs: optional `[B, T]` log-probabilities under the reference model (no gradient).
      kl_coef: $\beta \ge 0$; needs `ref_logprobs` when positive.
      kl_estimator: `"k1"`, `"k2"` or `"k3"`, as in [jaxkl.kl_estimate][].
      entropy_coef: $c_H \ge 0$, the entropy bonus.
      max_tokens: the `"dr_grpo"` constant $L$; None uses `T`.
      chunk_size: tokens per chunk, as in [jaxkl.fused_linear_token_logprobs][].
      softcap: None, or `c > 0`: logits become $c \tanh(z / c)$ before the temperature divides them.
      vocab_chunk_size: classes per tile, as in [jaxkl.fused_linear_token_logprobs][].
      axis_name: inside `shard_map`, the mesh axis over which the head's
        classes are split (`head_weight[:, V_local]`, global token ids), as in
        [jaxkl.fused_linear_token_logprobs][]: only per-token scalars and one
        `[N, D]` `psum` cross devices. With the sequences split over a data
        axis too, the loss is that shard's (combine with `lax.pmean` for
        `"grpo"`/`"dr_grpo"` over equal shards).

    Returns:
      `(loss, stats)`: the scalar loss (float32, float64 for float64 inputs)
      and a [jaxkl.PolicyStats][]. Gradients flow to `hidden`, `head_weight`
      and `head_bias`.

    Raises:
      ValueError: for a shape mismatch, an unknown `loss_type` or
        `kl_estimator`, a negative coefficient, `kl_coef > 0` without
        `ref_logprobs`, or `temperature <= 0`.
      TypeError: for integer `hidden` or float `tokens`.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxkl
      >>> h = jax.random.normal(jax.random.key(0), (2, 3, 4)); w = jax.random.normal(jax.random.key(1), (4, 5))
      >>> y = jnp.array([[0, 1, 2], [3, 4, 0]]); adv = jnp.array([1.0, -1.0])
      >>> old = jaxkl.fused_linear_token_logprobs(h.reshape(6, 4), w, y.reshape(6)).reshape(2, 3)
      >>> loss, stats = jaxkl.fused_linear_policy_loss(h, w, y, old, adv)
      >>> # On-policy (r = 1): each token's loss is -A, so the GRPO loss is mean(-A) = 0.
      >>> print(loss.round(6), stats.ratio.round(6))
      0.0 1.0
      >>> composed = lambda w: jaxkl.policy_loss(
      ...     jaxkl.fused_linear_token_logprobs(h.reshape(6, 4), w, y.reshape(6)).reshape(2, 3), old, adv)[0]
      >>> fused = lambda w: jaxkl.fused_linear_policy_loss(h, w, y, old, adv)[0]
      >>> print(jnp.allclose(jax.grad(fused)(w), jax.grad(composed)(w), atol=1e-6))
      True

    References:
      Shao et al., "DeepSeekMath" (2024), GRPO. Yu et al., "DAPO" (2025).
      Liu et al., "Understanding R1-Zero-Like Training: A Critical Perspective" (2025), Dr. GRPO.
      Hsu et al., "Liger Kernel: Efficient Triton Kernels for LLM Training" (2024), for
      taking a fused head's gradient in the forward pass.
    """
    hidden = _validate.float_array(hidden, "hidden")
    if hidden.ndim != 3:
        raise ValueError(f"hidden must be [B, T, D] (sequences x tokens x features), got hidden.shape={hidden.shape}")
    shape = hidden.shape[:2]
    tokens = _validate.labels(tokens, shape, "hidden.shape[:2]", "tokens")
    options = policy_options(loss_type, clip_eps, clip_eps_high, kl_coef, kl_estimator, entropy_coef, max_tokens)
    old, adv, ref, mask = policy_inputs(shape, old_logprobs, advantages, where, ref_logprobs, options)
    # The token count spelled out: `-1` cannot be inferred from a zero-sized array (`D = 0`).
    hidden = hidden.reshape(shape[0] * shape[1], hidden.shape[-1])
    hidden, weight, bias = _validate.linear_head(hidden, head_weight, head_bias)
    n, d, v = hidden.shape[0], hidden.shape[1], weight.shape[1]
    tokens = tokens.reshape(n)
    entropy = options.entropy_coef > 0
    token_options, traced = token_head(temperature, entropy, softcap, axis_name)
    tile = class_tile(vocab_chunk_size, chunk_size, n, v, d, token_options.axis_name)
    if options.loss_type == "gspo" or tile is not None:
        out = fused_linear_token_logprobs(
            hidden, weight, tokens, head_bias=bias, temperature=temperature, return_entropy=entropy,
            chunk_size=chunk_size, softcap=softcap, vocab_chunk_size=vocab_chunk_size, axis_name=axis_name,
        )
        lp, ent = out if entropy else (out, None)
        return policy_loss(
            lp.reshape(shape), old, adv, where=mask, loss_type=options.loss_type, clip_eps=options.eps_low,
            clip_eps_high=options.eps_high, ref_logprobs=ref, kl_coef=options.kl_coef,
            kl_estimator=options.kl_estimator, entropy=None if ent is None else ent.reshape(shape),
            entropy_coef=options.entropy_coef, max_tokens=options.max_tokens,
        )
    # The loss's dtype is what policy_loss gives for the head's float32 (or float64) log-probs.
    lp_dtype = jnp.zeros((), compute_dtype(weight.dtype))
    dtype = _validate.common_dtype(lp_dtype, *(a for a in (old, adv, ref) if a is not None))
    old, adv, ref = prepared(old, adv, ref, mask, compute_dtype(dtype))
    extras = tuple(None if a is None else a.reshape(n) for a in (tokens, old, adv, ref, mask))
    static = Head(_policy_rows, PolicyHead(token_options, options), chunk_rows(chunk_size, n, v, d), True, token_options.axis_name)
    row_weights = token_weights(options, mask, old.dtype).reshape(n)
    loss, (lp, ent) = head_total(static, hidden, weight, bias, extras, traced, row_weights)
    lp, ent = lp.reshape(shape), ent.reshape(shape)
    _, ratio, kl = token_losses(options, lp - old, lp, adv, ref, ent, mask)
    return loss.astype(dtype), policy_stats(options, ratio, adv, kl, ent, mask)
