"""Class tiles for the fused heads: online row statistics across the vocabulary.

`jaxkl._fused` forms a chunk's logits for every class at once, so a chunk of
at most 2**24 logits holds at most `2**24 / V` tokens and, at V = 262,144, the
whole head matrix is read again for every 64 tokens. Here a chunk of tokens
walks over the classes `tile_size` at a time: the forward pass keeps per-token
running statistics (the running maximum and rescaled sum of exponentials of
Milakov & Gimelshein's online softmax, as in Cut Cross-Entropy, plus whatever
else the loss needs); the backward pass recomputes each (chunk, tile) block
once from per-token values saved by the forward pass and turns it straight into
`d hidden`, `d weight` and `d bias`. The chunk can then hold many tokens
whatever the vocabulary, so the head is read O(N / chunk) times per pass.

`tiled_rows` is the machinery; a `TileRule` says what one loss keeps per
token and what its derivative is per tile. The cross-entropy's rule is here:
its per-example value and derivative are the unfused loss's own
(`label_value`, `label_coefficient` and `soft_capped` from the layer below),
fed with statistics gathered across tiles instead of one row at a time.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from . import _validate
from ._chunks import chunked, on_cpu_in_float32, same_varying, transposed, unchunked, varying_axes
from ._cross_entropy_loss import LabelOptions, label_coefficient, label_value
from ._rowwise import compute_dtype, label_mask, soft_capped


# Class tiling is on by default from this vocabulary size: untiled, a
# 2**22-logit chunk would hold under 64 tokens and re-read the whole head for
# each. Chosen by the arithmetic above, not by a timing sweep (see
# docs/large-vocabularies.md).
TILE_FROM_CLASSES = 65536
# A tile's slice of the head (`D x tile`) is copied out of the head for its
# matmul, so the default tile keeps it to about 2**22 elements, like the
# chunk's logits: at D = 1024, 16,384-class tiles left 64 MiB slices and a
# compiled temp of 2.0% of the logits at 8192 x 1024 x 131072 (the GRPO step
# of `python -m bench.rl`); 4,096-class tiles, 0.9%.
MAX_TILE, MIN_TILE, TILE_ELEMENTS = 16384, 1024, 2**22


def default_tile(hidden_size: int) -> int:
    """Classes per tile for a head with `hidden_size` inputs (a multiple of 128)."""
    tile = min(MAX_TILE, max(MIN_TILE, TILE_ELEMENTS // max(hidden_size, 1)))
    return tile - tile % 128


def tile_classes(vocab_chunk_size: Any, num_classes: int, hidden_size: int) -> int | None:
    """Classes per tile, or None for no class tiling (`vocab_chunk_size=None`: by size)."""
    size = _validate.positive_int_or_none(vocab_chunk_size, "vocab_chunk_size")
    if size is None:
        return default_tile(hidden_size) if num_classes >= TILE_FROM_CLASSES else None
    return min(size, max(num_classes, 1))


class TileRule(NamedTuple):
    """What one loss keeps per token across class tiles (module-level functions: hashable).

    All take the loss's static `params`, the chunk's per-row arrays `rows`
    (a pytree of `[C, ...]`) and the `shared` arrays (no gradient):

    * `start(params, rows, shared, dtype)`: the running statistics before the
      first tile, in the compute `dtype`;
    * `update(params, carry, z, start, size, rows, shared)`: fold in one tile of
      raw float32 logits `z` `[C, size]` (classes `[start, start + size)`);
    * `finish(params, carry, rows, shared)`: `(values, aux, saved)` per row:
      `values` (`[C]` or `[C, k]`) are differentiable, `aux` is not, `saved`
      is what the backward pass needs (O(C));
    * `cotangent(params, z, start, size, rows, saved, shared, ct)`: the
      cotangent of the tile's raw logits `z` for the values' cotangent `ct`.
    """

    start: Callable[..., Any]
    update: Callable[..., Any]
    finish: Callable[..., Any]
    cotangent: Callable[..., Any]


class Tiles(NamedTuple):
    """The static part of a class-tiled head (hashable)."""

    rule: TileRule
    params: Any
    chunk_size: int  # tokens per chunk
    tile_size: int  # classes per tile


def _over_tiles(num_classes: int, size: int, body, carry):
    """`carry = body(start, size, carry)` over the class tiles: full tiles in a loop, then the rest."""
    full = num_classes // size
    if full == 1:
        carry = body(0, size, carry)
    elif full:
        carry = jax.lax.fori_loop(0, full, lambda j, c: body(j * size, size, c), carry)
    if num_classes % size:
        carry = body(full * size, num_classes % size, carry)
    return carry


def _tile_slice(x, start, size, axis=0):
    """Classes `[start, start + size)` of `x` along `axis` (None stays None)."""
    return None if x is None else jax.lax.dynamic_slice_in_dim(x, start, size, axis=axis)


def _tile_logits(h, weight, bias, start, size):
    """One tile of raw logits `[C, size]`, float32 accumulation."""
    z = jnp.dot(h, _tile_slice(weight, start, size, 1), preferred_element_type=compute_dtype(weight.dtype))
    return z if bias is None else z + _tile_slice(bias, start, size).astype(z.dtype)[None, :]


def accumulate_outer(total: jax.Array, h_t: jax.Array, g: jax.Array, offset: Any = 0, first: bool = False) -> jax.Array:
    """`total[:, offset:offset + V_g] += h_t @ g` (`h_t = transposed(h)` is `[D, C]`, `g` is `[C, V_g]`).

    With `first`, the block is written rather than added to: the product is
    the first contribution to those classes.

    One block of classes at a time: XLA on CPU does not fuse the add into the
    matmul, so `h_t @ g` in one go would be a fresh `D x V_g` temporary on
    every step: with `D` above the chunk's `C` rows, larger than the chunk's
    logits themselves. Updating `total` block by block in place keeps the
    temporary at `D x block`, with the block sized like the chunk's logits
    (`C x V_g` elements): for the GRPO step of `python -m bench.rl` with one
    131,072-class tile
    (`vocab_chunk_size=131072`, D = 1024) the compiled temp fell from 528 to
    33 MiB.
    """
    d, v = total.shape[0], g.shape[1]
    block = min(v, max(1, g.size // max(d, 1)))

    def update(start, size, total):
        g_block = jax.lax.dynamic_slice_in_dim(g, start, size, axis=1)
        part = jnp.dot(h_t, g_block, preferred_element_type=total.dtype)
        if not first:
            part = part + jax.lax.dynamic_slice_in_dim(total, offset + start, size, axis=1)
        return jax.lax.dynamic_update_slice_in_dim(total, part, offset + start, axis=1)

    return _over_tiles(v, block, update, total)


def in_tile(idx, start, size):
    """Each row's class index within the tile, -1 where the class is elsewhere."""
    local = idx - start
    return jnp.where((local >= 0) & (local < size), local, -1)


def _forward(static, hidden, weight, bias, rows, shared):
    """`(values, aux, saved)` per row, one token chunk at a time (see `on_cpu_in_float32`)."""
    forward = functools.partial(_forward_as_given, static)
    return on_cpu_in_float32(forward, (hidden, weight, bias), rows, shared)


def _forward_as_given(static, hidden, weight, bias, rows, shared):
    rule, params = static.rule, static.params
    n, size = hidden.shape[0], static.chunk_size
    num_chunks = -(-n // size)
    acc = compute_dtype(weight.dtype)
    varying = tuple(varying_axes(hidden))  # the operands' common mesh type, () unsharded

    def chunk_step(_, x):
        h_c, rows_c = x

        def tile_step(start, tile, carry):
            z = _tile_logits(h_c, weight, bias, start, tile)
            return rule.update(params, carry, z, start, tile, rows_c, shared)

        # The rule's running statistics start as constants: inside shard_map
        # they take the logits' mesh type, or the tile loop's carry changes type.
        (start,) = same_varying((rule.start(params, rows_c, shared, acc),), varying)
        carry = _over_tiles(weight.shape[1], static.tile_size, tile_step, start)
        return None, rule.finish(params, carry, rows_c, shared)

    _, out = jax.lax.scan(chunk_step, None, chunked((hidden, rows), num_chunks, size))
    return jax.tree_util.tree_map(lambda x: unchunked(x, n), out)


def _backward(static, hidden, weight, bias, rows, shared, saved, cotangent):
    """`d hidden`, `d weight`, `d bias` for the values' cotangent (see `_backward_as_given`)."""
    backward = functools.partial(_backward_as_given, static)
    return on_cpu_in_float32(backward, (hidden, weight, bias), rows, shared, saved, cotangent)


def _backward_as_given(static, hidden, weight, bias, rows, shared, saved, cotangent):
    """`d hidden`, `d weight`, `d bias` for the values' cotangent, each tile recomputed once.

    Token chunks are the outer loop, as in `jaxkl._fused`: `d weight` is
    accumulated in place, a tile's block at a time, into one float32
    head-sized array (for a float32 head, the output itself: at
    8192 x 1024 x 262144 the compiled temporaries are 1% of the logits; with
    tiles outermost a float32 `[N, D]` accumulator and its per-tile copies
    measured 2.9%).
    """
    rule, params = static.rule, static.params
    n, size = hidden.shape[0], static.chunk_size
    num_chunks = -(-n // size)
    acc = compute_dtype(weight.dtype)

    def chunk_step(carry, x):
        h_c, rows_c, saved_c, ct_c = x
        h_t = transposed(h_c)

        def tile_step(start, tile, inner):
            d_h, d_weight, d_bias = inner
            z = _tile_logits(h_c, weight, bias, start, tile)
            g = rule.cotangent(params, z, start, tile, rows_c, saved_c, shared, ct_c)
            g_in = g.astype(weight.dtype)
            d_h = d_h + jnp.dot(g_in, _tile_slice(weight, start, tile, 1).T, preferred_element_type=acc)
            # With one token chunk each tile's block is written once: adding it
            # to the zeros re-read the block, and at 512 x 512 x 262144 float32
            # `value_and_grad` took 4.59 s instead of 5.01 s (median of 5,
            # throwaway A/B; optax on materialised logits 4.91 s).
            d_weight = accumulate_outer(d_weight, h_t, g_in, start, first=num_chunks == 1)
            if d_bias is not None:
                part = _tile_slice(d_bias, start, tile) + jnp.sum(g.astype(acc), axis=0)
                d_bias = jax.lax.dynamic_update_slice_in_dim(d_bias, part, start, axis=0)
            return d_h, d_weight, d_bias

        d_weight, d_bias = carry
        # zeros_like: sharded, the accumulators have the operands' mesh type (see `same_varying`).
        inner = (jnp.zeros_like(h_c, acc), d_weight, d_bias)
        d_h, d_weight, d_bias = _over_tiles(weight.shape[1], static.tile_size, tile_step, inner)
        return (d_weight, d_bias), d_h.astype(hidden.dtype)

    init = (jnp.zeros_like(weight, acc), None if bias is None else jnp.zeros_like(bias, acc))
    xs = chunked((hidden, rows, saved, cotangent), num_chunks, size)
    (d_weight, d_bias), d_hidden = jax.lax.scan(chunk_step, init, xs)
    d_bias = None if bias is None else d_bias.astype(bias.dtype)
    return unchunked(d_hidden, n), d_weight.astype(weight.dtype), d_bias


def tiled_rows(static, hidden, weight, bias, rows, shared):
    """`(values, aux)` per row of `hidden @ weight + bias` under `static.rule`, tile by tile.

    Gradients flow to `hidden`, `weight` and `bias` through `values`; `aux`,
    `rows` and `shared` carry none. Inside `shard_map` (e.g. `hidden` split
    over a data axis) the three operands are first cast to one mesh type, as
    in the untiled heads (`same_varying`).
    """
    hidden, weight, bias = same_varying((hidden, weight, bias))
    return _tiled_rows(static, hidden, weight, bias, rows, shared)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _tiled_rows(static, hidden, weight, bias, rows, shared):
    values, aux, _ = _forward(static, hidden, weight, bias, rows, shared)
    return values, aux


def _tiled_rows_fwd(static, hidden, weight, bias, rows, shared):
    values, aux, saved = _forward(static, hidden, weight, bias, rows, shared)
    # O(N) residuals: the inputs and what the rule saves per row.
    return (values, aux), (hidden, weight, bias, rows, shared, saved)


def _tiled_rows_bwd(static, residuals, cotangents):
    hidden, weight, bias, rows, shared, saved = residuals
    grads = _backward(static, hidden, weight, bias, rows, shared, saved, cotangents[0])
    return grads + jax.tree_util.tree_map(lambda _: None, (rows, shared))


_tiled_rows.defvjp(_tiled_rows_fwd, _tiled_rows_bwd)


# ------------------------------------------------------------ the cross-entropy's rule


class CrossEntropyTiles(NamedTuple):
    """Static options of the tiled cross-entropy."""

    options: LabelOptions  # axis 1, no axis_name
    softcap: float | None


def _ce_start(params, rows, shared, dtype):
    c = rows[0].shape[0]
    zeros = jnp.zeros((c,), dtype)
    return jnp.full((c,), -jnp.inf, dtype), zeros, zeros, zeros, jnp.zeros((c,), jnp.int32)


def _ce_update(params, carry, z, start, size, rows, class_weight):
    """Running `(max, rescaled sum, label logit, class-weighted logit sum, arg-max)`."""
    m, s, picked, wx, arg = carry
    idx = rows[0]
    z = soft_capped(z, params.softcap).astype(m.dtype)
    tile_max = jnp.max(z, axis=1)
    new_m = jnp.maximum(m, tile_max)
    s = s * jnp.exp(m - new_m) + jnp.sum(jnp.exp(z - new_m[:, None]), axis=1)
    label = label_mask(in_tile(idx, start, size), z.shape, 1)
    picked = picked + jnp.sum(jnp.where(label, z, 0.0), axis=1)
    if params.options.spread:
        wx = wx + jnp.dot(z, _tile_slice(class_weight, start, size), preferred_element_type=m.dtype)
    # Strictly greater: ties go to the earlier class, as jnp.argmax.
    arg = jnp.where(tile_max > m, jnp.argmax(z, axis=1).astype(jnp.int32) + start, arg)
    return new_m, s, picked, wx, arg


def _ce_finish(params, carry, rows, class_weight):
    m, s, picked, wx, arg = carry
    _, wy, valid = rows
    # The smoothing term's sum_c w_c (max - x_c), from the running sums.
    gap = m * jnp.sum(class_weight) - wx if params.options.spread else None
    normalizer = (m[:, None], jnp.log(s)[:, None])
    value = label_value(params.options, normalizer, picked, wy, class_weight, gap, valid)
    lse = m + jnp.log(s)
    return value, (lse, arg), lse


def _ce_cotangent(params, z, start, size, rows, lse, class_weight, ct):
    idx, wy, valid = rows
    capped, cap_vjp = jax.vjp(functools.partial(soft_capped, softcap=params.softcap), z)
    p = jnp.exp(capped.astype(lse.dtype) - lse[:, None])
    total = jnp.sum(class_weight) if params.options.spread else None
    coef = label_coefficient(
        params.options, p, lse[:, None], in_tile(idx, start, size), wy,
        _tile_slice(class_weight, start, size), valid, total,
    )
    (g,) = cap_vjp((coef * ct[:, None]).astype(capped.dtype))
    return g


CROSS_ENTROPY = TileRule(_ce_start, _ce_update, _ce_finish, _ce_cotangent)


def tiled_cross_entropy_rows(options, softcap, chunk_size, tile_size, hidden, weight, bias, extras):
    """`(values, (logsumexp, predicted))` per row; gradients flow to `hidden`, `weight`, `bias`.

    `extras = (idx, w_y, valid, class_weight)` as `label_weights` and
    `counted_examples` give them (`class_weight` all ones when unweighted).
    """
    idx, wy, valid, class_weight = extras
    static = Tiles(CROSS_ENTROPY, CrossEntropyTiles(options, softcap), chunk_size, tile_size)
    return tiled_rows(static, hidden, weight, bias, (idx, wy, valid), class_weight)
