"""A vocabulary that the model axis does not divide: JAX's ValueError names the shapes, and
padding the class axis with excluded classes (``where=False``) gives the unpadded numbers.

(In one process: the check and the padding are the same whether the mesh spans processes.)
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxkl
from tests import reference as ref

SHARDS, CLASSES, PADDED = 8, 30, 32


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((SHARDS,), ("vocab",), axis_types=(AxisType.Auto,))


def _entropy(mesh):
    return jax.shard_map(
        lambda a, w: jaxkl.entropy_from_logits(a, where=w, axis_name="vocab"),
        mesh=mesh, in_specs=(P(None, "vocab"),) * 2, out_specs=P(),
    )


def test_shapes_are_named(mesh):
    a = jnp.zeros((3, CLASSES))
    with pytest.raises(ValueError, match=r"axis 1 \(of size 30\) to mesh axis 'vocab' \(of size 8\)"):
        _entropy(mesh)(a, jnp.ones_like(a, bool))
    with pytest.raises(ValueError, match=r"partitioned 8 times, but the dimension size is 30 \(full shape: \(3, 30\)"):
        jax.device_put(a, NamedSharding(mesh, P(None, "vocab")))


def test_padding_with_excluded_classes(mesh):
    rng = np.random.default_rng(0)
    a = ref.random_logits(rng, (3, CLASSES))
    labels = np.array([0, 17, CLASSES - 1], np.int32)
    pad = [(0, 0), (0, PADDED - CLASSES)]
    padded = jnp.asarray(np.pad(a, pad))  # any value: the mask excludes it
    keep = jnp.asarray(np.pad(np.ones_like(a, bool), pad))

    entropy, grad = jax.jit(jax.value_and_grad(lambda a: jnp.sum(_entropy(mesh)(a, keep))))(padded)
    p = ref.softmax(a)
    np.testing.assert_allclose(entropy, ref.entropy(p).sum(), rtol=1e-6)
    h = ref.entropy(p)[:, None]
    np.testing.assert_allclose(grad[:, :CLASSES], -p * (np.log(p) + h), rtol=1e-5, atol=1e-7)
    assert not grad[:, CLASSES:].any()

    # cross_entropy_loss's where= masks examples, not classes: pad its logits with -inf.
    ce = jax.jit(jax.shard_map(
        lambda a, y: jaxkl.cross_entropy_loss(a, y, reduction="none", axis_name="vocab"),
        mesh=mesh, in_specs=(P(None, "vocab"), P()), out_specs=P(),
    ))(jnp.asarray(np.pad(a, pad, constant_values=-np.inf)), labels)
    np.testing.assert_allclose(ce, -ref.log_softmax(a)[np.arange(3), labels], rtol=1e-6)
