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
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _checks, _validate
from ._chunks import chunked, unchunked
from ._cross_entropy_loss import class_weights, counted_examples, label_cross_entropy, label_weights
from ._reductions import example_weights, reduce, weighted_sum
from ._rowwise import compute_dtype

# Rows per chunk when chunk_size=None: chosen so that one chunk of float32
# logits holds about 2**22 elements (16 MiB). See bench/fused_linear.py and
# docs/large-vocabularies.md for the sweep this comes from.
DEFAULT_CHUNK_ELEMENTS = 2**22


class Head(NamedTuple):
    """The static part of a fused head loss (hashable).

    `row_fn(params, logits_chunk, row_extras_chunk, shared)` maps one chunk
    of float32 logits `[C, V]` to its per-row values `[C]`.
    """

    row_fn: Callable[..., jax.Array]
    params: Any
    chunk_size: int


def default_chunk_size(num_rows: int, num_classes: int, hidden_size: int = 0) -> int:
    """Rows per chunk so that one chunk of logits has ~`DEFAULT_CHUNK_ELEMENTS`."""
    rows = max(1, DEFAULT_CHUNK_ELEMENTS // max(num_classes, 1))
    if rows < hidden_size and num_rows <= 2 * rows:
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


def head_logits(h: jax.Array, weight: jax.Array, bias: jax.Array | None) -> jax.Array:
    """One chunk of logits, matmul in the input dtype with float32 accumulation."""
    z = jnp.dot(h, weight, preferred_element_type=compute_dtype(weight.dtype))
    return z if bias is None else z + bias.astype(z.dtype)[None, :]


def _accumulate_outer(total: jax.Array, h: jax.Array, g: jax.Array) -> jax.Array:
    """`total + h.T @ g` ([D, V]) one block of classes at a time.

    XLA on CPU does not fuse the add into the matmul, so `h.T @ g` in one go
    would be a fresh weight-sized temporary on every step. Updating `total`
    block by block in place keeps the temporary at `D x block`, with the
    block sized like one chunk of logits (`C x V` elements).
    """
    d, v = total.shape
    block = min(v, max(1, g.size // max(d, 1)))

    def update(start, size, total):
        g_block = jax.lax.dynamic_slice_in_dim(g, start, size, axis=1)
        part = jax.lax.dynamic_slice_in_dim(total, start, size, axis=1)
        part = part + jnp.dot(h.T, g_block, preferred_element_type=total.dtype)
        return jax.lax.dynamic_update_slice_in_dim(total, part, start, axis=1)

    full = v // block
    if full == 1 and v == block:
        return update(0, v, total)
    total = jax.lax.fori_loop(0, full, lambda j, t: update(j * block, block, t), total)
    if v % block:
        total = update(full * block, v % block, total)
    return total


def _sweep(static, hidden, weight, bias, row_extras, shared, cotangent):
    """Per-row values and, if `cotangent` is given, the VJP wrt hidden/weight/bias."""
    row_fn, params, size = static.row_fn, static.params, static.chunk_size
    n = hidden.shape[0]
    num_chunks = -(-n // size)
    xs = chunked((hidden, row_extras), num_chunks, size)

    def rows_of(h_c, ex_c):
        return lambda z: row_fn(params, z, ex_c, shared)

    if cotangent is None:

        def value_step(_, x):
            h_c, ex_c = x
            return None, rows_of(h_c, ex_c)(head_logits(h_c, weight, bias))

        _, values = jax.lax.scan(value_step, None, xs)
        return unchunked(values, n)

    acc = compute_dtype(weight.dtype)

    def grad_step(carry, x):
        d_weight, d_bias = carry
        (h_c, ex_c), ct_c = x
        values, pullback = jax.vjp(rows_of(h_c, ex_c), head_logits(h_c, weight, bias))
        (g,) = pullback(ct_c.astype(acc))
        g_in = g.astype(weight.dtype)
        d_h = jnp.dot(g_in, weight.T, preferred_element_type=acc).astype(hidden.dtype)
        d_weight = _accumulate_outer(d_weight, h_c, g_in)
        if d_bias is not None:
            d_bias = d_bias + jnp.sum(g, axis=0)
        return (d_weight, d_bias), (values, d_h)

    init = (jnp.zeros(weight.shape, acc), None if bias is None else jnp.zeros(bias.shape, acc))
    cts = chunked(cotangent, num_chunks, size)
    (d_weight, d_bias), (values, d_hidden) = jax.lax.scan(grad_step, init, (xs, cts))
    d_bias = None if bias is None else d_bias.astype(bias.dtype)
    grads = (unchunked(d_hidden, n), d_weight.astype(weight.dtype), d_bias)
    return unchunked(values, n), grads


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def head_rows(static, hidden, weight, bias, row_extras, shared):
    """Per-row values `row_fn(params, hidden @ weight + bias, ...)` computed chunk by chunk.

    `static` is a `Head`. Gradients flow to
    `hidden`, `weight` and `bias` only.
    """
    return _sweep(static, hidden, weight, bias, row_extras, shared, None)


def _head_rows_fwd(static, hidden, weight, bias, row_extras, shared):
    values = _sweep(static, hidden, weight, bias, row_extras, shared, None)
    # Residuals are the inputs themselves: nothing N x V, nothing new.
    return values, (hidden, weight, bias, row_extras, shared)


def _head_rows_bwd(static, residuals, cotangent):
    hidden, weight, bias, row_extras, shared = residuals
    _, grads = _sweep(static, hidden, weight, bias, row_extras, shared, cotangent)
    return grads + _no_grad(row_extras, shared)


def _no_grad(*trees):
    return jax.tree_util.tree_map(lambda _: None, trees)


head_rows.defvjp(_head_rows_fwd, _head_rows_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def head_total(static, hidden, weight, bias, row_extras, shared, row_weights):
    """`sum_n row_weights[n] * values[n]` of `head_rows`, for scalar losses.

    Because the output is a scalar, the gradient for a unit cotangent is
    computed during the forward sweep itself (Liger-Kernel's trick) and merely
    scaled in the backward pass: the forward + backward pass costs three
    matmuls, as for materialised logits, instead of four. `row_weights`
    (mask and normalisation) receive no gradient.
    """
    values = _sweep(static, hidden, weight, bias, row_extras, shared, None)
    return weighted_sum(values, row_weights)


def _head_total_fwd(static, hidden, weight, bias, row_extras, shared, row_weights):
    values, grads = _sweep(static, hidden, weight, bias, row_extras, shared, row_weights)
    return weighted_sum(values, row_weights), grads


def _head_total_bwd(static, grads, cotangent):
    # Under value_and_grad the cotangent is the literal 1.0 and XLA drops the
    # multiply, so the weight gradient is written once, straight into the output.
    scaled = jax.tree_util.tree_map(lambda g: (cotangent.astype(g.dtype) * g), grads)
    return scaled + (None, None, None)


head_total.defvjp(_head_total_fwd, _head_total_bwd)


def head_loss(static, hidden, weight, bias, row_extras, shared, reduction, where, counts=None):
    """A fused head loss reduced like [jaxkl.reduce][] with `where` (`counts`: see `example_weights`).

    Scalar reductions take the three-matmul `head_total` path; `"none"`
    returns per-row values through `head_rows` (four matmuls, since the
    per-row cotangent is only known in the backward pass).
    """
    if reduction == "none":
        values = head_rows(static, hidden, weight, bias, row_extras, shared)
        return reduce(values, "none", where=where)
    dtype = compute_dtype(hidden.dtype)
    row_weights = example_weights(reduction, (hidden.shape[0],), where, counts, dtype)
    return head_total(static, hidden, weight, bias, row_extras, shared, row_weights)


def _cross_entropy_rows(options, logits, row_extras, class_weight):
    """`label_cross_entropy` of one chunk of float32 logits [C, V]: the unfused loss's own rows."""
    ignore_index, label_smoothing, z_loss = options
    labels, where = row_extras
    values, _, _ = label_cross_entropy(
        logits,
        labels,
        axis=1,
        weight=class_weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        where=where,
    )
    return values


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
) -> jax.Array:
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

    Args:
      hidden: `[N, D]` floating point (e.g. the final hidden states, tokens flattened).
      head_weight: `[D, V]` head matrix (note: `D` first, as in `hidden @ head_weight`).
      labels: `[N]` integer class indices.
      head_bias: optional `[V]` head bias.
      weight: optional `[V]` class weights (constants: no gradient), as in
        [jaxkl.cross_entropy_loss][].
      ignore_index: a label value whose examples are ignored (PyTorch's -100 convention), or None.
      label_smoothing: `eps` in `[0, 1]`; `eps / V` of the target mass on every class.
      z_loss: coefficient of `lse(z)^2` added per example (PaLM's z-loss), `>= 0`.
      reduction: `"none"`, `"sum"`, `"mean"` (PyTorch's weighted mean over
        counted examples) or `"batchmean"` (sum / N).
      where: optional boolean `[N]` mask of examples to include.
      check: add a `checkify` check that the labels are in range.
      chunk_size: rows per chunk; `None` picks about `2**22 / V` rows
        (16 MiB of float32 logits per chunk).

    Returns:
      A scalar, or `[N]` for `reduction="none"` (0 for excluded examples),
      in the dtype of `hidden`/`head_weight`.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxkl
      >>> h = jnp.ones((4, 3)); w = jnp.zeros((3, 5)).at[0, 1].set(1.0)
      >>> print(jaxkl.fused_linear_cross_entropy(h, w, jnp.array([1, 1, 0, -100]),
      ...                                        ignore_index=-100, chunk_size=2).round(4))
      1.2382
      >>> g = jax.grad(jaxkl.fused_linear_cross_entropy, argnums=1)(h, w, jnp.array([1, 2, 3, 4]))
      >>> print(g.shape)
      (3, 5)

    References:
      Hsu et al., "Liger Kernel: Efficient Triton Kernels for LLM Training" (2024).
      Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models" (2024).
      Chowdhery et al., "PaLM" (2022), for the z-loss.
    """
    hidden, head_weight, head_bias = _validate.linear_head(hidden, head_weight, head_bias)
    n, v = hidden.shape[0], head_weight.shape[1]
    labels = _validate.labels(labels, (n,), "hidden.shape[:1]")
    reduction = _validate.reduction(reduction)
    where = _validate.mask(where, (n,))
    ignore_index = _validate.optional_int(ignore_index, "ignore_index")
    options = (
        ignore_index,
        _validate.unit_interval(label_smoothing, "label_smoothing"),
        _validate.nonnegative(z_loss, "z_loss"),
    )
    acc = compute_dtype(hidden.dtype)
    if weight is not None:
        weight = class_weights(weight, v, f"head_weight.shape[1] = {v}").astype(acc)
    if check:
        _checks.labels(labels, v, ignore_index)
    static = Head(_cross_entropy_rows, options, chunk_rows(chunk_size, n, v, hidden.shape[1]))
    counted = counted_examples(labels, ignore_index, where)
    counts = None if weight is None else label_weights(labels, weight, v)[1]
    loss = head_loss(static, hidden, head_weight, head_bias, (labels, where), weight, reduction, counted, counts)
    return loss.astype(hidden.dtype)
