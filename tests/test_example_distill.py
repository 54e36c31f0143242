"""The distillation example in docs/examples runs, and both losses fall."""

import importlib.util
import pathlib

import jax
import numpy as np

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "examples" / "distill.py"


def test_distillation_example_losses_fall(capsys):
    spec = importlib.util.spec_from_file_location("distill_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Written for default JAX settings, as a user runs it.
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        teacher, student, accuracy = module.main(
            steps=60, examples=512, features=8, classes=4, hidden=64, batch=64, log_every=20
        )
    assert np.mean(teacher[-10:]) < 0.7 * np.mean(teacher[:5])
    assert np.mean(student[-10:]) < 0.7 * np.mean(student[:5])
    assert accuracy > 0.4  # 4 classes: chance is 0.25
    assert "student step" in capsys.readouterr().out
