"""distillation_loss and consistency_loss against NumPy references written in this file."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkl
from tests import reference as ref

distill = jax.jit(
    jaxkl.distillation_loss,
    static_argnames=(
        "temperature", "alpha", "divergence", "beta", "scale_by_temperature_squared", "reduction", "axis",
    ),
)
consistency = jax.jit(
    jaxkl.consistency_loss,
    static_argnames=("temperature", "confidence_threshold", "reduction", "axis"),
)


def softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def kl(p, q):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sum(np.where(p == 0, 0.0, p * (np.log(p) - np.log(q))), axis=-1)


def reference_distillation(s, t, *, temperature=1.0, labels=None, alpha=0.5,
                           divergence="forward_kl", beta=0.5, scale=True):
    """Per-example values, following Hinton et al. and the GKD definition of JS_beta."""
    p_t, p_s = softmax(np.asarray(t) / temperature), softmax(np.asarray(s) / temperature)
    if divergence == "forward_kl":
        soft = kl(p_t, p_s)
    elif divergence == "reverse_kl":
        soft = kl(p_s, p_t)
    else:
        m = beta * p_t + (1 - beta) * p_s
        soft = beta * kl(p_t, m) + (1 - beta) * kl(p_s, m)
    if scale:
        soft = soft * temperature**2
    if labels is None:
        return soft
    hard = -np.log(softmax(s)[np.arange(len(labels)), labels])
    return (1 - alpha) * hard + alpha * soft


def _pair(seed, shape=(6, 5), scale=3.0):
    rng = np.random.default_rng(seed)
    s = (scale * rng.standard_normal(shape)).astype(np.float32)
    t = (scale * rng.standard_normal(shape)).astype(np.float32)
    return s, t


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "js"])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("with_labels", [False, True])
def test_distillation_matches_reference(divergence, temperature, with_labels):
    s, t = _pair(0)
    labels = np.array([0, 1, 2, 3, 4, 0], np.int32) if with_labels else None
    got = distill(s, t, temperature=temperature, labels=labels, alpha=0.7, divergence=divergence,
                  beta=0.3, reduction="none")
    want = reference_distillation(s, t, temperature=temperature, labels=labels, alpha=0.7,
                                  divergence=divergence, beta=0.3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_hinton_as_ported_from_pytorch():
    # F.kl_div(F.log_softmax(s / T), F.softmax(t / T), reduction="batchmean") * T**2
    s, t = _pair(1)
    temperature = 3.0
    log_q = np.log(softmax(s / temperature))
    p = softmax(t / temperature)
    torch_style = np.sum(p * (np.log(p) - log_q)) / s.shape[0] * temperature**2
    got = distill(s, t, temperature=temperature)
    np.testing.assert_allclose(got, torch_style, rtol=1e-5)
    unscaled = distill(s, t, temperature=temperature, scale_by_temperature_squared=False)
    np.testing.assert_allclose(unscaled, torch_style / temperature**2, rtol=1e-5)


def test_teacher_gets_no_gradient_and_student_gradient_is_analytic():
    s, t = _pair(2)
    temperature = 2.0
    gs, gt = jax.grad(distill, argnums=(0, 1))(s, t, temperature=temperature, reduction="sum")
    assert np.all(gt == 0.0)
    # d/ds T^2 KL(P_t || P_s) = T (P_s - P_t) with P = softmax(. / T)
    want = temperature * (softmax(s / temperature) - softmax(t / temperature))
    np.testing.assert_allclose(gs, want, atol=1e-6)


def test_reductions_and_mask_over_examples():
    s, t = _pair(3)
    keep = np.array([True, True, False, True, False, True])
    per = reference_distillation(s, t, temperature=2.0)
    for reduction, want in [
        ("sum", per[keep].sum()),
        ("mean", per[keep].mean()),
        ("batchmean", per[keep].sum() / 6),
    ]:
        got = distill(s, t, temperature=2.0, reduction=reduction, where=keep)
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_distillation_edges_have_finite_gradients():
    s = jnp.array([[0.0, -jnp.inf, 1.0], [1e5, 1e5 + 1.0, 1e5 - 2.0], [jnp.nan, 0.0, 0.0]])
    t = jnp.array([[1.0, -jnp.inf, 0.0], [3.0, 2.0, 1.0], [0.0, 0.0, 0.0]])
    keep = jnp.array([True, True, False])
    for divergence in ("forward_kl", "reverse_kl", "js"):
        loss, grad = jax.value_and_grad(distill)(
            s, t, temperature=2.0, divergence=divergence, labels=jnp.array([0, 1, 2]), where=keep
        )
        assert np.isfinite(loss), divergence
        assert np.all(np.isfinite(grad[:2])), divergence
    shifted = distill(s[1:2], t[1:2] + 1e4)
    np.testing.assert_allclose(shifted, reference_distillation(s[1:2] - 1e5, t[1:2]).mean(), rtol=1e-5)


def test_distillation_bf16_in_bf16_out():
    s, t = _pair(4, shape=(8, 40))
    sb, tb = jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16)
    loss, grad = jax.value_and_grad(distill)(sb, tb, temperature=2.0, labels=jnp.zeros(8, jnp.int32))
    assert loss.dtype == jnp.bfloat16 and grad.dtype == jnp.bfloat16
    want = reference_distillation(
        np.asarray(sb, np.float32), np.asarray(tb, np.float32), temperature=2.0, labels=np.zeros(8, int)
    ).mean()
    np.testing.assert_allclose(float(loss), want, rtol=2e-2)


def test_distillation_argument_errors():
    s, t = _pair(5)
    with pytest.raises(ValueError, match=r"student_logits.shape=\(6, 5\).*teacher_logits.shape=\(6, 4\)"):
        jaxkl.distillation_loss(s, t[:, :4])
    with pytest.raises(ValueError, match="divergence"):
        jaxkl.distillation_loss(s, t, divergence="kl")
    with pytest.raises(ValueError, match="alpha"):
        jaxkl.distillation_loss(s, t, alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        jaxkl.distillation_loss(s, t, temperature=0.0)
    with pytest.raises(TypeError, match="labels"):
        jaxkl.distillation_loss(s, t, labels=np.zeros(6, np.float32))
    with pytest.raises(ValueError, match="where"):
        jaxkl.distillation_loss(s, t, where=np.ones(5, bool))


# ----------------------------------------------------------------- consistency


def reference_consistency(x, t, *, temperature=1.0, threshold=None, reduction="mean"):
    """UDA (Xie et al. 2020): KL(sharpened target || model), confidence mask from softmax(t)."""
    per = kl(softmax(np.asarray(t) / temperature), softmax(x))
    keep = np.ones(len(per), bool) if threshold is None else softmax(t).max(-1) > threshold
    return ref.reduce(np.where(keep, per, 0.0), reduction, keep.sum())


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
@pytest.mark.parametrize("temperature,threshold", [(1.0, None), (0.4, 0.6), (0.4, None), (2.0, 0.3)])
def test_consistency_matches_reference(reduction, temperature, threshold):
    x, t = _pair(6)
    t = t / 2  # a spread of confidences around the thresholds
    got = consistency(x, t, temperature=temperature, confidence_threshold=threshold, reduction=reduction)
    want = reference_consistency(x, t, temperature=temperature, threshold=threshold, reduction=reduction)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_confidence_uses_the_unsharpened_target():
    # softmax([0.2, 0]) has max 0.55; sharpened by T = 0.1 it would be 0.88.
    x = jnp.zeros((1, 2))
    t = jnp.array([[0.2, 0.0]])
    assert consistency(x, t, temperature=0.1, confidence_threshold=0.6, reduction="sum") == 0.0
    assert consistency(x, t, temperature=0.1, confidence_threshold=0.5, reduction="sum") > 0.0


def test_nothing_confident_gives_zero_not_nan():
    x, t = _pair(7)
    loss, grad = jax.value_and_grad(consistency)(x, t * 0.0, confidence_threshold=0.5)
    assert loss == 0.0
    assert np.all(grad == 0.0)


def test_consistency_target_gets_no_gradient():
    x, t = _pair(8)
    gx, gt = jax.grad(consistency, argnums=(0, 1))(x, t, temperature=0.5, reduction="sum")
    assert np.all(gt == 0.0)
    np.testing.assert_allclose(gx, softmax(x) - softmax(t / 0.5), atol=1e-6)


def test_consistency_where_and_errors():
    x, t = _pair(9)
    keep = np.array([True, False, True, True, True, False])
    got = consistency(x, t, where=keep)
    np.testing.assert_allclose(got, reference_consistency(x[keep], t[keep]), rtol=1e-5)
    with pytest.raises(ValueError, match="confidence_threshold"):
        jaxkl.consistency_loss(x, t, confidence_threshold=1.5)
    with pytest.raises(ValueError, match="logits"):
        jaxkl.consistency_loss(x, t[:3])


@pytest.mark.parametrize("divergence", ["tvd", "skew_kl", "skew_reverse_kl"])
def test_tvd_and_skew_divergences_match_their_formulas(divergence):
    """TV and DistiLLM's skew KLs (mixture M = skew * teacher + (1 - skew) * student) in float64 NumPy."""
    rng = np.random.default_rng(7)
    s = rng.normal(size=(4, 6)).astype(np.float32)
    t = rng.normal(size=(4, 6)).astype(np.float32)
    t[1, 2] = -np.inf  # a teacher class of probability 0
    skew, temperature = 0.3, 2.0
    p_t, p_s = softmax(t / temperature), softmax(s / temperature)
    mixture = skew * p_t + (1 - skew) * p_s
    expected = {
        "tvd": 0.5 * np.abs(p_t - p_s).sum(-1),
        "skew_kl": kl(p_t, mixture),
        "skew_reverse_kl": kl(p_s, mixture),
    }[divergence] * temperature**2
    loss = lambda s: jaxkl.distillation_loss(
        s, t, divergence=divergence, skew=skew, temperature=temperature, reduction="none"
    )
    value, grad = jax.jit(lambda s: (loss(s), jax.grad(lambda s: jnp.sum(loss(s)))(s)))(s)  # one program
    np.testing.assert_allclose(value, expected, rtol=2e-5, atol=1e-6)
    # Gradient against central differences of the float64 formula, finite despite the -inf.
    grad = np.asarray(grad)
    assert np.all(np.isfinite(grad))
    step = 1e-3
    for i, j in [(0, 0), (1, 2), (3, 5)]:
        hi, lo = s.astype(np.float64), s.astype(np.float64)
        hi[i, j] += step
        lo[i, j] -= step
        value = lambda x: {
            "tvd": lambda ps, m: 0.5 * np.abs(p_t - ps).sum(),
            "skew_kl": lambda ps, m: kl(p_t, m).sum(),
            "skew_reverse_kl": lambda ps, m: kl(ps, m).sum(),
        }[divergence](softmax(x / temperature), skew * p_t + (1 - skew) * softmax(x / temperature))
        numeric = (value(hi) - value(lo)) / (2 * step) * temperature**2
        np.testing.assert_allclose(grad[i, j], numeric, rtol=2e-3, atol=2e-4)


def test_skew_limits_are_forward_kl_and_zero():
    rng = np.random.default_rng(8)
    s, t = rng.normal(size=(2, 3, 5)).astype(np.float32)
    forward = jaxkl.distillation_loss(s, t, reduction="none")
    np.testing.assert_allclose(jaxkl.distillation_loss(s, t, divergence="skew_kl", skew=0.0, reduction="none"), forward, rtol=1e-6)
    np.testing.assert_array_equal(jaxkl.distillation_loss(s, t, divergence="skew_kl", skew=1.0, reduction="none"), 0.0)
    with pytest.raises(ValueError, match="skew"):
        jaxkl.distillation_loss(s, t, divergence="skew_kl", skew=1.5)


def _jnp_distillation(s, t, labels, temperature, alpha, divergence, beta=0.5):
    """The per-example loss written out in jnp on materialised arrays, differentiated by plain autodiff."""
    ls, lt = jax.nn.log_softmax(s / temperature), jax.nn.log_softmax(t / temperature)
    ps, pt = jnp.exp(ls), jnp.exp(lt)
    kl_ = lambda p, lp, lq: jnp.sum(p * (lp - lq), axis=-1)
    if divergence == "forward_kl":
        soft = kl_(pt, lt, ls)
    elif divergence == "reverse_kl":
        soft = kl_(ps, ls, lt)
    else:
        lm = jnp.log(beta * pt + (1 - beta) * ps)
        soft = beta * kl_(pt, lt, lm) + (1 - beta) * kl_(ps, ls, lm)
    hard = -jnp.take_along_axis(jax.nn.log_softmax(s), labels[:, None], axis=-1)[:, 0]
    return (1 - alpha) * hard + alpha * temperature**2 * soft


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "js"])
def test_masked_rows_with_ignore_labels_and_infinite_teacher_give_zero_gradient(divergence):
    # Regression: hard labels of -100 on rows excluded by `where` made the
    # gradient NaN (the mask never reached the hard term), and so did a
    # masked row whose teacher logits hold +inf.
    s, t = _pair(10)
    keep = np.array([True, False, True, True, False, True])
    labels = np.array([0, -100, 2, 3, -100, 1], np.int32)
    t_pad, s_pad = t.copy(), s.copy()
    t_pad[1, 2] = np.inf
    t_pad[4] = np.nan
    s_pad[4, 3] = np.inf

    def loss(s):
        return jaxkl.distillation_loss(
            s, t_pad, temperature=2.0, labels=labels, alpha=0.6, divergence=divergence, where=keep
        )

    value, grad = jax.jit(jax.value_and_grad(loss))(s_pad)
    kept = np.flatnonzero(keep)
    want = reference_distillation(
        s[kept], t[kept], temperature=2.0, labels=labels[kept], alpha=0.6, divergence=divergence
    ).sum() / 6  # batchmean: all six rows count in the denominator
    np.testing.assert_allclose(value, want, rtol=1e-5)
    want_grad = jax.grad(
        lambda sk: jnp.sum(_jnp_distillation(sk, t[kept], labels[kept], 2.0, 0.6, divergence)) / 6
    )(s[kept])
    np.testing.assert_allclose(np.asarray(grad)[kept], want_grad, rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(grad)[~keep] == 0.0)


def test_consistency_masked_rows_with_infinite_logits_give_zero_gradient():
    x, t = _pair(11)
    keep = np.array([True, True, False, True, True, False])
    x_pad, t_pad = x.copy(), t.copy()
    t_pad[2, 0], x_pad[5, 1] = np.inf, np.nan
    value, grad = jax.jit(jax.value_and_grad(lambda x: jaxkl.consistency_loss(x, t_pad, temperature=0.5, where=keep)))(x_pad)
    np.testing.assert_allclose(value, reference_consistency(x[keep], t[keep], temperature=0.5), rtol=1e-5)
    # d/dx of the mean over kept rows of KL(softmax(t / T) || softmax(x)) is (softmax(x) - softmax(t / T)) / kept.
    want_grad = (softmax(x[keep]) - softmax(t[keep] / 0.5)) / keep.sum()
    np.testing.assert_allclose(np.asarray(grad)[keep], want_grad, atol=1e-6)
    assert np.all(np.asarray(grad)[~keep] == 0.0)


@pytest.mark.parametrize("temperature", [0.3, 0.7, 3.0])
def test_consistency_sharpens_bf16_targets_in_float32(temperature):
    # Regression: a static temperature sharpened bf16 targets as t * (1 / T)
    # rounded to bf16, which moved the loss by up to ~5% relative.
    rng = np.random.default_rng(12)
    x16 = jnp.asarray(3 * rng.standard_normal((64, 50)), jnp.bfloat16)
    t16 = jnp.asarray(3 * rng.standard_normal((64, 50)), jnp.bfloat16)
    x64, t64 = np.asarray(x16, np.float64), np.asarray(t16, np.float64)
    want = kl(softmax(t64 / temperature), softmax(x64))  # float64 on the very same bf16 values
    got = consistency(x16, t16, temperature=temperature, reduction="none")
    assert got.dtype == jnp.bfloat16
    # Only the final rounding to bf16 remains (half an ulp, 2**-9 relative).
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2**-8)
    got32 = consistency(x16.astype(jnp.float32), t16.astype(jnp.float32), temperature=temperature, reduction="none")
    np.testing.assert_allclose(got32, want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got, np.float32), got32, rtol=2**-8)
    # Gradients: (softmax(x) - softmax(t / T)) per row, against the float32 path and float64.
    g16 = jax.grad(lambda x: consistency(x, t16, temperature=temperature, reduction="sum").astype(jnp.float32))(x16)
    g32 = jax.grad(lambda x: consistency(x, t16.astype(jnp.float32), temperature=temperature, reduction="sum"))(
        x16.astype(jnp.float32)
    )
    np.testing.assert_allclose(g32, softmax(x64) - softmax(t64 / temperature), atol=1e-6)
    np.testing.assert_allclose(np.asarray(g16, np.float32), g32, atol=4e-3)
