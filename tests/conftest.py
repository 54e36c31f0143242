"""Strict settings for every test: numerical surprises fail loudly.

* rank promotion raises (no silent broadcasting of a (3, 1) against a (3,));
* dtype promotion is strict (no silent float32 -> float64 or bf16 -> f32);
* warnings are errors (pyproject's filterwarnings).

Float64 tests opt in with the ``x64`` fixture, so the default dtype stays float32.
"""

import os

# Eight host devices for the sharding tests; must be set before JAX starts.
# The backend optimisation level only sets how hard LLVM optimises the generated CPU code:
# the HLO passes (fusion, the dot counts some tests read) run as usual, and without fast-math
# the arithmetic is the same. The suite's time is mostly compilation, and level 0 cut it by
# about a fifth (tests/test_fused_parity.py + test_logits.py: 50 s -> 40 s).
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0",
)

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

settings.register_profile(
    "jaxkl",
    deadline=None,
    derandomize=True,
    max_examples=20,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("jaxkl")


def pytest_xdist_make_scheduler(config, log):
    """Under ``-n N`` (xdist's default ``--dist load``), hand out whole test files.

    Most of the suite's time is XLA compilation, and compiled programs are cached per
    process: a file's tests share programs (module-level jitted helpers, module-scoped
    fixtures, the same shapes), which two workers would each compile again. Another
    ``--dist`` mode given on the command line is left as it is.
    """
    if config.getoption("dist", None) == "load":
        from xdist.scheduler import LoadFileScheduling

        return LoadFileScheduling(config, log)
    return None


@pytest.fixture
def x64():
    """Run the test with float64 enabled."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(params=["cpu rule", "rematerialised rule"])
def derivative_rule(request, monkeypatch):
    """Each derivative rule of the kernels that have two (see ``jaxkl._rowwise.CPU_JVP``).

    Accelerators run the rematerialised rule (``platform_dependent``'s default
    branch); no accelerator checks it, so the tests run it here on CPU.
    """
    from jaxkl import _rowwise

    monkeypatch.setattr(_rowwise, "CPU_JVP", request.param == "cpu rule")
    jax.clear_caches()  # traces made under the other rule must not be reused
    yield request.param
    jax.clear_caches()


@pytest.fixture(params=["float32 on cpu", "as given"])
def head_matmuls(request, monkeypatch):
    """Each branch of the fused heads' 16-bit matmuls (see ``jaxkl._chunks.on_cpu_in_float32``).

    On CPU a bfloat16 head is multiplied in float32; accelerators multiply in
    bfloat16 (the default branch), which the tests run here on CPU as well.
    """
    from jaxkl import _chunks

    monkeypatch.setattr(_chunks, "FLOAT32_ON_CPU", request.param == "float32 on cpu")
    jax.clear_caches()
    yield request.param
    jax.clear_caches()


@pytest.fixture
def rematerialised(monkeypatch):
    """Only the rematerialised rule (whose reverse-mode residuals are O(rows))."""
    from jaxkl import _rowwise

    monkeypatch.setattr(_rowwise, "CPU_JVP", False)
    jax.clear_caches()
    yield
    jax.clear_caches()
