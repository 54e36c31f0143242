"""Token log-probabilities (and entropy) of a linear head without materialising the N x V logits."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _validate
from ._fused import Head, chunk_rows, class_tile, head_rows
from ._fused_tiles import TileRule, Tiles, in_tile, tiled_rows
from ._rowwise import label_mask, soft_capped
from ._token_logprobs import token_values


class TokenHead(NamedTuple):
    """The static options of the fused token rows (tiled or not)."""

    scale: float  # 1 / temperature when known at trace time, else 1
    entropy: bool
    softcap: float | None
    axis_name: Any  # None with tiles: tiles never split a device's classes


def _capped(params, z, traced_temperature):
    """As in `token_logprobs`: the cap first, then a traced temperature (a static one is `scale`)."""
    z = soft_capped(z, params.softcap)
    return z if traced_temperature is None else z / traced_temperature.astype(z.dtype)


def token_head(temperature: Any, entropy: bool, softcap: Any, axis_name: Any) -> tuple[TokenHead, jax.Array | None]:
    """Validated `(TokenHead, traced temperature or None)`.

    A traced temperature travels with the arrays (no gradient, as in the
    fused distillation); a Python number becomes the static `scale`.
    """
    static_temperature = _validate.positive(temperature, "temperature")
    if static_temperature is None:
        scale, traced = 1.0, jnp.asarray(temperature)
    else:
        scale, traced = 1.0 / static_temperature, None
    return TokenHead(scale, entropy, _validate.softcap(softcap), _validate.axis_name(axis_name)), traced


def token_rows(options, logits, tokens, traced_temperature):
    """`token_values` of one chunk of float32 logits [C, V]: the unfused kernel's own rows."""
    logits = _capped(options, logits, traced_temperature)
    return token_values(
        logits, tokens, axis=1, scale=options.scale, entropy=options.entropy, axis_name=options.axis_name
    )


def _tempered(params, z, traced_temperature):
    """The logits of the sampled distribution: capped, then divided by the temperature."""
    z = _capped(params, z, traced_temperature)
    return z if params.scale == 1.0 else z * params.scale


def _tile_start(params, rows, shared, dtype):
    zeros = jnp.zeros(rows[0].shape, dtype)
    return jnp.full(rows[0].shape, -jnp.inf, dtype), zeros, zeros, zeros


def _tile_update(params, carry, z, start, size, rows, traced_temperature):
    """Running `(max m, sum e^(z-m), token logit, sum e^(z-m) (z-m))` per token."""
    m, s, picked, u = carry
    z = _tempered(params, z, traced_temperature).astype(m.dtype)
    new_m = jnp.maximum(m, jnp.max(z, axis=1))
    rescale = jnp.exp(m - new_m)
    e = jnp.exp(z - new_m[:, None])
    if params.entropy:
        # Moving the shift from m to new_m adds (m - new_m) to every (z - m)
        # seen so far; before the first tile there is nothing (and m = -inf).
        moved = jnp.where(s > 0, (m - new_m) * s, 0.0)
        u = rescale * (u + moved) + jnp.sum(e * (z - new_m[:, None]), axis=1)
    s = s * rescale + jnp.sum(e, axis=1)
    token = label_mask(in_tile(rows[0], start, size), z.shape, 1)
    picked = picked + jnp.sum(jnp.where(token, z, 0.0), axis=1)
    return new_m, s, picked, u


def _tile_finish(params, carry, rows, traced_temperature):
    m, s, picked, u = carry
    log_s = jnp.log(s)
    # An out-of-range token has no log-probability: NaN, as in `token_values`.
    logp = jnp.where(rows[1], (picked - m) - log_s, jnp.nan)
    lse = m + log_s
    if not params.entropy:
        return logp, (), (lse, jnp.zeros_like(lse))
    # H = lse - E_P[z] = log s - E_P[z - m].
    h = jnp.maximum(log_s - u / s, 0.0)
    return jnp.stack([logp, h], axis=-1), (), (lse, h)


def _tile_cotangent(params, z, start, size, rows, saved, traced_temperature, ct):
    """`d/dz` of `ct . values`: `([c = y] - P_c)` for the log-prob, `-P_c (log P_c + H)` for the entropy."""
    lse, h = saved
    tempered, tempered_vjp = jax.vjp(lambda z: _tempered(params, z, traced_temperature), z)
    logq = tempered.astype(lse.dtype) - lse[:, None]
    p = jnp.exp(logq)
    token = label_mask(in_tile(rows[0], start, size), z.shape, 1)
    ct_logp = ct[:, 0] if params.entropy else ct
    coef = ct_logp[:, None] * (jnp.where(token, 1.0, 0.0) - p)
    if params.entropy:
        coef = coef - ct[:, 1:2] * p * (logq + h[:, None])
    (g,) = tempered_vjp(coef.astype(tempered.dtype))
    return g


TOKEN_TILES = TileRule(_tile_start, _tile_update, _tile_finish, _tile_cotangent)


def fused_linear_token_logprobs(
    hidden: ArrayLike,
    head_weight: ArrayLike,
    tokens: ArrayLike,
    *,
    head_bias: ArrayLike | None = None,
    temperature: Any = 1.0,
    return_entropy: bool = False,
    chunk_size: int | None = None,
    softcap: float | None = None,
    vocab_chunk_size: int | None = None,
    axis_name: Any = None,
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
    memory stays O(N·D + D·V). The cost is one matmul forward and two (plus
    the recomputed one) backward: the log-probs' cotangent is only known in
    the backward pass. For the policy losses,
    [jaxkl.fused_linear_policy_loss][] takes the gradient in the forward
    sweep instead, for three matmuls.

    With `return_entropy=True` each chunk yields `[C, 2]` (log-prob, entropy)
    from one sweep over its logits, so the entropy costs neither another matmul
    nor another N-sized residual.

    With `axis_name` (inside `shard_map`, the classes split over that mesh
    axis) each device holds `head_weight[:, V_local]` and `head_bias[V_local]`,
    `tokens` are global class ids, the row statistics cross devices as O(N)
    scalars and `d hidden` is one `psum` of `[N, D]`: neither the head nor the
    logits are gathered, as in [jaxkl.fused_linear_cross_entropy][]. The
    tokens may be split over a data axis too (`hidden` `P("data", None)` on a
    `(data, model)` mesh; `d head_weight` is then summed over it), under
    `check_vma=True` or `False`.

    Args:
      hidden: `[N, D]` floating point (tokens flattened; e.g. the policy's final
        hidden states at the positions that predict each completion token).
      head_weight: `[D, V]` head matrix (`D` first, as in `hidden @ head_weight`).
      tokens: `[N]` integer tokens; outside `[0, V)` gives NaN.
      head_bias: optional `[V]` head bias.
      temperature: `T > 0`, the sampling temperature; a Python number or a
        traced scalar (a traced one receives no gradient here).
      return_entropy: also return the entropy of `softmax(z_n)`.
      chunk_size: rows per chunk; `None` picks as [jaxkl.fused_linear_cross_entropy][] does.
      softcap: None, or `c > 0`: the logits become $c \tanh(z / c)$ before
        the temperature divides them, as in [jaxkl.token_logprobs][].
      vocab_chunk_size: classes per tile, as in
        [jaxkl.fused_linear_cross_entropy][]: each chunk of tokens walks over
        the classes a tile at a time, keeping an online log-sum-exp (and, for
        the entropy, an online `E_P[z]`) per token, and the backward pass
        recomputes each tile once, so a chunk holds many tokens whatever `V`.
        `None` tiles as [jaxkl.fused_linear_cross_entropy][] does (from
        `V = 65,536` up, about `2**22 / D` classes per tile).
      axis_name: the mesh axis over which the head's classes are split (see
        above), or None.

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
    options, traced = token_head(temperature, return_entropy, softcap, axis_name)
    axis_name = options.axis_name
    tile = class_tile(vocab_chunk_size, chunk_size, n, v, hidden.shape[1], axis_name)
    if tile is None:
        static = Head(token_rows, options, chunk_rows(chunk_size, n, v, hidden.shape[1]), axis_name=axis_name)
        values = head_rows(static, hidden, weight, bias, tokens, traced)
    else:
        static = Tiles(TOKEN_TILES, options, chunk_rows(chunk_size, n, tile, hidden.shape[1]), tile)
        in_range = (tokens >= 0) & (tokens < v)
        idx = jnp.where(in_range, tokens, 0).astype(jnp.int32)
        values, _ = tiled_rows(static, hidden, weight, bias, (idx, in_range), traced)
    if not return_entropy:
        return values
    return values[:, 0], values[:, 1]
