"""Reports: stdout table, JSON, markdown, PNG plot, the targets check and the docs page."""

from __future__ import annotations

import json
import re
from pathlib import Path

KERNEL_TITLES = {
    "entropy": "entropy_from_logits",
    "cross_entropy": "cross_entropy_from_logits",
    "kl": "kl_divergence_from_logits",
    "js": "js_divergence_from_logits",
    "ce_labels": "cross_entropy_loss (int labels)",
}
TARGET_SIZE = (2048, 32768)
BF16_ROUNDING = 2.0**-8  # half a bfloat16 ulp, relative
DOCS_BEGIN, DOCS_END = "<!-- bench:begin -->", "<!-- bench:end -->"


# ------------------------------------------------------------------- analysis


def rows(results: dict) -> list[dict]:
    """One flat row per timed entry, with its ratios to the floors and to jaxkl."""
    out = []
    for cfg in results["configs"]:
        entries = cfg.get("entries", [])
        med = {(e["kernel"], e["impl"], e["mode"]): e["median_s"] for e in entries}
        for e in entries:
            if e["mode"] == "floor":
                continue
            k, t = e["kernel"], e["median_s"]
            ours = med.get((k, "jaxkl", e["mode"]))
            out.append(
                dict(
                    backend=cfg["backend"],
                    dtype=cfg["dtype"],
                    rows=cfg["rows"],
                    classes=cfg["classes"],
                    kernel=k,
                    impl=e["impl"],
                    mode=e["mode"],
                    ms=t * 1e3,
                    x_exp_floor=t / med[(k, "exp", "floor")],
                    x_read_floor=t / med[(k, "read", "floor")],
                    jaxkl_speedup=(t / ours) if ours else None,
                    gelem_s=cfg["rows"] * cfg["classes"] / t / 1e9,
                    temp_mb=_mb(e["temp_bytes"]),
                    peak_mb=_mb(e["peak_bytes"]),
                    compile_s=e["compile_s"],
                )
            )
    return out


def _mb(b):
    return None if b is None else b / 2**20


def _find(table, **keys):
    for r in table:
        if all(r[k] == v for k, v in keys.items()):
            return r
    return None


def target_config(results: dict) -> tuple[int, int] | None:
    """The CPU float32 size the targets are checked at: 2048 x 32768, else the largest run."""
    sizes = [(c["rows"], c["classes"]) for c in results["configs"] if c["backend"] == "cpu" and c["dtype"] == "float32" and c.get("entries")]
    if not sizes:
        return None
    return TARGET_SIZE if TARGET_SIZE in sizes else max(sizes, key=lambda s: s[0] * s[1])


def targets(results: dict) -> list[dict]:
    """The issue's targets, each with the measured ratio and whether it holds."""
    size = target_config(results)
    if size is None:
        return []
    table = rows(results)
    at = dict(backend="cpu", rows=size[0], classes=size[1])
    checks = []

    def add(kernel, what, value, need, better="higher", detail=None):
        if value is None:
            return
        ok = value >= need if better == "higher" else value <= need
        checks.append(dict(kernel=kernel, target=what, measured=value, required=need, better=better, ok=ok, detail=detail))

    for kernel in ("kl", "entropy", "cross_entropy", "js"):
        peer = "jnp" if kernel == "js" else "optax"

        def r(impl, mode, dtype="float32"):
            return _find(table, **at, dtype=dtype, kernel=kernel, impl=impl, mode=mode)

        ours_fb, ours_f = r("jaxkl", "fwdbwd"), r("jaxkl", "fwd")
        if ours_fb is None or ours_f is None:
            continue
        for impl, need in ((peer, 2.0), ("torch", 2.0)):
            if (x := r(impl, "fwdbwd")) is not None:
                add(kernel, f"fwd+bwd speed-up vs {impl}", x["jaxkl_speedup"], need)
        if (x := r(peer, "fwdbwd")) is not None and x["temp_mb"] is not None and ours_fb["temp_mb"] is not None:
            ratio = ours_fb["temp_mb"] / x["temp_mb"] if x["temp_mb"] else (0.0 if not ours_fb["temp_mb"] else float("inf"))
            detail = f"{ours_fb['temp_mb']:.2f} MB vs {x['temp_mb']:.2f} MB"
            add(kernel, f"fwd+bwd temp memory / {peer}'s", ratio, 0.01, "lower", detail)
        for impl, need in ((peer, 1.2), ("numpy", 5.0)):
            if (x := r(impl, "fwd")) is not None:
                add(kernel, f"fwd speed-up vs {impl}", x["jaxkl_speedup"], need)
        add(kernel, "fwd time / exp floor", ours_f["x_exp_floor"], 1.5, "lower")
        if (b := r("jaxkl", "fwdbwd", "bfloat16")) is not None:
            add(kernel, "fwd+bwd time bf16 / f32", b["ms"] / ours_fb["ms"], 1.0, "lower")
        for cfg in results["configs"]:
            if cfg["backend"] == "cpu" and (cfg["rows"], cfg["classes"]) == size:
                for acc in cfg.get("bf16_accuracy", []):
                    if acc["kernel"] == kernel:
                        add(kernel, "bf16 grad error / largest f32 grad", acc["grad_rel"], BF16_ROUNDING, "lower")
    return checks


# -------------------------------------------------------------------- outputs


def _fmt(x, spec=".2f"):
    return "–" if x is None else format(x, spec)


COLUMNS = ("kernel", "mode", "impl", "ms", "× exp floor", "× read floor", "jaxkl speed-up", "temp MB", "NumPy peak MB", "compile s")
# Column headers of the stdout table (narrower).
SHORT = ("kernel", "mode", "impl", "ms", "×exp", "×read", "speed-up", "temp MB", "np MB", "compile s")


def _cells(r):
    return (
        r["kernel"], r["mode"], r["impl"], _fmt(r["ms"], ".1f"), _fmt(r["x_exp_floor"]), _fmt(r["x_read_floor"]),
        _fmt(r["jaxkl_speedup"]), _fmt(r["temp_mb"], ".1f"), _fmt(r["peak_mb"], ".1f"), _fmt(r["compile_s"]),
    )


def _groups(table):
    keys = sorted({(r["backend"], r["dtype"], r["rows"], r["classes"]) for r in table}, key=lambda k: (k[0], k[1], k[2] * k[3], k[2]))
    for key in keys:
        yield key, [r for r in table if (r["backend"], r["dtype"], r["rows"], r["classes"]) == key]


def print_table(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if Console().is_terminal else 120)
    for (backend, dtype, n, k), group in _groups(rows(results)):
        reps = next((c.get("repeats") for c in results["configs"] if (c["backend"], c["dtype"], c["rows"], c["classes"]) == (backend, dtype, n, k)), None)
        t = Table(title=f"{backend} {dtype} {n}×{k}  (median of {reps}; speed-up = impl time / jaxkl time)")
        for c in SHORT:
            t.add_column(c, justify="left" if c in ("kernel", "mode", "impl") else "right", no_wrap=True)
        for r in group:
            t.add_row(*_cells(r))
        console.print(t)
    checks = targets(results)
    if checks:
        t = Table(title="targets")
        for c in ("kernel", "target", "measured", "required", "ok"):
            t.add_column(c)
        for c in checks:
            t.add_row(c["kernel"], c["target"], _fmt(c["measured"], ".3g"), ("≥ " if c["better"] == "higher" else "≤ ") + _fmt(c["required"], "g"), "yes" if c["ok"] else "NO")
        console.print(t)


def markdown_table(results: dict) -> str:
    lines = []
    for (backend, dtype, n, k), group in _groups(rows(results)):
        lines += [f"#### {backend} {dtype}, {n} × {k}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(_cells(r)) + " |" for r in group]
        lines.append("")
    return "\n".join(lines)


def targets_markdown(results: dict) -> str:
    checks = targets(results)
    if not checks:
        return "_No CPU float32 results to check the targets against._\n"
    size = target_config(results)
    lines = [f"Checked at CPU float32 {size[0]} × {size[1]} (bf16 rows: the same size in bfloat16).", "",
             "| kernel | target | measured | required | met |", "|---|---|---|---|---|"]
    for c in checks:
        req = ("≥ " if c["better"] == "higher" else "≤ ") + format(c["required"], "g")
        measured = f"{c['measured']:.3g}" + (f" ({c['detail']})" if c.get("detail") else "")
        lines.append(f"| {KERNEL_TITLES[c['kernel']]} | {c['target']} | {measured} | {req} | {'yes' if c['ok'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def plot_throughput(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = rows(results)
    panels = sorted({(r["backend"], r["dtype"]) for r in table})
    kernels = [k for k in KERNEL_TITLES if any(r["kernel"] == k for r in table)]
    if not panels or not kernels:
        return
    fig, axes = plt.subplots(len(panels), len(kernels), figsize=(3.6 * len(kernels), 3.0 * len(panels)), squeeze=False)
    for i, (backend, dtype) in enumerate(panels):
        for j, kernel in enumerate(kernels):
            ax = axes[i][j]
            sub = [r for r in table if (r["backend"], r["dtype"], r["kernel"]) == (backend, dtype, kernel)]
            for impl in sorted({r["impl"] for r in sub}):
                for mode, style in (("fwd", "-"), ("fwdbwd", "--")):
                    pts = sorted((r["rows"] * r["classes"], r["gelem_s"]) for r in sub if r["impl"] == impl and r["mode"] == mode)
                    if pts:
                        ax.plot(*zip(*pts), style, marker="o", ms=3, label=f"{impl} {mode}")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{KERNEL_TITLES[kernel]}\n{backend} {dtype}", fontsize=8)
            ax.set_xlabel("rows × classes", fontsize=7)
            ax.set_ylabel("G elements / s", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_all(results: dict, out: Path, *, plot: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    doc = dict(results, rows=rows(results), targets=targets(results))
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str))
    (out / "results.md").write_text(targets_markdown(results) + "\n" + markdown_table(results))
    if plot:
        plot_throughput(results, out / "throughput.png")


# ----------------------------------------------------------------------- docs


def _replace_block(path: Path, body: str) -> None:
    text = path.read_text()
    pattern = re.compile(re.escape(DOCS_BEGIN) + ".*?" + re.escape(DOCS_END), re.S)
    block = f"{DOCS_BEGIN}\n{body.rstrip()}\n{DOCS_END}"
    if not pattern.search(text):
        raise ValueError(f"{path} has no {DOCS_BEGIN} ... {DOCS_END} block to regenerate")
    path.write_text(pattern.sub(lambda _: block, text))


def headline(results: dict) -> list[str]:
    """Short lines for the README: the main fwd+bwd and forward ratios at the target size."""
    lines = []
    for c in targets(results):
        if c["target"].startswith(("fwd+bwd speed-up", "fwd speed-up", "fwd+bwd temp")):
            value = c["detail"] if c.get("detail") else f"{c['measured']:.3g}×"
            lines.append(f"- `{KERNEL_TITLES[c['kernel']]}` {c['target']}: **{value}** (target {'≥' if c['better'] == 'higher' else '≤'} {c['required']:g})")
    return lines


def write_docs(results: dict, root: Path, out: Path) -> None:
    """Regenerate the measured parts of docs/benchmarks.md and the README's Benchmarks section."""
    img = root / "docs" / "img"
    img.mkdir(exist_ok=True)
    plot_throughput(results, img / "benchmarks-throughput.png")
    m = results["machine"]
    v = results["versions"]
    size = target_config(results)
    summary = [
        f"Measured with `{results.get('command') or 'python -m bench'}` on {m.get('cpu_model', m['processor'])}, "
        f"{m['cpu_count']} cores, load average {m['loadavg_start'][0]:.1f} at the start; "
        f"jax {v['jax']}, optax {v['optax']}, NumPy {v['numpy']}, PyTorch {v['torch'] or 'not installed'}.",
        "",
        "### Targets",
        "",
        targets_markdown(results),
        "### Throughput",
        "",
        "![throughput](img/benchmarks-throughput.png)",
        "",
        "### All measurements",
        "",
        markdown_table(results),
    ]
    _replace_block(root / "docs" / "benchmarks.md", "\n".join(summary))
    readme = [f"At CPU float32 {size[0]} × {size[1]} on {m.get('cpu_model', m['processor'])} ({m['cpu_count']} cores, "
              f"load average {m['loadavg_start'][0]:.1f}), fwd+bwd = value and gradient wrt both inputs "
              "(speed-up = other implementation's time / jaxkl's; memory = compiled temp bytes, jaxkl vs theirs):", ""]
    readme += headline(results)
    _replace_block(root / "README.md", "\n".join(readme))
