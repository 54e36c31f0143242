"""Linear head + row loss, chunked over tokens, never holding N x V logits.

A language-model head computes `logits = hidden @ weight + bias` ([N, V])
and a loss per row. With large vocabularies the logits, their softmax and the
backward pass's `d loss / d logits` are each N x V — gigabytes. Here the rows
are processed `chunk_size` at a time inside `lax.scan`: a chunk's logits
([C, V]) are formed, reduced to one value per row, and dropped. The custom VJP
recomputes each chunk's logits in the backward pass and turns them straight
into `d hidden` (one [C, D] block), `d weight` and `d bias` (accumulated in
float32), so no N x V array exists in either pass (Liger-Kernel's chunking;
Wijmans et al.'s Cut Cross-Entropy tiles the class axis as well).

`head_rows` is the machinery shared with the fused distillation loss:
any `row_fn(params, logits_chunk, row_extras_chunk, shared)` that maps f32
logits [C, V] to values [C] can be fused; its derivative wrt the logits comes
from `jax.vjp` of `row_fn` itself (so jaxkl's cheap kernel derivatives are
reused), and arrays in `row_extras`/`shared` receive no gradient.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _checks, _validate
from ._chunks import chunked, on_cpu_in_float32, same_varying, transposed, unchunked, varying_axes
from ._fused_tiles import accumulate_outer, tile_classes, tiled_cross_entropy_rows
from ._cross_entropy_loss import (
    CrossEntropyAux,
    LabelOptions,
    aux_rows_from,
    class_weights,
    counted_examples,
    label_aux,
    label_aux_rows,
    label_cross_entropy,
    label_weights,
)
from ._reductions import example_weights, reduce, weighted_sum
from ._rowwise import compute_dtype

# Rows per chunk when chunk_size=None: chosen so that one chunk of float32
# logits holds about 2**22 elements (16 MiB), but at least MIN_CHUNK_ROWS rows
# while a chunk stays within MAX_CHUNK_ELEMENTS (64 MiB). See
# `default_chunk_size` for the measurements behind both.
DEFAULT_CHUNK_ELEMENTS, MIN_CHUNK_ROWS, MAX_CHUNK_ELEMENTS = 2**22, 256, 2**24


class Head(NamedTuple):
    """The static part of a fused head loss (hashable).

    `row_fn(params, logits_chunk, row_extras_chunk, shared)` maps one chunk
    of float32 logits `[C, V]` to its per-row values `[C]`. With `has_aux`
    it returns `(values [C], aux)`, `aux` a pytree of per-row arrays `[C, ...]`
    computed from the same chunk (no gradient); `head_rows` and `head_total`
    then return `(result, aux [N, ...])`.
    """

    row_fn: Callable[..., Any]
    params: Any
    chunk_size: int
    has_aux: bool = False
    # Inside shard_map with the head's classes split over this mesh axis:
    # `d hidden` is the psum of every device's part (the only [N, D] collective),
    # taken by the transpose of `same_varying`'s cast, not by the kernel.
    axis_name: Any = None


def default_chunk_size(num_rows: int, num_classes: int, hidden_size: int = 0) -> int:
    """Rows per chunk so that one chunk of logits has ~`DEFAULT_CHUNK_ELEMENTS`.

    Fewer than `MIN_CHUNK_ROWS` rows are raised to that many as long as the
    chunk stays within `MAX_CHUNK_ELEMENTS` logits: XLA:CPU multiplies a
    block of 128 rows by the head at about half the speed of one of 256 (at
    2048 x 256 x 32768, 16 products of `[128, 256] @ [256, 32768]` took
    0.51 s and their `d hidden` products 0.70 s, against 0.49 and 0.36 s
    for 8 blocks of 256 rows; at D = 1024, 1.11 / 0.97 s against 0.51 /
    0.45 s; throwaway A/B, jax 0.10.1, 2 cores). The fused cross-entropy's
    `value_and_grad` at 2048 x 256 x 32768 went from 0.88x the speed of optax
    on materialised logits to 1.43x, at 2048 x 512 x 32768 from 1.04x to 1.42x.
    At D = 128 the step is not monotone in the rows (2048 x 128 x 32768:
    128 rows 0.54 s, 256 rows 0.63 s, 512 rows 0.50 s, same A/B).
    """
    v = max(num_classes, 1)
    rows = max(1, DEFAULT_CHUNK_ELEMENTS // v, min(MIN_CHUNK_ROWS, MAX_CHUNK_ELEMENTS // v))
    # The one-chunk rule below also stays within MAX_CHUNK_ELEMENTS logits.
    if rows < hidden_size and num_rows <= 2 * rows and num_rows * v <= MAX_CHUNK_ELEMENTS:
        # Each chunk reads the whole head matrix (hidden_size x num_classes),
        # more than the chunk's own logits when it has fewer rows than the head
        # has inputs: rather than split into two such chunks, take one. At
        # 32 x 262144, D = 128, one chunk of 32 rows ran 1.2x faster than two
        # of 16 (`python -m bench --sweep`).
        return max(num_rows, 1)
    # Multiples of 8 keep the matmul tiles regular.
    rows = max(8, rows - rows % 8) if rows >= 8 else rows
    return int(min(rows, max(num_rows, 1)))


def chunk_rows(chunk_size: Any, num_rows: int, num_classes: int, hidden_size: int) -> int:
    """Validated rows per chunk (`None`: `default_chunk_size`)."""
    chunk_size = _validate.positive_int_or_none(chunk_size, "chunk_size")
    if chunk_size is None:
        return default_chunk_size(num_rows, num_classes, hidden_size)
    return min(chunk_size, max(num_rows, 1))


def class_tile(
    vocab_chunk_size: Any, chunk_size: Any, num_rows: int, num_classes: int, hidden_size: int, axis_name: Any
) -> int | None:
    """Classes per tile for a fused head, or None to take whole rows of logits per chunk.

    Sharded over `axis_name` the head is already split over classes: tiles would
    re-split this device's block. By default (`vocab_chunk_size=None`) large
    vocabularies are tiled only when the rows take more than one chunk: a single
    chunk reads the head once either way, and untiled a scalar loss's gradient
    costs three matmuls instead of four. At 32 x 128 x 262144 float32 (one
    chunk) the untiled fwd+bwd measured faster than the tiled one
    (`python -m bench --sweep --kernels fused_ce`).
    """
    if axis_name is not None:
        return None
    if vocab_chunk_size is None and chunk_rows(chunk_size, num_rows, num_classes, hidden_size) >= num_rows:
        return None
    return tile_classes(vocab_chunk_size, num_classes, hidden_size)


def head_logits(h: jax.Array, weight: jax.Array, bias: jax.Array | None) -> jax.Array:
    """One chunk of logits, matmul in the input dtype with float32 accumulation."""
    z = jnp.dot(h, weight, preferred_element_type=compute_dtype(weight.dtype))
    return z if bias is None else z + bias.astype(z.dtype)[None, :]


def _sweep(static, hidden, weight, bias, row_extras, shared, cotangent):
    """Per-row values and, if `cotangent` is given, the VJP wrt hidden/weight/bias."""
    sweep = functools.partial(_sweep_as_given, static)
    if cotangent is None:
        # An untiled forward alone: XLA:CPU converts a 16-bit head for its
        # matmuls once anyway, and converting it up front measured slower
        # (see `on_cpu_in_float32`).
        return sweep(hidden, weight, bias, row_extras, shared, cotangent)
    return on_cpu_in_float32(sweep, (hidden, weight, bias), row_extras, shared, cotangent)


def _sweep_as_given(static, hidden, weight, bias, row_extras, shared, cotangent):
    row_fn, params, size = static.row_fn, static.params, static.chunk_size
    n = hidden.shape[0]
    num_chunks = -(-n // size)
    xs = chunked((hidden, row_extras), num_chunks, size)

    def rows_of(h_c, ex_c):
        # Always `(values, aux)`; aux is () without `has_aux`.
        if static.has_aux:
            return lambda z: row_fn(params, z, ex_c, shared)
        return lambda z: (row_fn(params, z, ex_c, shared), ())

    def merged(tree):
        return jax.tree_util.tree_map(lambda x: unchunked(x, n), tree)

    if cotangent is None:
        if num_chunks == 1:
            # No scan of one step: at 512 x 128 x 8192 float32 the fused GRPO
            # forward took 40.0 ms instead of 41.9 (median of 40, throwaway A/B).
            return rows_of(hidden, row_extras)(head_logits(hidden, weight, bias))

        def value_step(_, x):
            h_c, ex_c = x
            return None, rows_of(h_c, ex_c)(head_logits(h_c, weight, bias))

        _, (values, aux) = jax.lax.scan(value_step, None, xs)
        return merged(values), merged(aux)

    acc = compute_dtype(weight.dtype)

    def chunk_grads(h_c, ex_c, ct_c):
        """One chunk's values, aux, `d hidden` and `d logits` (f32 and in the head's dtype)."""
        values, pullback, aux = jax.vjp(rows_of(h_c, ex_c), head_logits(h_c, weight, bias), has_aux=True)
        # A cotangent must have its values' mesh type: row weights made from no
        # mask are the same on every device, the values of data-split rows are not.
        (ct_c,) = same_varying((ct_c.astype(acc),), tuple(varying_axes(values)))
        (g,) = pullback(ct_c)
        g_in = g.astype(weight.dtype)
        d_h = jnp.dot(g_in, weight.T, preferred_element_type=acc).astype(hidden.dtype)
        return values, aux, d_h, g, g_in

    if num_chunks == 1:
        # One chunk: `d weight` is one matmul written straight to its output. A
        # scan's zero-filled accumulator would add two passes over the D x V
        # gradient (at 32 x 128 x 262144 that is 256 MiB of traffic per step).
        values, aux, d_hidden, g, g_in = chunk_grads(hidden, row_extras, cotangent)
        d_weight = jnp.dot(transposed(hidden), g_in, preferred_element_type=acc)
        d_bias = None if bias is None else jnp.sum(g, axis=0)
    else:

        def grad_step(carry, x):
            d_weight, d_bias = carry
            (h_c, ex_c), ct_c = x
            values, aux, d_h, g, g_in = chunk_grads(h_c, ex_c, ct_c)
            d_weight = accumulate_outer(d_weight, transposed(h_c), g_in)
            if d_bias is not None:
                d_bias = d_bias + jnp.sum(g, axis=0)
            return (d_weight, d_bias), (values, aux, d_h)

        # zeros_like: sharded, the accumulators vary over the mesh axis like the head itself.
        init = (jnp.zeros_like(weight, acc), None if bias is None else jnp.zeros_like(bias, acc))
        cts = chunked(cotangent, num_chunks, size)
        (d_weight, d_bias), (values, aux, d_hidden) = jax.lax.scan(grad_step, init, (xs, cts))
        values, aux, d_hidden = merged(values), merged(aux), unchunked(d_hidden, n)
    d_bias = None if bias is None else d_bias.astype(bias.dtype)
    # Sharded, `d_hidden` is this device's part: `same_varying`'s cast (or,
    # under check_vma=False, shard_map itself) sums it over the class axis.
    grads = (d_hidden, d_weight.astype(weight.dtype), d_bias)
    return (values, aux), grads


def _with_aux(static, result, aux):
    """What the custom VJPs return: `result`, or `(result, aux)` with `has_aux`."""
    return (result, aux) if static.has_aux else result


def _primal_cotangent(static, cotangent):
    """The cotangent of the loss values alone (the aux outputs carry no gradient)."""
    return cotangent[0] if static.has_aux else cotangent


def head_rows(static, hidden, weight, bias, row_extras, shared):
    """Per-row values `row_fn(params, hidden @ weight + bias, ...)` computed chunk by chunk.

    `static` is a `Head`. Gradients flow to
    `hidden`, `weight` and `bias` only. With `static.has_aux`, returns
    `(values, aux)`. Inside `shard_map` the three operands are first cast
    to one mesh type (`same_varying`), which sums each gradient over the
    devices it was replicated on.
    """
    hidden, weight, bias = same_varying((hidden, weight, bias), static.axis_name)
    return _head_rows(static, hidden, weight, bias, row_extras, shared)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _head_rows(static, hidden, weight, bias, row_extras, shared):
    return _with_aux(static, *_sweep(static, hidden, weight, bias, row_extras, shared, None))


def _head_rows_fwd(static, hidden, weight, bias, row_extras, shared):
    out = _with_aux(static, *_sweep(static, hidden, weight, bias, row_extras, shared, None))
    # Residuals are the inputs themselves: nothing N x V, nothing new.
    return out, (hidden, weight, bias, row_extras, shared)


def _head_rows_bwd(static, residuals, cotangent):
    hidden, weight, bias, row_extras, shared = residuals
    cotangent = _primal_cotangent(static, cotangent)
    _, grads = _sweep(static, hidden, weight, bias, row_extras, shared, cotangent)
    return grads + _no_grad(row_extras, shared)


def _no_grad(*trees):
    return jax.tree_util.tree_map(lambda _: None, trees)


_head_rows.defvjp(_head_rows_fwd, _head_rows_bwd)


def head_total(static, hidden, weight, bias, row_extras, shared, row_weights):
    """`sum_n row_weights[n] * values[n]` of `head_rows`, for scalar losses.

    Because the output is a scalar, the gradient for a unit cotangent is
    computed during the forward sweep itself (Liger-Kernel's trick) and merely
    scaled in the backward pass: the forward + backward pass costs three
    matmuls, as for materialised logits, instead of four. `row_weights`
    (mask and normalisation) receive no gradient. With `static.has_aux`,
    returns `(total, aux)`. Sharded, the operands are cast as in `head_rows`.
    """
    hidden, weight, bias = same_varying((hidden, weight, bias), static.axis_name)
    return _head_total(static, hidden, weight, bias, row_extras, shared, row_weights)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _head_total(static, hidden, weight, bias, row_extras, shared, row_weights):
    values, aux = _sweep(static, hidden, weight, bias, row_extras, shared, None)
    return _with_aux(static, weighted_sum(values, row_weights), aux)


def _head_total_fwd(static, hidden, weight, bias, row_extras, shared, row_weights):
    (values, aux), grads = _sweep(static, hidden, weight, bias, row_extras, shared, row_weights)
    return _with_aux(static, weighted_sum(values, row_weights), aux), grads


def _head_total_bwd(static, grads, cotangent):
    cotangent = _primal_cotangent(static, cotangent)
    # Under value_and_grad the cotangent is the literal 1.0 and XLA drops the
    # multiply, so the weight gradient is written once, straight into the output.
    scaled = jax.tree_util.tree_map(lambda g: (cotangent.astype(g.dtype) * g), grads)
    return scaled + (None, None, None)


_head_total.defvjp(_head_total_fwd, _head_total_bwd)


def row_weights_of(reduction, token_shape, where, counts, dtype):
    """`example_weights` of the flattened rows, reduced as if they had `token_shape`.

    `where` and `counts` are `[N]` (or None). Only `"batchmean"` depends on
    the shape: the sum divided by `token_shape[0]`, the batch size of a
    `[B, T]` token grid, as the unfused loss on `[B, T, V]` logits divides.
    """
    n = math.prod(token_shape)
    shaped = lambda a: None if a is None else a.reshape(token_shape)
    return example_weights(reduction, token_shape, shaped(where), shaped(counts), dtype).reshape(n)


def head_loss(static, hidden, weight, bias, row_extras, shared, reduction, where, counts=None, token_shape=None):
    """A fused head loss reduced like [jaxkl.reduce][] with `where` (`counts`: see `example_weights`).

    Scalar reductions take the three-matmul `head_total` path; `"none"`
    returns per-row values through `head_rows` (four matmuls, since the
    per-row cotangent is only known in the backward pass). With
    `static.has_aux`, returns `(loss, aux)` (aux per row, unreduced).
    `token_shape`: the shape the `N` rows were flattened from (default `(N,)`),
    which sets `"batchmean"`'s divisor (see `row_weights_of`).
    """
    if reduction == "none":
        out = head_rows(static, hidden, weight, bias, row_extras, shared)
        values, aux = out if static.has_aux else (out, None)
        return _with_aux(static, reduce(values, "none", where=where), aux)
    dtype = compute_dtype(hidden.dtype)
    token_shape = (hidden.shape[0],) if token_shape is None else token_shape
    row_weights = row_weights_of(reduction, token_shape, where, counts, dtype)
    return head_total(static, hidden, weight, bias, row_extras, shared, row_weights)


class CrossEntropyOptions(NamedTuple):
    """The static options of the fused cross-entropy's rows."""

    ignore_index: int | None
    label_smoothing: float
    z_loss: float
    softcap: float | None = None
    return_aux: bool = False
    axis_name: Any = None


def _cross_entropy_rows(options, logits, row_extras, class_weight):
    """`label_cross_entropy` of one chunk of float32 logits [C, V]: the unfused loss's own rows.

    With `return_aux`, also `label_aux_rows` of the same chunk (no second
    matmul, no second pass over the head).
    """
    labels, where = row_extras
    values, valid, wy = label_cross_entropy(
        logits,
        labels,
        axis=1,
        weight=class_weight,
        ignore_index=options.ignore_index,
        label_smoothing=options.label_smoothing,
        z_loss=options.z_loss,
        where=where,
        softcap=options.softcap,
        axis_name=options.axis_name,
    )
    if not options.return_aux:
        return values
    aux = label_aux_rows(
        logits, labels, valid, wy, axis=1, z_loss=options.z_loss, softcap=options.softcap, axis_name=options.axis_name
    )
    return values, aux


def _tiled_loss(
    options, chunk_size, tile, hidden, weight, bias, labels, class_weight, reduction, counted, counts, token_shape
):
    """The class-tiled path of `fused_linear_cross_entropy`: `(loss, aux rows or None)`."""
    n, v = hidden.shape[0], weight.shape[1]
    acc = compute_dtype(hidden.dtype)
    eps = options.label_smoothing
    label_options = LabelOptions(1, None, 1.0 - eps, eps / v if v else 0.0, options.z_loss)
    idx, wy = label_weights(labels, class_weight, v)
    class_weight = jnp.ones((v,), acc) if class_weight is None else class_weight
    extras = (idx, wy.astype(acc), counted, class_weight)
    values, (lse, predicted) = tiled_cross_entropy_rows(
        label_options, options.softcap, chunk_size, tile, hidden, weight, bias, extras
    )
    if reduction == "none":
        loss = reduce(values, "none", where=counted)
    else:
        loss = weighted_sum(values, row_weights_of(reduction, token_shape, counted, counts, acc))
    if not options.return_aux:
        return loss, None
    return loss, aux_rows_from(lse, predicted, labels, counted, wy, options.z_loss)


def next_token_labels(labels: jax.Array, where: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """Labels shifted by one along their last axis and the mask that drops the last position.

    Position t is scored against label t + 1; the last position has no next
    label and counts as masked. Only the labels move: `hidden` is not sliced or copied.
    """
    fill = jnp.zeros(labels.shape[:-1] + (min(1, labels.shape[-1]),), labels.dtype)
    shifted = jnp.concatenate([labels[..., 1:], fill], axis=-1)
    t = labels.shape[-1]
    has_next = jax.lax.broadcasted_iota(jnp.int32, labels.shape, labels.ndim - 1) < t - 1
    return shifted, has_next if where is None else has_next & where


def fused_linear_cross_entropy(
    hidden: ArrayLike,
    head_weight: ArrayLike,
    labels: ArrayLike,
    *,
    head_bias: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
    where: ArrayLike | None = None,
    check: bool = False,
    chunk_size: int | None = None,
    softcap: float | None = None,
    return_aux: bool = False,
    shift: bool = False,
    vocab_chunk_size: int | None = None,
    axis_name: Any = None,
) -> jax.Array | tuple[jax.Array, CrossEntropyAux]:
    r"""Cross-entropy of a linear head, `cross_entropy_loss(hidden @ head_weight + head_bias, labels)`, fused.

    $$
    z_n = h_n W + b, \qquad
    \ell_n = (1-\varepsilon)\, w_{y_n} (\operatorname{lse}(z_n) - z_{n, y_n})
    + \tfrac{\varepsilon}{V} \textstyle\sum_c w_c (\operatorname{lse}(z_n) - z_{n,c})
    + \lambda_z w_{y_n} \operatorname{lse}(z_n)^2
    $$

    Every option means what it means in [jaxkl.cross_entropy_loss][] (and
    PyTorch's `F.cross_entropy`): `weight` are class weights, `"mean"` is
    PyTorch's weighted mean `sum(l) / sum(w_y)`; the per-row loss is the
    same function, applied chunk by chunk. But the N x V logits are never
    formed: rows are processed `chunk_size` at a time inside `lax.scan` and
    the backward pass recomputes each chunk's logits, so peak temporary memory
    is a few `chunk_size x V` blocks plus one float32 `head_weight`-sized
    accumulator. The matmuls run in the input dtype (bf16 stays bf16) with
    float32 accumulation; softmax statistics are float32. Gradients flow to
    `hidden`, `head_weight` and `head_bias`; class weights get none.

    Examples with `labels == ignore_index` contribute 0 and are not counted
    by `"mean"`; `where=False` excludes an example the same way. Labels
    outside `[0, V)` (other than `ignore_index`) give NaN for that example
    — never a wrapped index — and no gradient.

    `hidden` may have any leading shape (`[B, T, D]`: tokens are flattened
    by a reshape, not a copy). With `shift=True` (next-token prediction),
    position `t` is scored against label `t + 1` along the last axis of
    `labels` (the second-to-last of `hidden`); the last position has no
    next label and counts as masked. Only the labels move.

    Args:
      hidden: `[..., D]` floating point (e.g. the final hidden states).
      head_weight: `[D, V]` head matrix (note: `D` first, as in `hidden @ head_weight`).
      labels: integer class indices, shape `hidden.shape[:-1]`.
      head_bias: optional `[V]` head bias.
      weight: optional `[V]` class weights (constants: no gradient), as in
        [jaxkl.cross_entropy_loss][].
      ignore_index: a label value whose examples are ignored (PyTorch's -100 convention), or None.
      label_smoothing: `eps` in `[0, 1]`; `eps / V` of the target mass on every class.
      z_loss: coefficient of `lse(z)^2` added per example (PaLM's z-loss), `>= 0`.
      reduction: `"none"`, `"sum"`, `"mean"` (PyTorch's weighted mean over
        counted examples) or `"batchmean"` (the sum divided by `hidden.shape[0]`:
        `N` for `[N, D]`, the batch size `B` for `[B, T, D]`, as
        [jaxkl.cross_entropy_loss][] divides on `[B, T, V]` logits).
      where: optional boolean mask of examples to include, broadcastable to `labels`.
      check: add a `checkify` check that the labels are in range.
      chunk_size: rows per chunk; `None` picks about `2**22 / V` rows
        (16 MiB of float32 logits per chunk), but at least 256 while a chunk
        stays within `2**24` logits (narrower matmuls run slower on CPU).
      softcap: None, or `c > 0`: the logits become $c \tanh(z / c)$
        (Gemma 2's logit soft-capping) before everything else, with the
        exact gradient, as in [jaxkl.cross_entropy_loss][].
      return_aux: also return a [jaxkl.CrossEntropyAux][] (per-token
        log-normaliser, arg-max, correctness and the reduced z-loss term),
        computed inside the same chunk sweep: no second pass over the head.
      shift: score position `t` against label `t + 1` (see above).
      vocab_chunk_size: classes per tile. With a tile size, each chunk of
        tokens walks over the classes a tile at a time, keeping an online
        log-sum-exp per token, and the backward pass recomputes each tile
        once: a chunk can hold many tokens whatever `V`, so the head matrix
        is read `O(N / chunk_size)` times per pass (four matmuls per step
        instead of three). `None` tiles from `V = 65,536`
        up and not below, by about `2**22 / D` classes (between 1,024 and
        16,384; 4,096 at `D = 1024`), unless all the tokens fit in one
        untiled chunk (which reads the head once anyway); `chunk_size=None`
        then picks about `2**22 / tile` tokens.
      axis_name: inside `shard_map`, the mesh axis over which the classes
        are split: `head_weight[:, V_local]`, `head_bias[V_local]` and class
        `weight[V_local]` are this device's slice, `labels` are global class
        ids, as in [jaxkl.cross_entropy_loss][]. Row statistics cross devices
        as O(N) scalars (max, sums, label logit) and `d hidden` is one `psum`
        of `[N, D]`; neither the head nor the logits are gathered. (No class
        tiles within a device's slice.) The tokens may be split over another
        mesh axis as well (`hidden` `P("data", None)`, `head_weight`
        `P(None, "model")` on a `(data, model)` mesh): `d head_weight` is then
        summed over `"data"`. Correct under `shard_map`'s `check_vma=True`
        (the default) and `False`. None: unsharded.

    Returns:
      A scalar, or `labels.shape` for `reduction="none"` (0 for excluded
      examples), in the dtype of `hidden`/`head_weight`. With `return_aux`,
      the pair `(loss, aux)`.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxkl
      >>> h = jnp.ones((4, 3)); w = jnp.zeros((3, 5)).at[0, 1].set(1.0)
      >>> print(jaxkl.fused_linear_cross_entropy(h, w, jnp.array([1, 1, 0, -100]),
      ...                                        ignore_index=-100, chunk_size=2).round(4))
      1.2382
      >>> g = jax.grad(jaxkl.fused_linear_cross_entropy, argnums=1)(h, w, jnp.array([1, 2, 3, 4]))
      >>> print(g.shape)
      (3, 5)
      >>> # Next-token loss on [B, T, D] hidden states, with a cap and the aux outputs:
      >>> # each row scores log(4 + e^z) - z with z = 30 tanh(1/30) at position 0 only.
      >>> loss, aux = jaxkl.fused_linear_cross_entropy(
      ...     h.reshape(2, 2, 3), w, jnp.array([[0, 1], [0, 1]]), shift=True, softcap=30.0, return_aux=True)
      >>> print(loss.round(4), aux.predicted, aux.correct)
      0.9051 [[1 1]
       [1 1]] [[ True False]
       [ True False]]

    References:
      Hsu et al., "Liger Kernel: Efficient Triton Kernels for LLM Training" (2024).
      Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models" (2024).
      Chowdhery et al., "PaLM" (2022), for the z-loss.
    """
    hidden = _validate.float_array(hidden, "hidden")
    if hidden.ndim < 1 + bool(shift):
        raise ValueError(f"hidden must be [..., D]{' with a position axis for shift=True' if shift else ''}, "
                         f"got hidden.shape={hidden.shape}")
    token_shape = hidden.shape[:-1]
    labels = _validate.labels(labels, token_shape, "hidden.shape[:-1]")
    where = _validate.mask(where, token_shape)
    if shift:
        labels, where = next_token_labels(labels, where)
    # Tokens flattened: a reshape of the leading axes, not a copy. Their count is spelled
    # out: `-1` cannot be inferred from a zero-sized array (`D = 0`).
    hidden = hidden.reshape(math.prod(token_shape), hidden.shape[-1])
    hidden, head_weight, head_bias = _validate.linear_head(hidden, head_weight, head_bias)
    n, v = hidden.shape[0], head_weight.shape[1]
    labels = labels.reshape(n)
    where = None if where is None else jnp.broadcast_to(where, token_shape).reshape(n)
    reduction = _validate.reduction(reduction)
    ignore_index = _validate.optional_int(ignore_index, "ignore_index")
    z_loss = _validate.nonnegative(z_loss, "z_loss")
    options = CrossEntropyOptions(
        ignore_index,
        _validate.unit_interval(label_smoothing, "label_smoothing"),
        z_loss,
        _validate.softcap(softcap),
        bool(return_aux),
        _validate.axis_name(axis_name),
    )
    axis_name = options.axis_name
    acc = compute_dtype(hidden.dtype)
    if weight is not None:
        weight = class_weights(weight, v, f"head_weight.shape[1] = {v}", axis_name).astype(acc)
    if check:
        classes = v * (1 if axis_name is None else jax.lax.axis_size(axis_name))
        _checks.labels(labels, classes, ignore_index, where)
    counted = counted_examples(labels, ignore_index, where)
    counts = None if weight is None else label_weights(labels, weight, v, axis_name)[1]
    tile = class_tile(vocab_chunk_size, chunk_size, n, v, hidden.shape[1], axis_name)
    if tile is None:
        rows = chunk_rows(chunk_size, n, v, hidden.shape[1])
        static = Head(_cross_entropy_rows, options, rows, options.return_aux, axis_name)
        out = head_loss(
            static, hidden, head_weight, head_bias, (labels, where), weight, reduction, counted, counts, token_shape
        )
        loss, aux_rows = out if return_aux else (out, None)
    else:
        loss, aux_rows = _tiled_loss(
            options, chunk_rows(chunk_size, n, tile, hidden.shape[1]), tile,
            hidden, head_weight, head_bias, labels, weight, reduction, counted, counts, token_shape,
        )
    loss = loss.astype(hidden.dtype)
    if reduction == "none":
        loss = loss.reshape(token_shape)
    if aux_rows is None:
        return loss
    # The z-loss term is reduced like the loss, by the unfused loss's own reduction, on
    # the token shape (so "batchmean" divides by its first axis, as the unfused loss does).
    wy = jnp.ones((n,), acc) if counts is None else counts
    shaped = lambda a: None if a is None else a.reshape(token_shape)
    return loss, label_aux(tuple(map(shaped, aux_rows)), shaped(counted), shaped(wy), reduction, weight is not None)
