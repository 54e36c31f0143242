"""The Flax NNX and Equinox examples in docs/examples run at a tiny size and measure what they say.

They need the `examples` extra (flax, equinox, scikit-learn). CI installs it (and fails if it is
missing); elsewhere each test is skipped, naming the missing package, where it is absent.
"""

import importlib.util
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "docs" / "examples"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_example(name, *needs):
    for package in needs:
        if os.environ.get("CI") and importlib.util.find_spec(package) is None:
            pytest.fail("CI must run the examples: install the examples extra (pip install -e '.[test,docs,examples]')")
        pytest.importorskip(package, reason=f"the {name} example needs {package}: pip install -e '.[examples]'")
    module_name = f"example_{name}"
    if module_name not in sys.modules:  # once per session: jit caches stay warm between tests
        spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses (Equinox modules) look their module up
        spec.loader.exec_module(module)
    return sys.modules[module_name]


@pytest.fixture(autouse=True)
def user_settings():
    """The examples are written for default JAX settings, as a user runs them."""
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        yield


def numpy_log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def last_line(capsys):
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_flax_digits_distill(tmp_path, capsys):
    example = load_example("flax_digits_distill", "flax", "sklearn")
    figure = tmp_path / "digits.png"
    final = example.main(steps=25, seeds=1, labelled=60, teacher_hidden=(32,), student_hidden=16,
                         batch_size=32, eval_every=25, figure=figure)
    assert set(final) == {"teacher", "labels only", "distilled", "UDA"}
    for name, (mean, std) in final.items():
        assert mean > 0.2, name  # ten classes: chance is 0.1 (25 steps: learning, not learnt)
        assert std == 0.0  # one seed
    assert last_line(capsys).startswith("final test accuracy: teacher")
    assert figure.read_bytes().startswith(PNG_SIGNATURE)


def test_flax_digits_augmentation_shifts_by_at_most_one_pixel():
    example = load_example("flax_digits_distill", "flax", "sklearn")
    x = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    out = np.asarray(example.augment(jax.random.key(1), jnp.asarray(x), noise=0.0))
    padded = np.pad(x.reshape(-1, 8, 8), ((0, 0), (1, 1), (1, 1)))
    # Every candidate: image[r, c] = padded[r + dr, c + dc] for offsets dr, dc in {0, 1, 2}.
    candidates = np.stack([padded[:, dr:dr + 8, dc:dc + 8] for dr in range(3) for dc in range(3)], 1)
    matches = np.all(candidates.reshape(64, 9, 64) == out[:, None, :], axis=-1)
    assert matches.any(axis=1).all()
    assert len(set(matches.argmax(axis=1))) > 1  # the shifts are drawn, not fixed


def test_equinox_char_lm_fused_head_trains_like_optax(capsys):
    example = load_example("equinox_char_lm", "equinox")
    result = example.main(steps=6, width=16, heads=2, layers=1, context=16, batch=4, eval_every=2,
                          eval_windows=4, modules=("textwrap",))
    assert 10 < result["vocab"] < 128  # printable ASCII and newline
    # The same objective on the same batches from the same start: the two runs agree.
    ppl = result["val_ppl"]
    np.testing.assert_allclose(ppl["jaxkl fused"], ppl["optax"], rtol=1e-4)
    history = [p for _, p in result["val_ppl_history"]["jaxkl fused"]]
    assert 1.0 < history[-1] < history[0]  # learning
    for name in ("jaxkl fused", "optax"):
        assert result["step_ms"][name] > 0 and result["temp_mib"][name] > 0
    assert last_line(capsys).startswith("val perplexity: fused")


def test_equinox_char_lm_head_losses_match_numpy():
    example = load_example("equinox_char_lm", "equinox")
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    hidden = jax.random.normal(k1, (12, 8))
    head = 3.0 * jax.random.normal(k2, (8, 20))
    targets = jax.random.randint(k3, (12,), 0, 20)
    log_probs = numpy_log_softmax(np.asarray(hidden, np.float64) @ np.asarray(head, np.float64))
    lse = np.log(np.exp(np.asarray(hidden, np.float64) @ np.asarray(head, np.float64)).sum(-1))
    expected = np.mean(-log_probs[np.arange(12), targets] + example.Z_LOSS * lse**2)
    for loss in example.HEAD_LOSSES.values():
        np.testing.assert_allclose(loss(hidden, head, targets), expected, rtol=1e-5)


def test_vae_digits_elbo_split_matches_numpy(tmp_path, capsys):
    example = load_example("vae_digits", "equinox", "sklearn")
    figure = tmp_path / "vae.png"
    result = example.main(steps=30, latent=2, hidden=16, batch=32, eval_every=15, figure=figure)
    first, final = result["curves"]["test"][0], result["final"]
    assert final["elbo"] > -64 * np.log(17)  # better than a uniform guess of every pixel
    assert final["elbo"] > first["elbo"] - 1.0

    # The split, recomputed in NumPy from the encoder's Normal and the decoder's logits.
    model, test, key = result["model"], result["test"][:50], jax.random.key(3)
    metrics = example.evaluate(model, test, key)
    q = model.posterior(test)
    loc, scale = np.asarray(q.loc, np.float64), np.asarray(q.scale, np.float64)
    kl = np.sum(0.5 * (loc**2 + scale**2 - 1.0) - np.log(scale), axis=-1)
    log_probs = numpy_log_softmax(model.logits(q.sample(key)))
    pixels = np.asarray(test)
    reconstruction = -np.take_along_axis(log_probs, pixels[..., None], axis=-1)[..., 0].sum(-1)
    np.testing.assert_allclose(metrics["kl"], kl.mean(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(metrics["reconstruction"], reconstruction.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["elbo"], -(kl + reconstruction).mean(), rtol=1e-5)
    assert last_line(capsys).startswith("test ELBO")
    assert figure.read_bytes().startswith(PNG_SIGNATURE)
