"""cross_entropy_loss with the class axis sharded over a mesh axis (``axis_name=``).

Inside ``shard_map`` each device holds 4 of the 16 classes and the matching
slice of the class weights; labels are global class indices. Values are checked
against a float64 NumPy reference written from PyTorch's documented
``F.cross_entropy`` formula and against the unsharded kernel; gradients (taken
outside ``shard_map``, so through the psum in the custom JVP) against the
unsharded kernel's.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import jaxkl
from tests import reference as ref

SHARDS = 4
ROWS, CLASSES = 8, 16
IGNORE = -100


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((SHARDS,), ("classes",), axis_types=(AxisType.Auto,))


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(ROWS, CLASSES)) * 3).astype(np.float32)
    # Labels on every shard, including the first and last class.
    y = np.array([0, 15, 4, 11, IGNORE, 7, 12, 3], np.int32)
    x[0, [5, 9]] = -np.inf  # zero-probability classes on two shards (not the label)
    x[1] += np.float32(1e4)  # a huge row: the shard maxima differ, the global one wins
    w = rng.uniform(0.5, 2.0, size=CLASSES).astype(np.float32)
    return x, y, w


def _numpy_ce(x, y, w, *, ignore_index, eps, z, reduction):
    """PyTorch F.cross_entropy (class weights, label smoothing) plus z-loss, in float64."""
    x = x.astype(np.float64)
    w = np.ones(x.shape[1]) if w is None else w.astype(np.float64)
    m = x.max(-1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(-1))
    logp = x - lse[:, None]
    keep = y != ignore_index
    yk = np.where(keep, y, 0)
    wy = np.where(keep, w[yk], 0.0)
    # Only with eps > 0 (a -inf logit makes this +inf, and 0 * inf is NaN).
    smooth = -(w * logp).sum(-1) / x.shape[1] if eps else 0.0
    loss = (1 - eps) * wy * -logp[np.arange(len(y)), yk] + eps * smooth + z * wy * lse**2
    return ref.reduce(np.where(keep, loss, 0.0), reduction, wy.sum())


# (options, reductions): each option and each reduction at least once, the
# -inf logit only without label smoothing (with it the value is +inf).
GROUPS = [
    (dict(weight=True, ignore_index=IGNORE, label_smoothing=0.0, z_loss=1e-3), ("none", "sum", "mean", "batchmean")),
    (dict(weight=True, ignore_index=IGNORE, label_smoothing=0.2, z_loss=0.0), ("mean", "none")),
    (dict(weight=False, ignore_index=IGNORE, label_smoothing=0.1, z_loss=1e-4), ("mean",)),
]
CASES = [(g, r) for g, (_, reductions) in enumerate(GROUPS) for r in reductions]


def _sharded(mesh, **kw):
    f = lambda x, y, w: jaxkl.cross_entropy_loss(x, y, weight=w, axis_name="classes", **kw)
    return jax.shard_map(f, mesh=mesh, in_specs=(P(None, "classes"), P(), P("classes")), out_specs=P())


@pytest.mark.parametrize("group, reduction", CASES)
def test_sharded_matches_unsharded(group, reduction, mesh):
    options, _ = GROUPS[group]
    kw = dict(options)
    use_weight = kw.pop("weight")
    x, y, w = _inputs(group)
    if kw["label_smoothing"]:
        x[0, [5, 9]] = -30.0  # a -inf logit would make the smoothed value +inf
    if not use_weight:
        w = np.ones(CLASSES, np.float32)
    weight = jnp.asarray(w) if use_weight else None
    # A fixed cotangent so that "none" checks every row's gradient separately.
    ct = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, size=ROWS).astype(np.float32))

    def loss(f):
        def scalar(x):
            out = f(x)
            return jnp.sum(out * ct) if reduction == "none" else out, out

        return jax.jit(jax.value_and_grad(scalar, has_aux=True))

    sharded = _sharded(mesh, reduction=reduction, **kw)
    (_, got), got_grad = loss(lambda x: sharded(x, y, jnp.asarray(w)))(x)
    unsharded = lambda x: jaxkl.cross_entropy_loss(x, y, weight=weight, reduction=reduction, **kw)
    (_, want), want_grad = loss(unsharded)(x)

    ref = _numpy_ce(x, y, w if use_weight else None, eps=kw["label_smoothing"], z=kw["z_loss"],
                    ignore_index=IGNORE, reduction=reduction)
    np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert np.isfinite(got_grad).all()
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-5, atol=1e-6)
    # Ignored row: no gradient; -inf logits (group 0): no gradient there either.
    assert not np.asarray(got_grad[4]).any()
    if group == 0:
        assert not np.asarray(got_grad[0, [5, 9]]).any()


def test_out_of_range_labels_are_nan_only_for_their_example(mesh):
    x, y, w = _inputs()
    y[2], y[5] = CLASSES, -1  # one past the global range (a valid *local* index nowhere), and -1
    got = jax.jit(_sharded(mesh, reduction="none", ignore_index=IGNORE))(x, y, jnp.asarray(w))
    bad = np.zeros(ROWS, bool)
    bad[[2, 5]] = True
    assert np.isnan(got[bad]).all() and np.isfinite(got[~bad]).all()
    want = jaxkl.cross_entropy_loss(x, y, weight=jnp.asarray(w), reduction="none", ignore_index=IGNORE)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_forward_mode_matches_unsharded(mesh):
    x, y, w = _inputs()
    kw = dict(ignore_index=IGNORE, label_smoothing=0.1, z_loss=1e-3, reduction="none")
    x[0, [5, 9]] = -30.0
    dx = jnp.asarray(np.random.default_rng(2).normal(size=x.shape).astype(np.float32))
    sharded = _sharded(mesh, **kw)
    got = jax.jit(lambda x, dx: jax.jvp(lambda x: sharded(x, y, jnp.asarray(w)), (x,), (dx,)))(x, dx)
    want = jax.jvp(lambda x: jaxkl.cross_entropy_loss(x, y, weight=jnp.asarray(w), **kw), (x,), (dx,))
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


def test_no_all_gather_of_the_class_axis(mesh):
    x, y, w = _inputs()
    kw = dict(ignore_index=IGNORE, label_smoothing=0.1, z_loss=1e-3)
    f = _sharded(mesh, **kw)
    grad = jax.jit(jax.grad(lambda x: f(x, y, jnp.asarray(w))))
    hlo = grad.lower(x).compile().as_text()
    assert "all-reduce" in hlo  # row statistics and w_y are combined...
    assert "all-gather" not in hlo and "all-to-all" not in hlo  # ...the classes never move


def test_weight_must_be_the_local_slice(mesh):
    x, y, w = _inputs()
    f = jax.shard_map(
        lambda x, y, w: jaxkl.cross_entropy_loss(x, y, weight=w, axis_name="classes"),
        mesh=mesh, in_specs=(P(None, "classes"), P(), P()), out_specs=P(),
    )
    with pytest.raises(ValueError, match=r"weight.shape=\(16,\) must be \(4,\).*shard"):
        f(x, y, jnp.asarray(w))
