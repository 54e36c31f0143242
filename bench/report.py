"""Reports: the headline, speed-up grids, targets, JSON, markdown, plots and the docs page.

The unit of the "never slower" rule is a *cell*: one kernel x backend x shape x
dtype x mode (fwd or fwd+bwd). Its ratio is the fastest JAX peer's median time
over jaxkl's, so above 1 jaxkl is faster.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .jax_impls import TABLE

TARGET_SIZE = (2048, 32768)  # rows x classes the headline targets are stated at (CPU float32)
TIE = 0.95  # a jaxkl median within 5% of the fastest peer's is a tie, not a loss
JAX_PEERS = ("optax", "jnp")
# fwd+bwd speed-up over the fastest JAX peer required at TARGET_SIZE (the headline).
HEADLINE_SPEEDUP = {"kl": 1.5, "entropy": 1.5, "js": 1.5, "ce_labels": 1.2}
# The row kernels on logits, held to the floor, memory and bfloat16 targets at TARGET_SIZE.
LOGITS_KERNELS = ("entropy", "cross_entropy", "kl", "js", "ce_labels")
EXP_FLOOR_STRETCH = 1.5  # forward time / exp floor
NUMPY_SPEEDUP = 5.0  # forward, where NumPy ran
TEMP_FRACTION = 0.01  # fwd+bwd temp bytes / one rows x classes input: no full-size temporary
BF16_ROUNDING = 2.0**-8  # half a bfloat16 ulp, relative
MODES = {"fwd": "fwd", "fwdbwd": "fwd+bwd"}
DTYPES = {"float32": "f32", "bfloat16": "bf16"}
DOCS_BEGIN, DOCS_END = "<!-- bench:begin -->", "<!-- bench:end -->"


def title(kernel: str) -> str:
    return TABLE[kernel].title if kernel in TABLE else kernel


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
                    x_exp_floor=_ratio(t, med.get((k, "exp", "floor"))),
                    x_read_floor=_ratio(t, med.get((k, "read", "floor"))),
                    jaxkl_speedup=_ratio(t, ours),
                    gelem_s=cfg["rows"] * cfg["classes"] / t / 1e9,
                    temp_mb=_mb(e["temp_bytes"]),
                    peak_mb=_mb(e["peak_bytes"]),
                    compile_s=e["compile_s"],
                )
            )
    return out


def _ratio(x, y):
    return x / y if x is not None and y else None


def _mb(b):
    return None if b is None else b / 2**20


def cells(results: dict) -> list[dict]:
    """One row per cell jaxkl and at least one JAX peer ran in: the fastest peer and the ratios."""
    out = []
    for cfg in results["configs"]:
        med = {(e["kernel"], e["impl"], e["mode"]): e["median_s"] for e in cfg.get("entries", [])}
        for (kernel, impl, mode), ours in med.items():
            if impl != "jaxkl":
                continue
            peers = {p: med[(kernel, p, mode)] for p in JAX_PEERS if (kernel, p, mode) in med}
            if not peers:
                continue
            peer = min(peers, key=peers.get)
            out.append(
                dict(
                    backend=cfg["backend"], dtype=cfg["dtype"], rows=cfg["rows"], classes=cfg["classes"],
                    kernel=kernel, mode=mode, jaxkl_ms=ours * 1e3, peer=peer, peer_ms=peers[peer] * 1e3,
                    vs_peer=peers[peer] / ours, vs_torch=_ratio(med.get((kernel, "torch", mode)), ours),
                )
            )
    return out


def cell_label(c: dict) -> str:
    return f"{c['kernel']} {c['backend']} {c['rows']}×{c['classes']} {c['dtype']} {MODES[c['mode']]}"


def never_slower(results: dict) -> dict:
    """How many cells pass the never-slower rule (ratio ≥ TIE), and the slowest cell."""
    table = cells(results)
    slowest = min(table, key=lambda c: c["vs_peer"], default=None)
    return dict(passed=sum(c["vs_peer"] >= TIE for c in table), total=len(table), slowest=slowest)


def headline(results: dict) -> str:
    """The one line a newcomer reads first."""
    ns = never_slower(results)
    if not ns["total"]:
        return "jaxkl vs fastest JAX peer: no cell measured (needs jaxkl and optax or jnp)"
    s = ns["slowest"]
    return (
        f"jaxkl vs fastest JAX peer: {ns['passed']} of {ns['total']} cells at least as fast "
        f"(ties within {1 - TIE:.0%}); slowest: {cell_label(s)} {s['vs_peer']:.2f}× (vs {s['peer']})"
    )


def _check(kernel, target, measured, required, better="higher", detail=None) -> dict:
    ok = measured >= required if better == "higher" else measured <= required
    return dict(kernel=kernel, target=target, measured=measured, required=required, better=better, ok=ok, detail=detail)


def targets(results: dict) -> list[dict]:
    """The targets, each with the measured value and whether it holds.

    The never-slower row covers every cell run; the others are stated at
    TARGET_SIZE on CPU and appear only when that size was run.
    """
    checks = []
    ns = never_slower(results)
    if ns["total"]:
        s = ns["slowest"]
        detail = f"{ns['passed']} of {ns['total']} cells; slowest: {cell_label(s)}"
        checks.append(_check("every kernel", "never slower than the fastest JAX peer (each cell)", s["vs_peer"], TIE, detail=detail))
    return checks + _target_size_checks(results)


def ran_target_size(results: dict) -> bool:
    return any(
        (c["backend"], c["dtype"], c["rows"], c["classes"]) == ("cpu", "float32", *TARGET_SIZE) and c.get("entries")
        for c in results["configs"]
    )


def _at_target(table: list[dict], **keys) -> dict | None:
    where = dict(backend="cpu", rows=TARGET_SIZE[0], classes=TARGET_SIZE[1], **keys)
    return next((r for r in table if all(r[k] == v for k, v in where.items())), None)


def _target_size_checks(results: dict) -> list[dict]:
    if not ran_target_size(results):
        return []
    checks = []
    by_cell, by_row = cells(results), rows(results)
    for kernel, need in HEADLINE_SPEEDUP.items():
        if (c := _at_target(by_cell, dtype="float32", kernel=kernel, mode="fwdbwd")) is not None:
            checks.append(_check(kernel, f"fwd+bwd speed-up vs fastest JAX peer ({c['peer']})", c["vs_peer"], need))
    input_mb = TARGET_SIZE[0] * TARGET_SIZE[1] * 4 / 2**20
    accuracy = {
        a["kernel"]: a
        for cfg in results["configs"]
        if cfg["backend"] == "cpu" and (cfg["rows"], cfg["classes"]) == TARGET_SIZE
        for a in cfg.get("bf16_accuracy", [])
    }
    for kernel in LOGITS_KERNELS:

        def row(impl, mode, dtype="float32"):
            return _at_target(by_row, dtype=dtype, kernel=kernel, impl=impl, mode=mode)

        fwd, fb, fb16 = row("jaxkl", "fwd"), row("jaxkl", "fwdbwd"), row("jaxkl", "fwdbwd", "bfloat16")
        if fwd is None or fb is None:
            continue
        if fwd["x_exp_floor"] is not None:
            checks.append(_check(kernel, "fwd time / exp floor (stretch)", fwd["x_exp_floor"], EXP_FLOOR_STRETCH, "lower"))
        if fb["temp_mb"] is not None:
            detail = f"{fb['temp_mb']:.2f} MB vs {input_mb:.0f} MB"
            checks.append(_check(kernel, "fwd+bwd temp memory / one input", fb["temp_mb"] / input_mb, TEMP_FRACTION, "lower", detail))
        if (x := row("numpy", "fwd")) is not None:
            checks.append(_check(kernel, "fwd speed-up vs numpy", x["jaxkl_speedup"], NUMPY_SPEEDUP))
        if fb16 is not None:
            checks.append(_check(kernel, "fwd+bwd time bf16 / f32", fb16["ms"] / fb["ms"], 1.0, "lower"))
        if kernel in accuracy:
            checks.append(_check(kernel, "bf16 grad error / largest f32 grad", accuracy[kernel]["grad_rel"], BF16_ROUNDING, "lower"))
    return checks


def target_size_note(results: dict) -> str | None:
    """Why the size-specific targets are absent, or None when they were checked."""
    if ran_target_size(results):
        return None
    rows_, classes = TARGET_SIZE
    return (
        f"The other targets are stated at CPU float32 {rows_} × {classes}, which this run did not measure "
        "(python -m bench --target, or --sweep)."
    )


def grid(results: dict, key: str = "vs_peer") -> tuple[list[str], list[tuple[str, list]]]:
    """A ratio table: columns shape × dtype (× backend), rows kernel × mode, entries `key`."""
    table = [c for c in cells(results) if c[key] is not None]
    several = len({c["backend"] for c in table}) > 1
    cols = sorted({(c["backend"], c["dtype"], c["rows"], c["classes"]) for c in table}, key=lambda k: (k[0], k[1] != "float32", k[2] * k[3], k[2]))
    names = [(f"{b} " if several else "") + f"{n}×{k} {DTYPES.get(d, d)}" for b, d, n, k in cols]
    values = {(c["kernel"], c["mode"], (c["backend"], c["dtype"], c["rows"], c["classes"])): c[key] for c in table}
    lines = []
    for kernel in dict.fromkeys(c["kernel"] for c in table):
        for mode in MODES:
            line = [values.get((kernel, mode, col)) for col in cols]
            if any(v is not None for v in line):
                lines.append((f"{kernel} {MODES[mode]}", line))
    return names, lines


# -------------------------------------------------------------------- outputs


def _fmt(x, spec=".2f"):
    return "–" if x is None else format(x, spec)


def _required(c: dict) -> str:
    return ("≥ " if c["better"] == "higher" else "≤ ") + format(c["required"], ".3g")


def _measured(c: dict) -> str:
    return f"{c['measured']:.3g}" + (f" ({c['detail']})" if c.get("detail") else "")


COLUMNS = ("kernel", "mode", "impl", "ms", "× exp floor", "× read floor", "jaxkl speed-up", "temp MB", "NumPy peak MB", "compile s")
# Column headers of the stdout table (narrower).
SHORT = ("kernel", "mode", "impl", "ms", "×exp", "×read", "speed-up", "temp MB", "np MB", "compile s")
GRIDS = (
    ("vs_peer", "Speed-up over the fastest JAX peer (its time / jaxkl's)"),
    ("vs_torch", "Speed-up over PyTorch CPU (its time / jaxkl's)"),
)


def _cells(r):
    return (
        r["kernel"], r["mode"], r["impl"], _fmt(r["ms"], ".1f"), _fmt(r["x_exp_floor"]), _fmt(r["x_read_floor"]),
        _fmt(r["jaxkl_speedup"]), _fmt(r["temp_mb"], ".1f"), _fmt(r["peak_mb"], ".1f"), _fmt(r["compile_s"]),
    )


def _groups(table):
    keys = sorted({(r["backend"], r["dtype"], r["rows"], r["classes"]) for r in table}, key=lambda k: (k[0], k[1], k[2] * k[3], k[2]))
    for key in keys:
        yield key, [r for r in table if (r["backend"], r["dtype"], r["rows"], r["classes"]) == key]


def print_summary(results: dict, *, details: bool = False) -> None:
    """Headline first, then the speed-up grids, every timing (with `details`) and the targets."""
    from rich.console import Console
    from rich.table import Table

    print(headline(results))
    console = Console(width=None if Console().is_terminal else 160)
    for key, caption in GRIDS:
        names, lines = grid(results, key)
        if not lines:
            continue
        console.print(f"{caption}; red: below {TIE}")
        t = Table()
        t.add_column("kernel, mode", no_wrap=True)
        for name in names:
            t.add_column(name, justify="right", no_wrap=True)
        for label, values in lines:
            t.add_row(label, *(_fmt(v) if v is None or v >= TIE else f"[bold red]{v:.2f}[/]" for v in values))
        console.print(t)
    if details:
        for (backend, dtype, n, k), group in _groups(rows(results)):
            t = Table(title=f"{backend} {dtype} {n}×{k}  (median; speed-up = impl time / jaxkl time)")
            for c in SHORT:
                t.add_column(c, justify="left" if c in ("kernel", "mode", "impl") else "right", no_wrap=True)
            for r in group:
                t.add_row(*_cells(r))
            console.print(t)
    console.print("Targets")
    t = Table()
    for c in ("kernel", "target", "measured", "required", "met"):
        t.add_column(c)
    for c in targets(results):
        t.add_row(c["kernel"], c["target"], _measured(c), _required(c), "yes" if c["ok"] else "[bold red]NO[/]")
    console.print(t)
    if note := target_size_note(results):
        print(note)


def grid_markdown(results: dict, key: str = "vs_peer") -> str:
    names, lines = grid(results, key)
    out = ["| kernel, mode | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, values in lines:
        out.append(f"| {label} | " + " | ".join(_fmt(v) if v is None or v >= TIE else f"**{v:.2f}**" for v in values) + " |")
    return "\n".join(out) + "\n"


def grids_markdown(results: dict) -> str:
    parts = []
    for key, caption in GRIDS:
        if grid(results, key)[1]:
            parts += [f"{caption}; bold: below {TIE}.", "", grid_markdown(results, key)]
    return "\n".join(parts)


def markdown_table(results: dict) -> str:
    lines = []
    for (backend, dtype, n, k), group in _groups(rows(results)):
        lines += [f"#### {backend} {dtype}, {n} × {k}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(_cells(r)) + " |" for r in group]
        lines.append("")
    return "\n".join(lines)


def targets_markdown(results: dict) -> str:
    lines = ["| kernel | target | measured | required | met |", "|---|---|---|---|---|"]
    for c in targets(results):
        lines.append(f"| {title(c['kernel'])} | {c['target']} | {_measured(c)} | {_required(c)} | {'yes' if c['ok'] else '**no**'} |")
    note = target_size_note(results)
    return "\n".join(lines) + "\n" + (f"\n{note}\n" if note else "")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_speedup(results: dict, path: Path) -> None:
    """Grouped bars of the speed-up over the fastest JAX peer, drawn from the 1.0 line.

    One panel per backend/dtype (rows) and mode (columns); kernels along x, one
    bar per shape. Bars below the tie band are outlined in red.
    """
    table = cells(results)
    if not table:
        return
    plt = _pyplot()
    panels = sorted({(c["backend"], c["dtype"]) for c in table}, key=lambda p: (p[0], p[1] != "float32"))
    kernels = list(dict.fromkeys(c["kernel"] for c in table))
    shapes = sorted({(c["rows"], c["classes"]) for c in table}, key=lambda s: (s[0] * s[1], s[0]))
    width = 0.8 / len(shapes)
    colours = plt.get_cmap("tab10").colors
    fig, axes = plt.subplots(len(panels), 2, figsize=(max(8, 1.1 * len(kernels)) * 2, 3.6 * len(panels)), squeeze=False, sharey=True)
    for i, (backend, dtype) in enumerate(panels):
        for j, mode in enumerate(MODES):
            ax = axes[i][j]
            ax.axhspan(TIE, 1.0, color="0.85", zorder=0)
            ax.axhline(1.0, color="black", lw=1, zorder=3)
            for s, (n, k) in enumerate(shapes):
                value = {c["kernel"]: c["vs_peer"] for c in table if (c["backend"], c["dtype"], c["mode"], c["rows"], c["classes"]) == (backend, dtype, mode, n, k)}
                xs = [x + (s - (len(shapes) - 1) / 2) * width for x, kern in enumerate(kernels) if kern in value]
                ys = [value[kern] for kern in kernels if kern in value]
                edges = ["red" if y < TIE else "none" for y in ys]
                heights = [y - 1.0 for y in ys]
                ax.bar(xs, heights, width, bottom=1.0, color=colours[s % len(colours)], edgecolor=edges, lw=1.5, zorder=2)
            ax.set_yscale("log")
            ax.set_xticks(range(len(kernels)), kernels, rotation=30, ha="right", fontsize=9)
            ax.set_title(f"{backend} {dtype}, {MODES[mode]}", fontsize=10)
            ax.grid(axis="y", color="0.8", lw=0.5, zorder=0)
        axes[i][0].set_ylabel("fastest JAX peer time / jaxkl time", fontsize=9)
    _ratio_axis(axes[0][0], [c["vs_peer"] for c in table])
    from matplotlib.patches import Patch

    handles = [Patch(color=colours[s % len(colours)], label=f"{n} × {k}") for s, (n, k) in enumerate(shapes)]
    axes[0][1].legend(handles=handles, title="rows × classes", fontsize=8, title_fontsize=8, loc="upper right")
    fig.suptitle(
        "jaxkl speed-up over the fastest JAX peer (above 1: jaxkl faster; grey band: a tie within 5%; red outline: slower)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ratio_axis(ax, values: list[float]) -> None:
    """A log ratio axis spanning `values` and 1, with plain-number ticks (the panels share it)."""
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator

    low, high = min(min(values), 1 / 1.25) / 1.15, max(max(values), 1.25) * 1.15
    ax.set_ylim(low, high)
    ticks = [t for t in (0.1, 0.2, 0.25, 1 / 3, 0.5, 2 / 3, 0.8, 1, 1.2, 1.5, 2, 3, 4, 6, 8, 10) if low <= t <= high]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
    ax.yaxis.set_minor_locator(NullLocator())


def plot_throughput(results: dict, path: Path) -> None:
    """Throughput against size, one line per implementation and mode (for the --full grid of sizes)."""
    table = rows(results)
    panels = sorted({(r["backend"], r["dtype"]) for r in table})
    kernels = list(dict.fromkeys(r["kernel"] for r in table))
    if not panels or not kernels:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(len(panels), len(kernels), figsize=(3.6 * len(kernels), 3.0 * len(panels)), squeeze=False)
    for i, (backend, dtype) in enumerate(panels):
        for j, kernel in enumerate(kernels):
            ax = axes[i][j]
            sub = [r for r in table if (r["backend"], r["dtype"], r["kernel"]) == (backend, dtype, kernel)]
            for impl in sorted({r["impl"] for r in sub}):
                for mode, style in (("fwd", "-"), ("fwdbwd", "--")):
                    pts = sorted((r["rows"] * r["classes"], r["gelem_s"]) for r in sub if r["impl"] == impl and r["mode"] == mode)
                    if pts:
                        ax.plot(*zip(*pts), style, marker="o", ms=3, label=f"{impl} {MODES[mode]}")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{title(kernel)}\n{backend} {dtype}", fontsize=8)
            ax.set_xlabel("rows × classes", fontsize=7)
            ax.set_ylabel("G elements / s", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def results_markdown(results: dict) -> str:
    return "\n".join(
        [headline(results), "", "## Targets", "", targets_markdown(results), "## Speed-up", "", grids_markdown(results), "## Every timing", "", markdown_table(results)]
    )


def write_all(results: dict, out: Path, *, plot: bool = True) -> None:
    out.mkdir(parents=True, exist_ok=True)
    doc = dict(results, rows=rows(results), cells=cells(results), targets=targets(results))
    (out / "results.json").write_text(json.dumps(doc, indent=1, default=str))
    (out / "results.md").write_text(results_markdown(results))
    if plot:
        plot_speedup(results, out / "speedup.png")
        if results.get("preset") == "full":
            plot_throughput(results, out / "throughput.png")


# ----------------------------------------------------------------------- docs


def _replace_block(path: Path, body: str) -> None:
    text = path.read_text()
    pattern = re.compile(re.escape(DOCS_BEGIN) + ".*?" + re.escape(DOCS_END), re.S)
    block = f"{DOCS_BEGIN}\n{body.rstrip()}\n{DOCS_END}"
    if not pattern.search(text):
        raise ValueError(f"{path} has no {DOCS_BEGIN} ... {DOCS_END} block to regenerate")
    path.write_text(pattern.sub(lambda _: block, text))


def _provenance(results: dict) -> str:
    m, v = results["machine"], results["versions"]
    command = results.get("command") or f"python -m bench --{results.get('preset', 'sweep')} --docs"
    return (
        f"Measured with `{command}` on {m.get('cpu_model', m['processor'])}, {m['cpu_count']} cores, "
        f"load average {m['loadavg_start'][0]:.1f} at the start; jax {v['jax']}, optax {v['optax']}, "
        f"PyTorch {v['torch'] or 'not installed'}."
    )


def write_docs(results: dict, root: Path, out: Path) -> None:
    """Regenerate the measured parts of docs/benchmarks.md and the README's Benchmarks section."""
    img = root / "docs" / "img"
    img.mkdir(exist_ok=True)
    plot_speedup(results, img / "benchmarks-speedup.png")
    where = out.resolve().relative_to(root) if out.resolve().is_relative_to(root) else out
    page = [
        _provenance(results),
        "",
        f"**{headline(results)}**",
        "",
        "### Targets",
        "",
        targets_markdown(results),
        "### Speed-up per cell",
        "",
        "![speed-up over the fastest JAX peer](img/benchmarks-speedup.png)",
        "",
        grids_markdown(results),
        f"Every timing (milliseconds, floors, memory, compile time): `{where}/results.md`.",
    ]
    _replace_block(root / "docs" / "benchmarks.md", "\n".join(page))
    readme = [_provenance(results), "", f"- {headline(results)}"]
    readme += [f"- `{title(c['kernel'])}` {c['target']}: **{c['measured']:.2f}×** (target {_required(c)})" for c in targets(results) if c["kernel"] in HEADLINE_SPEEDUP and "speed-up vs fastest" in c["target"]]
    _replace_block(root / "README.md", "\n".join(readme))
