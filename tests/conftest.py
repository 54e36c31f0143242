"""Strict settings for every test: numerical surprises fail loudly.

* rank promotion raises (no silent broadcasting of a (3, 1) against a (3,));
* dtype promotion is strict (no silent float32 -> float64 or bf16 -> f32);
* warnings are errors (pyproject's filterwarnings).

Float64 tests opt in with the ``x64`` fixture, so the default dtype stays float32.
"""

import os

# Eight host devices for the sharding tests; must be set before JAX starts.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

settings.register_profile(
    "jaxkl",
    deadline=None,
    derandomize=True,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("jaxkl")


@pytest.fixture
def x64():
    """Run the test with float64 enabled."""
    with jax.enable_x64(True):
        yield
