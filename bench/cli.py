"""`python -m bench`: command line, run loop and progress display."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

from . import baselines, harness, isolated, jax_impls, report

DESCRIPTION = """\
Time jaxkl's kernels and losses against the JAX peers people use instead (optax,
plain jnp/jax.nn autodiff) and, where installed, NumPy and PyTorch CPU: forward
(fwd) and value plus gradient (fwd+bwd), on every backend JAX sees. Each kernel's
implementations are timed side by side, interleaved, in a fresh process of their
own (see bench/isolated.py for why; --in-process times everything in one).
The first line printed says how many cells (kernel x shape x dtype x mode)
jaxkl is at least as fast as the fastest JAX peer in (a median within 5% is a
tie); then the speed-up grid and the targets. Every timing goes to
<out>/results.md and results.json, the speed-up plot to <out>/speedup.png."""

ALL_IMPLS = ("jaxkl", "optax", "jnp", "numpy", "torch")
BOTH_DTYPES = ["float32", "bfloat16"]
# The common shapes jaxkl must never lose at (rows x classes): few long rows, the
# headline the targets are stated at, many short rows, an LLM vocabulary.
SWEEP_SIZES = [(512, 8192), report.TARGET_SIZE, (8192, 1024), (32, 262144)]


class Preset(NamedTuple):
    about: str  # the --help line: what it runs and roughly how long on 2 CPU cores
    sizes: list[tuple[int, int]]
    dtypes: list[str]
    impls: tuple[str, ...]
    repeats: int


PRESETS = {
    "quick": Preset(
        "the default: 512 x 8192, float32 and bfloat16, every kernel, every implementation "
        "(jaxkl, optax, jnp, NumPy, PyTorch if installed); ~2 minutes",
        [(512, 8192)], BOTH_DTYPES, ALL_IMPLS, 5,
    ),
    "target": Preset(
        "2048 x 32768 (the size the headline targets are stated at), float32 and bfloat16, "
        "every implementation; ~10 minutes",
        [report.TARGET_SIZE], BOTH_DTYPES, ALL_IMPLS, 5,
    ),
    "sweep": Preset(
        "the never-slower check: 512 x 8192, 2048 x 32768, 8192 x 1024 and 32 x 262144, "
        "float32 and bfloat16, JAX implementations (jaxkl, optax, jnp) plus PyTorch if installed; "
        "~20 minutes; with --docs it regenerates docs/benchmarks.md and the README's numbers",
        SWEEP_SIZES, BOTH_DTYPES, ("jaxkl", "optax", "jnp", "torch"), 5,
    ),
    "full": Preset(
        "throughput against size: rows 64..4096 x classes 1024..131072 plus the sweep's shapes, "
        "float32 and bfloat16, every implementation; hours",
        sorted({(r, c) for r in (64, 256, 1024, 4096) for c in (1024, 8192, 32768, 131072)} | set(SWEEP_SIZES)),
        BOTH_DTYPES, ALL_IMPLS, 7,
    ),
}
ROOT = Path(__file__).resolve().parent.parent


def _size(text: str) -> tuple[int, int]:
    rows, _, classes = text.lower().partition("x")
    return int(rows), int(classes)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    preset = ap.add_argument_group(
        "presets (one at most; times on 2 CPU cores; --sizes, --dtypes, --impls, --repeats override parts)"
    )
    choice = preset.add_mutually_exclusive_group()
    for name, p in PRESETS.items():
        choice.add_argument(f"--{name}", dest="preset", action="store_const", const=name, help=p.about)
    ap.set_defaults(preset="quick")
    ap.add_argument("--sizes", type=_size, nargs="+", help="override sizes, e.g. 2048x32768")
    ap.add_argument("--dtypes", nargs="+", choices=BOTH_DTYPES)
    ap.add_argument(
        "--kernels", nargs="+", choices=jax_impls.KERNELS, default=list(jax_impls.KERNELS), metavar="KERNEL",
        help="kernels to time (default: all): " + ", ".join(jax_impls.KERNELS),
    )
    ap.add_argument("--impls", nargs="+", choices=ALL_IMPLS, metavar="IMPL", help="implementations: " + ", ".join(ALL_IMPLS))
    ap.add_argument("--repeats", type=int, help="timed rounds per entry (median reported; a kernel whose rounds are short gets more, up to 20x)")
    ap.add_argument("--seconds", type=float, default=300.0, help="cap on timed rounds per configuration (at least 3 rounds)")
    ap.add_argument("--mem-gb", type=float, default=16.0, help="skip what would need more memory than this")
    ap.add_argument(
        "--out", type=Path,
        help="results folder (default bench/results/<preset>, or bench/results/<preset>-subset when "
        "--sizes, --dtypes, --kernels or --impls narrow the preset: a partial run never overwrites "
        "the committed results)",
    )
    ap.add_argument("--docs", action="store_true", help="also regenerate docs/benchmarks.md and README's numbers")
    ap.add_argument("--details", action="store_true", help="also print every timing (always in results.md)")
    ap.add_argument(
        "--in-process", dest="isolate", action="store_false",
        help="time every kernel in this one process instead of one fresh process per kernel "
        "(faster to start; large-shape timings then depend on what else the process holds)",
    )
    ap.add_argument(
        "--processes", type=int, default=1, metavar="K",
        help="time each kernel in K fresh processes one after another and pool their rounds "
        "(median over all): a process that runs slow as a whole weighs 1/K (default 1)",
    )
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="no progress display")
    ap.add_argument("--from-json", type=Path, help="re-render the reports from a results.json instead of measuring")
    args = ap.parse_args(argv)
    if args.processes < 1:
        ap.error(f"--processes must be at least 1, got {args.processes}")
    if args.processes > 1 and not args.isolate:
        ap.error("--processes needs fresh processes; it cannot be combined with --in-process")
    p = PRESETS[args.preset]
    narrowed = args.sizes or args.dtypes or args.impls or args.kernels != list(jax_impls.KERNELS)
    args.sizes = args.sizes or p.sizes
    args.dtypes = args.dtypes or p.dtypes
    args.impls = args.impls or list(p.impls)
    args.repeats = args.repeats or p.repeats
    args.out = args.out or ROOT / "bench" / "results" / (args.preset + ("-subset" if narrowed else ""))
    return args


def machine_info() -> dict:
    info = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "processor": platform.processor(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()
        info["mem_total_gb"] = round(int(mem[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def versions() -> dict:
    import optax
    import scipy

    import jaxkl

    v = {
        "jaxkl": jaxkl.__version__,
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else None,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }
    torch = baselines.torch_module()
    v["torch"] = torch.__version__ if torch is not None else None
    if torch is not None:
        v["torch_threads"] = torch.get_num_threads()
    v["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    v["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "")
    return v


def _progress(quiet: bool):
    if quiet:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def run(args: argparse.Namespace) -> dict:
    budget = int(args.mem_gb * 2**30)
    results = {
        "preset": args.preset,
        "command": "python -m bench " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("__main__.py") else None,
        # One fresh process per kernel (bench.isolated), or all in this one (--in-process).
        "isolated": args.isolate,
        # Fresh processes per kernel whose rounds are pooled (--processes).
        "processes": args.processes,
        "machine": machine_info(),
        "versions": versions(),
        "backends": [],
        "configs": [],
    }
    devices = harness.backends()
    results["backends"] = [dict(platform=p, device_kind=d.device_kind, device=str(d)) for p, d in devices]
    progress = _progress(args.quiet)
    if progress is not None:
        progress.start()
    try:
        overall = progress.add_task("configurations", total=len(devices) * len(args.dtypes) * len(args.sizes)) if progress else None
        for platform_name, device in devices:
            for dtype in args.dtypes:
                for rows, classes in args.sizes:
                    label = f"{platform_name} {dtype} {rows}x{classes}"
                    results["configs"].append(
                        _run_config(args, platform_name, device, dtype, rows, classes, budget, progress, label)
                    )
                    if progress:
                        progress.advance(overall)
    finally:
        if progress is not None:
            progress.stop()
    results["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return results


def _run_config(args, platform_name, device, dtype, rows, classes, budget, progress, label) -> dict:
    config = dict(backend=platform_name, device_kind=device.device_kind, dtype=dtype, rows=rows, classes=classes)
    item = 2 if dtype == "bfloat16" else 4
    if 6 * rows * classes * item > budget:
        return {**config, "skipped": "inputs over the memory budget", "entries": [], "skipped_entries": []}
    measured = _measure_isolated if args.isolate else _measure_in_process
    config |= measured(args, config, device, budget, progress, label)
    # Accuracy is only checked (report.targets) at the size the targets name.
    at_target = dtype == "bfloat16" and (rows, classes) == report.TARGET_SIZE
    accuracy = harness.bf16_accuracy(args.kernels, harness.host_inputs(rows, classes, dtype), device) if at_target else []
    return {**config, "bf16_accuracy": accuracy}


def _measure_isolated(args, config, device, budget, progress, label) -> dict:
    """Each kernel's entries timed in a fresh process (`bench.isolated` says why)."""
    task = progress.add_task(f"{label}: one process per kernel", total=len(args.kernels)) if progress else None
    out = {"setup_s": 0.0, "repeats": args.repeats, "entries": [], "skipped_entries": []}
    for kernel in args.kernels:
        spec = {
            k: config[k] for k in ("backend", "dtype", "rows", "classes")
        } | dict(
            kernel=kernel, impls=list(args.impls), budget=budget, repeats=args.repeats,
            # --seconds caps a whole configuration: each kernel gets its share.
            seconds=args.seconds / len(args.kernels),
        )
        got = isolated.pooled([isolated.run(spec) for _ in range(args.processes)])
        out["setup_s"] += got["setup_s"]
        out["repeats"] = min(out["repeats"], got["repeats"])
        out["entries"] += got["entries"]
        out["skipped_entries"] += got["skipped_entries"]
        if progress:
            progress.advance(task)
    if progress:
        progress.remove_task(task)
    return out


def _measure_in_process(args, config, device, budget, progress, label) -> dict:
    """Every kernel's entries compiled and timed in this process (`--in-process`)."""
    task = progress.add_task(f"{label}: compiling", total=None) if progress else None
    arrays = harness.host_inputs(config["rows"], config["classes"], config["dtype"])
    start = time.perf_counter()
    entries, skipped = harness.all_entries(args.kernels, args.impls, config["backend"], device, arrays, budget)
    setup_s = time.perf_counter() - start
    if progress:
        progress.update(task, description=f"{label}: timing", total=len(entries) * (args.repeats + 1))
    repeats = harness.time_entries(
        entries, args.repeats, (lambda: progress.advance(task)) if progress else (lambda: None), args.seconds
    )
    if progress:
        progress.remove_task(task)
    return {
        "setup_s": setup_s,
        "repeats": repeats,
        "entries": [e.record() for e in entries],
        "skipped_entries": skipped,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        results = run(args)
    report.write_all(results, args.out, plot=not args.no_plot)
    report.print_summary(results, details=args.details)
    if args.docs:
        report.write_docs(results, ROOT, args.out)
    print(f"results: {args.out}")
    return 0
