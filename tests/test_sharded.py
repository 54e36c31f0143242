"""Class-sharded kernels: shard_map with axis_name, and plain jit with NamedSharding inputs.

The reference is the same kernel on the whole (unsharded) array; gradients are
taken outside ``shard_map``, so they exercise the psum in the custom_jvp tangents.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxkl

SHARDS = 4
ROWS, CLASSES = 3, 24


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((SHARDS,), ("classes",), axis_types=(AxisType.Auto,))


def _inputs():
    rng = np.random.default_rng(0)
    a = (rng.normal(size=(ROWS, CLASSES)) * 3).astype(np.float32)
    b = (rng.normal(size=(ROWS, CLASSES)) * 3).astype(np.float32)
    a[0, [1, 7, 20]] = -np.inf  # zero-probability classes on different shards
    b[0, [1, 7]] = -np.inf
    a[1] += np.float32(1e4)  # a huge row: shard maxima differ, the global one wins
    where = np.ones((ROWS, CLASSES), bool)
    where[2, 5:11] = False  # masked classes spanning two shards
    return jnp.asarray(a), jnp.asarray(b), jnp.asarray(where)


def _finite(x):
    # log_softmax of an excluded class is a constant -inf, and b has -inf entries.
    return jnp.where(jnp.isfinite(x), x, 0.0)


# Each entry: kernel(a, b, where, **axis) -> values; whether the output keeps the class axis.
KERNELS = {
    "logsumexp": (lambda a, b, w, **k: jaxkl.logsumexp(a, where=w, **k), False),
    "log_softmax": (lambda a, b, w, **k: _finite(jaxkl.log_softmax(a, where=w, **k)) * _finite(b), True),
    "softmax": (lambda a, b, w, **k: jaxkl.softmax(a, where=w, **k) * _finite(b), True),
    "entropy": (lambda a, b, w, **k: jaxkl.entropy_from_logits(a, where=w, **k), False),
    "cross_entropy": (
        lambda a, b, w, **k: jaxkl.cross_entropy_from_logits(jaxkl.softmax(a, **k), b, where=w, **k),
        False,
    ),
    "kl": (lambda a, b, w, **k: jaxkl.kl_divergence_from_logits(a, b, where=w, temperature=2.0, **k), False),
    "js": (lambda a, b, w, **k: jaxkl.js_divergence_from_logits(a, b, where=w, beta=0.3, **k), False),
}


def _sharded(kernel, keeps_axis, mesh):
    spec = P(None, "classes")
    return jax.shard_map(
        lambda a, b, w: kernel(a, b, w, axis_name="classes"),
        mesh=mesh,
        in_specs=(spec, spec, spec),
        out_specs=spec if keeps_axis else P(),
    )


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_shard_map_matches_unsharded(name, mesh):
    kernel, keeps_axis = KERNELS[name]
    a, b, where = _inputs()
    sharded = _sharded(kernel, keeps_axis, mesh)

    def loss(f):
        return lambda a, b: jnp.sum(f(a, b, where))

    want, want_grads = jax.jit(jax.value_and_grad(loss(kernel), argnums=(0, 1)))(a, b)
    got, got_grads = jax.jit(jax.value_and_grad(loss(sharded), argnums=(0, 1)))(a, b)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(sharded)(a, b, where), kernel(a, b, where), rtol=1e-6, atol=1e-6)
    for g, r in zip(got_grads, want_grads):
        assert np.isfinite(g).all()
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_shard_map_forward_mode(mesh):
    kernel, _ = KERNELS["kl"]
    a, b, where = _inputs()
    da, db = jnp.ones_like(a), jnp.linspace(-1, 1, a.size, dtype=a.dtype).reshape(a.shape)
    want = jax.jvp(lambda a, b: kernel(a, b, where), (a, b), (da, db))
    got = jax.jit(lambda a, b, da, db: jax.jvp(
        lambda a, b: _sharded(kernel, False, mesh)(a, b, where), (a, b), (da, db)
    ))(a, b, da, db)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_no_all_gather_of_the_class_axis(mesh):
    kernel, _ = KERNELS["kl"]
    a, b, where = _inputs()
    grad = jax.jit(jax.grad(lambda a, b: jnp.sum(_sharded(kernel, False, mesh)(a, b, where)), argnums=(0, 1)))
    hlo = grad.lower(a, b).compile().as_text()
    assert "all-reduce" in hlo  # the row statistics are combined...
    assert "all-gather" not in hlo and "all-to-all" not in hlo  # ...the class axis never moves


@pytest.mark.parametrize("name", ["logsumexp", "kl", "js", "cross_entropy"])
def test_jit_with_class_sharded_inputs_matches(name, mesh):
    # No shard_map, no axis_name: XLA partitions the kernel from the input shardings.
    kernel, _ = KERNELS[name]
    a, b, where = _inputs()
    sharding = NamedSharding(mesh, P(None, "classes"))
    sa, sb, sw = (jax.device_put(x, sharding) for x in (a, b, where))
    loss = lambda a, b, w: jnp.sum(kernel(a, b, w))
    got, got_grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(sa, sb, sw)
    want, want_grads = jax.value_and_grad(loss, argnums=(0, 1))(a, b, where)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    for g, r in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_two_dimensional_mesh_rows_and_classes():
    # Rows sharded over one mesh axis, classes over the other; 2 x 4 = 8 devices.
    mesh = jax.make_mesh((2, 4), ("rows", "classes"), axis_types=(AxisType.Auto,) * 2)
    rng = np.random.default_rng(1)
    a, b = (jnp.asarray(rng.normal(size=(4, 16)), jnp.float32) for _ in range(2))
    f = jax.shard_map(
        lambda a, b: jaxkl.kl_divergence_from_logits(a, b, axis_name="classes"),
        mesh=mesh,
        in_specs=(P("rows", "classes"),) * 2,
        out_specs=P("rows"),
    )
    value, g = jax.jit(jax.value_and_grad(lambda b: jnp.sum(f(a, b))))(b)
    np.testing.assert_allclose(value, jnp.sum(jaxkl.kl_divergence_from_logits(a, b)), rtol=1e-6)
    np.testing.assert_allclose(g, jax.nn.softmax(b) - jax.nn.softmax(a), rtol=1e-5, atol=1e-7)
