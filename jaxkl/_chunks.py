"""Leading-axis chunks: how the fused heads and the tiled contrastive loss walk over rows.

Also how the fused heads shape their matmul operands on CPU: `transposed` (the left operand
of the per-chunk weight-gradient matmuls) and `on_cpu_in_float32` (16-bit heads); and, inside
`shard_map`, how they give their operands one mesh type (`same_varying`)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def chunked(tree: Any, num_chunks: int, size: int) -> Any:
    """Pad the leading axis to `num_chunks * size` rows and split it into chunks."""

    def split(x):
        pad = num_chunks * size - x.shape[0]
        if pad:
            x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)])
        return x.reshape((num_chunks, size) + x.shape[1:])

    return jax.tree_util.tree_map(split, tree)


def unchunked(x: jax.Array, num_rows: int) -> jax.Array:
    """Undo `chunked` on one array: merge the chunks and drop the padding rows."""
    # The merged length spelled out: `-1` cannot be inferred when a trailing axis is 0 (`D = 0`).
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])[:num_rows]


def transposed(h: jax.Array) -> jax.Array:
    """`h.T` as an array of its own, for a matmul that contracts over `h`'s rows.

    XLA folds a transpose into the dot that reads it, and on CPU a dot that
    contracts its left operand's first axis ran at half the speed of one
    whose left operand is laid out transposed: `h.T @ g` with `h` `[512, 512]`
    and `g` `[512, 8192]`, 32 times, took 1.62 s against 0.83 s (jax 0.10.1,
    2 cores; throwaway A/B). The barrier keeps the copy, `C x D` elements once
    per chunk, against `C x D x V` multiply-adds; the tiled backward at
    512 x 512 x 262144 went from 4.0 to 3.1 s. (In the tiled contrastive
    loss's `dS.T @ x` the same copy measured no faster: left as it is.)
    """
    return jax.lax.optimization_barrier(h.T)


# Whether 16-bit heads run their matmuls in float32 on CPU (`on_cpu_in_float32`).
# Read at trace time; the tests switch it off to run the accelerators' branch on CPU.
FLOAT32_ON_CPU = True


def on_cpu_in_float32(sweep: Callable[..., Any], operands: tuple, *rest: Any) -> Any:
    """`sweep(*operands, *rest)`, with 16-bit `operands` cast to float32 first on CPU.

    `operands` are the matmul inputs (`hidden`, `weight`, `bias`; None allowed).
    Each output of the CPU branch is cast to the dtype it has with the operands
    as given (the gradients to the operands' dtypes; values and statistics are
    float32 either way). XLA:CPU has no 16-bit matmul: it converts both
    operands of every product to float32, in a fused head once per tile and
    use, and its bfloat16 head step measured slower than the float32 one.
    Converting once up front, at 512 x 512 x 262144 bfloat16 `value_and_grad`
    took 4.64 s against 6.24 s (optax on materialised logits 4.85 s), and at
    2048 x 512 x 32768 2.41 s against 2.84 s (optax 2.62 s), with the same
    compiled temporaries (throwaway A/B, jax 0.10.1, 2 cores). The untiled
    forward alone does without it: there XLA converted the head once either
    way, and converting it up front made the bfloat16 forward of the sweep's
    `fused_grpo` at 32 x 262144 0.74x the fastest peer instead of 1.55x
    (`python -m bench --sweep --kernels fused_ce fused_grpo`). The class-tiled
    forward keeps it: without it the bfloat16 step of
    `python -m bench.fused_linear --sweep --time` at 512 x 512 x 262144
    measured 0.84x the fastest peer instead of 1.01x. Other backends
    multiply in the input dtype.
    """
    dtypes = tuple(None if x is None else x.dtype for x in operands)
    if not FLOAT32_ON_CPU or all(d is None or jnp.dtype(d).itemsize >= 4 for d in dtypes):
        return sweep(*operands, *rest)

    def as_given(operands, rest):
        return sweep(*operands, *rest)

    expected = jax.eval_shape(as_given, operands, rest)

    def in_float32(operands, rest):
        wide = tuple(None if x is None else x.astype(jnp.float32) for x in operands)
        return jax.tree.map(lambda x, like: x.astype(like.dtype), sweep(*wide, *rest), expected)

    return jax.lax.platform_dependent(operands, rest, cpu=in_float32, default=as_given)


def varying_axes(x: Any) -> frozenset:
    """The mesh axes over which `x` varies in shard_map's type (empty outside `shard_map`,
    and everywhere under `check_vma=False`, which tracks no such type)."""
    manual = getattr(jax.typeof(x), "manual_axis_type", None)
    return frozenset() if manual is None else frozenset(manual.varying)


def same_varying(operands: tuple, axis_name: Any = None) -> tuple:
    """`operands` (pytrees of arrays) cast to vary over one set of mesh axes: theirs and `axis_name`'s.

    A fused head's custom VJP must return each operand's cotangent with that
    operand's type, and its loops carry accumulators that mix all of them. On
    a `(data, model)` mesh `hidden` varies over `"data"` and the head over
    `"model"`: `d weight`, formed from both, varies over both, which is not the
    head's type (and a scan carry started as `zeros_like(weight)` changes
    type). Cast first, every cotangent and carry has the one common type, and
    the cast's own transpose `psum`s each cotangent over exactly the axes its
    operand was replicated over: `d hidden` over the class axis, `d weight`
    over the data axis, as plain autodiff of `hidden @ weight` would. So the
    kernels never `psum` a gradient themselves. Under `check_vma=False` the
    cast is a no-op and `shard_map`'s transpose sums the cotangents of
    unmapped inputs instead; a `psum` in the kernel would then count every
    device twice. Outside `shard_map` nothing varies and nothing is cast: the
    unsharded path traces exactly as before.
    """
    names = () if axis_name is None else (axis_name if isinstance(axis_name, tuple) else (axis_name,))
    axes = frozenset(names).union(*map(varying_axes, jax.tree_util.tree_leaves(operands)))
    if not axes:
        return tuple(operands)

    def cast(x):
        # Sorted for a deterministic trace; pcast orders the axes by the mesh anyway.
        missing = tuple(sorted(axes - varying_axes(x), key=str))
        return jax.lax.pcast(x, missing, to="varying") if missing else x

    return tuple(jax.tree_util.tree_map(cast, tuple(operands)))
