"""Bad arguments fail at trace time with messages that name the argument."""

import jax
import jax.numpy as jnp
import pytest

import jaxkl

PAIR_KERNELS = [
    jaxkl.kl_divergence,
    jaxkl.cross_entropy,
    jaxkl.js_divergence,
    jaxkl.kl_divergence_from_logits,
    jaxkl.cross_entropy_from_logits,
    jaxkl.js_divergence_from_logits,
]
ONE_KERNELS = [jaxkl.entropy, jaxkl.entropy_from_logits]
PRIMITIVES = [jaxkl.logsumexp, jaxkl.log_softmax, jaxkl.softmax]
x = jnp.ones((2, 3)) / 3


@pytest.mark.parametrize("f", PAIR_KERNELS)
def test_mismatched_shapes(f):
    with pytest.raises(ValueError, match=r"same shape.*\(2, 3\).*\(3,\)"):
        f(x, x[0])


@pytest.mark.parametrize("f", PAIR_KERNELS + ONE_KERNELS)
def test_axis_out_of_range(f):
    args = (x,) if f in ONE_KERNELS else (x, x)
    with pytest.raises(ValueError, match="axis=2 is out of range.*rank 2"):
        f(*args, axis=2)


@pytest.mark.parametrize("f", PAIR_KERNELS + ONE_KERNELS + PRIMITIVES)
@pytest.mark.parametrize("bad", [jnp.ones((2, 3), jnp.int32), jnp.ones((2, 3), jnp.complex64)])
def test_integer_or_complex_inputs(f, bad):
    args = (bad,) if f in ONE_KERNELS + PRIMITIVES else (bad, x)
    with pytest.raises(TypeError, match="floating|complex"):
        f(*args)


@pytest.mark.parametrize("f", PAIR_KERNELS)
@pytest.mark.parametrize("base", [0, -2.0, 1, float("inf")])
def test_invalid_base(f, base):
    with pytest.raises(ValueError, match="base"):
        f(x, x, base=base)


@pytest.mark.parametrize("f", [jaxkl.kl_divergence_from_logits, jaxkl.js_divergence_from_logits])
@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_invalid_temperature(f, temperature):
    with pytest.raises(ValueError, match="temperature"):
        f(x, x, temperature=temperature)


@pytest.mark.parametrize("f", [jaxkl.js_divergence, jaxkl.js_divergence_from_logits])
@pytest.mark.parametrize("beta", [-0.1, 1.5])
def test_beta_outside_unit_interval(f, beta):
    with pytest.raises(ValueError, match="beta"):
        f(x, x, beta=beta)


def test_unknown_reduction():
    with pytest.raises(ValueError, match="reduction must be one of"):
        jaxkl.kl_div(jnp.log(x), x, reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        jaxkl.reduce(jnp.ones(3), "median")


def test_where_must_be_boolean_and_broadcastable():
    with pytest.raises(TypeError, match="where must be a boolean"):
        jaxkl.softmax(x, where=jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"where.shape=\(4,\)"):
        jaxkl.kl_divergence(x, x, where=jnp.ones(4, bool))


def test_errors_are_raised_while_tracing_under_jit():
    with pytest.raises(ValueError, match="same shape"):
        jax.jit(jaxkl.kl_divergence_from_logits)(x, x[0])
