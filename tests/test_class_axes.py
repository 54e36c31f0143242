"""`axis` as a tuple: the classes are the product of those axes.

The reference is the definition itself, written with NumPy in the test: move
the class axes to the end, flatten them, and call the kernel with one axis;
optax's integer-label cross-entropy (which takes a tuple of axes) is a second,
independent reference.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxkl

AXES = (1, 3)
SHAPE = (2, 3, 2, 4)


def _flat(x, axes=AXES):
    moved = np.moveaxis(np.asarray(x), axes, tuple(range(-len(axes), 0)))
    return moved.reshape(moved.shape[: moved.ndim - len(axes)] + (-1,))


def _inputs(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=SHAPE).astype(np.float32)
    b = rng.normal(size=SHAPE).astype(np.float32)
    a[0, 1, 0, 2] = -np.inf
    return a, b


def _probs(x):
    return np.asarray(jax.nn.softmax(jnp.asarray(_flat(x)), axis=-1)).reshape(
        np.moveaxis(x, AXES, (-2, -1)).shape
    )


PAIRS = [
    "kl_divergence_from_logits", "js_divergence_from_logits", "total_variation_from_logits",
    "hellinger_distance_from_logits", "chi2_divergence_from_logits",
]
SINGLES = ["entropy_from_logits", "logsumexp", "tsallis_entropy_from_logits"]


@pytest.mark.parametrize("name", PAIRS + SINGLES)
def test_tuple_axis_equals_moving_and_flattening(name):
    a, b = _inputs(0)
    where = np.ones(SHAPE, bool)
    where[1, :, 1, 0] = False
    fn = getattr(jaxkl, name)
    kw = {"alpha": 2.0} if "tsallis" in name else {}
    args = (a, b) if name in PAIRS else (a,)
    got = fn(*args, axis=AXES, where=where, **kw)
    want = fn(*(_flat(x) for x in args), axis=-1, where=_flat(where), **kw)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["kl_divergence", "js_divergence", "entropy", "renyi_divergence"])
def test_tuple_axis_for_probabilities(name):
    a, b = _inputs(1)
    a[0, 1, 0, 2] = 0.0
    p = np.moveaxis(_probs(a), (-2, -1), AXES)
    q = np.moveaxis(_probs(b), (-2, -1), AXES)
    fn = getattr(jaxkl, name)
    kw = {"alpha": 0.5} if name.startswith("renyi") else {}
    args = (p,) if name == "entropy" else (p, q)
    got = fn(*args, axis=AXES, **kw)
    want = fn(*(_flat(x) for x in args), axis=-1, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
def test_same_shape_outputs_come_back_in_place(name):
    a, _ = _inputs(2)
    got = getattr(jaxkl, name)(a, axis=AXES)
    want = getattr(jax.nn, name)(jnp.asarray(a), axis=AXES)  # jax.nn takes tuples too
    assert got.shape == SHAPE
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_cross_entropy_loss_matches_optax_over_a_tuple_of_axes():
    a, _ = _inputs(3)
    a[0, 1, 0, 2] = 0.0
    labels = np.array([[0, 11], [5, 7]])
    # optax: the classes of a tuple of axes are those axes flattened in order.
    want = optax.losses.softmax_cross_entropy_with_integer_labels(jnp.asarray(a), labels, axis=AXES)
    got = jaxkl.cross_entropy_loss(a, labels, axis=AXES, reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-5)
    grad = jax.grad(lambda x: jaxkl.cross_entropy_loss(x, labels, axis=AXES))(a)
    ref = jax.grad(lambda x: optax.losses.softmax_cross_entropy_with_integer_labels(x, labels, axis=AXES).mean())(
        jnp.asarray(a)
    )
    np.testing.assert_allclose(grad, ref, rtol=1e-5, atol=1e-7)


def test_distillation_over_a_tuple_of_axes():
    a, b = _inputs(4)
    a[0, 1, 0, 2] = 0.0
    got = jaxkl.distillation_loss(a, b, axis=AXES, temperature=2.0, reduction="none")
    want = jaxkl.distillation_loss(_flat(a), _flat(b), axis=-1, temperature=2.0, reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_bad_axis_tuples_name_the_problem():
    a, b = _inputs(5)
    with pytest.raises(ValueError, match="same axis twice"):
        jaxkl.kl_divergence_from_logits(a, b, axis=(1, -3))
    with pytest.raises(ValueError, match="out of range"):
        jaxkl.entropy_from_logits(a, axis=(1, 4))
    with pytest.raises(ValueError, match="at least one axis"):
        jaxkl.entropy_from_logits(a, axis=())


def test_token_logprobs_over_a_tuple_of_axes():
    a, _ = _inputs(6)
    tokens = np.array([[3, 11], [0, 6]])
    logprobs, entropy = jaxkl.token_logprobs(a, tokens, axis=AXES, return_entropy=True)
    flat = jax.nn.log_softmax(jnp.asarray(_flat(a)), axis=-1)
    want = np.take_along_axis(np.asarray(flat), tokens[..., None], -1)[..., 0]
    np.testing.assert_allclose(logprobs, want, rtol=1e-6)
    logp = np.asarray(flat, np.float64)
    p = np.exp(logp)
    terms = p * np.where(p > 0, logp, 0.0)  # 0 log 0 = 0 at the -inf class
    np.testing.assert_allclose(entropy, -terms.sum(-1), rtol=1e-5)
