"""kl_div copies torch.nn.functional.kl_div; reduce implements the four reductions."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

import jaxkl
from tests import reference as ref


def torch_kl_div(input, target, reduction, log_target=False):
    """PyTorch's documented formula, in NumPy float64."""
    input, target = np.asarray(input, np.float64), np.asarray(target, np.float64)
    if log_target:
        pointwise = np.exp(target) * (target - input)
    else:
        pointwise = special.xlogy(target, target) - target * input
    return {
        "none": pointwise,
        "sum": pointwise.sum(),
        "mean": pointwise.mean(),
        "batchmean": pointwise.sum() / input.shape[0],
    }[reduction]


def test_known_values_from_pytorch():
    p_logits = jnp.array([4.0, 3.9, 1.0])
    q_logits = jnp.array([5.0, 4.0, 0.1])
    # KL(softmax(q) || softmax(p)) and KL(softmax(q / 5) || softmax(p)), float64 references.
    want1 = ref.kl(ref.softmax(q_logits), ref.softmax(p_logits))
    want2 = ref.kl(ref.softmax(np.asarray(q_logits) / 5), ref.softmax(p_logits))
    # The float32 values PyTorch prints agree with the float64 references to float32 rounding.
    np.testing.assert_allclose(want1, 0.10048329, rtol=3e-6)
    np.testing.assert_allclose(want2, 0.19267611, rtol=3e-6)
    got1 = jaxkl.kl_div(jaxkl.log_softmax(p_logits), jaxkl.softmax(q_logits), reduction="sum")
    got2 = jaxkl.kl_div(jaxkl.log_softmax(p_logits), jaxkl.softmax(q_logits / 5), reduction="sum")
    np.testing.assert_allclose(got1, want1, rtol=3e-6)
    np.testing.assert_allclose(got2, want2, rtol=3e-6)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
@pytest.mark.parametrize("log_target", [False, True])
def test_matches_pytorch_formula(reduction, log_target):
    rng = np.random.default_rng(0)
    log_q = ref.log_softmax(rng.standard_normal((4, 5))).astype(np.float32)
    p = ref.random_probs(rng, (4, 5), zeros=True)
    target = ref.log_softmax(rng.standard_normal((4, 5))).astype(np.float32) if log_target else p
    got = jaxkl.kl_div(jnp.asarray(log_q), jnp.asarray(target), reduction=reduction, log_target=log_target)
    np.testing.assert_allclose(got, torch_kl_div(log_q, target, reduction, log_target), rtol=1e-5, atol=1e-7)


def test_batchmean_is_the_mean_kl():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3, 6)).astype(np.float32)
    got = jaxkl.kl_div(jaxkl.log_softmax(jnp.asarray(b)), jaxkl.softmax(jnp.asarray(a)), reduction="batchmean")
    np.testing.assert_allclose(got, np.mean(ref.kl(ref.softmax(a), ref.softmax(b))), rtol=1e-5)
    np.testing.assert_allclose(got, jnp.mean(jaxkl.kl_divergence_from_logits(jnp.asarray(a), jnp.asarray(b))), rtol=1e-5)


def test_zero_targets_give_zero_not_nan_where_pytorch_gives_nan():
    log_q = jnp.array([[0.0, -jnp.inf]])
    for target, log_target in [(jnp.array([[1.0, 0.0]]), False), (jnp.array([[0.0, -jnp.inf]]), True)]:
        value, grads = jax.value_and_grad(lambda x, t: jaxkl.kl_div(x, t, reduction="sum", log_target=log_target), (0, 1))(
            log_q, target
        )
        assert value == 0.0
        assert all(np.isfinite(g).all() for g in grads)
        assert grads[0][0, 1] == 0.0 and grads[1][0, 1] == 0.0


def test_gradient_wrt_input_is_minus_target_over_batch():
    rng = np.random.default_rng(2)
    log_q = jnp.asarray(ref.log_softmax(rng.standard_normal((3, 4))), jnp.float32)
    p = jnp.asarray(ref.random_probs(rng, (3, 4)))
    g = jax.grad(lambda x: jaxkl.kl_div(x, p, reduction="batchmean"))(log_q)
    np.testing.assert_allclose(g, -np.asarray(p) / 3, rtol=1e-6)


def test_jitted_loss_traces_once_for_new_values():
    # Values are traced, not baked in: a training step with new data reuses the compilation.
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def loss(log_q, p):
        return jaxkl.kl_div(log_q, p, reduction="batchmean")

    keys = jax.random.split(jax.random.key(0), 3)
    for key in keys:
        a, b = jax.random.normal(key, (2, 4, 5))
        log_q, p = jaxkl.log_softmax(a), jaxkl.softmax(b)
        np.testing.assert_allclose(loss(log_q, p), torch_kl_div(log_q, p, "batchmean"), rtol=1e-5)
    with pytest.raises(AssertionError, match="trace"):
        loss(jnp.zeros((4, 6)), jnp.full((4, 6), 1 / 6))  # a new shape would trace again


def test_shapes_must_match():
    with pytest.raises(ValueError, match="same shape"):
        jaxkl.kl_div(jnp.zeros((2, 3)), jnp.zeros((1, 3)))


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
def test_reduce_with_mask(reduction):
    values = np.array([[1.0, 2.0], [np.nan, 4.0], [5.0, np.inf]], np.float32)
    keep = np.array([[True, True], [False, True], [True, False]])
    got = jaxkl.reduce(jnp.asarray(values), reduction, where=jnp.asarray(keep))
    kept = np.where(keep, values, 0.0)
    want = {"none": kept, "sum": kept.sum(), "mean": kept.sum() / keep.sum(), "batchmean": kept.sum() / 3}[reduction]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    g = jax.grad(lambda v: jnp.sum(jaxkl.reduce(v, reduction, where=jnp.asarray(keep))))(jnp.asarray(values))
    assert (np.asarray(g)[~keep] == 0).all() and np.isfinite(g).all()


def test_reduce_mean_of_nothing_is_zero():
    assert jaxkl.reduce(jnp.ones(3), "mean", where=jnp.zeros(3, bool)) == 0.0
    assert jaxkl.reduce(jnp.ones(0), "mean") == 0.0


def test_reduce_keeps_low_precision_dtype():
    v = jnp.full((1000,), 0.1, jnp.bfloat16)
    out = jaxkl.reduce(v, "sum")
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(float(out), 1000 * float(v[0]), rtol=2**-8)  # accumulated in f32
