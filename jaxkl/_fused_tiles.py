"""Class tiles for the fused cross-entropy: an online log-sum-exp across the vocabulary.

`jaxkl._fused` forms a chunk's logits for every class at once, so a chunk of
about 2**22 logits holds only `2**22 / V` tokens and, at V = 262,144, the
whole head matrix is read again for every 16 tokens. Here a chunk of tokens
walks over the classes `tile_size` at a time: the forward pass keeps, per
token, the running maximum, the rescaled sum of exponentials, the label's
logit, the class-weighted logit sum (label smoothing) and the running arg-max
(Milakov & Gimelshein's online softmax, as in Cut Cross-Entropy); the
backward pass recomputes each (chunk, tile) block once from the saved
log-normaliser and turns it straight into `d hidden`, `d weight` and
`d bias`. The chunk can then hold many tokens whatever the vocabulary, so
the head is read O(N / chunk) times per pass.

The per-example value and its derivative are the unfused loss's own
(`label_value`, `label_coefficient` and `soft_capped` from the layer below),
fed with statistics gathered across tiles instead of one row at a time.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from . import _validate
from ._chunks import chunked, unchunked
from ._cross_entropy_loss import LabelOptions, label_coefficient, label_value
from ._rowwise import compute_dtype, soft_capped


# Class tiling is on by default from this vocabulary size, in tiles of
# DEFAULT_TILE classes: untiled, a 2**22-logit chunk would hold under 64
# tokens and re-read the whole head for each. Chosen by the arithmetic above,
# not by a timing sweep (see docs/large-vocabularies.md).
TILE_FROM_CLASSES = 65536
DEFAULT_TILE = 16384


def tile_classes(vocab_chunk_size: Any, num_classes: int) -> int | None:
    """Classes per tile, or None for no class tiling (`vocab_chunk_size=None`: by size)."""
    size = _validate.positive_int_or_none(vocab_chunk_size, "vocab_chunk_size")
    if size is None:
        return DEFAULT_TILE if num_classes >= TILE_FROM_CLASSES else None
    return min(size, max(num_classes, 1))


class Tiles(NamedTuple):
    """The static part of a class-tiled cross-entropy (hashable)."""

    options: LabelOptions  # axis 1, no axis_name
    softcap: float | None
    chunk_size: int  # tokens per chunk
    tile_size: int  # classes per tile


def _over_tiles(num_classes: int, size: int, body, carry):
    """`carry = body(start, size, carry)` over the class tiles: full tiles in a loop, then the rest."""
    full = num_classes // size
    if full:
        carry = jax.lax.fori_loop(0, full, lambda j, c: body(j * size, size, c), carry)
    if num_classes % size:
        carry = body(full * size, num_classes % size, carry)
    return carry


def _slice(x, start, size, axis=0):
    return None if x is None else jax.lax.dynamic_slice_in_dim(x, start, size, axis=axis)


def _tile_logits(h, weight, bias, start, size):
    """One tile of (uncapped) logits `[C, size]`, float32 accumulation."""
    z = jnp.dot(h, _slice(weight, start, size, 1), preferred_element_type=compute_dtype(weight.dtype))
    return z if bias is None else z + _slice(bias, start, size).astype(z.dtype)[None, :]


def _in_tile(idx, start, size):
    """Each row's label index within the tile, -1 where the label is elsewhere."""
    local = idx - start
    return jnp.where((local >= 0) & (local < size), local, -1)


def _chunk_statistics(static, h, weight, bias, idx, class_weight):
    """`(shift, log_sum, picked, weighted_sum, arg_max)` of one chunk's capped logits, tile by tile."""
    c = h.shape[0]
    acc = compute_dtype(weight.dtype)
    spread = static.options.spread

    def step(start, size, carry):
        m, s, picked, wx, arg = carry
        z = soft_capped(_tile_logits(h, weight, bias, start, size), static.softcap).astype(acc)
        tile_max = jnp.max(z, axis=1)
        new_m = jnp.maximum(m, tile_max)
        s = s * jnp.exp(m - new_m) + jnp.sum(jnp.exp(z - new_m[:, None]), axis=1)
        label = jax.lax.broadcasted_iota(jnp.int32, z.shape, 1) == _in_tile(idx, start, size)[:, None]
        picked = picked + jnp.sum(jnp.where(label, z, 0.0), axis=1)
        if spread:
            wx = wx + jnp.dot(z, _slice(class_weight, start, size), preferred_element_type=acc)
        # Strictly greater: ties go to the earlier class, as jnp.argmax.
        arg = jnp.where(tile_max > m, jnp.argmax(z, axis=1).astype(jnp.int32) + start, arg)
        return new_m, s, picked, wx, arg

    zeros = jnp.zeros((c,), acc)
    init = (jnp.full((c,), -jnp.inf, acc), zeros, zeros, zeros, jnp.zeros((c,), jnp.int32))
    return _over_tiles(weight.shape[1], static.tile_size, step, init)


def _forward(static, hidden, weight, bias, extras):
    """Per-row values, log-normalisers and arg-maxes, one token chunk at a time."""
    idx, wy, valid, class_weight = extras
    n, size = hidden.shape[0], static.chunk_size
    num_chunks = -(-n // size)
    total = jnp.sum(class_weight)

    def chunk_step(_, x):
        h_c, idx_c, wy_c, valid_c = x
        m, s, picked, wx, arg = _chunk_statistics(static, h_c, weight, bias, idx_c, class_weight)
        # The smoothing term's sum_c w_c (max - x_c), from the running sums.
        gap = m * total - wx if static.options.spread else None
        normalizer = (m[:, None], jnp.log(s)[:, None])
        value = label_value(static.options, normalizer, picked, wy_c, class_weight, gap, valid_c)
        return None, (value, m + jnp.log(s), arg)

    xs = chunked((hidden, idx, wy, valid), num_chunks, size)
    _, out = jax.lax.scan(chunk_step, None, xs)
    return jax.tree_util.tree_map(lambda x: unchunked(x, n), out)


def _backward(static, hidden, weight, bias, extras, lse, cotangent):
    """`d hidden`, `d weight`, `d bias` for per-row cotangents, each tile recomputed once.

    Token chunks are the outer loop, as in `jaxkl._fused`: `d weight` is
    accumulated in place, a tile's block at a time, into one float32
    head-sized array (for a float32 head, the output itself: at
    8192 x 1024 x 262144 the compiled temporaries are 1% of the logits; with
    tiles outermost a float32 `[N, D]` accumulator and its per-tile copies
    measured 2.9%).
    """
    idx, wy, valid, class_weight = extras
    n, size = hidden.shape[0], static.chunk_size
    num_chunks = -(-n // size)
    acc = compute_dtype(weight.dtype)
    total = jnp.sum(class_weight) if static.options.spread else None
    cap = functools.partial(soft_capped, softcap=static.softcap)

    def chunk_step(carry, x):
        h_c, idx_c, wy_c, valid_c, lse_c, ct_c = x

        def tile_step(start, tile, inner):
            d_h, d_weight, d_bias = inner
            z, cap_vjp = jax.vjp(cap, _tile_logits(h_c, weight, bias, start, tile))
            p = jnp.exp(z.astype(acc) - lse_c[:, None])
            coef = label_coefficient(
                static.options, p, lse_c[:, None], _in_tile(idx_c, start, tile), wy_c,
                _slice(class_weight, start, tile), valid_c, total,
            )
            (g,) = cap_vjp((coef * ct_c[:, None]).astype(z.dtype))
            g_in = g.astype(weight.dtype)
            d_h = d_h + jnp.dot(g_in, _slice(weight, start, tile, 1).T, preferred_element_type=acc)
            part = _slice(d_weight, start, tile, 1) + jnp.dot(h_c.T, g_in, preferred_element_type=acc)
            d_weight = jax.lax.dynamic_update_slice_in_dim(d_weight, part, start, axis=1)
            if d_bias is not None:
                part = _slice(d_bias, start, tile) + jnp.sum(g.astype(acc), axis=0)
                d_bias = jax.lax.dynamic_update_slice_in_dim(d_bias, part, start, axis=0)
            return d_h, d_weight, d_bias

        d_weight, d_bias = carry
        inner = (jnp.zeros(h_c.shape, acc), d_weight, d_bias)
        d_h, d_weight, d_bias = _over_tiles(weight.shape[1], static.tile_size, tile_step, inner)
        return (d_weight, d_bias), d_h.astype(hidden.dtype)

    init = (jnp.zeros(weight.shape, acc), None if bias is None else jnp.zeros(bias.shape, acc))
    xs = chunked((hidden, idx, wy, valid, lse, cotangent), num_chunks, size)
    (d_weight, d_bias), d_hidden = jax.lax.scan(chunk_step, init, xs)
    d_bias = None if bias is None else d_bias.astype(bias.dtype)
    return unchunked(d_hidden, n), d_weight.astype(weight.dtype), d_bias


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def tiled_cross_entropy_rows(static, hidden, weight, bias, extras):
    """`(values, logsumexp, predicted)` per row; gradients flow to `hidden`, `weight`, `bias`.

    `extras = (idx, w_y, valid, class_weight)` as `label_weights` and
    `counted_examples` give them (`class_weight` all ones when unweighted).
    `logsumexp` and `predicted` carry no gradient.
    """
    return _forward(static, hidden, weight, bias, extras)


def _rows_fwd(static, hidden, weight, bias, extras):
    values, lse, predicted = _forward(static, hidden, weight, bias, extras)
    # O(N) residuals: the inputs and one log-normaliser per row.
    return (values, lse, predicted), (hidden, weight, bias, extras, lse)


def _rows_bwd(static, residuals, cotangents):
    hidden, weight, bias, extras, lse = residuals
    grads = _backward(static, hidden, weight, bias, extras, lse, cotangents[0])
    return grads + (jax.tree_util.tree_map(lambda _: None, extras),)


tiled_cross_entropy_rows.defvjp(_rows_fwd, _rows_bwd)
