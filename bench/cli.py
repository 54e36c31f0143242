"""``python -m bench``: command line, run loop and progress display."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

from . import baselines, harness, jax_impls, report

# rows x classes. The full sweep spans 64 x 1,024 .. 4,096 x 131,072 and includes
# the size the targets are stated at (2,048 x 32,768).
TARGET_SIZE = (2048, 32768)
PRESETS = {
    # quick: one size, both dtypes; compiling ~80 programs is most of its time.
    "quick": dict(sizes=[(512, 8192)], dtypes=["float32", "bfloat16"], repeats=5),
    "target": dict(sizes=[TARGET_SIZE], dtypes=["float32", "bfloat16"], repeats=5),
    "full": dict(
        sizes=[(r, c) for r in (64, 256, 1024, 4096) for c in (1024, 8192, 32768, 131072)] + [TARGET_SIZE],
        dtypes=["float32", "bfloat16"],
        repeats=7,
    ),
}
IMPLS = ("jaxkl", "optax", "jnp", "numpy", "torch")
ROOT = Path(__file__).resolve().parent.parent


def _size(text: str) -> tuple[int, int]:
    rows, _, classes = text.lower().partition("x")
    return int(rows), int(classes)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    preset = ap.add_mutually_exclusive_group()
    for name in PRESETS:
        preset.add_argument(f"--{name}", dest="preset", action="store_const", const=name)
    ap.set_defaults(preset="quick")
    ap.add_argument("--sizes", type=_size, nargs="+", help="override sizes, e.g. 2048x32768")
    ap.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16"])
    ap.add_argument("--kernels", nargs="+", choices=jax_impls.KERNELS, default=list(jax_impls.KERNELS))
    ap.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    ap.add_argument("--repeats", type=int, help="timed rounds per entry (median reported)")
    ap.add_argument("--seconds", type=float, default=300.0, help="cap on timed rounds per configuration (at least 3 rounds)")
    ap.add_argument("--mem-gb", type=float, default=16.0, help="skip what would need more memory than this")
    ap.add_argument("--out", type=Path, help="results folder (default bench/results/<preset>)")
    ap.add_argument("--docs", action="store_true", help="also regenerate docs/benchmarks.md and README's numbers")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="no progress display")
    ap.add_argument("--from-json", type=Path, help="re-render the reports from a results.json instead of measuring")
    args = ap.parse_args(argv)
    p = PRESETS[args.preset]
    args.sizes = args.sizes or p["sizes"]
    args.dtypes = args.dtypes or p["dtypes"]
    args.repeats = args.repeats or p["repeats"]
    args.out = args.out or ROOT / "bench" / "results" / args.preset
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
    task = progress.add_task(f"{label}: compiling", total=None) if progress else None
    arrays = harness.host_inputs(rows, classes, dtype)
    start = time.perf_counter()
    entries, skipped = harness.jax_entries(args.kernels, args.impls, device, arrays, budget)
    if platform_name == "cpu":  # NumPy and PyTorch run on the host, interleaved with JAX's CPU entries
        more, more_skipped = harness.host_entries(args.kernels, args.impls, arrays, budget)
        entries += more
        skipped += more_skipped
    setup_s = time.perf_counter() - start
    if progress:
        progress.update(task, description=f"{label}: timing", total=len(entries) * (args.repeats + 1))
    repeats = harness.time_entries(
        entries, args.repeats, (lambda: progress.advance(task)) if progress else (lambda: None), args.seconds
    )
    if progress:
        progress.remove_task(task)
    accuracy = harness.bf16_accuracy(args.kernels, arrays, device) if dtype == "bfloat16" else []
    return {
        **config,
        "setup_s": setup_s,
        "repeats": repeats,
        "entries": [e.record() for e in entries],
        "skipped_entries": skipped,
        "bf16_accuracy": accuracy,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        results = run(args)
    report.write_all(results, args.out, plot=not args.no_plot)
    report.print_table(results)
    if args.docs:
        report.write_docs(results, ROOT, args.out)
    print(f"results: {args.out}")
    return 0
