"""The fused heads with the classes sharded over 8 host devices (``axis_name=``).

Inside ``shard_map`` each device holds 2 of the 16 columns of the head (and of
the bias and class weights); hidden states and labels (global class ids) are
replicated. Values and gradients wrt hidden, head and bias must equal the
unsharded fused loss's, which ``tests/test_fused_parity.py`` and
``tests/test_head_options.py`` check against materialised references; the
compiled program must gather neither the head nor the logits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import jaxkl

SHARDS = 8
N, D, V = 7, 5, 16
LABELS = np.array([0, 15, 4, 11, -100, 7, 12])
CE_OPTIONS = dict(ignore_index=-100, label_smoothing=0.1, z_loss=1e-2, softcap=3.0, chunk_size=3)


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((SHARDS,), ("classes",), axis_types=(AxisType.Auto,))


def _head(seed):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(N, D)).astype(np.float32),
        rng.normal(size=(D, V)).astype(np.float32),
        rng.normal(size=(V,)).astype(np.float32),
        np.linspace(0.5, 2.0, V).astype(np.float32),
    )


def _value_and_grads(f):
    """jit(value and gradients wrt the first three arguments of sum(loss)), aux passed through."""
    scalar = lambda *a: (jnp.sum(f(*a)[0]), f(*a)[1])
    return jax.jit(jax.value_and_grad(scalar, (0, 1, 2), has_aux=True))


def test_sharded_fused_cross_entropy_equals_unsharded(mesh):
    # reduction="none": every row's gradient is checked separately (a sum of per-row losses).
    h, w, b, cw = _head(0)
    kw = dict(CE_OPTIONS, reduction="none", return_aux=True)

    def sharded(h, w, b, cw):
        f = lambda h, w, b, cw: jaxkl.fused_linear_cross_entropy(
            h, w, LABELS, head_bias=b, weight=cw, axis_name="classes", **kw
        )
        specs = (P(), P(None, "classes"), P("classes"), P("classes"))
        return jax.shard_map(f, mesh=mesh, in_specs=specs, out_specs=P())(h, w, b, cw)

    def unsharded(h, w, b, cw):
        return jaxkl.fused_linear_cross_entropy(h, w, LABELS, head_bias=b, weight=cw, **kw)

    step = _value_and_grads(sharded)
    (got, got_aux), got_grads = step(h, w, b, cw)
    (want, want_aux), want_grads = _value_and_grads(unsharded)(h, w, b, cw)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, r in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    for name, g, r in zip(want_aux._fields, got_aux, want_aux):
        np.testing.assert_allclose(g, r, rtol=1e-5, err_msg=name)
    assert "all-gather" not in step.lower(h, w, b, cw).compile().as_text()


def test_sharded_fused_distillation_equals_unsharded(mesh):
    h, w, _, _ = _head(1)
    th, tw, _, _ = _head(2)
    kw = dict(divergence="js", labels=LABELS.clip(0), alpha=0.7, temperature=2.0, softcap=4.0, chunk_size=3)

    def sharded(h, w, tw):
        f = lambda h, w, tw: jaxkl.fused_linear_distillation_loss(h, w, th, tw, axis_name="classes", **kw)
        specs = (P(), P(None, "classes"), P(None, "classes"))
        return jax.shard_map(f, mesh=mesh, in_specs=specs, out_specs=P())(h, w, tw), ()

    def unsharded(h, w, tw):
        return jaxkl.fused_linear_distillation_loss(h, w, th, tw, **kw), ()

    step = _value_and_grads(sharded)
    (got, _), got_grads = step(h, w, tw)
    (want, _), want_grads = _value_and_grads(unsharded)(h, w, tw)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, r in zip(got_grads[:2], want_grads[:2]):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    assert not np.asarray(got_grads[2]).any()  # the teacher gets no gradient
    assert "all-gather" not in step.lower(h, w, tw).compile().as_text()


@pytest.mark.parametrize("fused", [True, False])
def test_sharded_token_logprobs_and_entropy_equal_unsharded(mesh, fused):
    # Both outputs weighted by random coefficients, so every row's gradient of each is checked.
    h, w, b, _ = _head(3)
    tokens = LABELS.clip(0)
    c1, c2 = np.random.default_rng(4).normal(size=(2, N))
    kw = dict(temperature=0.8, softcap=3.0, return_entropy=True)

    def token_fn(axis_name):
        if fused:
            return lambda h, w, b: jaxkl.fused_linear_token_logprobs(
                h, w, tokens, head_bias=b, chunk_size=3, axis_name=axis_name, **kw
            )
        return lambda h, w, b: jaxkl.token_logprobs(h @ w + b[None, :], tokens, axis_name=axis_name, **kw)

    def sharded(h, w, b):
        specs = (P(), P(None, "classes"), P("classes"))
        return jax.shard_map(token_fn("classes"), mesh=mesh, in_specs=specs, out_specs=P())(h, w, b)

    def weighted(f):
        def total(h, w, b):
            lp, ent = f(h, w, b)
            return jnp.sum(c1 * lp + c2 * ent), (lp, ent)

        return jax.jit(jax.value_and_grad(total, (0, 1, 2), has_aux=True))

    step = weighted(sharded)
    (_, got), got_grads = step(h, w, b)
    (_, want), want_grads = weighted(token_fn(None))(h, w, b)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    for g, r in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    assert "all-gather" not in step.lower(h, w, b).compile().as_text()
