"""Smoke test of ``python -m bench`` at tiny sizes, so the harness cannot rot.

It checks the plumbing (every output written, every implementation timed, ratios
present) and the report logic on synthetic timings, never the timings themselves.
"""

import json
import time

import jax
import numpy as np
import pytest

from bench import baselines, cli, harness, jax_impls, report


def test_bench_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["--sizes", "8x16", "--repeats", "1", "--quiet", "--kernels", "kl", "--dtypes", "float32", "--out", str(out)]
    assert cli.main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    assert {"machine", "versions", "configs", "rows", "cells", "targets"} <= doc.keys()
    assert doc["isolated"]  # the kernel was timed in a process of its own
    assert [c["dtype"] for c in doc["configs"] if c["backend"] == "cpu"] == ["float32"]
    impls = {(r["kernel"], r["impl"], r["mode"]) for r in doc["rows"]}
    for impl in ("jaxkl", "optax", "jnp", "numpy"):
        assert ("kl", impl, "fwd") in impls and ("kl", impl, "fwdbwd") in impls
    if baselines.torch_module() is not None:
        assert ("kl", "torch", "fwdbwd") in impls
    kl = [r for r in doc["rows"] if r["kernel"] == "kl" and r["impl"] == "jaxkl"]
    assert all(r["x_exp_floor"] > 0 and r["temp_mb"] is not None for r in kl)
    # Only the never-slower row: the other targets are stated at a size this run skipped.
    assert [t["kernel"] for t in doc["targets"]] == ["every kernel"]
    assert "| kl | fwdbwd | jaxkl |" in (out / "results.md").read_text()
    assert (out / "speedup.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert printed.startswith("jaxkl vs fastest JAX peer: ") and "of 2 cells" in printed.splitlines()[0]
    assert "did not measure" in printed


@pytest.mark.parametrize("argv", [["--processes", "0"], ["--processes", "2", "--in-process"]])
def test_processes_argument_errors_name_it(argv, capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(argv)
    assert "--processes" in capsys.readouterr().err


def test_processes_pool_their_rounds(tmp_path):
    """--processes K: each kernel is timed in K fresh processes and every round counts."""
    out = tmp_path / "pooled"
    argv = ["--sweep", "--sizes", "8x16", "--repeats", "2", "--quiet", "--kernels", "entropy", "--no-plot"]
    assert cli.main(argv + ["--processes", "2", "--dtypes", "float32", "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["isolated"] and doc["processes"] == 2
    entries = [e for c in doc["configs"] for e in c["entries"] if e["kernel"] == "entropy"]
    assert {e["impl"] for e in entries} >= {"jaxkl", "jnp"}
    # A kernel this small gets the most rounds each process allows: 20 x --repeats.
    assert all(len(e["times"]) == 2 * 2 * harness.MAX_EXTRA_FACTOR for e in entries), [len(e["times"]) for e in entries]
    assert all(e["median_s"] == pytest.approx(np.median(e["times"])) for e in entries)


def test_short_kernels_get_more_rounds(monkeypatch):
    """Rounds go on until a kernel's timed rounds add up to MIN_GROUP_SECONDS, up to 20x --repeats."""
    monkeypatch.setattr(harness, "MIN_GROUP_SECONDS", 0.05)
    entries = [harness.Entry("fast", impl, "fwd", lambda: None) for impl in ("jaxkl", "jnp")]
    entries += [harness.Entry("slow", impl, "fwd", lambda: time.sleep(0.02)) for impl in ("jaxkl", "jnp")]
    assert harness.time_entries(entries, 3, lambda: None) == 3  # the fewest any kernel got
    assert [len(e.times) for e in entries] == [3 * harness.MAX_EXTRA_FACTOR] * 2 + [3, 3]


def test_pooled_takes_the_median_of_every_process_round():
    from bench import isolated

    def run(jaxkl_times, jnp_times, setup):
        entries = [
            dict(kernel="kl", impl="jaxkl", mode="fwd", compile_s=1.0, times=jaxkl_times),
            dict(kernel="kl", impl="jnp", mode="fwd", compile_s=2.0, times=jnp_times),
        ]
        return dict(setup_s=setup, repeats=len(jaxkl_times), entries=entries, skipped_entries=[])

    # The second process runs jaxkl slow as a whole; its entries come back in another order.
    first, second = run([1.0, 1.1, 1.2], [2.0, 2.0, 2.0], 3.0), run([5.0, 5.0, 5.0], [2.0, 2.0, 2.0], 4.0)
    second["entries"].reverse()
    got = isolated.pooled([first, second])
    by_impl = {e["impl"]: e for e in got["entries"]}
    assert by_impl["jaxkl"]["times"] == [1.0, 1.1, 1.2, 5.0, 5.0, 5.0]
    assert by_impl["jaxkl"]["median_s"] == pytest.approx(np.median([1.0, 1.1, 1.2, 5.0, 5.0, 5.0]))
    assert by_impl["jnp"]["median_s"] == 2.0 and by_impl["jnp"]["compile_s"] == 2.0
    assert got["repeats"] == 6 and got["setup_s"] == 7.0 and got["processes"] == 2


def test_sweep_preset_covers_the_fused_head(tmp_path):
    out = tmp_path / "sweep"
    argv = ["--sweep", "--sizes", "8x16", "--repeats", "1", "--quiet", "--kernels", "fused_ce", "--in-process"]
    assert cli.main(argv + ["--dtypes", "bfloat16", "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["preset"] == "sweep" and not doc["isolated"]
    assert "numpy" not in {r["impl"] for r in doc["rows"]}  # the sweep times JAX (and PyTorch) only
    assert {(c["kernel"], c["mode"]) for c in doc["cells"]} == {("fused_ce", "fwd"), ("fused_ce", "fwdbwd")}
    assert "| fused_ce fwd+bwd |" in (out / "results.md").read_text()


@pytest.mark.parametrize(
    "module, argv",
    [
        ("rl", ["--memory-size", "64x8x512", "--time-sizes", "32x8x512", "--repeats", "1"]),
        ("contrastive", ["--contrastive-size", "32x8", "--topk-size", "8x64x4", "--time-size", "0x0"]),
        ("fused_linear", ["--memory-size", "32x8x512", "--time-size", "32x8x512", "--chunks", "16", "--repeats", "1"]),
    ],
)
def test_stand_alone_benches_write_their_results(tmp_path, module, argv):
    main = __import__(f"bench.{module}", fromlist=["main"]).main
    main(argv + ["--out", str(tmp_path)])
    result = json.loads((tmp_path / f"{module}.json").read_text())
    assert result["jax"] == jax.__version__ and result["memory"]
    assert (tmp_path / f"{module}.md").read_text().count("|") > 10


def test_a_run_that_narrows_its_preset_keeps_out_of_the_committed_results():
    results = cli.ROOT / "bench" / "results"
    assert cli.parse_args(["--sweep"]).out == results / "sweep"
    for narrowing in (["--sizes", "8x16"], ["--dtypes", "float32"], ["--kernels", "kl"], ["--impls", "jaxkl"]):
        assert cli.parse_args(["--sweep", *narrowing]).out == results / "sweep-subset", narrowing
    assert cli.parse_args(["--sweep", "--kernels", "kl", "--out", "x"]).out == cli.Path("x")


def test_presets_are_explained_in_help(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, preset in cli.PRESETS.items():
        assert f"--{name}" in text and " ".join(preset.about.split()) in text
    args = cli.parse_args(["--sweep"])
    assert args.sizes == cli.SWEEP_SIZES and "numpy" not in args.impls


def _value_and_grads(kernel, fn, args):
    return jax.jit(jax.value_and_grad(fn, argnums=jax_impls.TABLE[kernel].grad))(*args)


@pytest.mark.parametrize("kernel", jax_impls.KERNELS)
def test_peers_match_jaxkl(kernel):
    """Every peer computes jaxkl's value and gradients, so the timings compare like with like."""
    args = harness.kernel_args(kernel, harness.host_inputs(6, 8, "float32", seed=0))
    impls = {name: fn for name, fn in jax_impls.TABLE[kernel].impls.items() if fn is not None}
    want_value, want_grads = _value_and_grads(kernel, impls.pop("jaxkl"), args)
    assert float(want_value) != 0.0
    for fn in impls.values():
        value, grads = _value_and_grads(kernel, fn, args)
        np.testing.assert_allclose(value, want_value, rtol=1e-5)
        for got, want in zip(grads, want_grads, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kernel", sorted(baselines.NUMPY))
def test_numpy_baselines_match_jnp(kernel):
    """The NumPy baselines (values and analytic gradients) agree with jnp autodiff."""
    args = harness.kernel_args(kernel, harness.host_inputs(4, 7, "float32", seed=1))
    value, grads = _value_and_grads(kernel, jax_impls.TABLE[kernel].impls["jnp"], args)
    np_fwd, np_fwdbwd = baselines.NUMPY[kernel]
    np.testing.assert_allclose(np_fwd(*args), value, rtol=1e-5)
    for got, want in zip(np_fwdbwd(*args), grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_inputs_do_not_depend_on_which_others_are_made():
    """A kernel timed in its own process makes only its inputs: they must be the same arrays."""
    every = harness.host_inputs(6, 8, "float32", seed=3)
    for names in ("a", "il", "pe", "gyw"):
        some = harness.host_inputs(6, 8, "float32", seed=3, names=names)
        assert sorted(some) == sorted(names)
        for name in names:
            np.testing.assert_array_equal(some[name], every[name])


def test_bf16_accuracy_is_reported_within_rounding():
    arrays = harness.host_inputs(4, 16, "bfloat16", seed=2)
    (acc,) = harness.bf16_accuracy(["kl"], arrays, jax.devices("cpu")[0])
    assert acc["kernel"] == "kl"
    assert 0 <= acc["grad_rel"] <= report.BF16_ROUNDING
    assert 0 <= acc["value_rel"] <= 2 * report.BF16_ROUNDING


def _config(rows, classes, dtype, times):
    """A results config from ``{(kernel, impl, mode): median seconds}``."""
    entries = [
        dict(kernel=k, impl=i, mode=m, median_s=t, compile_s=None, temp_bytes=None, peak_bytes=None, times=[t])
        for (k, i, m), t in times.items()
    ]
    return dict(backend="cpu", dtype=dtype, rows=rows, classes=classes, entries=entries)


def _synthetic(size=(4, 8)):
    """jaxkl wins or ties everywhere except one known loser: ce_labels bf16 fwd+bwd at 0.8x."""
    f32 = {("kl", "jaxkl", m): 1.0 for m in ("fwd", "fwdbwd")}
    f32 |= {("kl", "optax", "fwd"): 0.96, ("kl", "jnp", "fwd"): 2.0, ("kl", "optax", "fwdbwd"): 1.6}
    bf16 = {("ce_labels", "jaxkl", "fwd"): 1.0, ("ce_labels", "jnp", "fwd"): 1.0}
    bf16 |= {("ce_labels", "jaxkl", "fwdbwd"): 1.0, ("ce_labels", "optax", "fwdbwd"): 0.8, ("ce_labels", "jnp", "fwdbwd"): 0.9}
    return {"configs": [_config(*size, "float32", f32), _config(*size, "bfloat16", bf16)]}


def test_never_slower_finds_the_loser():
    results = _synthetic()
    ns = report.never_slower(results)
    assert (ns["passed"], ns["total"]) == (3, 4)  # the 0.96 forward is a tie, not a loss
    loser = ns["slowest"]
    assert (loser["kernel"], loser["dtype"], loser["mode"], loser["peer"]) == ("ce_labels", "bfloat16", "fwdbwd", "optax")
    assert loser["vs_peer"] == pytest.approx(0.8)
    assert report.headline(results) == (
        "jaxkl vs fastest JAX peer: 3 of 4 cells at least as fast (ties within 5%); "
        "slowest: ce_labels cpu 4×8 bfloat16 fwd+bwd 0.80× (vs optax)"
    )
    (row,) = report.targets(results)
    assert not row["ok"] and row["measured"] == pytest.approx(0.8)
    assert "**0.80**" in report.grid_markdown(results)


def test_size_targets_only_at_the_size_they_name():
    assert not any(t["target"].startswith("fwd+bwd speed-up") for t in report.targets(_synthetic()))
    checks = report.targets(_synthetic(report.TARGET_SIZE))
    (kl,) = [t for t in checks if t["kernel"] == "kl" and t["target"].startswith("fwd+bwd speed-up")]
    assert kl["measured"] == pytest.approx(1.6) and kl["ok"]  # KL fwd+bwd needs 1.5x
    assert report.target_size_note(_synthetic(report.TARGET_SIZE)) is None


def test_docs_blocks_are_regenerated(tmp_path):
    results = _synthetic() | {
        "command": "python -m bench --sweep --docs",
        "machine": dict(processor="cpu", cpu_count=2, loadavg_start=[0.5]),
        "versions": dict(jax="0", optax="0", torch=None),
    }
    (tmp_path / "docs").mkdir()
    for page in ("docs/benchmarks.md", "README.md"):
        (tmp_path / page).write_text(f"intro\n{report.DOCS_BEGIN}\nstale numbers\n{report.DOCS_END}\nend\n")
    report.write_docs(results, tmp_path, tmp_path / "bench" / "results" / "sweep")
    page = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "`python -m bench --sweep --docs`" in page and "stale numbers" not in page and page.endswith("end\n")
    assert "| kernel, mode | 4×8 f32 | 4×8 bf16 |" in page
    assert "`bench/results/sweep/results.md`" in page
    assert report.headline(results) in (tmp_path / "README.md").read_text()
    assert (tmp_path / "docs" / "img" / "benchmarks-speedup.png").stat().st_size > 0
