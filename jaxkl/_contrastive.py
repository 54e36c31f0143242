"""InfoNCE (CLIP) loss over tiles of the similarity matrix, never holding N x N.

For paired embeddings `x[N, D]`, `y[N, D]` the loss needs, per pair, the
log-normaliser of row `i` of `S = x @ y.T / T` and (symmetric) of column
`i`. Here `S` is formed one strip of `chunk` rows at a time: each strip is
reduced to its row and column log-sum-exps, merged into running values with
`logaddexp` (an online log-sum-exp), and dropped. The derivative keeps only
the inputs and the two `[N]` log-normalisers; the backward pass recomputes
each strip and turns it straight into `d x`, `d y` and `d (1 / T)`.
Unsharded it is a `jax.custom_jvp` (`unsharded_pair_losses`), whose
strip-by-strip tangent map reverse mode transposes, so `jax.jvp` and
`jacfwd` work as well; the sharded ring keeps a `jax.custom_vjp`
(`pair_losses`, reverse mode only).

With `axis_name` the batch is sharded: each device keeps its `x` rows and
passes its `y` block (with the column statistics that belong to it) around a
ring with `lax.ppermute`, so after one turn every row has met every column
and each block is back home with its column log-normalisers complete; the
backward pass sends the block's `d y` around the same ring. Nothing larger
than a `[N / devices, D]` block ever crosses devices.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from . import _validate
from ._chunks import chunked, unchunked
from ._reductions import reduce
from ._rowwise import compute_dtype, log_normalizer, log_probs, logsumexp_of
from ._softmax import logsumexp

# Float32 elements of one strip of the similarity matrix when chunk_size=None:
# 2 MiB. The backward pass holds about two strips at once, so at N = 16384
# (32 rows a strip) the compiled temporaries stay far below 2% of one N x N
# array (see bench/contrastive.py).
TILE_ELEMENTS = 2**19


class _Static(NamedTuple):
    chunk: int  # rows of x per strip
    symmetric: bool  # whether the column log-normalisers are needed
    axis_name: Any  # mesh axis the batch is sharded over, or None


def default_chunk_size(num_rows: int, num_columns: int) -> int:
    """Rows per strip so that one strip holds about `TILE_ELEMENTS` float32 values."""
    rows = max(8, TILE_ELEMENTS // max(num_columns, 1))
    return int(min(rows - rows % 8, max(num_rows, 1)))


def _strip(x_c, w_c, y_blk, w_blk, inv_tau):
    """One strip of logits `x_c @ y_blk.T / T` (float32), pairs masked out at -inf (masks None: none)."""
    # `x_c @ y_blk.T` spelled with contracting dimensions: differentiated in
    # forward mode, the transpose of the loop-invariant `y_blk` would be hoisted
    # out of the loop as an N x D copy (XLA folds either spelling into the dot).
    dims = (((1,), (1,)), ((), ()))
    s = jax.lax.dot_general(x_c, y_blk, dims, preferred_element_type=compute_dtype(x_c.dtype)) * inv_tau
    return s if w_c is None else jnp.where(w_c[:, None] & w_blk[None, :], s, -jnp.inf)


def _lse(s, axis):
    return jnp.squeeze(logsumexp_of(log_normalizer(s, axis)), axis)


def _probabilities(s, lse, axis):
    """`exp(s - lse)` along `axis`, 0 (not NaN) in an all-masked line whose lse is -inf."""
    return jnp.exp(log_probs(s, (0.0, jnp.expand_dims(lse, axis))))


def _ring(axis_name, tree):
    """Pass `tree` to the next device of the ring (a no-op without `axis_name`)."""
    if axis_name is None:
        return tree
    size = jax.lax.axis_size(axis_name)
    perm = [(i, (i + 1) % size) for i in range(size)]
    return jax.tree_util.tree_map(lambda a: jax.lax.ppermute(a, axis_name, perm), tree)


def _varying(a, axis_name):
    """`a` marked as differing across `axis_name` (shard_map's type), so the ring can carry it.

    A replicated value (a shared temperature, a mask made here) is cast once;
    its gradient is then summed over devices by the cast's own transpose.
    """
    manual = getattr(jax.typeof(a), "manual_axis_type", None)
    if axis_name is None or manual is None or axis_name in manual.varying:
        return a
    return jax.lax.pcast(a, axis_name, to="varying")


def _around_the_ring(axis_name, step, carry):
    """`step(carry, home)` once per device of the ring; `home`: the block is this device's own.

    Unsharded it runs once, with no loop: a loop of one step would keep its
    carry (`d x`, the size of `x`) in a second buffer.
    """
    if axis_name is None:
        return step(carry, True)
    homes = jnp.arange(jax.lax.axis_size(axis_name)) == 0
    return jax.lax.scan(lambda c, home: (step(c, home), None), carry, homes)[0]


def _strips(static, *arrays):
    """The leading axis of each array split into strips of `static.chunk` (zero-padded)."""
    n = arrays[0].shape[0]
    return chunked(arrays, -(-n // static.chunk), static.chunk)


def _forward(static, x, y, kept, inv_tau):
    """Per local pair the log-normalisers `(lse_j S_ij, lse_j S_ji)` (the second only if symmetric)."""
    acc = compute_dtype(x.dtype)
    strips = _strips(static, x, kept)
    row_lse = _varying(jnp.full(strips[1].shape, -jnp.inf, acc), static.axis_name)
    col_lse = _varying(jnp.full(y.shape[:1], -jnp.inf, acc), static.axis_name)

    def step(carry, home):
        row_lse, (y_blk, w_blk, col_lse) = carry

        def strip(col_lse, inputs):
            x_c, w_c, row_c = inputs
            s = _strip(x_c, w_c, y_blk, w_blk, inv_tau)
            row_c = jnp.logaddexp(row_c, _lse(s, 1))
            if static.symmetric:
                col_lse = jnp.logaddexp(col_lse, _lse(s, 0))
            return col_lse, row_c

        col_lse, row_lse = jax.lax.scan(strip, col_lse, strips + (row_lse,))
        # After a full turn each y block (with its column statistics) is home again.
        return row_lse, _ring(static.axis_name, (y_blk, w_blk, col_lse))

    row_lse, (_, _, col_lse) = _around_the_ring(static.axis_name, step, (row_lse, (y, kept, col_lse)))
    return unchunked(row_lse, x.shape[0]), col_lse


def _backward(static, x, y, kept, inv_tau, row_lse, col_lse, a, b):
    """`(dx, dy, d_inv_tau)` for cotangents `a`, `b` of the two directions' losses.

    With `P` the row softmax and `Q` the column softmax of `S`, the loss's
    derivative is `dS_ij = a_i P_ij + b_j Q_ij - [i = j] (a_i + b_i)`, formed
    strip by strip; `dx = dS @ y / T`, `dy = dS.T @ x / T`, and
    `d(1/T) = sum(dS * x @ y.T) = sum(x * dx) * T`, which needs no second strip.
    """
    acc = compute_dtype(x.dtype)
    strips = _strips(static, x, kept, row_lse, a, a + b)
    starts = jnp.arange(strips[0].shape[0]) * static.chunk

    def step(carry, home):
        dx, x_dot_dx, (y_blk, w_blk, col_blk, b_blk, dy_blk) = carry
        columns = jnp.arange(y_blk.shape[0])

        def strip(carry, inputs):
            dy_blk, x_dot_dx = carry
            x_c, w_c, row_c, a_c, c_c, start = inputs
            s = _strip(x_c, w_c, y_blk, w_blk, inv_tau)
            g = a_c[:, None] * _probabilities(s, row_c, 1)
            if static.symmetric:
                g = g + b_blk[None, :] * _probabilities(s, col_blk, 0)
            # The positives S_ii lie in this strip only while the block is at home.
            diagonal = home & (start + jnp.arange(x_c.shape[0])[:, None] == columns[None, :])
            g_in = (jnp.where(diagonal, g - c_c[:, None], g) * inv_tau).astype(x.dtype)
            dx_c = jnp.dot(g_in, y_blk, preferred_element_type=acc)
            dy_blk = dy_blk + jnp.dot(g_in.T, x_c, preferred_element_type=acc)
            x_dot_dx = x_dot_dx + jnp.einsum("cd,cd->", x_c, dx_c.astype(x.dtype), preferred_element_type=acc)
            return (dy_blk, x_dot_dx), dx_c

        (dy_blk, x_dot_dx), dx_step = jax.lax.scan(strip, (dy_blk, x_dot_dx), strips + (starts,))
        travelling = _ring(static.axis_name, (y_blk, w_blk, col_blk, b_blk, dy_blk))
        return dx + dx_step, x_dot_dx, travelling

    dx, x_dot_dx, dy = (
        _varying(jnp.zeros(shape, acc), static.axis_name) for shape in (strips[0].shape, (), y.shape)
    )
    dx, x_dot_dx, (_, _, _, _, dy) = _around_the_ring(
        static.axis_name, step, (dx, x_dot_dx, (y, kept, col_lse, b, dy))
    )
    d_inv_tau = x_dot_dx / inv_tau
    return unchunked(dx, x.shape[0]).astype(x.dtype), dy.astype(y.dtype), d_inv_tau.astype(inv_tau.dtype)


def _losses(x, y, inv_tau, row_lse, col_lse):
    # A batched dot: `sum(x * y, -1)` writes the N x D product out first on XLA:CPU.
    positives = inv_tau * jnp.einsum("nd,nd->n", x, y, preferred_element_type=row_lse.dtype)
    return row_lse - positives, col_lse - positives


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def pair_losses(static, x, y, kept, inv_tau):
    """The two directions' InfoNCE losses per local pair, `S = x @ y.T * inv_tau`."""
    return _losses(x, y, inv_tau, *_forward(static, x, y, kept, inv_tau))


def _pair_losses_fwd(static, x, y, kept, inv_tau):
    row_lse, col_lse = _forward(static, x, y, kept, inv_tau)
    # Residuals: the inputs and two [N] vectors, nothing N x N.
    return _losses(x, y, inv_tau, row_lse, col_lse), (x, y, kept, inv_tau, row_lse, col_lse)


def _pair_losses_bwd(static, residuals, cotangents):
    dx, dy, d_inv = _backward(static, *residuals, *cotangents)
    return dx, dy, None, d_inv


pair_losses.defvjp(_pair_losses_fwd, _pair_losses_bwd)


def _is_zero(tangent) -> bool:
    return isinstance(tangent, jax.custom_derivatives.SymbolicZero)


def _tangents(static, x, y, kept, inv_tau, row_lse, col_lse, dx, dy, d_inv_tau):
    """Tangents of the two directions' losses (unsharded), strip by strip.

    For tangents `dx`, `dy`, `d(1/T)`, with `P` the row softmax and `Q` the
    column softmax of `S = x @ y.T / T`, the losses `lse - S_ii` move by
    `sum_j P_ij dS_ij - dS_ii` and `sum_j Q_ji dS_ji - dS_ii`, where
    `dS = (dx / T + x d(1/T)) @ y.T + (x @ dy.T) / T`.

    Reverse mode transposes this map, which makes it `_backward` again: per
    strip one matmul for `S`, the cotangent `dS = a P + b Q - [i = j](a + b)`
    and two matmuls for `d x` and `d y` (in the input dtype, `d y` summed
    over strips in float32), the temperature's cotangent from
    `sum(x * d x)`-sized terms (no second strip). Each strip is `jax.checkpoint`ed, so the transpose rebuilds its
    `P` and `Q` from the strip's inputs: nothing N x N is ever stacked, and
    the residuals are the inputs and the two `[N]` log-normalisers. The
    positives are inside the strip (its diagonal) so that the cotangents
    come out of the loop complete. Symbolic-zero tangents (a constant `y` or
    temperature) add no work.
    """
    acc = compute_dtype(x.dtype)
    n = x.shape[0]
    dx = None if _is_zero(dx) else dx.astype(acc)
    dy = None if _is_zero(dy) else dy.astype(acc)
    d_inv_tau = None if _is_zero(d_inv_tau) else d_inv_tau.astype(acc)
    strips = _strips(static, x, kept, row_lse) + ((None,) if dx is None else _strips(static, dx))
    starts = jnp.arange(strips[0].shape[0]) * static.chunk
    columns = jnp.arange(n)

    dims = (((1,), (1,)), ((), ()))
    if jnp.dtype(x.dtype).itemsize >= 4:

        def dot(a, b):  # a @ b.T
            return jax.lax.dot_general(a, b, dims, preferred_element_type=acc)

    else:

        def dot(a, b):
            # a @ b.T with 16-bit operands and a 16-bit product: its transpose
            # then multiplies the 16-bit cotangent strip by `y` and `x`, 16-bit
            # matmuls as in `_backward` (a float32 product would make them
            # float32 matmuls on accelerators). Each strip's `d y` is added
            # to a float32 sum (`dy` enters the loop in float32).
            lo = x.dtype
            return jax.lax.dot_general(a.astype(lo), b.astype(lo), dims, preferred_element_type=lo).astype(acc)

    # Inside a scan the rematerialised strip needs no CSE barrier (`prevent_cse`).
    @functools.partial(jax.checkpoint, prevent_cse=False)
    def strip(col_t, inputs):
        x_c, w_c, row_c, dx_c, start = inputs
        s = _strip(x_c, w_c, y, kept, inv_tau)
        # dS = (u @ y.T + x @ dy.T) / T with u = dx + x T d(1/T): one factor
        # 1 / T on the strip, so the transpose scales one strip, not two.
        moved = dx_c
        if d_inv_tau is not None:
            shift = x_c.astype(acc) * (d_inv_tau / inv_tau)
            moved = shift if moved is None else moved + shift
        terms = [] if moved is None else [dot(moved, y)]
        if dy is not None:
            terms.append(dot(x_c, dy))
        ds = functools.reduce(jnp.add, terms) * inv_tau
        diagonal = start + jnp.arange(x_c.shape[0])[:, None] == columns[None, :]
        d_positive = jnp.where(diagonal, ds, 0.0)
        # Masked pairs have P = Q = 0 and a finite dS: they add nothing.
        row_t = jnp.sum(_probabilities(s, row_c, 1) * ds - d_positive, axis=1)
        if static.symmetric:
            col_t = col_t + jnp.sum(_probabilities(s, col_lse, 0) * ds - d_positive, axis=0)
        return col_t, row_t

    col_t, row_t = jax.lax.scan(strip, jnp.zeros(y.shape[:1], acc), strips + (starts,))
    return unchunked(row_t, n), col_t


def _forward_here(static, x, y, kept, inv_tau):
    """`_forward`, with 16-bit embeddings converted to float32 once on CPU.

    XLA:CPU converts a 16-bit matmul's operands to float32 on every strip; in
    `pair_losses`' forward pass it hoisted `y`'s conversion out of the loop
    by itself, here it did not (bf16, N = 4096, D = 256: ~7% more CPU time
    for value_and_grad), so it is done up front on that backend only.
    """
    if jnp.dtype(x.dtype).itemsize >= 4:
        return _forward(static, x, y, kept, inv_tau)
    acc = compute_dtype(x.dtype)
    return jax.lax.platform_dependent(
        x, y, kept, inv_tau,
        cpu=lambda x, y, kept, inv_tau: _forward(static, x.astype(acc), y.astype(acc), kept, inv_tau),
        default=lambda x, y, kept, inv_tau: _forward(static, x, y, kept, inv_tau),
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def unsharded_pair_losses(static, x, y, kept, inv_tau):
    """`pair_losses` without `axis_name`, differentiable in forward mode too.

    A `jax.custom_vjp` (as `pair_losses`) forbids `jax.jvp`/`jacfwd`; this
    `jax.custom_jvp` gives the same reverse pass by transposing `_tangents`.
    Measured against `pair_losses` (value_and_grad, XLA:CPU, 2 cores,
    N = 4096, D = 256, f32 and bf16; N = 2048, D = 64; N = 8192, D = 128;
    interleaved runs, CPU time): no slower, and compiled temporaries no
    larger (18.4 MiB at N = 16384, D = 256 f32). Not yet measured on GPU.
    """
    return _losses(x, y, inv_tau, *_forward_here(static, x, y, kept, inv_tau))


@functools.partial(unsharded_pair_losses.defjvp, symbolic_zeros=True)
def _unsharded_pair_losses_jvp(static, primals, tangents):
    x, y, kept, inv_tau = primals
    dx, dy, _, d_inv_tau = tangents
    row_lse, col_lse = _forward_here(static, x, y, kept, inv_tau)
    losses = _losses(x, y, inv_tau, row_lse, col_lse)
    if all(_is_zero(t) for t in (dx, dy, d_inv_tau)):
        return losses, tuple(jnp.zeros_like(v) for v in losses)
    row_t, col_t = _tangents(static, x, y, kept, inv_tau, row_lse, col_lse, dx, dy, d_inv_tau)
    if not static.symmetric:
        col_t = jnp.zeros_like(losses[1])  # the column losses are not used
    return losses, (row_t, col_t)


def whole_matrix_losses(x, y, where, inv_tau):
    """`pair_losses` when one strip holds the whole (local, unsharded) matrix.

    The `N x N` logits are then no larger than a strip, and plain autodiff
    through `logsumexp` takes three matmuls (`S`, `dx`, `dy`) where the
    strip-by-strip rule takes four (it recomputes `S` in the backward pass):
    at N = 512 and N = 32 the strip rule's fwd+bwd measured 0.63-0.84x a
    plain `jnp` loss (`python -m bench --sweep --kernels contrastive`).
    `where` is the mask of kept pairs, or None (no select over the matrix).

    The positives are read off the matrix's diagonal rather than a batched dot
    of `x` and `y`: at N = 32 the batched dot, one more op, cost about 10% of
    the forward pass, and a select-and-sum over the matrix cost about 10% at
    N = 512 (throwaway A/B against plain `jnp`, one process each).
    """
    s = _strip(x, None, y, None, inv_tau)
    positives = jnp.diagonal(s)
    if where is not None:
        s = jnp.where(where[:, None] & where[None, :], s, -jnp.inf)
    return logsumexp(s, axis=1) - positives, logsumexp(s, axis=0) - positives


def contrastive_loss(
    x: Any,
    y: Any,
    *,
    temperature: Any = 1.0,
    symmetric: bool = True,
    reduction: str = "mean",
    chunk_size: int | None = None,
    where: Any = None,
    axis_name: Any = None,
) -> jax.Array:
    r"""InfoNCE (CLIP) loss of paired embeddings, without forming the N x N similarity matrix.

    With similarities $s_{ij} = x_i \cdot y_j / T$ over the pairs kept by
    `where` (the set $\mathcal{K}$), the loss of pair $i$ is

    $$
    \ell^{x \to y}_i = \log \sum_{j \in \mathcal{K}} e^{s_{ij}} - s_{ii}, \qquad
    \ell^{y \to x}_i = \log \sum_{j \in \mathcal{K}} e^{s_{ji}} - s_{ii},
    $$

    the cross-entropy of row (column) $i$ of the similarity matrix against
    the diagonal. `symmetric=True` returns $\tfrac12(\ell^{x \to y}_i +
    \ell^{y \to x}_i)$ per pair (CLIP's loss, open_clip's `ClipLoss`),
    `symmetric=False` returns $\ell^{x \to y}_i$. The embeddings are used as
    given: normalise them first for cosine similarities.

    The matrix is computed `chunk_size` rows at a time, each strip reduced to
    row and column log-sum-exps merged online and then dropped; the gradient
    recomputes the strips. (A batch small enough for one strip, N up to
    about 724 by default, is formed whole and differentiated directly: three
    matmuls instead of four.) Memory is linear in N: the compiled temporaries of
    `value_and_grad` at N = 16384, D = 256 are well under 2% of one N x N
    float32 array (see the docs page "Contrastive and top-k distillation
    losses" for the measured figures). Matmuls run in the input dtype with
    float32 accumulation; log-sum-exps are float32.

    `temperature` may be a traced array (a learnable logit scale, e.g.
    `jnp.exp(-log_scale)`) and receives its gradient. Forward mode
    (`jax.jvp`, `jax.jacfwd`, `jax.hessian`) works at every size without
    `axis_name`; the sharded ring is differentiable in reverse mode only.
    `where=False` removes a pair from the batch (padding): it contributes no
    loss and is no negative for any other pair.

    With `axis_name`, call it inside `shard_map` with `x`, `y` (and
    `where`) sharded over the batch along that mesh axis. The `y` blocks
    visit every device in a ring (`lax.ppermute`), so no device holds more
    than its block of the similarity matrix and nothing N x N is gathered.
    Scalar reductions return the global loss on every device (equal to the
    unsharded loss); `"none"` returns this device's pairs.

    Args:
      x: `[N, D]` floating point (e.g. image embeddings).
      y: `[N, D]`, the same shape; `y[i]` is the positive of `x[i]`.
      temperature: $T > 0$, a number or a traced scalar.
      symmetric: average the $x \to y$ and $y \to x$ directions.
      reduction: `"mean"` (over kept pairs, the default), `"sum"`,
        `"batchmean"` (sum / N) or `"none"`, as [jaxkl.reduce][].
      chunk_size: rows of `x` per strip; `None` keeps one strip near
        `2**19` float32 values. When one strip holds every row (small
        batches), the matrix is formed whole and differentiated directly.
      where: optional boolean `[N]` mask of pairs to keep.
      axis_name: mesh axis name the batch is sharded over, inside `shard_map`.

    Returns:
      A scalar, or `[N]` (local pairs under `axis_name`) for `"none"`; the
      dtype of the embeddings.

    Raises:
      ValueError: if `x` and `y` are not both `[N, D]` of one shape, or a
        concrete temperature is not a finite number > 0.
      TypeError: if an embedding is not floating point.

    Examples:
      >>> import jax, jax.numpy as jnp, jaxkl
      >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> # s = [[1, 0], [0, 1]]: each direction is log(e + 1) - 1 per pair.
      >>> print(jaxkl.contrastive_loss(x, x).round(6))
      0.313262
      >>> loss, grad_t = jax.value_and_grad(lambda t: jaxkl.contrastive_loss(x, x, temperature=t))(0.5)
      >>> print(grad_t.round(6))  # d/dT of log(1 + e^(-1/T)) at T = 1/2: 4 e^-2 / (1 + e^-2)
      0.476812

    References:
      van den Oord, Li & Vinyals, "Representation Learning with Contrastive
      Predictive Coding" (2018); Radford et al., "Learning Transferable Visual
      Models From Natural Language Supervision" (CLIP, 2021); Cheng et al.,
      "Breaking the Memory Barrier: Near Infinite Batch Size Scaling for
      Contrastive Loss" (Inf-CL, 2024).
    """
    x = _validate.float_array(x, "x")
    y = _validate.float_array(y, "y")
    _validate.same_shape(x, y, "x", "y")
    if x.ndim != 2:
        raise ValueError(f"x and y must be [N, D] embeddings, got x.shape={x.shape}")
    dtype = _validate.common_dtype(x, y)
    x, y = x.astype(dtype), y.astype(dtype)
    reduction = _validate.reduction(reduction)
    axis_name = _validate.axis_name(axis_name)
    n = x.shape[0]
    where = _validate.mask(where, (n,))
    acc = compute_dtype(dtype)
    t = _validate.positive(temperature, "temperature")
    inv_tau = jnp.asarray(1.0 / t, acc) if t is not None else 1.0 / jnp.asarray(temperature, acc)
    if inv_tau.ndim:
        raise ValueError(f"temperature must be a scalar, got shape {inv_tau.shape}")
    kept = jnp.ones((n,), bool) if where is None else jnp.broadcast_to(where, (n,))
    chunk_size = _validate.positive_int_or_none(chunk_size, "chunk_size")
    chunk = default_chunk_size(n, n) if chunk_size is None else min(chunk_size, max(n, 1))
    static = _Static(chunk, bool(symmetric), axis_name)
    inv_tau, kept = _varying(inv_tau, axis_name), _varying(kept, axis_name)
    if axis_name is None and chunk >= n:
        row_loss, col_loss = whole_matrix_losses(x, y, None if where is None else kept, inv_tau)
    elif axis_name is None:
        row_loss, col_loss = unsharded_pair_losses(static, x, y, kept, inv_tau)
    else:
        row_loss, col_loss = pair_losses(static, x, y, kept, inv_tau)
    values = 0.5 * (row_loss + col_loss) if symmetric else row_loss
    if axis_name is None or reduction == "none":
        return reduce(values, reduction, where=kept).astype(dtype)
    # Sharded: the global sum over kept pairs, over the global count or N.
    total = jax.lax.psum(reduce(values, "sum", where=kept), axis_name)
    if reduction == "mean":
        total = total / jnp.maximum(jax.lax.psum(jnp.sum(kept, dtype=acc), axis_name), 1.0)
    elif reduction == "batchmean":
        total = total / (n * jax.lax.axis_size(axis_name))
    return total.astype(dtype)
