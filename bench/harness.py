"""Timing harness: every implementation of every kernel, side by side, interleaved.

For one (backend, dtype, rows, classes) configuration the entries — each
kernel x implementation x {fwd, fwdbwd}, plus the floors — are compiled first
(compile time recorded apart), warmed up once, and then timed `repeats`
times in a rotating order, so a slow phase of a shared machine hits all of
them alike. The reported number is the median. `python -m bench` calls this
for one kernel at a time, each in a fresh process (`bench.isolated`).
"""

from __future__ import annotations

import dataclasses
import time
import tracemalloc
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import softmax

from . import baselines, jax_impls

JAX_IMPLS = ("jaxkl", "optax", "jnp")
# Short kernels are timed for more rounds, until this much time has gone into
# their timed rounds, but never more than this many times the rounds asked for.
MIN_GROUP_SECONDS = 0.5
MAX_EXTRA_FACTOR = 20


@dataclasses.dataclass
class Entry:
    kernel: str
    impl: str
    mode: str  # "fwd" | "fwdbwd" | "floor"
    call: Callable[[], Any]
    compile_s: float | None = None
    temp_bytes: int | None = None
    peak_bytes: int | None = None
    times: list[float] = dataclasses.field(default_factory=list)

    def record(self) -> dict:
        d = {k: getattr(self, k) for k in ("kernel", "impl", "mode", "compile_s", "temp_bytes", "peak_bytes", "times")}
        d["median_s"] = float(np.median(self.times)) if self.times else None
        return d


def backends() -> list[tuple[str, jax.Device]]:
    """The first device of every platform JAX sees (CPU always; GPU/TPU when present)."""
    found = []
    for platform in ("cpu", "gpu", "tpu"):
        try:
            devices = jax.devices(platform)
        except RuntimeError:
            continue
        if devices:
            found.append((platform, devices[0]))
    return found


# Hidden size D of the fused head's inputs: small, so that its three N x D x V
# matmuls keep the sweep affordable on a few CPU cores while V sets the logits' size.
HIDDEN = 128
# Teacher classes kept by the top-k distillation entry (k = classes // 2 on tiny sizes).
TOPK = 64


# The integer inputs (labels, top-k indices); every other input is in the configuration's dtype.
INTEGER_INPUTS = "yi"


def host_inputs(rows: int, classes: int, dtype: str, seed: int = 0, names: str | None = None) -> dict[str, np.ndarray]:
    """The arrays kernels take (`jax_impls` module docstring), as NumPy arrays in `dtype`.

    Logits `a`, `b`, probabilities `p`, labels `y`; hidden states `h`
    `[rows, HIDDEN]` and a head weight `w` `[HIDDEN, classes]` scaled so
    that `h @ w` has unit variance; paired embeddings `e`, `g`
    `[rows, HIDDEN]`; the top-k classes `i` of `log_softmax(b)` and their
    log-probabilities `l`.

    `names` (e.g. `"ay"`) makes only those arrays (and what they are derived
    from): each array draws from its own seeded stream, so an array has the same
    values whichever others are made beside it.
    """
    made: dict[str, np.ndarray] = {}

    def rng(name: str) -> np.random.Generator:
        return np.random.default_rng([seed, ord(name)])

    def normal(name: str, shape: tuple[int, ...]) -> np.ndarray:
        return rng(name).standard_normal(shape, dtype=np.float32)

    def log_p() -> np.ndarray:
        b = get("b")
        shift = b.max(-1, keepdims=True)
        return b - shift - np.log(np.sum(np.exp(b - shift), -1, keepdims=True))

    def top_k() -> np.ndarray:
        # The teacher's top-k indices of log_softmax(b); their log-probabilities go to `l`.
        k = min(TOPK, max(1, classes // 2))
        lp = log_p()
        i = np.argsort(-lp, axis=-1, kind="stable")[:, :k].astype(np.int32)
        made["l"] = np.take_along_axis(lp, i, axis=-1)
        return i

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    recipes = {
        "a": lambda: normal("a", (rows, classes)) * np.float32(3.0),
        "b": lambda: normal("b", (rows, classes)) * np.float32(3.0),
        "p": lambda: softmax(get("b") + normal("p", (rows, classes)), axis=-1),
        "y": lambda: rng("y").integers(0, classes, size=rows, dtype=np.int32),
        "h": lambda: normal("h", (rows, HIDDEN)),
        "w": lambda: normal("w", (HIDDEN, classes)) * np.float32(HIDDEN**-0.5),
        "e": lambda: unit(get("h")),
        # Paired unit embeddings for the contrastive loss: g a noisy view of e (cosine ~0.24),
        # so that at T = 0.07 the positives do not swamp every negative.
        "g": lambda: unit(get("h") + 4 * normal("g", (rows, HIDDEN))),
        "i": top_k,
        "l": lambda: (get("i"), made["l"])[1],
    }

    def get(name: str) -> np.ndarray:
        if name not in made:
            made[name] = recipes[name]()
        return made[name]

    wanted = recipes if names is None else dict.fromkeys(names)
    cast = jnp.dtype(dtype)
    return {name: get(name) if name in INTEGER_INPUTS else get(name).astype(cast) for name in wanted}


def kernel_args(kernel: str, arrays: dict) -> list:
    return [arrays[name] for name in jax_impls.TABLE[kernel].inputs]


def _compile(fn: Callable, args: list) -> tuple[Callable, float, int | None]:
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    seconds = time.perf_counter() - start
    try:
        temp = int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # some backends do not report memory
        temp = None
    return compiled, seconds, temp


def _blocking(compiled, args):
    return lambda: jax.block_until_ready(compiled(*args))


def jax_entries(kernels, impls, device, arrays, budget_bytes) -> tuple[list[Entry], list[dict]]:
    """Compile every JAX entry on `device`; entries that would not fit are skipped and noted."""
    dev_arrays = {k: jax.device_put(v, device) for k, v in arrays.items()}
    live = 2 * sum(v.nbytes for v in arrays.values())  # host copies + device copies
    entries, skipped = [], []
    for kernel in kernels:
        args = kernel_args(kernel, dev_arrays)
        for name, fn in jax_impls.floor_functions(kernel).items():
            compiled, seconds, temp = _compile(fn, args)
            entries.append(Entry(kernel, name, "floor", _blocking(compiled, args), seconds, temp))
        for impl in impls:
            fn = jax_impls.TABLE[kernel].impls.get(impl) if impl in JAX_IMPLS else None
            if fn is None:
                continue
            for mode, f in zip(("fwd", "fwdbwd"), jax_impls.forward_and_backward(kernel, fn)):
                compiled, seconds, temp = _compile(f, args)
                if temp is not None and live + temp > budget_bytes:
                    skipped.append(dict(kernel=kernel, impl=impl, mode=mode, reason=f"temp {temp / 2**30:.1f} GiB over budget"))
                    continue
                entries.append(Entry(kernel, impl, mode, _blocking(compiled, args), seconds, temp))
    return entries, skipped


def all_entries(kernels, impls, platform, device, arrays, budget_bytes) -> tuple[list[Entry], list[dict]]:
    """`jax_entries`, plus on CPU the NumPy and PyTorch entries interleaved with them."""
    entries, skipped = jax_entries(kernels, impls, device, arrays, budget_bytes)
    if platform == "cpu":
        more, more_skipped = host_entries(kernels, impls, arrays, budget_bytes)
        entries += more
        skipped += more_skipped
    return entries, skipped


def _numpy_peak(fn: Callable, args: list) -> int:
    """Peak bytes NumPy allocates during one call (tracemalloc sees NumPy's buffers)."""
    tracemalloc.start()
    try:
        fn(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def host_entries(kernels, impls, arrays, budget_bytes) -> tuple[list[Entry], list[dict]]:
    """NumPy (float32 only: NumPy has no bfloat16 arithmetic) and PyTorch CPU entries."""
    entries, skipped = [], []
    biggest = max(v.nbytes for v in arrays.values())
    # Inputs live on the host and the device; NumPy/PyTorch peak at ~6 input-sized temporaries.
    fits = 2 * sum(v.nbytes for v in arrays.values()) + 6 * biggest <= budget_bytes
    dtype = next(v.dtype for name, v in arrays.items() if name not in INTEGER_INPUTS)
    if "numpy" in impls and dtype == np.float32:
        if not fits:
            skipped.append(dict(kernel="*", impl="numpy", mode="*", reason="estimated peak over the memory budget"))
        else:
            for kernel in (k for k in kernels if k in baselines.NUMPY):
                args = kernel_args(kernel, arrays)
                for mode, fn in zip(("fwd", "fwdbwd"), baselines.NUMPY[kernel]):
                    peak = _numpy_peak(fn, args)
                    entries.append(Entry(kernel, "numpy", mode, (lambda f=fn, a=args: f(*a)), None, None, peak))
    torch_fns = baselines.torch_implementations() if "torch" in impls else {}
    if torch_fns and not fits:
        skipped.append(dict(kernel="*", impl="torch", mode="*", reason="estimated peak over the memory budget"))
    elif torch_fns:
        torch = baselines.torch_module()
        tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[str(dtype)]
        targs = {
            k: torch.from_numpy(np.asarray(v, np.float32)).to(tdtype) if k != "y" else torch.from_numpy(v.astype(np.int64))
            for k, v in arrays.items()
        }
        for kernel in (k for k in kernels if k in torch_fns):
            args = kernel_args(kernel, targs)
            pair = baselines.torch_forward_and_backward(torch_fns[kernel], jax_impls.TABLE[kernel].grad)
            for mode, fn in zip(("fwd", "fwdbwd"), pair):
                entries.append(Entry(kernel, "torch", mode, (lambda f=fn, a=args: f(*a))))
    return entries, skipped


def time_entries(entries: list[Entry], repeats: int, advance: Callable[[], None], seconds: float | None = None) -> int:
    """Warm up each entry once, then time rounds in a rotating order; returns the rounds run.

    Each kernel's entries (jaxkl, its peers, the floors) are timed in rounds
    among themselves, one kernel after another. Rotating every entry of a
    configuration together made one kernel's ratio depend on which other
    kernels ran in between: the allocator serves a program's rows x classes
    output from freed memory or from fresh, page-faulted pages depending on
    what was freed last (`cross_entropy_loss` fwd+bwd at 8192 x 1024 measured
    0.48x among all kernels, 1.05x among its own peers).

    `repeats` rounds, or fewer (never under 3) when one round would take so long
    that `repeats` of them exceed `seconds`: the largest sizes of the sweep.
    A kernel whose rounds are short gets more of them, until its timed rounds
    add up to `MIN_GROUP_SECONDS` (at most `MAX_EXTRA_FACTOR` times `repeats`):
    a median of 5 or 10 calls of a 0.3 ms program moved a cell by up to 30%
    between runs (`contrastive_loss` at 512 pairs: 0.67x, then 0.91x).
    Returns the fewest rounds any kernel got.
    """
    start = time.perf_counter()
    for e in entries:
        e.call()
        advance()
    one_round = time.perf_counter() - start
    if seconds is not None and one_round * repeats > seconds:
        repeats = max(3, int(seconds / max(one_round, 1e-9)))
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        groups.setdefault(e.kernel, []).append(e)
    fewest = None
    for group in groups.values():
        n = len(group)
        group_start, r = time.perf_counter(), 0
        while r < repeats or (
            r < MAX_EXTRA_FACTOR * repeats and time.perf_counter() - group_start < MIN_GROUP_SECONDS
        ):
            # Rotate and alternate direction so no entry always follows the same neighbour.
            order = group[r % n :] + group[: r % n]
            if r % 2:
                order.reverse()
            for e in order:
                start = time.perf_counter()
                e.call()
                e.times.append(time.perf_counter() - start)
                advance()
            r += 1
        fewest = r if fewest is None else min(fewest, r)
    return repeats if fewest is None else fewest


def bf16_accuracy(kernels, arrays, device) -> list[dict]:
    """jaxkl on bf16 inputs vs jaxkl in f32 on the same (bf16-rounded) inputs.

    `value_rel`: relative error of the summed value; `grad_rel`: max |g_bf16 - g_f32| / max |g_f32|.
    Within bf16 rounding means both are at most 2**-8 (half a bf16 ulp) plus f32 noise.
    """
    out = []
    for kernel in kernels:
        fn = jax_impls.TABLE[kernel].impls["jaxkl"]
        if fn is None:
            continue
        args = [jax.device_put(x, device) for x in kernel_args(kernel, arrays)]
        args32 = [x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x for x in args]
        fwd, fb = jax_impls.forward_and_backward(kernel, fn)
        v16, v32 = (float(jax.jit(fwd)(*xs)) for xs in (args, args32))
        (_, g16), (_, g32) = jax.jit(fb)(*args), jax.jit(fb)(*args32)
        grad_rel = max(
            float(jnp.max(jnp.abs(x.astype(jnp.float32) - y)) / jnp.maximum(jnp.max(jnp.abs(y)), 1e-30))
            for x, y in zip(g16, g32)
        )
        out.append(dict(kernel=kernel, value_rel=abs(v16 - v32) / max(abs(v32), 1e-30), grad_rel=grad_rel))
    return out
