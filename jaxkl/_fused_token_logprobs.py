"""Token log-probabilities (and entropy) of a linear head without materialising the N x V logits."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _validate
from ._fused import Head, chunk_rows, head_rows
from ._token_logprobs import token_values


def _token_rows(static, logits, tokens, traced_temperature):
    """`token_values` of one chunk of float32 logits [C, V]: the unfused kernel's own rows."""
    static_scale, entropy = static
    if traced_temperature is not None:
        logits = logits / traced_temperature.astype(logits.dtype)
    return token_values(logits, tokens, axis=1, scale=static_scale, entropy=entropy)


def fused_linear_token_logprobs(
    hidden: ArrayLike,
    head_weight: ArrayLike,
    tokens: ArrayLike,
    *,
    head_bias: ArrayLike | None = None,
    temperature: Any = 1.0,
    return_entropy: bool = False,
    chunk_size: int | None = None,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    r"""[jaxkl.token_logprobs][] of a linear head, `token_logprobs(hidden @ head_weight + head_bias, tokens)`, fused.

    $$
    z_n = (h_n W + b) / T, \qquad
    \log P_{n, y_n} = z_{n, y_n} - \operatorname{logsumexp}(z_n), \qquad
    H_n = -\textstyle\sum_c P_{n,c} \log P_{n,c}
    $$

    The per-row function is [jaxkl.token_logprobs][]'s own, applied to
    `chunk_size` rows of logits at a time inside `lax.scan`, as in
    [jaxkl.fused_linear_cross_entropy][]: the backward pass recomputes each
    chunk's logits and turns them straight into `d hidden`, `d head_weight`
    and `d head_bias`, so no N x V array exists in either pass. Compose it with
    any loss on the log-probs ([jaxkl.policy_loss][], a KL penalty, a sum per
    sequence for [jaxkl.preference_loss][]) under `jax.value_and_grad`: the
    memory stays O(N·D + D·V), and no separate fused policy loss is needed.
    The cost is one matmul forward and two (plus the recomputed one) backward;
    the log-probs' cotangent is only known in the backward pass, so the
    three-matmul trick of the scalar fused cross-entropy does not apply.

    With `return_entropy=True` each chunk yields `[C, 2]` (log-prob, entropy)
    from one sweep over its logits, so the entropy costs neither another matmul
    nor another N-sized residual.

    The options `softcap=`, `vocab_chunk_size=` and `axis_name=` (a vocabulary
    sharded over a mesh axis) of the fused cross-entropy are not taken yet:
    they will be added here once the shared fused head has them.

    Args:
      hidden: `[N, D]` floating point (tokens flattened; e.g. the policy's final
        hidden states at the positions that predict each completion token).
      head_weight: `[D, V]` head matrix (`D` first, as in `hidden @ head_weight`).
      tokens: `[N]` integer tokens; outside `[0, V)` gives NaN.
      head_bias: optional `[V]` head bias.
      temperature: `T > 0`, the sampling temperature; a Python number or a
        traced scalar (a traced one receives no gradient here).
      return_entropy: also return the entropy of `softmax(z_n)`.
      chunk_size: rows per chunk; `None` picks about `2**22 / V` rows.

    Returns:
      `[N]` float32 log-probabilities, or the pair `(logprobs, entropy)`.
      Gradients flow to `hidden`, `head_weight` and `head_bias`.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxkl
      >>> h = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]); w = jnp.array([[0.0, 1.0, 2.0], [1.0, 0.0, 0.0]])
      >>> y = jnp.array([2, 0, 1])
      >>> fused = jaxkl.fused_linear_token_logprobs(h, w, y, chunk_size=2)
      >>> print(jnp.allclose(fused, jaxkl.token_logprobs(h @ w, y)))
      True

    References:
      Hsu et al., "Liger Kernel: Efficient Triton Kernels for LLM Training" (2024).
      Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models" (2024).
    """
    hidden, weight, bias = _validate.linear_head(hidden, head_weight, head_bias)
    n, v = hidden.shape[0], weight.shape[1]
    tokens = _validate.labels(tokens, (n,), "hidden.shape[:1]", "tokens")
    if not isinstance(return_entropy, bool):
        raise TypeError(f"return_entropy must be a bool, got {return_entropy!r}")
    static_temperature = _validate.positive(temperature, "temperature")
    if static_temperature is None:
        # A traced temperature travels with the arrays (no gradient, as in the fused distillation).
        scale, traced = 1.0, jnp.asarray(temperature)
    else:
        scale, traced = 1.0 / static_temperature, None
    static = Head(_token_rows, (scale, return_entropy), chunk_rows(chunk_size, n, v, hidden.shape[1]))
    values = head_rows(static, hidden, weight, bias, tokens, traced)
    if not return_entropy:
        return values
    return values[:, 0], values[:, 1]
