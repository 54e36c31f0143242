"""One kernel's entries, timed in a process of their own.

`python -m bench` runs each (configuration, kernel) group here by default:
`measure` compiles the kernel's jaxkl entry, its peers and floors, and times
them interleaved, exactly as `harness` does in one process; `run` starts it
as `python -m bench.isolated SPEC` and reads the result back.

Why a process per kernel: on CPU, a program whose buffers are larger than
glibc's mmap threshold gets fresh pages on every call, and whether a buffer is
served from freed memory or from fresh, page-faulted pages depends on everything
else the process has allocated and freed: fwd+bwd of `entropy_from_logits` at
2048 x 32768 float32 measured from 0.4x to 1.1x the time of plain `jnp`'s,
depending on what else the process held (docs/benchmarks.md). A fresh process
per kernel is the state a training loop that calls one step function settles
into, and it is the same for jaxkl and its peers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def measure(spec: dict) -> dict:
    """Time one kernel's entries for one configuration, in this process."""
    from . import harness, jax_impls

    device = dict(harness.backends())[spec["backend"]]
    kernel = spec["kernel"]
    start = time.perf_counter()
    arrays = harness.host_inputs(spec["rows"], spec["classes"], spec["dtype"], names=jax_impls.TABLE[kernel].inputs)
    entries, skipped = harness.all_entries([kernel], spec["impls"], spec["backend"], device, arrays, spec["budget"])
    setup_s = time.perf_counter() - start
    repeats = harness.time_entries(entries, spec["repeats"], lambda: None, spec["seconds"])
    return {
        "setup_s": setup_s,
        "repeats": repeats,
        "entries": [e.record() for e in entries],
        "skipped_entries": skipped,
    }


def in_fresh_process(module: str, *args: str) -> Any:
    """Run `python -m module *args` and return the JSON its last line of output holds.

    The stand-alone benches time each size this way too (their `--time-one`),
    for the reason in this module's docstring. Its errors are raised here with its stderr.
    """
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"python -m {module} {' '.join(args)[:200]} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pooled(runs: list[dict]) -> dict:
    """One `measure` result from several processes' runs of the same spec.

    Each entry's timed rounds are pooled and its median taken over all of
    them: a process that ran slow as a whole (on a shared machine the same
    program measured up to 2x apart in two fresh processes) then moves the
    median by its share of the rounds, not all the way. Compile time and
    memory are the first run's (they do not depend on the process).
    """
    first = runs[0]

    def key(entry):
        return entry["kernel"], entry["impl"], entry["mode"]

    times = {key(e): [] for e in first["entries"]}
    for run in runs:
        for e in run["entries"]:
            times[key(e)] += e["times"]
    entries = []
    for entry in first["entries"]:
        pooled_times = times[key(entry)]
        median = float(np.median(pooled_times)) if pooled_times else None
        entries.append(entry | {"times": pooled_times, "median_s": median})
    return first | {
        "setup_s": sum(run["setup_s"] for run in runs),
        "repeats": sum(run["repeats"] for run in runs),
        "processes": len(runs),
        "entries": entries,
    }


def run(spec: dict) -> dict:
    """`measure(spec)` in a fresh Python process."""
    return in_fresh_process("bench.isolated", json.dumps(spec))


if __name__ == "__main__":
    import os

    # As in `python -m bench`: PyTorch's OpenMP threads wait passively (see bench/__main__.py).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    print(json.dumps(measure(json.loads(sys.argv[1]))))
