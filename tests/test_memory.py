"""Reverse-mode residuals of the logits kernels are O(rows), not O(rows x classes)."""

import jax
import jax.numpy as jnp
import optax
import pytest
from jax.ad_checkpoint import print_saved_residuals

import jaxkl

ROWS, CLASSES = 16, 64
KERNELS = {
    "logsumexp": lambda a, b: jaxkl.logsumexp(a) + jaxkl.logsumexp(b),
    "entropy_from_logits": lambda a, b: jaxkl.entropy_from_logits(a) + jaxkl.entropy_from_logits(b),
    "cross_entropy_from_logits": jaxkl.cross_entropy_from_logits,
    "kl_divergence_from_logits": jaxkl.kl_divergence_from_logits,
    "kl_divergence_from_logits_t": lambda a, b: jaxkl.kl_divergence_from_logits(a, b, temperature=3.0),
    "js_divergence_from_logits": jaxkl.js_divergence_from_logits,
    "masked_kl": lambda a, b: jaxkl.kl_divergence_from_logits(a, b, where=jnp.arange(CLASSES) % 3 > 0),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_only_inputs_and_per_row_statistics_are_saved(name, capsys, rematerialised):
    a = jnp.zeros((ROWS, CLASSES))
    print_saved_residuals(lambda a, b: jnp.sum(KERNELS[name](a, b)), a, a)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines, "expected some residuals"
    # Lines read like "f32[16,64] from the argument a"; anything as large as an input
    # must be an input itself.
    big = [line for line in lines if f"[{ROWS},{CLASSES}]" in line.split()[0]]
    assert all("argument" in line for line in big), lines
    assert len(big) <= 2, lines


def _grad_temp_bytes(f, shape):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    compiled = jax.jit(jax.grad(lambda a, b: jnp.mean(f(a, b)), argnums=(0, 1))).lower(x, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_compiled_gradient_temp_memory_is_far_below_one_input():
    # The headline size: 2048 x 32768 float32 (one input is 256 MiB). Compile only.
    shape = (2048, 32768)
    one_input = shape[0] * shape[1] * 4
    ours = _grad_temp_bytes(jaxkl.kl_divergence_from_logits, shape)
    assert ours < 0.01 * one_input, ours
    theirs = _grad_temp_bytes(
        lambda a, b: optax.losses.kl_divergence_with_log_targets(jax.nn.log_softmax(b), jax.nn.log_softmax(a)), shape
    )
    assert theirs >= one_input  # optax keeps at least one rows x classes temporary
