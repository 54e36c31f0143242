"""Tiled contrastive loss and top-k distillation vs their materialised versions: memory and time.

Run from the repository root::

    python -m bench.contrastive                      # defaults below
    python -m bench.contrastive --time-size 2048x256 --repeats 3

Memory is read from the compiled `jax.value_and_grad` (`memory_analysis()`,
no allocation), at language-model sizes: contrastive N x D = 16384 x 256 float32
(one N x N array is 1 GiB), top-k distillation rows x V x k = 2048 x 32768 x 64.
Time (fwd + bwd, min and median of `--repeats` round-robin runs) is measured
at `--time-size` for the contrastive loss only; on a shared machine it is a
rough check, not a result.

Peers: `materialised`, the same loss written with the whole similarity
matrix (or a rows x V mask for the student's tail) and plain autodiff.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import jaxkl

from .saved import machine, save

RESULTS = Path(__file__).parent / "results"


def materialised_contrastive(x, y, t):
    s = x @ y.T / t
    d = jnp.diagonal(s)
    return jnp.mean(0.5 * (jax.nn.logsumexp(s, axis=1) + jax.nn.logsumexp(s, axis=0)) - d)


def materialised_topk(z, idx, lp, t=2.0):
    """Bucket-tail forward KL with the student's tail summed over a rows x V mask."""
    ls = jax.nn.log_softmax(z / t)
    picked = jnp.take_along_axis(ls, idx, axis=-1)
    outside = jnp.ones(z.shape, bool).at[jnp.arange(z.shape[0])[:, None], idx].set(False)
    s_tail = jax.nn.logsumexp(jnp.where(outside, ls, -jnp.inf), axis=-1)
    t_tail = jnp.log1p(-jnp.sum(jnp.exp(lp), axis=-1)) / t
    student = jnp.concatenate([picked, s_tail[:, None]], axis=-1)
    teacher = jax.nn.log_softmax(jnp.concatenate([lp / t, t_tail[:, None]], axis=-1))
    return t * t * jnp.sum(jnp.exp(teacher) * (teacher - student)) / z.shape[0]


CONTRASTIVE = {
    "jaxkl.contrastive_loss": lambda x, y, t: jaxkl.contrastive_loss(x, y, temperature=t),
    "materialised": materialised_contrastive,
}
TOPK = {
    "jaxkl.topk_distillation_loss": lambda z, i, lp: jaxkl.topk_distillation_loss(z, i, lp, temperature=2.0),
    "materialised": materialised_topk,
}


def _temp(fn, args, argnums):
    compiled = jax.jit(jax.value_and_grad(fn, argnums=argnums)).lower(*args).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def measure_memory(n, d, rows, classes, k):
    emb = jax.ShapeDtypeStruct((n, d), jnp.float32)
    scalar = jax.ShapeDtypeStruct((), jnp.float32)
    topk = (
        jax.ShapeDtypeStruct((rows, classes), jnp.float32),
        jax.ShapeDtypeStruct((rows, k), jnp.int32),
        jax.ShapeDtypeStruct((rows, k), jnp.float32),
    )
    return {
        "contrastive": {name: _temp(f, (emb, emb, scalar), (0, 1, 2)) for name, f in CONTRASTIVE.items()},
        "topk": {name: _temp(f, topk, 0) for name, f in TOPK.items()},
    }


def measure_time(n, d, repeats):
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (n, d)) * d**-0.5
    y = x + jax.random.normal(ky, (n, d)) * d**-0.5
    t = jnp.float32(0.07)
    steps = {name: jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2))) for name, f in CONTRASTIVE.items()}
    for f in steps.values():
        jax.block_until_ready(f(x, y, t))
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, f in steps.items():
            start = time.perf_counter()
            jax.block_until_ready(f(x, y, t))
            times[name].append(time.perf_counter() - start)
    return {name: {"min_s": min(ts), "median_s": statistics.median(ts)} for name, ts in times.items()}


def markdown(result) -> str:
    n, d = result["contrastive_size"]
    rows, classes, k = result["topk_size"]
    mem = result["memory"]
    nn = n * n * 4
    logits = rows * classes * 4
    lines = [
        f"Compiled `value_and_grad` temporaries (float32, `memory_analysis()`), {result['device']}, jax {result['jax']}.",
        "",
        "| loss | size | method | temp (MiB) | vs one N x N / rows x V array |",
        "|---|---|---|---:|---:|",
    ]
    for name, b in mem["contrastive"].items():
        lines.append(f"| contrastive | N x D = {n} x {d} | {name} | {b / 2**20:,.1f} | {100 * b / nn:.2f}% |")
    for name, b in mem["topk"].items():
        lines.append(f"| top-k distillation | {rows} x {classes}, k = {k} | {name} | {b / 2**20:,.1f} | {100 * b / logits:.2f}% |")
    if result.get("time"):
        tn, td = result["time_size"]
        tim = result["time"]
        ref = tim["materialised"]["min_s"]
        lines += [
            "",
            f"Contrastive fwd + bwd at N x D = {tn} x {td}, min / median of {result['repeats']} round-robin runs "
            f"({result['cpu_count']} cores; shared machines make this rough):",
            "",
            "| method | min (s) | median (s) | vs materialised |",
            "|---|---:|---:|---:|",
        ]
        for name, s in tim.items():
            lines.append(f"| {name} | {s['min_s']:.3f} | {s['median_s']:.3f} | {s['min_s'] / ref:.2f}x |")
    return "\n".join(lines) + "\n"


def _pair(text):
    return tuple(int(v) for v in text.lower().split("x"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contrastive-size", type=_pair, default=(16384, 256), help="N x D for memory")
    parser.add_argument("--topk-size", type=_pair, default=(2048, 32768, 64), help="rows x V x k for memory")
    parser.add_argument("--time-size", type=_pair, default=(2048, 256), help="N x D for time; 0x0 skips timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = {
        "contrastive_size": args.contrastive_size,
        "topk_size": args.topk_size,
        "time_size": args.time_size,
        "repeats": args.repeats,
        **machine(),
        "memory": measure_memory(*args.contrastive_size, *args.topk_size),
        "time": measure_time(*args.time_size, args.repeats) if args.time_size[0] else None,
    }
    save(args.out, "contrastive", result, markdown(result))


if __name__ == "__main__":
    main()
