"""Row-wise kernels whose derivatives are rebuilt from the inputs.

Every logits kernel in jaxkl is a function of a few arrays shaped like the
input that reduces over one class axis. Its derivative needs per-class
quantities such as `softmax(a)`; storing those for the backward pass costs
rows x classes of memory, while *recomputing* them from the inputs costs one
fused elementwise sweep. `row_kernel` builds a `jax.custom_jvp` whose
tangent map is wrapped in `jax.checkpoint`: linearising it (reverse mode)
keeps only the inputs and a few per-row statistics, and forward mode works
because the rule is a JVP, not a VJP.

The helpers below it make logits safe to reduce: masked classes become
`-inf`, low-precision inputs are accumulated in float32, and rows that are
entirely `-inf` get a log-normaliser of `-inf` without producing NaN.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

Forward = Callable[..., tuple[jax.Array, Any]]


class Axis(NamedTuple):
    """The static options every row kernel has: where its classes are.

    A kernel with more options (a temperature, a mixture weight) passes its
    own NamedTuple with these two fields among its own.
    """

    axis: int
    axis_name: Any = None

Tangent = Callable[..., jax.Array]

# Whether kernels that have a CPU derivative rule use it on CPU (read at trace
# time). Off, CPU runs the accelerators' rematerialised rule, which is how the
# tests check that branch without an accelerator.
CPU_JVP = True


def row_kernel(
    forward: Forward,
    tangent: Tangent,
    kinds: tuple[str, ...],
    *,
    cpu_jvp: Callable[..., tuple[jax.Array, jax.Array]] | None = None,
    block_scale: int = 1,
    unblocked_when_small: bool = False,
) -> Callable[..., jax.Array]:
    """Make `kernel(static, *arrays)` with a rematerialised JVP.

    `forward(static, *arrays) -> (value, stats)` computes the result and the
    small per-row statistics the derivative needs. `tangent(static, arrays,
    stats, tangents)` returns the tangent of `value`; each entry of
    `tangents` is an array or `None` (a known-zero tangent, skipped so that
    reverse mode never sweeps a rows x classes zero). `static` is a hashable
    NamedTuple with (at least) the fields of `Axis`: the class `axis` and
    the mesh `axis_name` (or None). `kinds` says how each array relates to the
    input's shape, for `by_row_blocks`: `"full"` (the input's shape),
    `"row"` (the shape without the class axis), `"mask"` (broadcastable to
    the input) or `"class"` (one value per class).

    `cpu_jvp(static, arrays, tangents) -> (value, tangent)`, when given,
    replaces the rule on CPU: a kernel whose plain autodiff XLA:CPU already
    runs with O(rows) temporaries uses it where recomputing costs more time
    than it saves (see `jaxkl._cross_entropy_loss`).

    `block_scale` multiplies the CPU row block (`BLOCK_ELEMENTS`): a forward
    that is one log-normaliser does little work per block, so the loop's
    per-step cost weighs more and larger blocks pay.

    `unblocked_when_small`: inputs of at most `SMALL_INPUT_ELEMENTS` elements
    run unblocked.
    """
    blocks = functools.partial(by_row_blocks, block_scale=block_scale, unblocked_when_small=unblocked_when_small)

    @functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
    def kernel(static, *arrays):
        return blocks(forward, static, kinds, arrays)[0]

    def rematerialised_jvp(static, arrays, tangents):
        value, stats = blocks(forward, static, kinds, arrays)
        # The checkpoint is what keeps residuals O(rows): only `arrays` (already
        # live) and `stats` are saved; the per-class factors are recomputed.
        # The tangent is one elementwise sweep and a row sum: it is not blocked
        # (on CPU a blocked backward measured slower and no smaller).
        rebuilt = jax.checkpoint(functools.partial(tangent, static))
        return value, rebuilt(arrays, stats, tangents).astype(value.dtype)

    def kernel_jvp(static, arrays, tangents):
        tangents = tuple(
            None if isinstance(t, SymbolicZero) or t is None else t for t in tangents
        )
        if all(t is None for t in tangents):
            value = blocks(forward, static, kinds, arrays)[0]
            return value, jnp.zeros_like(value)
        if cpu_jvp is None or not CPU_JVP:
            return rematerialised_jvp(static, arrays, tangents)
        # platform_dependent takes arrays only: the known-zero tangents stay in the closure.
        present = [t for t in tangents if t is not None]

        def branch(rule):
            def run(arrays, present):
                it = iter(present)
                full = tuple(None if t is None else next(it) for t in tangents)
                value, out = rule(static, arrays, full)
                return value, out.astype(value.dtype)

            return run

        return jax.lax.platform_dependent(
            arrays, present, cpu=branch(cpu_jvp), default=branch(rematerialised_jvp)
        )

    kernel.defjvp(kernel_jvp, symbolic_zeros=True)
    return kernel


# On CPU a row kernel runs over blocks of rows of about this many elements
# (1 MiB of float32). XLA:CPU writes out the intermediates that several row
# reductions share (it has no multi-output reduction fusion); within a block
# they stay in cache, so the softmax's several passes re-read cache instead of
# memory, and no temporary is large enough to be mapped fresh (and
# page-faulted) on every call. Measured at 2048 x 32768 float32 (`python -m
# bench`): the forward of KL from logits is ~1.9x faster blocked, and its
# temporaries are one block.
BLOCK_ELEMENTS = 2**18

# Inputs of at most this many elements (16 MiB of float32) run unblocked in a
# kernel made with `unblocked_when_small`: there blocking saves no memory
# traffic and costs a copy of each block.
SMALL_INPUT_ELEMENTS = 2**22

# The blocking of a kernel whose forward is one log-normaliser and a gathered
# logit per row (`cross_entropy_loss`, `token_logprobs`): it does little work
# per block, so the loop's per-step cost weighs more and blocks 4x the default
# pay (`cross_entropy_loss` 512 x 8192 float32 forward 1.0x plain `jnp`
# against 0.8x, `python -m bench --sweep`), and small inputs run unblocked.
# Measured against plain `jnp`, forward, one process (throwaway A/B):
# `token_logprobs` at 512 x 8192 float32 0.92-1.02x unblocked (the program
# is plain `jnp`'s own) against 0.83-0.99x in default blocks and 0.85-1.03x
# in 4x blocks, five runs each;
# `cross_entropy_loss` at 512 x 8192 bfloat16 6.5-6.9 ms
# unblocked against 7.7-8.6 ms blocked (optax 6.2-9.8 ms). At 8192 x 1024 and
# 32 x 262144 blocked was faster (`token_logprobs` float32 1.7x against 1.06x
# at 8192 x 1024).
LOG_NORMALIZER_BLOCKING = {"block_scale": 4, "unblocked_when_small": True}


def block_rows(shape: tuple[int, ...], axis: int, axis_name: Any, block_scale: int = 1) -> int | None:
    """Rows per block for the CPU path, or None to run the kernel unblocked."""
    if axis_name is not None or len(shape) < 2 or axis != len(shape) - 1 or shape[-1] == 0:
        return None
    rows = math.prod(shape[:-1])
    # At least 2 rows a block: with one, the blocked view has a unit axis and
    # XLA copies every input before the loop (2 x 32 MiB at 32 x 262144).
    target = max(2, block_scale * BLOCK_ELEMENTS // shape[-1])
    if rows < 2 * target:
        return None
    # Blocks must tile the rows exactly, so that blocking is a free reshape.
    for block in range(target, max(2, target // 4) - 1, -1):
        if rows % block == 0:
            return block
    return None


def _as_bits(op: jax.Array) -> jax.Array:
    """16-bit floats as same-width unsigned integers (undone by `_from_bits`).

    XLA:CPU has no 16-bit-float dynamic-slice: it converts the whole input to
    float32 before the loop (a rows x classes float32 temporary, measured 256
    MiB at 2048 x 32768 bfloat16). Sliced as integers, each block is converted
    inside the loop instead. The bitcast itself is one copy of the input (XLA:CPU
    runs it as a loop), half the size of the float32 one.
    """
    if jnp.issubdtype(op.dtype, jnp.floating) and jnp.dtype(op.dtype).itemsize == 2:
        return jax.lax.bitcast_convert_type(op, jnp.uint16)
    return op


def _from_bits(op: jax.Array, dtype: Any) -> jax.Array:
    return op if op.dtype == dtype else jax.lax.bitcast_convert_type(op, dtype)


def by_row_blocks(
    fn: Callable[..., Any],
    static: tuple,
    kinds: tuple[str, ...],
    operands: tuple,
    block_scale: int = 1,
    unblocked_when_small: bool = False,
) -> Any:
    """`fn(static, *operands)`, on CPU mapped over blocks of rows with `lax.map`.

    Other backends (and shapes `block_rows` declines) run `fn` as it is.
    Outputs must be shaped like the input, like a row, or like a row with a
    kept class axis of 1 (the statistics). With `unblocked_when_small`,
    inputs of at most `SMALL_INPUT_ELEMENTS` elements run unblocked.
    (Blocking 16-bit inputs costs one copy of them, see `_as_bits`.)
    """
    first = next(op for op, kind in zip(operands, kinds) if kind == "full")
    full = first.shape
    block = block_rows(full, static.axis, static.axis_name, block_scale)
    if unblocked_when_small and math.prod(full) <= SMALL_INPUT_ELEMENTS:
        block = None
    if block is None:
        return fn(static, *operands)
    lead, classes = full[:-1], full[-1]
    n = math.prod(lead) // block

    def split(op, kind):
        """(mapped, whole): one of them is None."""
        if op is None:
            return None, None
        if kind == "row":
            return op.reshape(n, block), None
        if kind == "class":
            return None, op
        if kind == "mask" and op.shape != full:
            padded = (1,) * (len(full) - op.ndim) + op.shape
            if all(d == 1 for d in padded[:-1]):
                return None, op.reshape(1, padded[-1])
            op = jnp.broadcast_to(op, full)
        return _as_bits(op.reshape(n, block, classes)), None

    mapped, whole = zip(*(split(op, kind) for op, kind in zip(operands, kinds)))
    dtypes = tuple(None if op is None else op.dtype for op in operands)
    block_static = static._replace(axis=1)

    def body(parts):
        parts = (None if b is None else _from_bits(b, d) for b, d in zip(parts, dtypes))
        return fn(block_static, *(b if w is None else w for b, w in zip(parts, whole)))

    def blocked(*mapped):
        out = jax.lax.map(body, mapped)
        return jax.tree.map(lambda y: y.reshape(lead + y.shape[2:]), out)

    def plain(*mapped):
        return fn(static, *operands)

    return jax.lax.platform_dependent(*mapped, cpu=blocked, default=plain)


def binary_entropy(beta: float) -> float:
    """`-beta log beta - (1 - beta) log(1 - beta)`: the largest JS_beta can be."""
    return -sum(w * math.log(w) for w in (beta, 1.0 - beta) if w > 0)


def finite_log_sum(log_sum: jax.Array) -> jax.Array:
    """A row's log-sum with -inf (an empty row) as 0, for sums that then cancel."""
    return jnp.where(log_sum == -jnp.inf, 0.0, log_sum)


def in_base(value: jax.Array, base: float | None) -> jax.Array:
    """A value in nats converted to logarithm `base` (None: nats)."""
    return value if base is None else value / jnp.asarray(math.log(base), value.dtype)


def compute_dtype(dtype: Any) -> Any:
    """float16 and bfloat16 are accumulated in float32; wider types as they are."""
    return jnp.float32 if jnp.dtype(dtype).itemsize < 4 else jnp.dtype(dtype)


def prepare_logits(x: jax.Array, where: jax.Array | None, scale: float = 1.0) -> jax.Array:
    """Upcast, scale by `1 / temperature` and set masked classes to `-inf`.

    Under `jit` this is fused into whatever consumes it, so it allocates nothing.
    """
    x = x.astype(compute_dtype(x.dtype))
    if scale != 1.0:
        x = x * scale
    if where is not None:
        x = jnp.where(where, x, -jnp.inf)
    return x


def prepare_probs(p: jax.Array, where: jax.Array | None) -> jax.Array:
    """Upcast and zero the masked classes (a masked probability contributes nothing).

    An unmasked entry that is not a probability (< 0, `-inf` or `+inf`) becomes
    NaN, so that every kernel gives NaN for its row as documented, instead of a
    number (`-sum p log q` is finite for a negative `p`).
    """
    # NaN itself passes through, so that it reaches the gradient too.
    t, invalid = split_probs(p, where)
    return jnp.where(invalid, jnp.nan, t)


def split_probs(p: jax.Array, where: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """`(t, invalid)`: `prepare_probs` with the entries that are not probabilities
    set to 0 and flagged in `invalid` (False where masked) instead of made NaN.

    For kernels that put the NaN into the *value* only (`jnp.where(invalid,
    nan, term)`): the derivative then never sees the NaN, so a row that a
    reduction masks out (cotangent 0) gets a zero gradient instead of
    `0 * NaN`. A NaN input is not "invalid": it stays in `t` and reaches the
    gradient, as documented.
    """
    p = p.astype(compute_dtype(p.dtype))
    invalid = (p < 0) | (p == jnp.inf)
    if where is not None:
        invalid = jnp.where(where, invalid, False)
        p = jnp.where(where, p, 0.0)
    return jnp.where(invalid, 0.0, p), invalid


def row_sum(x: jax.Array, axis: int, axis_name: Any = None, keepdims: bool = False) -> jax.Array:
    """`sum` over the class axis; with `axis_name` the axis is sharded and the
    per-device partial sums are combined with `lax.psum` (one number per row
    crosses devices, never the class axis itself)."""
    s = jnp.sum(x, axis=axis, keepdims=keepdims)
    return s if axis_name is None else jax.lax.psum(s, axis_name)


def log_normalizer(
    x: jax.Array, axis: int, axis_name: Any = None
) -> tuple[jax.Array, jax.Array]:
    """`logsumexp` over `axis` as a pair `(shift, log_sum)` with keepdims.

    `logsumexp = shift + log_sum` where `shift` is the row max and
    `log_sum = log sum exp(x - shift)`. Keeping the two apart is what makes
    log-probabilities shift-invariant: `(x - shift) - log_sum` is exact in
    its first step, whereas `x - (shift + log_sum)` rounds `log_sum`
    against a possibly huge shift (1e4 + 0.41 in float32 keeps 3 digits).
    A non-finite max is replaced by 0, so an empty or all-`-inf` row gets
    `log_sum = -inf` instead of `-inf - -inf = NaN` (NaN still propagates).

    With `axis_name` the class axis is sharded over that mesh axis (inside
    `shard_map`): the row max is combined with `lax.pmax` and the sum with
    `lax.psum`. The shift only conditions the sum (its derivative cancels
    exactly), so it is taken outside differentiation; `pmax` has no JVP.
    """
    m = row_shift(x, axis, axis_name)
    return m, jnp.log(row_sum(jnp.exp(x - m), axis, axis_name, keepdims=True))


def shifted_exponentials(
    x: jax.Array, where: jax.Array | None, axis: int, axis_name: Any = None
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """`(z, shift, e, total)` for rules that keep `e` instead of recomputing it.

    `z = prepare_logits(x, where)`, `e = exp(z - shift)` with the row max
    as the shift, and `total` its row sum (keepdims). The max is taken in
    `x`'s own dtype, where it is exact: a 16-bit `x` converted first would
    be written out whole in float32 for XLA:CPU's reduction.
    """
    masked = x if where is None else jnp.where(where, x, -jnp.inf)
    shift = row_shift(masked, axis, axis_name).astype(compute_dtype(x.dtype))
    z = prepare_logits(x, where)
    e = jnp.exp(z - shift)
    return z, shift, e, row_sum(e, axis, axis_name, keepdims=True)


def label_mask(idx: jax.Array, shape: tuple[int, ...], axis: int) -> jax.Array:
    """Boolean `[..., K, ...]`: True at each row's label (fused into the sweep; never stored)."""
    return jax.lax.broadcasted_iota(idx.dtype, shape, axis) == jnp.expand_dims(idx, axis)


def label_logits(x: jax.Array, idx: jax.Array, axis: int, axis_name: Any) -> jax.Array:
    """`x` at each row's label (a gather, O(rows)); sharded, from the device that holds it."""
    picked = jnp.take_along_axis(x, jnp.expand_dims(jnp.maximum(idx, 0), axis), axis)
    picked = jnp.squeeze(picked, axis)
    if axis_name is None:
        return picked
    # idx is -1 where this device does not hold the label: contribute 0 to the psum.
    return jax.lax.psum(jnp.where(idx >= 0, picked, jnp.zeros((), picked.dtype)), axis_name)


def reciprocal_or_zero(x: jax.Array) -> jax.Array:
    """`1 / x`, and 0 where `x` is 0 (an empty row's total), with no NaN in any derivative."""
    empty = x == 0
    return jnp.where(empty, 0.0, 1.0 / jnp.where(empty, 1.0, x))


def row_shift(x: jax.Array, axis: int, axis_name: Any = None) -> jax.Array:
    """The row max with keepdims (0 where it is not finite): the shift of `log_normalizer`."""
    # `initial` only for an empty class axis: a reduction with it is not one
    # that XLA:CPU's YNNPACK fusions take.
    initial = -jnp.inf if x.shape[axis] == 0 else None
    m = jnp.max(x, axis=axis, keepdims=True, initial=initial)
    if axis_name is not None:
        m = jax.lax.pmax(jax.lax.stop_gradient(m), axis_name)
    return jnp.where(jnp.isfinite(m), m, 0.0)


def logsumexp_of(normalizer: tuple[jax.Array, jax.Array]) -> jax.Array:
    """The log-normaliser itself: `-inf` for an empty row."""
    shift, log_sum = normalizer
    return shift + log_sum


def log_probs(x: jax.Array, normalizer: tuple[jax.Array, jax.Array]) -> jax.Array:
    """`x - logsumexp(x)`, exact in the shift and `-inf` (not NaN) on all-`-inf` rows."""
    shift, log_sum = normalizer
    return (x - shift) - jnp.where(log_sum == -jnp.inf, 0.0, log_sum)


def zero_where_unused(weight: jax.Array, term: jax.Array) -> jax.Array:
    """`weight * term` with 0 wherever `weight` is exactly 0 (0 * inf = 0).

    The test is `== 0` rather than `> 0` so that NaN weights propagate.
    `term` is replaced inside as well ("double where"): otherwise
    differentiating this (as higher-order derivatives do) multiplies a zero
    cotangent by an infinite `term` and yields NaN.
    """
    unused = weight == 0
    return jnp.where(unused, 0.0, weight * jnp.where(unused, 0.0, term))


def with_tangent(
    coefficient: jax.Array, tangent: jax.Array | None, axis: int, axis_name: Any = None
) -> jax.Array | float:
    """`sum(coefficient * tangent, axis)`, or 0 when the tangent is a known zero.

    With `axis_name` the sum runs over the sharded class axis (see `row_sum`).
    """
    if tangent is None:
        return 0.0
    return row_sum(coefficient * tangent.astype(coefficient.dtype), axis, axis_name)


def clip_value(value: jax.Array, low: float | None, high: float | None) -> jax.Array:
    """Clamp a value the mathematics bounds, leaving NaN as NaN."""
    # `<=` also turns a -0.0 into +0.0 at a bound of 0.
    if low is not None:
        value = jnp.where(value <= low, low, value)
    if high is not None:
        value = jnp.where(value >= high, high, value)
    return value


def clip_value_only(value: jax.Array, low: float | None, high: float | None) -> jax.Array:
    """`clip_value` on the value while the gradient stays the formula's."""
    clipped = clip_value(value, low, high)
    correction = jnp.where(clipped == value, 0.0, clipped - value)
    return value + jax.lax.stop_gradient(correction)


def soft_capped(x: jax.Array, softcap: float | None) -> jax.Array:
    """Logit soft-capping `softcap * tanh(x / softcap)` (Gemma 2), or `x` for None.

    Applied before anything else reads the logits, in the compute dtype, with
    the exact derivative `1 - tanh(x / softcap)**2` from autodiff. A `-inf`
    logit becomes `-softcap` (tanh saturates), with zero derivative.
    """
    if softcap is None:
        return x
    x = x.astype(compute_dtype(x.dtype))
    return softcap * jnp.tanh(x * (1.0 / softcap))
