"""A GRPO step from the hidden states vs materialised logits: compiled memory and time.

Run from the repository root::

    python -m bench.rl                              # defaults below
    python -m bench.rl --time-sizes 1024x256x16384 --repeats 3

Every method computes the same thing: `jax.value_and_grad` (wrt the hidden
states and the head) of `policy_loss(loss_type="grpo")` with a k3 KL
penalty to a reference and an entropy bonus, on the log-probs and entropy of
the sampled tokens.

* ``fused loss``: `fused_linear_policy_loss(h, w, y, old, adv, ...)`, the
  gradient taken in the forward sweep (three matmuls; class-tiled heads take
  the composition below);
* ``fused log-probs``: `fused_linear_token_logprobs(h, w, y,
  return_entropy=True)` composed with `policy_loss` (four matmuls);
* ``materialised``: `jax.nn.log_softmax(h @ w)`, `take_along_axis` and
  `-sum(p log p)` — what a user writes by hand.

Memory is read from the compiled step (``memory_analysis()``, no allocation),
so it is measured at a language-model size (N x D x V = 8192 x 1024 x 131072 f32)
on any machine; time needs real arrays and is measured at each of
``--time-sizes`` (one below and one above the class-tiling threshold of
65,536 classes), each size in a fresh process (``bench/isolated.py`` says
why), the methods round-robin, minimum (and median) over ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import jaxkl

from .isolated import in_fresh_process
from .saved import machine, save

RESULTS = Path(__file__).parent / "results"
TOKENS_PER_SEQUENCE = 512
KL_COEF, ENTROPY_COEF = 0.04, 0.01


def _size(text: str) -> tuple[int, int, int]:
    n, d, v = (int(x) for x in text.lower().split("x"))
    return n, d, v


def _materialised(h, w, y):
    logp = jax.nn.log_softmax(jnp.dot(h, w, preferred_element_type=jnp.float32))
    lp = jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]
    return lp, -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def _fused_logprobs(h, w, y):
    return jaxkl.fused_linear_token_logprobs(h, w, y, return_entropy=True)


def _composed(token_logprobs):
    """The GRPO loss of `policy_loss` on `token_logprobs(h, w, y) -> (log-probs, entropy)`."""

    def loss(h, w, y, old, ref, adv):
        lp, ent = token_logprobs(h, w, y)
        shape = old.shape
        value, _ = jaxkl.policy_loss(
            lp.reshape(shape), old, adv, ref_logprobs=ref, kl_coef=KL_COEF,
            entropy=ent.reshape(shape), entropy_coef=ENTROPY_COEF,
        )
        return value

    return loss


def _fused_loss(h, w, y, old, ref, adv):
    (b, t), d = old.shape, h.shape[1]
    value, _ = jaxkl.fused_linear_policy_loss(
        h.reshape(b, t, d), w, y.reshape(b, t), old, adv, ref_logprobs=ref, kl_coef=KL_COEF,
        entropy_coef=ENTROPY_COEF,
    )
    return value


# name -> loss(h, w, y, old, ref, adv); the last is the baseline of the ratios.
METHODS = {
    "fused loss": _fused_loss,
    "fused log-probs": _composed(_fused_logprobs),
    "materialised": _composed(_materialised),
}
BASELINE = "materialised"


def grpo_step(loss):
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def _shapes(size, dtype):
    n, d, v = size
    t = min(TOKENS_PER_SEQUENCE, n)
    b = n // t
    return (
        jax.ShapeDtypeStruct((n, d), dtype),
        jax.ShapeDtypeStruct((d, v), dtype),
        jax.ShapeDtypeStruct((n,), jnp.int32),
        jax.ShapeDtypeStruct((b, t), jnp.float32),
        jax.ShapeDtypeStruct((b, t), jnp.float32),
        jax.ShapeDtypeStruct((b,), jnp.float32),
    )


def measure_memory(size, dtype=jnp.float32):
    rows = {}
    for name, fn in METHODS.items():
        m = grpo_step(fn).lower(*_shapes(size, dtype)).compile().memory_analysis()
        rows[name] = {"temp_bytes": int(m.temp_size_in_bytes)}
    return rows


def measure_time(size, repeats, dtype=jnp.float32):
    n, d, v = size
    shapes = _shapes(size, dtype)
    keys = jax.random.split(jax.random.key(0), 6)
    h = jax.random.normal(keys[0], (n, d), dtype)
    w = (jax.random.normal(keys[1], (d, v), dtype) * d**-0.5).astype(dtype)
    y = jax.random.randint(keys[2], (n,), 0, v)
    old = -5.0 + jax.random.normal(keys[3], shapes[3].shape)
    ref = -5.0 + jax.random.normal(keys[4], shapes[4].shape)
    adv = jax.random.normal(keys[5], shapes[5].shape)
    args = (h, w, y, old, ref, adv)
    steps = {name: grpo_step(fn) for name, fn in METHODS.items()}
    values = {name: float(jax.block_until_ready(f(*args))[0]) for name, f in steps.items()}
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, f in steps.items():
            start = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[name].append(time.perf_counter() - start)
    return {name: {"min_s": min(ts), "median_s": statistics.median(ts), "loss": values[name]} for name, ts in times.items()}


def markdown(result) -> str:
    n, d, v = result["memory_size"]
    one_logits = n * v * 4
    lines = [
        f"GRPO step (`value_and_grad` of `policy_loss` with k3 KL and entropy bonus), "
        f"jax {result['jax']} on {result['device']} ({result['cpu_count']} cores).",
        "",
        f"Compiled temp memory at N x D x V = {n} x {d} x {v} f32 (one N x V f32 array = "
        f"{one_logits / 2**20:,.0f} MiB):",
        "",
        "| method | temp memory (MiB) | vs one N x V f32 |",
        "|---|---:|---:|",
    ]
    for name, mem in result["memory"].items():
        lines.append(f"| {name} | {mem['temp_bytes'] / 2**20:,.1f} | {100 * mem['temp_bytes'] / one_logits:.2f}% |")
    fused = [name for name in result["memory"] if name != BASELINE]
    lines += [
        "",
        f"Time, f32, min (median) of {result['repeats']} round-robin runs, each size in a fresh process; "
        f"speed = {BASELINE} time / method time:",
        "",
        "| N x D x V | " + " | ".join(f"{name} (s)" for name in result["memory"]) + " | "
        + " | ".join(f"{name} speed" for name in fused) + " |",
        "|---|" + "---:|" * (len(result["memory"]) + len(fused)),
    ]
    for row in result["time"]:
        times = [f"{row[name]['min_s']:.3f} ({row[name]['median_s']:.3f})" for name in result["memory"]]
        speeds = [f"{row[BASELINE]['min_s'] / row[name]['min_s']:.2f}x" for name in fused]
        lines.append(f"| {' x '.join(map(str, row['size']))} | " + " | ".join(times + speeds) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-size", type=_size, default=(8192, 1024, 131072))
    parser.add_argument("--time-sizes", default="2048x256x32768,512x256x131072",
                        help="comma-separated N x D x V sizes to time")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--time-one", type=_size, help=argparse.SUPPRESS)  # one size, JSON to stdout
    args = parser.parse_args(argv)
    if args.time_one:
        print(json.dumps(measure_time(args.time_one, args.repeats)))
        return
    result = {
        "memory_size": args.memory_size,
        "repeats": args.repeats,
        **machine(),
        "memory": measure_memory(args.memory_size),
        # Each size timed in a fresh process (see bench/isolated.py for why).
        "time": [
            {"size": _size(s), **in_fresh_process("bench.rl", "--time-one", s, "--repeats", str(args.repeats))}
            for s in args.time_sizes.split(",")
        ],
    }
    save(args.out, "rl", result, markdown(result))


if __name__ == "__main__":
    main()
