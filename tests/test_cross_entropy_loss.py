"""cross_entropy_loss against a NumPy reference written from PyTorch's documented formula."""

import contextlib
import functools
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.ad_checkpoint import print_saved_residuals
from jax.experimental import checkify
from jax.test_util import check_grads

import jaxkl


def reference(logits, labels, *, weight=None, ignore_index=None, eps=0.0, z=0.0,
              reduction="mean", where=None):
    """PyTorch's F.cross_entropy in float64, row by row, as its documentation states it.

    Label smoothing: the target is q = (1 - eps) onehot(y) + eps / K and the example's loss
    is -sum_c w_c q_c log P_c; "mean" divides by sum of w_{y_n} over non-ignored examples.
    z-loss (not PyTorch): + z * w_y * logsumexp^2.
    """
    x = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    k = x.shape[-1]
    w = np.ones(k) if weight is None else np.asarray(weight, np.float64)
    keep = np.ones(labels.shape, bool) if where is None else np.broadcast_to(where, labels.shape)
    losses = np.zeros(labels.shape)
    denominator = 0.0
    for n in np.ndindex(labels.shape):
        y = int(labels[n])
        if y == ignore_index or not keep[n]:
            continue
        row = x[n]
        lse = np.log(np.sum(np.exp(row - row.max()))) + row.max()
        log_p = row - lse
        q = np.full(k, eps / k)
        q[y] += 1.0 - eps
        weighted = w * q
        # 0 * log 0 = 0: a class without target mass contributes nothing, even at -inf.
        with np.errstate(invalid="ignore"):
            terms = np.where(weighted == 0, 0.0, weighted * log_p)
        losses[n] = -np.sum(terms) + z * w[y] * lse**2
        denominator += w[y]
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "batchmean":
        return losses.sum() / labels.shape[0]
    return losses.sum() / denominator if denominator else 0.0


# Jitted once per static configuration: eager op-by-op dispatch is much slower.
ce = jax.jit(
    jaxkl.cross_entropy_loss,
    static_argnames=("axis", "ignore_index", "label_smoothing", "z_loss", "reduction", "check"),
)


def _data(seed, shape=(6, 5), scale=3.0):
    rng = np.random.default_rng(seed)
    logits = (scale * rng.standard_normal(shape)).astype(np.float32)
    labels = rng.integers(0, shape[-1], shape[:-1]).astype(np.int32)
    return logits, labels


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"weight": [0.5, 2.0, 1.0, 3.0, 0.25]},
        {"label_smoothing": 0.1},
        {"weight": [0.5, 2.0, 1.0, 3.0, 0.25], "label_smoothing": 0.2, "ignore_index": 3},
        {"z_loss": 1e-2, "ignore_index": 1},
        {"weight": [0.5, 2.0, 1.0, 3.0, 0.25], "z_loss": 1e-3, "label_smoothing": 0.3},
    ],
)
def test_matches_pytorch_formula(options, reduction):
    logits, labels = _data(0)
    got = ce(logits, labels, reduction=reduction, **options)
    ref_options = dict(options)
    ref_options["eps"] = ref_options.pop("label_smoothing", 0.0)
    ref_options["z"] = ref_options.pop("z_loss", 0.0)
    want = reference(logits, labels, reduction=reduction, **ref_options)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


def test_axis_equals_moveaxis():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((3, 4, 7)).astype(np.float32)  # classes on axis 1
    labels = rng.integers(0, 4, (3, 7)).astype(np.int32)
    got = ce(logits, labels, axis=1, label_smoothing=0.1, reduction="none")
    want = reference(np.moveaxis(logits, 1, -1), labels, eps=0.1, reduction="none")
    np.testing.assert_allclose(got, want, rtol=2e-6)


def test_where_equals_filtering():
    logits, labels = _data(3)
    keep = np.array([True, False, True, True, False, True])
    got = ce(logits, labels, where=keep, weight=jnp.arange(1.0, 6.0))
    want = reference(logits[keep], labels[keep], weight=np.arange(1.0, 6.0))
    np.testing.assert_allclose(got, want, rtol=2e-6)


def test_everything_ignored_gives_zero_not_nan():
    logits, _ = _data(4)
    labels = jnp.full((6,), -100, jnp.int32)
    for weight in (None, jnp.ones(5)):
        loss, grad = jax.value_and_grad(ce)(
            logits, labels, ignore_index=-100, weight=weight
        )
        assert loss == 0.0
        assert np.all(grad == 0.0)


@pytest.mark.parametrize("shift", [0.0, 1e2, 1e4, 1e5])
def test_shift_invariance_numerics_contract(shift):
    # DESIGN.md: CE of logits [1,2,3] + c, label 0, is 2.40760596 for every c, gradient too.
    x = jnp.array([[1.0, 2.0, 3.0]]) + shift
    loss, grad = jax.value_and_grad(ce)(x, jnp.array([0]))
    np.testing.assert_allclose(loss, 2.40760596, rtol=1e-7)
    p = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    np.testing.assert_allclose(grad[0], p - np.array([1.0, 0.0, 0.0]), atol=1e-7)


def test_gradient_is_softmax_minus_smoothed_target():
    logits, labels = _data(5)
    eps = 0.2
    grad = jax.grad(ce)(logits, labels, label_smoothing=eps, reduction="sum")
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    q = np.full(logits.shape, eps / 5)
    q[np.arange(6), labels] += 1 - eps
    np.testing.assert_allclose(grad, p - q, atol=2e-6)


def test_check_grads_f64(x64):
    logits, labels = _data(6, shape=(3, 4))
    logits = logits.astype(np.float64)

    def loss(x):
        return ce(
            x, labels, weight=jnp.array([0.5, 2.0, 1.0, 3.0]), label_smoothing=0.1, z_loss=0.01
        )

    check_grads(jax.jit(loss), (logits,), order=2, modes=("rev",))
    check_grads(jax.jit(loss), (logits,), order=1, modes=("fwd",))


def test_minus_inf_logits_of_other_classes():
    x = jnp.array([[0.0, -jnp.inf, 1.0], [-jnp.inf, 2.0, -jnp.inf]])
    y = jnp.array([0, 1])
    loss, grad = jax.value_and_grad(ce)(x, y, reduction="sum")
    want = reference(np.array([[0.0, -np.inf, 1.0]]), [0], reduction="sum")  # second row is 0
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    assert np.all(np.isfinite(grad))
    assert grad[0, 1] == 0.0 and np.all(grad[1] == 0.0)
    # With label smoothing the -inf class has target mass: the loss is +inf, the gradient finite.
    loss, grad = jax.value_and_grad(ce)(x, y, label_smoothing=0.1, z_loss=0.1)
    assert loss == np.inf
    assert np.all(np.isfinite(grad))


def test_masked_and_ignored_rows_have_zero_finite_gradient():
    x = jnp.array([[jnp.nan, 0.0, 1.0], [-jnp.inf, -jnp.inf, -jnp.inf], [0.0, 1.0, 2.0]])
    y = jnp.array([0, 7, 1])
    grad = jax.grad(ce)(
        x, y, where=jnp.array([False, True, True]), ignore_index=7, z_loss=1e-3, label_smoothing=0.1
    )
    assert np.all(grad[:2] == 0.0)
    assert np.all(np.isfinite(grad))


def test_bf16_in_bf16_out():
    logits, labels = _data(7, shape=(16, 33))
    xb = jnp.asarray(logits, jnp.bfloat16)
    loss, grad = jax.value_and_grad(ce)(xb, labels)
    assert loss.dtype == jnp.bfloat16 and grad.dtype == jnp.bfloat16
    want = reference(np.asarray(xb.astype(jnp.float32)), labels)
    np.testing.assert_allclose(float(loss), want, rtol=1e-2)
    # 1e5 + small differences would vanish in bf16, but equal huge logits stay finite.
    big = jnp.full((2, 1000), 1e5, jnp.bfloat16)
    loss, grad = jax.value_and_grad(ce)(big, jnp.array([3, 999]))
    np.testing.assert_allclose(float(loss), np.log(1000), rtol=1e-2)
    assert np.all(np.isfinite(np.asarray(grad, np.float32)))


@pytest.mark.parametrize("bad", [-1, 5, 1000])
def test_out_of_range_labels_are_nan_never_wrapped(bad):
    logits, labels = _data(8)
    labels[2] = bad
    values = ce(logits, labels, reduction="none")
    assert np.isnan(values[2])
    want = reference(np.delete(logits, 2, 0), np.delete(labels, 2), reduction="none")
    np.testing.assert_allclose(np.delete(values, 2), want, rtol=2e-6)
    assert np.isnan(ce(logits, labels))
    assert np.isnan(ce(logits, labels, label_smoothing=1.0, reduction="none")[2])


def test_wide_labels_never_wrap_through_int32():
    logits, labels = _data(9)
    with jax.enable_x64(True):
        wide = jnp.asarray(labels, jnp.int64).at[0].set(2**32 + 1)  # would wrap to 1 in int32
        assert np.isnan(ce(jnp.asarray(logits), wide, reduction="none")[0])
    narrow = jnp.asarray(labels, jnp.uint8)
    got = ce(logits, narrow, ignore_index=-100, reduction="none")
    np.testing.assert_allclose(got, reference(logits, labels, reduction="none"), rtol=2e-6)


def test_checkify_reports_out_of_range_labels():
    logits, labels = _data(10)
    checked = checkify.checkify(
        jax.jit(lambda x, y: ce(x, y, ignore_index=-100, check=True))
    )
    err, _ = checked(logits, labels)
    err.throw()  # in range: no error
    err, _ = checked(logits, np.where(np.arange(6) == 1, -100, labels))
    err.throw()  # ignore_index is allowed
    err, _ = checked(logits, np.where(np.arange(6) == 4, 9, labels))
    with pytest.raises(checkify.JaxRuntimeError, match="outside"):
        err.throw()


def test_argument_errors():
    logits, labels = _data(11)
    with pytest.raises(TypeError, match="labels must be an integer"):
        jaxkl.cross_entropy_loss(logits, labels.astype(np.float32))
    with pytest.raises(TypeError, match="labels"):
        jaxkl.cross_entropy_loss(logits, labels > 2)
    with pytest.raises(ValueError, match=r"labels.shape=\(6, 1\).*\(6, 5\)"):
        jaxkl.cross_entropy_loss(logits, labels[:, None])
    with pytest.raises(ValueError, match=r"weight.shape=\(4,\)"):
        jaxkl.cross_entropy_loss(logits, labels, weight=jnp.ones(4))
    with pytest.raises(ValueError, match="label_smoothing"):
        jaxkl.cross_entropy_loss(logits, labels, label_smoothing=1.5)
    with pytest.raises(ValueError, match="z_loss"):
        jaxkl.cross_entropy_loss(logits, labels, z_loss=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        jaxkl.cross_entropy_loss(logits, labels, reduction="avg")
    with pytest.raises(TypeError, match="logits"):
        jaxkl.cross_entropy_loss(labels, labels)
    with pytest.raises(ValueError, match="axis"):
        jaxkl.cross_entropy_loss(logits, labels, axis=2)


def test_transformations():
    logits, labels = _data(12)

    def f(x, y):
        return jaxkl.cross_entropy_loss(x, y, label_smoothing=0.1, reduction="none")

    eager = f(logits, labels)
    np.testing.assert_allclose(jax.jit(f)(logits, labels), eager, rtol=1e-6)
    batched = jax.jit(jax.vmap(f))(logits[:, None], labels[:, None])[:, 0]
    np.testing.assert_allclose(batched, eager, rtol=1e-6)
    total = lambda x: f(x, labels).sum()  # noqa: E731
    rev = jax.jit(jax.grad(total))(logits)
    np.testing.assert_allclose(jax.jit(jax.jacfwd(total))(logits), rev, atol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.grad(jax.checkpoint(total)))(logits), rev, atol=1e-6)


_EDGE_LOGITS = np.array(
    [[1.0, 2.0, 3.0, -np.inf], [1e4, 1e4 + 1, 1e4 + 2, 0.0], [0.5, np.nan, 0.0, 1.0]], np.float32
)
_EDGE_LABELS = np.array([0, 2, 1])
_EDGE_WEIGHT = np.array([1.0, 2.0, 0.5, 1.0])
_EDGE_KEEP = np.array([True, True, False])


def _edge_case_derivatives():
    def f(x):
        return jaxkl.cross_entropy_loss(
            x, _EDGE_LABELS, weight=_EDGE_WEIGHT, label_smoothing=0.1, z_loss=1e-4, where=_EDGE_KEEP,
            reduction="sum",
        )

    ones = np.ones_like(_EDGE_LOGITS)
    return jax.jit(jax.grad(f))(_EDGE_LOGITS), jax.jit(lambda t: jax.jvp(f, (_EDGE_LOGITS,), (t,))[1])(ones)


def _edge_case_reference_gradient():
    """dl/dx_c = P_c (a w_y + b W + 2 z w_y lse) - a w_y [c = y] - b w_c, in float64; 0 on masked rows."""
    x = _EDGE_LOGITS.astype(np.float64)
    a, b, z = 0.9, 0.1 / 4, 1e-4
    grad = np.zeros_like(x)
    for i in np.flatnonzero(_EDGE_KEEP):
        lse = np.max(x[i]) + np.log(np.sum(np.exp(x[i] - np.max(x[i]))))
        p = np.exp(x[i] - lse)
        wy = _EDGE_WEIGHT[_EDGE_LABELS[i]]
        grad[i] = p * (a * wy + b * _EDGE_WEIGHT.sum() + 2 * z * wy * lse) - b * _EDGE_WEIGHT
        grad[i, _EDGE_LABELS[i]] -= a * wy
    return grad


def test_both_derivative_rules_match_the_formula_at_edges(derivative_rule):
    grad, tangent = _edge_case_derivatives()
    want = _edge_case_reference_gradient()
    assert not np.any(grad[2])  # the masked row holds a NaN logit: its gradient is exactly 0
    np.testing.assert_allclose(grad, want, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(tangent, want.sum(), rtol=2e-5)


def test_reverse_mode_residuals_are_per_row(rematerialised):
    x = jnp.zeros((8, 16))
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        print_saved_residuals(
            lambda x: jaxkl.cross_entropy_loss(
                x, jnp.zeros(8, jnp.int32), weight=jnp.ones(16), label_smoothing=0.1, z_loss=1e-4
            ),
            x,
        )
    lines = buffer.getvalue().splitlines()
    big = [line for line in lines if line.startswith("f32[8,16]")]
    assert big == [line for line in big if "from the argument" in line], lines


def test_compiled_gradient_needs_no_rows_by_classes_temporary():
    rows, classes = 2048, 32768
    x = jax.ShapeDtypeStruct((rows, classes), jnp.float32)
    y = jax.ShapeDtypeStruct((rows,), jnp.int32)
    grad = jax.jit(
        jax.grad(lambda x, y: jaxkl.cross_entropy_loss(x, y, label_smoothing=0.1, z_loss=1e-4))
    )
    temp = grad.lower(x, y).compile().memory_analysis().temp_size_in_bytes
    assert temp < rows * classes * 4 / 16, temp


@given(
    st.sampled_from([0.0, 0.1, 1.0]),
    st.integers(0, 2**31 - 1),
)
def test_property_nonnegative_and_matches_reference(eps, seed):
    logits, labels = _data(seed, shape=(6, 7), scale=10.0)
    values = _jitted_none(logits, labels, eps)
    assert np.all(values >= 0)
    want = reference(logits, labels, eps=eps, reduction="none")
    np.testing.assert_allclose(values, want, rtol=1e-5, atol=1e-5)


@functools.partial(jax.jit, static_argnums=2)
def _jitted_none(logits, labels, eps):
    return jaxkl.cross_entropy_loss(logits, labels, label_smoothing=eps, reduction="none")


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_aux_z_loss_is_zero_without_z_loss_on_an_all_minus_inf_row(reduction):
    # Regression: with z_loss=0 the aux z-loss term was 0 * lse**2 = 0 * inf = NaN
    # for a row whose logits are all -inf (every class masked).
    logits = jnp.array([[1.0, 2.0, 3.0], [-jnp.inf, -jnp.inf, -jnp.inf], [0.5, 0.0, -1.0]])
    labels = jnp.array([2, 0, 1])
    _, aux = jaxkl.cross_entropy_loss(logits, labels, reduction=reduction, return_aux=True)
    assert np.all(np.asarray(aux.z_loss) == 0.0)
    np.testing.assert_allclose(aux.logsumexp[::2], np.log(np.exp(np.asarray(logits[::2], np.float64)).sum(-1)), rtol=1e-6)
    # With the z-loss on, the finite rows still carry z * lse**2 (and the -inf row, excluded here, nothing).
    where = jnp.array([True, False, True])
    loss, aux = jaxkl.cross_entropy_loss(logits, labels, z_loss=0.1, reduction="none", where=where, return_aux=True)
    lse = np.log(np.exp(np.asarray(logits, np.float64)[::2]).sum(-1))
    np.testing.assert_allclose(np.asarray(aux.z_loss)[::2], 0.1 * lse**2, rtol=1e-6)
    np.testing.assert_allclose(loss, reference(logits, labels, z=0.1, reduction="none", where=where), rtol=1e-6)
    assert aux.z_loss[1] == 0.0


def test_checkify_skips_labels_excluded_by_where():
    # Regression: check=True raised on out-of-range labels of examples excluded by `where`.
    rng = np.random.default_rng(13)
    logits = jnp.asarray(rng.normal(size=(4, 5)), jnp.float32)
    labels = jnp.array([1, 7, -1, 4])
    where = jnp.array([True, False, False, True])

    def loss(x, w, ignore_index=None):
        return jaxkl.cross_entropy_loss(x, labels, where=w, ignore_index=ignore_index, check=True)

    err, (value, grad) = checkify.checkify(jax.jit(jax.value_and_grad(loss)))(logits, where)
    err.throw()
    np.testing.assert_allclose(value, reference(logits, labels, where=where), rtol=1e-6)
    # d/dx of the mean over kept rows of -log softmax(x)_y: (softmax(x) - onehot(y)) / kept.
    p = np.asarray(jax.nn.softmax(logits))
    want = np.where(np.asarray(where)[:, None], p - np.eye(5)[np.clip(np.asarray(labels), 0, 4)], 0.0) / 2
    np.testing.assert_allclose(grad, want, atol=1e-6)
    err, _ = checkify.checkify(jax.jit(loss))(logits, jnp.ones(4, bool))
    with pytest.raises(checkify.JaxRuntimeError, match="first offending label is 7"):
        err.throw()
    # ignore_index is not checked either, masked or not.
    err, _ = checkify.checkify(jax.jit(functools.partial(loss, ignore_index=-1)))(logits, jnp.array([True, False, True, True]))
    err.throw()


def test_tuple_axis_weight_of_the_wrong_shape_raises():
    # Regression: with a tuple class axis, a weight of the right size but the
    # wrong shape (or (1, K)) was flattened and taken silently.
    rng = np.random.default_rng(14)
    logits = jnp.asarray(rng.normal(size=(5, 3, 4)), jnp.float32)
    labels = jnp.array([0, 5, 11, 7, 3])
    for shape in [(4, 3), (1, 12), (12, 1), (3,), (4,), ()]:
        with pytest.raises(ValueError, match=r"weight.shape=\(.*\) must be \(12,\) or \(3, 4\)"):
            jaxkl.cross_entropy_loss(logits, labels, axis=(1, 2), weight=jnp.ones(shape))
    weight = jnp.asarray(rng.uniform(0.5, 2.0, size=(3, 4)), jnp.float32)
    flat_logits, flat_weight = logits.reshape(5, 12), weight.reshape(12)
    want = reference(flat_logits, labels, weight=flat_weight)

    def loss(x, w):
        return jaxkl.cross_entropy_loss(x, labels, axis=(1, 2), weight=w)

    for w in (weight, flat_weight):
        value, grad = jax.value_and_grad(loss)(logits, w)
        np.testing.assert_allclose(value, want, rtol=1e-6)
        # Plain autodiff of PyTorch's weighted mean on the flattened classes.
        plain = lambda x: jnp.sum(
            -flat_weight[labels] * jnp.take_along_axis(jax.nn.log_softmax(x.reshape(5, 12)), labels[:, None], -1)[:, 0]
        ) / jnp.sum(flat_weight[labels])
        np.testing.assert_allclose(grad, jax.grad(plain)(logits), rtol=1e-5, atol=1e-7)
