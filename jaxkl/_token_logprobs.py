"""Selective log-softmax: each position's log-probability of its sampled token (and the entropy).

With `z = logits / T`, `P = softmax(z)` over the class axis, token `y` and
`s = 1 / T`, the per-row outputs and their derivatives are

    logp_y = z_y - lse(z)                 d logp_y / dx_c = s ([c = y] - P_c)
    H      = lse(z) - sum_c P_c z_c        dH / dx_c      = -s P_c (log P_c + H)

The token's logit is gathered once per row outside the row kernel (O(rows)),
so the kernel's per-class work is the log-normaliser (and, for the entropy,
one weighted row sum). As in `jaxkl._cross_entropy_loss`, the rule takes the
token's `[c = y]` from `dx` through a compare fused into its sweep and leaves
the gathered logit's tangent unused, so reverse mode never transposes the
gather. With the entropy the kernel's value is `[..., 2]` (log-prob, entropy):
one sweep over the logits serves both, and both are differentiable.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _validate
from ._axes import class_axes
from ._logits import temperature_scale
from ._rowwise import (
    LOG_NORMALIZER_BLOCKING,
    compute_dtype,
    finite_log_sum,
    label_logits,
    label_mask,
    log_normalizer,
    log_probs,
    prepare_logits,
    row_kernel,
    row_sum,
    soft_capped,
    with_tangent,
    zero_where_unused,
)


class TokenOptions(NamedTuple):
    """Static options of the selective log-softmax kernel."""

    axis: int
    axis_name: Any
    scale: float  # 1 / temperature, when known at trace time
    entropy: bool  # also return the entropy: the value is [..., 2]


def _token_forward(static, x, picked, idx, where):
    axis, axis_name, scale, entropy = static
    z = prepare_logits(x, where, scale)
    norm = log_normalizer(z, axis, axis_name)
    shift, log_sum = (jnp.squeeze(v, axis) for v in norm)
    # picked is already -inf where the token's class is masked; (picked - shift)
    # first keeps the log-prob exact in the shift (see `log_normalizer`).
    logp = (picked.astype(z.dtype) * scale - shift) - finite_log_sum(log_sum)
    if not entropy:
        return logp, norm
    p = jnp.exp(log_probs(z, norm))
    # H = lse - E_P[z] = log_sum - E_P[z - shift]; 0 * -inf is taken as 0.
    mean = row_sum(zero_where_unused(p, z - norm[0]), axis, axis_name)
    h = jnp.maximum(finite_log_sum(log_sum) - mean, 0.0)
    return jnp.stack([logp, h], axis=-1), (norm, h)


def _token_tangent(static, arrays, stats, tangents):
    axis, axis_name, scale, entropy = static
    x, _, idx, where = arrays
    norm = stats[0] if entropy else stats
    logq = log_probs(prepare_logits(x, where, scale), norm)
    p = jnp.exp(logq)
    dx = tangents[0]
    if dx is None:
        zero = jnp.zeros(p.shape[:axis] + p.shape[axis + 1 :], p.dtype)
        return jnp.stack([zero, zero], axis=-1) if entropy else zero
    # The token's term comes from dx itself (a compare fused into the sweep):
    # the gathered logit's tangent is never used, so no gather is transposed.
    coef = jnp.where(label_mask(idx, p.shape, axis), 1.0, 0.0) - p
    if where is not None:
        coef = jnp.where(where, coef, 0.0)  # a masked class is a constant -inf
    d_logp = scale * with_tangent(coef, dx, axis, axis_name)
    if not entropy:
        return d_logp
    h = jnp.expand_dims(stats[1], axis)
    coef_h = -zero_where_unused(p, logq + h)
    return jnp.stack([d_logp, scale * with_tangent(coef_h, dx, axis, axis_name)], axis=-1)


_token_logprobs = row_kernel(
    _token_forward, _token_tangent, ("full", "row", "row", "mask"), **LOG_NORMALIZER_BLOCKING
)


def token_values(x, tokens, *, axis, scale, entropy, where=None, axis_name=None):
    """Validated `(x, tokens)` through the kernel: `[...]` or `[..., 2]` in the compute dtype.

    The one definition that `token_logprobs` and the fused head (chunk by chunk) share.
    With `axis_name`, `x` holds this device's slice of the classes and `tokens`
    are global class ids (as in `label_weights`): the token's logit comes from
    the device that holds it, by a `psum` of one value per row.
    """
    local_classes = x.shape[axis]
    shards = 1 if axis_name is None else jax.lax.axis_size(axis_name)
    in_range = (tokens >= 0) & (tokens < local_classes * shards)
    idx = jnp.where(in_range, tokens, jnp.zeros((), tokens.dtype)).astype(jnp.int32)
    if axis_name is not None:
        local = idx - jax.lax.axis_index(axis_name).astype(jnp.int32) * local_classes
        idx = jnp.where((local >= 0) & (local < local_classes), local, -1)
    masked = x if where is None else jnp.where(where, x, -jnp.inf)
    if local_classes:
        picked = label_logits(masked, idx, axis, axis_name)
    else:
        picked = jnp.zeros(tokens.shape, x.dtype)
    # An out-of-range token has no log-probability: NaN, never a wrapped index.
    picked = jnp.where(in_range, picked, jnp.nan)
    static = TokenOptions(axis, axis_name, scale, entropy)
    return _token_logprobs(static, x, picked, idx, where)


@class_axes("logits")
def token_logprobs(
    logits: ArrayLike,
    tokens: ArrayLike,
    *,
    temperature: Any = 1.0,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    return_entropy: bool = False,
    softcap: float | None = None,
    axis_name: Any = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    r"""Log-probability of each position's token, $\log \operatorname{softmax}(\text{logits} / T)_y$ ("selective log-softmax").

    With $z = \text{logits} / T$ and $P = \operatorname{softmax}(z)$ over `axis`,

    $$
    \log P_y = z_y - \operatorname{logsumexp}(z), \qquad
    H(P) = -\sum_c P_c \log P_c
    $$

    per position, where $y$ is that position's token: what every policy-gradient
    step needs for its sampled tokens (the log-probs of PPO/GRPO ratios, a
    reference model's log-probs for the KL penalty) and, with
    `return_entropy=True`, the entropy of the same tempered distribution for an
    entropy bonus. Nothing rows x classes is kept for the backward pass: both
    outputs are differentiable with O(rows) residuals (the derivative
    $\partial \log P_y / \partial x_c = ([c = y] - P_c)/T$ and
    $\partial H / \partial x_c = -P_c (\log P_c + H)/T$ are rebuilt from the
    logits), where `jnp.take_along_axis(jax.nn.log_softmax(x), ...)` keeps the
    whole log-softmax. `-inf` logits and `where=False` classes have probability 0
    (exact: no NaN in value or gradient); a token on such a class has
    log-probability `-inf`. A token outside `[0, K)` gives NaN.

    The temperature follows jaxkl's one policy: a Python number is folded into
    the kernel; a traced one divides the logits up front and receives its
    gradient.

    Args:
      logits: `[..., K, ...]` floating point, any leading shape (e.g. `[B, T, V]`).
      tokens: integer tokens, `logits.shape` without `axis` (e.g. `[B, T]`).
      temperature: `T > 0` (sampling temperature), a Python number or a traced scalar.
      axis: the class (vocabulary) axis.
      where: optional boolean mask broadcastable to `logits`; `False` classes
        are excluded (their probability is 0). To mask *positions* (padding),
        pass the mask to the loss instead, e.g. [jaxkl.policy_loss][].
      return_entropy: also return the entropy of `softmax(logits / T)`.
      softcap: None, or `c > 0`: the logits become $c \tanh(x / c)$
        (Gemma 2's logit soft-capping) before the temperature divides them,
        with the exact gradient, as in [jaxkl.cross_entropy_loss][] (a `-inf`
        logit becomes `-c`).
      axis_name: inside `shard_map`, the mesh axis over which the classes
        are split: `logits` is this device's slice, `tokens` are global class
        ids, and only per-row scalars cross devices. None: unsharded.

    Returns:
      `logprobs` of shape `tokens.shape`, or the pair `(logprobs, entropy)`,
      in float32 (float64 for float64 logits): bf16 logits are accumulated and
      returned in float32, since log-probability differences (PPO ratios)
      need more than bf16's 8 bits.

    Raises:
      ValueError: if `tokens.shape` is not `logits.shape` without `axis`, or `temperature <= 0`.
      TypeError: for integer logits or float tokens.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, jaxkl
      >>> logits = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
      >>> lp, h = jaxkl.token_logprobs(logits, jnp.array([0, 2]), return_entropy=True)
      >>> print(np.exp(np.asarray(lp)).round(4), np.asarray(h).round(4))  # H = 1.5 log 2 and -0.2 log 0.1 - 0.8 log 0.8
      [0.5 0.8] [1.0397 0.639 ]
      >>> g = jax.grad(lambda x: jaxkl.token_logprobs(x, jnp.array([0, 2])).sum())(logits)
      >>> print(np.asarray(g).round(4))  # [c = y] - P_c
      [[ 0.5  -0.25 -0.25]
       [-0.1  -0.1   0.2 ]]

    References:
      Schulman et al., "Proximal Policy Optimization Algorithms" (2017).
      Hsu et al., "Liger Kernel: Efficient Triton Kernels for LLM Training" (2024), for the selective log-softmax.
    """
    x = _validate.float_array(logits, "logits")
    axis = _validate.normalize_axis(axis, x.ndim)
    row_shape = x.shape[:axis] + x.shape[axis + 1 :]
    tokens = _validate.labels(tokens, row_shape, f"logits.shape={x.shape} without axis={axis}", "tokens")
    where = _validate.mask(where, x.shape)
    if not isinstance(return_entropy, bool):
        raise TypeError(f"return_entropy must be a bool, got {return_entropy!r}")
    axis_name = _validate.axis_name(axis_name)
    # The cap acts on the model's logits, before the sampling temperature divides them.
    x = soft_capped(x, _validate.softcap(softcap))
    scale, (x,) = temperature_scale(temperature, x, axis=axis, where=where, axis_name=axis_name)
    values = token_values(x, tokens, axis=axis, scale=scale, entropy=return_entropy, where=where, axis_name=axis_name)
    values = values.astype(compute_dtype(x.dtype))
    if not return_entropy:
        return values
    return values[..., 0], values[..., 1]
