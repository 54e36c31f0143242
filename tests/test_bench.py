"""Smoke test of ``python -m bench`` at tiny sizes, so the harness cannot rot.

It checks the plumbing (every output written, every implementation timed, ratios
present), never the timings themselves.
"""

import json

import jax
import numpy as np
import pytest

from bench import baselines, cli, harness, jax_impls, report


def test_bench_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["--sizes", "8x16", "--repeats", "1", "--quiet", "--kernels", "kl", "--dtypes", "float32", "--out", str(out)]
    assert cli.main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    assert {"machine", "versions", "configs", "rows", "targets"} <= doc.keys()
    assert [c["dtype"] for c in doc["configs"] if c["backend"] == "cpu"] == ["float32"]
    impls = {(r["kernel"], r["impl"], r["mode"]) for r in doc["rows"]}
    for impl in ("jaxkl", "optax", "jnp", "numpy"):
        assert ("kl", impl, "fwd") in impls and ("kl", impl, "fwdbwd") in impls
    if baselines.torch_module() is not None:
        assert ("kl", "torch", "fwdbwd") in impls
    kl = [r for r in doc["rows"] if r["kernel"] == "kl" and r["impl"] == "jaxkl"]
    assert all(r["x_exp_floor"] > 0 and r["temp_mb"] is not None for r in kl)
    assert any(t["target"] == "fwd+bwd speed-up vs optax" for t in doc["targets"])
    assert "| kl | fwdbwd | jaxkl |" in (out / "results.md").read_text()
    assert (out / "throughput.png").stat().st_size > 0
    assert "targets" in capsys.readouterr().out


@pytest.mark.parametrize("kernel", jax_impls.KERNELS)
def test_numpy_baselines_match_jnp(kernel):
    """The NumPy baselines (values and analytic gradients) agree with jnp autodiff."""
    arrays = harness.host_inputs(4, 7, "float32", seed=1)
    args = harness.kernel_args(kernel, arrays)
    fn = jax_impls.implementations()[kernel]["jnp"]
    fwd, fwdbwd = map(jax.jit, jax_impls.forward_and_backward(kernel, fn))
    np_fwd, np_fwdbwd = baselines.NUMPY[kernel]
    np.testing.assert_allclose(np_fwd(*args), fwd(*args), rtol=1e-5)
    for got, want in zip(np_fwdbwd(*args), fwdbwd(*args), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_bf16_accuracy_is_reported_within_rounding():
    arrays = harness.host_inputs(4, 16, "bfloat16", seed=2)
    (acc,) = harness.bf16_accuracy(["kl"], arrays, jax.devices("cpu")[0])
    assert acc["kernel"] == "kl"
    assert 0 <= acc["grad_rel"] <= report.BF16_ROUNDING
    assert 0 <= acc["value_rel"] <= 2 * report.BF16_ROUNDING
