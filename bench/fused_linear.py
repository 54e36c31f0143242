"""Fused linear + cross-entropy vs materialised logits: compiled memory and time.

Run from the repository root::

    python -m bench.fused_linear                    # defaults below
    python -m bench.fused_linear --time-size 1024x256x16384 --repeats 3

Memory is read from the compiled `jax.value_and_grad` (`memory_analysis()`),
which needs no allocation, so it is measured at the full size
(8192 x 1024 x 65536 f32) even on a small machine. Time needs real arrays and
runs of three N x D x V matmuls, so it is measured at `--time-size`; methods
are run round-robin and the minimum over `--repeats` rounds is reported
(the median too), because a shared machine makes single timings noisy. The
`--sweep` times each size and dtype in a fresh process (`bench/isolated.py`).

Peers: `jaxkl-unfused` (`jaxkl.log_softmax` on materialised logits) and
`optax` (`optax.losses.softmax_cross_entropy_with_integer_labels` on
materialised logits), both the mean over tokens, like the fused call.

``--sweep`` measures every (N, D, V) of ``--sweep-sizes`` in float32 and
bfloat16 against optax and plain ``jnp`` on materialised logits (and Tokamax's
``linear_softmax_cross_entropy_loss`` when ``tokamax`` is installed: off TPU
its XLA implementation forms the logits too): compiled
temp memory always (compile only), the head-matrix bytes each method reads
per step (from the chunk and tile sizes the fused call picks), and time with
``--time`` for the sizes whose materialised logits fit ``--time-limit-gib``::

    python -m bench.fused_linear --sweep                 # memory and head reads only
    python -m bench.fused_linear --sweep --time --repeats 3 --figure docs/img/fused-linear-sweep.png
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

import jaxkl

from .isolated import in_fresh_process
from .saved import machine, save

RESULTS = Path(__file__).parent / "results"


def _size(text: str) -> tuple[int, int, int]:
    n, d, v = (int(x) for x in text.lower().split("x"))
    return n, d, v


def methods(chunks):
    def unfused(h, w, y):
        logp = jaxkl.log_softmax(h @ w)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))

    def with_optax(h, w, y):
        return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(h @ w, y))

    out = {"jaxkl-unfused": unfused, "optax": with_optax}
    out["fused (default chunk)"] = lambda h, w, y: jaxkl.fused_linear_cross_entropy(h, w, y)
    for c in chunks:
        out[f"fused (chunk {c})"] = (
            lambda h, w, y, c=c: jaxkl.fused_linear_cross_entropy(h, w, y, chunk_size=c)
        )
    return out


def step(fn):
    return jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))


def measure_memory(size, chunks, dtype):
    n, d, v = size
    args = (
        jax.ShapeDtypeStruct((n, d), dtype),
        jax.ShapeDtypeStruct((d, v), dtype),
        jax.ShapeDtypeStruct((n,), jnp.int32),
    )
    rows = {}
    for name, fn in methods(chunks).items():
        m = step(fn).lower(*args).compile().memory_analysis()
        rows[name] = {"temp_bytes": int(m.temp_size_in_bytes), "output_bytes": int(m.output_size_in_bytes)}
    return rows


def measure_time(size, chunks, dtype, repeats, fns=None):
    """Fwd + bwd times of `fns` (default: `methods(chunks)`), run round-robin."""
    n, d, v = size
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    h = jax.random.normal(k1, (n, d), dtype)
    w = (jax.random.normal(k2, (d, v), dtype) * d**-0.5).astype(dtype)
    y = jax.random.randint(k3, (n,), 0, v)
    steps = {name: step(fn) for name, fn in (fns or methods(chunks)).items()}
    values = {}
    for name, f in steps.items():  # compile and warm up
        values[name] = float(jax.block_until_ready(f(h, w, y))[0])
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, f in steps.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(h, w, y))
            times[name].append(time.perf_counter() - t0)
    return {
        name: {"min_s": min(ts), "median_s": statistics.median(ts), "loss": values[name]}
        for name, ts in times.items()
    }


def markdown(result) -> str:
    mem, tim = result["memory"], result["time"]
    ref_mem = mem["optax"]["temp_bytes"]
    ref_time = tim["jaxkl-unfused"]["min_s"]
    n, d, v = result["memory_size"]
    tn, td, tv = result["time_size"]
    lines = [
        f"Memory: compiled `value_and_grad` temp at N x D x V = {n} x {d} x {v} f32 "
        f"(one logits array = {n * v * 4 / 2**20:,.0f} MiB). "
        f"Time: fwd + bwd at {tn} x {td} x {tv} f32, min of {result['repeats']} round-robin runs "
        f"on {result['device']} ({result['cpu_count']} cores, shared: timings are noisy).",
        "",
        "| method | temp memory (MiB) | vs optax | time (s) | median (s) | vs jaxkl-unfused |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in mem:
        t = mem[name]["temp_bytes"]
        s = tim[name]
        lines.append(
            f"| {name} | {t / 2**20:,.1f} | {100 * t / ref_mem:.1f}% | {s['min_s']:.2f} "
            f"| {s['median_s']:.2f} | {s['min_s'] / ref_time:.2f}x |"
        )
    return "\n".join(lines) + "\n"


# The first three are timed on a 2-core CPU in minutes (V = 32,768 untiled; 131,072 and
# 262,144 tiled); the last two are compiled only (their logits alone are 2 and 8 GiB).
SWEEP_SIZES = "2048x512x32768,1024x512x131072,512x512x262144,8192x1024x65536,8192x1024x262144"


def sweep_methods():
    def plain(h, w, y):
        z = jnp.dot(h, w, preferred_element_type=jnp.float32)
        picked = jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(z, axis=-1) - picked)

    def with_optax(h, w, y):
        z = jnp.dot(h, w, preferred_element_type=jnp.float32)
        return jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(z, y))

    peers = {"jnp": plain, "optax": with_optax}
    if importlib.util.find_spec("tokamax") is not None:  # an optional peer, when installed
        import tokamax
        from absl import flags

        # Tokamax reads absl flags from sys.argv on first use; ours are not its flags.
        flags.FLAGS.mark_as_parsed()
        peers["tokamax"] = lambda h, w, y: tokamax.linear_softmax_cross_entropy_loss(h, y, w, reduction="mean")
    return {**peers, "fused": jaxkl.fused_linear_cross_entropy}


def head_bytes_read(name, size, dtype):
    """Bytes of the head matrix one value-and-grad step reads (matmul operands only)."""
    from jaxkl._fused import chunk_rows, class_tile

    n, d, v = size
    head = d * v * jnp.dtype(dtype).itemsize
    if name != "fused":
        return 2 * head  # logits = h @ W, and d hidden = d logits @ W.T
    tile = class_tile(None, None, n, v, d, None)
    chunks = -(-n // chunk_rows(None, n, tile or v, d))
    # Tiled: a forward sweep and a backward sweep; untiled: one sweep that does both.
    return (2 if tile else 1) * chunks * head


def sweep(sizes, time_it, repeats, limit_gib):
    rows = []
    for size in sizes:
        n, d, v = size
        for dtype in (jnp.float32, jnp.bfloat16):
            args = (
                jax.ShapeDtypeStruct((n, d), dtype),
                jax.ShapeDtypeStruct((d, v), dtype),
                jax.ShapeDtypeStruct((n,), jnp.int32),
            )
            fits = time_it and 3 * n * v * 4 <= limit_gib * 2**30
            # Each size and dtype timed in a fresh process (see bench/isolated.py for why).
            one = ["--time-one", "x".join(map(str, size)), "--dtype", jnp.dtype(dtype).name, "--repeats", str(repeats)]
            timed = in_fresh_process("bench.fused_linear", *one) if fits else {}
            for name, fn in sweep_methods().items():
                m = step(fn).lower(*args).compile().memory_analysis()
                rows.append({
                    "size": size, "dtype": jnp.dtype(dtype).name, "method": name,
                    "temp_bytes": int(m.temp_size_in_bytes),
                    "head_bytes_read": head_bytes_read(name, size, dtype),
                    "min_s": timed[name]["min_s"] if timed else None,
                })
    return rows


def sweep_markdown(rows) -> str:
    lines = [
        "| N x D x V | dtype | method | temp (MiB) | % of N x V f32 | head read / step (MiB) | time (s) | fastest peer / fused |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        n, d, v = r["size"]
        peers = [q["min_s"] for q in rows if q["size"] == r["size"] and q["dtype"] == r["dtype"]
                 and q["method"] != "fused" and q["min_s"]]
        ratio = f"{min(peers) / r['min_s']:.2f}x" if r["method"] == "fused" and peers and r["min_s"] else ""
        t = f"{r['min_s']:.2f}" if r["min_s"] else "–"
        lines.append(
            f"| {n} x {d} x {v} | {r['dtype']} | {r['method']} | {r['temp_bytes'] / 2**20:,.1f} "
            f"| {100 * r['temp_bytes'] / (n * v * 4):.2f}% | {r['head_bytes_read'] / 2**20:,.0f} | {t} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def _short_label(size, dtype):
    """A tick label that fits under one bar: N x D, then x V, then the dtype."""
    n, d, v = size
    return f"{n}x{d}\nx{v}\n{'f32' if dtype == 'float32' else 'bf16'}"


def _fused_speedups(rows):
    """`(label, fastest peer / fused)` for every timed (size, dtype) of the sweep."""
    out = []
    for r in rows:
        if r["method"] != "fused" or not r["min_s"]:
            continue
        peers = [q["min_s"] for q in rows if q["size"] == r["size"] and q["dtype"] == r["dtype"]
                 and q["method"] != "fused" and q["min_s"]]
        label = _short_label(r["size"], r["dtype"])
        out.append((label, min(peers) / r["min_s"]))
    return out


def sweep_figure(rows, path: Path) -> None:
    """Speed over the fastest peer (timed sizes) and compiled temp memory per method (every size)."""
    from .report import _pyplot

    plt = _pyplot()
    speed = _fused_speedups(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), width_ratios=(1, 1.4))
    if speed:
        labels, ratios = zip(*speed)
        left.bar(range(len(ratios)), ratios, color=["tab:green" if x >= 0.95 else "tab:red" for x in ratios])
        left.set_xticks(range(len(ratios)), labels, fontsize=7)
        for i, x in enumerate(ratios):
            left.text(i, x, f"{x:.2f}", ha="center", va="bottom", fontsize=8)
    left.axhline(1.0, color="black", lw=0.8)
    left.set_ylabel("fastest peer time / fused time")
    left.set_title("fused speed-up, value and gradient (N x D x V)", fontsize=10)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    keys = list(dict.fromkeys((tuple(r["size"]), r["dtype"]) for r in rows))
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        pct = [next((100 * r["temp_bytes"] / (r["size"][0] * r["size"][2] * 4) for r in rows
                     if (tuple(r["size"]), r["dtype"]) == k and r["method"] == method), 0.0) for k in keys]
        right.bar([i + j * width for i in range(len(keys))], pct, width, label=method)
    right.set_yscale("log")
    right.axhline(2.0, color="black", lw=0.8, ls="--")
    right.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))],
                     [_short_label(size, dt) for size, dt in keys], fontsize=7)
    right.set_ylabel("compiled temp, % of one N x V f32 array")
    right.set_title("memory of jax.value_and_grad (compile only); dashed: 2%", fontsize=10)
    right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-size", type=_size, default=(8192, 1024, 65536))
    parser.add_argument("--time-size", type=_size, default=(2048, 512, 32768))
    parser.add_argument("--chunks", default="64,128,256,512,1024")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--sweep", action="store_true", help="the (N, D, V) x dtype sweep")
    parser.add_argument("--sweep-sizes", default=SWEEP_SIZES)
    parser.add_argument("--time", action="store_true", help="with --sweep: also time the sizes that fit")
    parser.add_argument("--time-limit-gib", type=float, default=4.0,
                        help="with --time: time a size only if three N x V f32 arrays fit in this")
    parser.add_argument("--figure", type=Path, help="with --sweep: also draw the sweep to this PNG")
    parser.add_argument("--from-json", type=Path, help="with --sweep: redraw from a saved sweep, measuring nothing")
    parser.add_argument("--time-one", type=_size, help=argparse.SUPPRESS)  # one sweep size, JSON to stdout
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.time_one:
        print(json.dumps(measure_time(args.time_one, (), jnp.dtype(args.dtype), args.repeats, sweep_methods())))
        return
    if args.sweep:
        if args.from_json:
            rows = json.loads(args.from_json.read_text())
        else:
            rows = sweep([_size(s) for s in args.sweep_sizes.split(",")], args.time, args.repeats, args.time_limit_gib)
            save(args.out, "fused_linear_sweep", rows, sweep_markdown(rows))
        if args.figure:
            sweep_figure(rows, args.figure)
        return
    chunks = [int(c) for c in args.chunks.split(",")]
    dtype = jnp.float32
    result = {
        "memory_size": args.memory_size,
        "time_size": args.time_size,
        "repeats": args.repeats,
        **machine(),
        "memory": measure_memory(args.memory_size, chunks, dtype),
        "time": measure_time(args.time_size, chunks, dtype, args.repeats),
    }
    save(args.out, "fused_linear", result, markdown(result))


if __name__ == "__main__":
    main()
