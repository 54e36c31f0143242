"""The opt-in checkify path catches invalid probabilities; without it nothing is clipped."""

import jax
import jax.numpy as jnp
import pytest
from jax.experimental import checkify

import jaxkl


def checked(f):
    return checkify.checkify(jax.jit(f), errors=checkify.user_checks)


@pytest.mark.parametrize("f", [jaxkl.kl_divergence, jaxkl.cross_entropy, jaxkl.js_divergence])
def test_negative_probabilities_are_reported(f):
    err, _ = checked(lambda p, q: f(p, q, check=True))(jnp.array([-0.1, 1.1]), jnp.array([0.5, 0.5]))
    with pytest.raises(checkify.JaxRuntimeError, match="p has a negative entry"):
        err.throw()


def test_rows_not_summing_to_one_are_reported():
    err, _ = checked(lambda p, q: jaxkl.kl_divergence(p, q, check=True))(jnp.array([0.5, 0.5]), jnp.array([0.2, 0.2]))
    with pytest.raises(checkify.JaxRuntimeError, match="q has a row that does not sum to 1"):
        err.throw()


def test_valid_inputs_pass_and_masked_classes_are_ignored():
    p, q = jnp.array([[0.5, 0.5, 7.0]]), jnp.array([[0.25, 0.75, -3.0]])
    err, value = checked(lambda p, q: jaxkl.kl_divergence(p, q, check=True, where=jnp.array([True, True, False])))(p, q)
    err.throw()  # no error
    assert value.shape == (1,)
    err, _ = checked(lambda p: jaxkl.entropy(p, check=True))(jnp.zeros((2, 0)))
    err.throw()


def test_eager_check_raises_immediately():
    with pytest.raises(checkify.JaxRuntimeError):
        jaxkl.entropy(jnp.array([0.7, 0.7]), check=True)
