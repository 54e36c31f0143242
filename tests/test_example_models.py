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
    out = np.asarray(jax.jit(lambda key, x: example.augment(key, x, noise=0.0))(jax.random.key(1), jnp.asarray(x)))
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
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(12, 8)).astype(np.float32)
    head = 3.0 * rng.normal(size=(8, 20)).astype(np.float32)
    targets = rng.integers(0, 20, 12)
    log_probs = numpy_log_softmax(np.asarray(hidden, np.float64) @ np.asarray(head, np.float64))
    lse = np.log(np.exp(np.asarray(hidden, np.float64) @ np.asarray(head, np.float64)).sum(-1))
    expected = np.mean(-log_probs[np.arange(12), targets] + example.Z_LOSS * lse**2)
    losses = jax.jit(lambda *args: [loss(*args) for loss in example.HEAD_LOSSES.values()])(hidden, head, targets)
    for loss in losses:
        np.testing.assert_allclose(loss, expected, rtol=1e-5)


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
    import equinox as eqx  # present: load_example checked

    @eqx.filter_jit  # one program: eagerly, each operation of the MLPs would be compiled alone
    def posterior_and_logits(model, pixels, key):
        q = model.posterior(pixels)
        return q.loc, q.scale, model.logits(q.sample(key))

    loc, scale, logits = posterior_and_logits(model, test, key)
    loc, scale = np.asarray(loc, np.float64), np.asarray(scale, np.float64)
    kl = np.sum(0.5 * (loc**2 + scale**2 - 1.0) - np.log(scale), axis=-1)
    log_probs = numpy_log_softmax(logits)
    pixels = np.asarray(test)
    reconstruction = -np.take_along_axis(log_probs, pixels[..., None], axis=-1)[..., 0].sum(-1)
    np.testing.assert_allclose(metrics["kl"], kl.mean(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(metrics["reconstruction"], reconstruction.mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["elbo"], -(kl + reconstruction).mean(), rtol=1e-5)
    assert last_line(capsys).startswith("test ELBO")
    assert figure.read_bytes().startswith(PNG_SIGNATURE)


def test_grpo_toy_runs(tmp_path, capsys):
    example = load_example("grpo_toy", "equinox")
    figure = tmp_path / "grpo.png"
    steps = 4
    result = example.main(steps=steps, digits=2, prompts=4, group=4, width=8, log_every=2, figure=figure)
    history = result["history"]
    assert {name: len(values) for name, values in history.items()} == dict.fromkeys(
        ("reward", "exact", "kl", "entropy", "loss"), steps)
    assert all(0.0 <= r <= 1.0 for r in history["reward"] + history["exact"])
    # The first step's policy is its reference: the k3 estimate is exactly 0; then >= 0.
    assert history["kl"][0] == 0.0 and min(history["kl"]) >= 0.0
    assert all(0.0 < h <= np.log(10) + 1e-5 for h in history["entropy"])  # ten digits
    # 4 steps: "first" and "final" are means over 1 step.
    assert result["first_reward"] == history["reward"][0] and result["final_reward"] == history["reward"][-1]
    line = last_line(capsys)
    assert line.startswith("final mean reward")
    assert f"{result['final_reward']:.3f} (first {result['first_reward']:.3f}" in line
    assert f"KL to the reference {result['final_kl']:.4f}" in line
    assert figure.read_bytes().startswith(PNG_SIGNATURE)


def test_grpo_toy_reward_matches_a_reference():
    example = load_example("grpo_toy", "equinox")
    # "target=digits": the prompt and the completion as the policy reads and writes them.
    strings = ["23=5981", "23=5990", "00=0000", "36=9999", "07=4111", "07=4115", "34=9886", "18=0000", "05=9999"]

    def reference(text):  # 1 for the exact sum, falling by 1/9 per unit of error, floored at 0
        prompt, completion = text.split("=")
        return max(0.0, 1.0 - abs(sum(int(c) for c in completion) - int(prompt)) / 9.0)

    targets = jnp.array([int(s[:2]) for s in strings])
    completions = jnp.array([[int(c) for c in s[3:]] for s in strings])
    expected = [reference(s) for s in strings]
    assert expected[:4] == [1.0, 1.0, 1.0, 1.0] and expected[-2:] == [0.0, 0.0]
    np.testing.assert_allclose(example.reward(targets, completions), expected, rtol=1e-6)
    prompts = np.asarray(example.encode_prompts(targets))
    assert prompts.tolist() == [[int(s[0]), int(s[1]), example.EQUALS] for s in strings]


def test_grpo_toy_logprobs_match_numpy():
    example = load_example("grpo_toy", "equinox")
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(12, 8)).astype(np.float32)
    head = rng.normal(size=(8, 10)).astype(np.float32)  # logits of spread ~3: entropies well above 0
    tokens = rng.integers(0, 10, 12)
    log_p = numpy_log_softmax(hidden.astype(np.float64) @ head.astype(np.float64))
    logprobs, entropy = example.token_logprobs(jnp.asarray(hidden), jnp.asarray(head), jnp.asarray(tokens))
    # atol: float32 logits round at ~1e-6, which a value near 0 cannot hide in rtol.
    np.testing.assert_allclose(logprobs, log_p[np.arange(12), tokens], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(entropy, -np.sum(np.exp(log_p) * log_p, -1), rtol=1e-5, atol=1e-6)

    # Through the policy: completion token k is scored by the hidden state after the token
    # before it (row 2 + k of prompt + completion), for a random initialisation, random prompts
    # and every two-digit completion (the width of the tiny run, the shapes of the sampler test:
    # compiled once).
    model = example.init_policy(8, jax.random.key(4, impl="rbg"))
    prompts = example.encode_prompts(jnp.asarray(rng.integers(0, 37, 100)))
    completions = jnp.array([[a, b] for a in range(10) for b in range(10)])
    logprobs, entropy = example.completion_logprobs(model, prompts, completions)
    rows = np.asarray(jax.vmap(model.hidden)(jnp.concatenate([prompts, completions], 1)), np.float64)[:, 2:4]
    log_p = numpy_log_softmax(rows @ np.asarray(model.head, np.float64))  # [100, 2, 10]
    np.testing.assert_allclose(logprobs, np.take_along_axis(log_p, np.asarray(completions)[..., None], -1)[..., 0],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(entropy, -np.sum(np.exp(log_p) * log_p, -1), rtol=1e-5, atol=1e-6)


def test_grpo_toy_sampler_draws_from_the_scored_distribution():
    # GRPO's ratio is 1 on-policy only if the sampler and the scorer are the same distribution.
    example = load_example("grpo_toy", "equinox")
    import equinox as eqx  # present: load_example checked

    model = example.init_policy(8, jax.random.key(1, impl="rbg"))
    model = eqx.tree_at(lambda m: m.head, model, 3.0 * model.head)  # entropies ~0.75 nats, not near-uniform
    n = 20_000
    prompts = example.encode_prompts(jnp.full((n,), 11))
    completions = np.asarray(example.sample(model, prompts, 2, jax.random.key(2, impl="rbg")))
    observed = np.bincount(completions[:, 0] * 10 + completions[:, 1], minlength=100) / n
    pairs = jnp.array([[a, b] for a in range(10) for b in range(10)])
    logprobs, _ = example.completion_logprobs(model, prompts[:100], pairs)
    expected = np.exp(np.asarray(logprobs, np.float64).sum(1))
    np.testing.assert_allclose(expected.sum(), 1.0, rtol=1e-5)
    # Total variation: 0.01 here (sampling noise); drawing the second digit without the first, or
    # for the prompt "12=", would be 0.26 to 0.29 away.
    assert 0.5 * np.abs(observed - expected).sum() < 0.05
