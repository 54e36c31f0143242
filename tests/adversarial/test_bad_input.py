"""Bad input across the public API: a clear error that names the argument, or the documented value.

The table below holds one valid call per public name of `jaxkl`, `jaxkl.distributions`
and `jaxkl.fit`; each array argument is then replaced by `None` and by a string (a
TypeError naming it), and the first float input is poisoned with NaN and `+inf` (the
documented value: NaN, `logsumexp`'s `+inf`). A public name missing from the table
fails `test_every_public_name_is_covered`, so new functions must join it.
The silent wrong results of issue 17 follow, each against a NumPy reference.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import checkify

import jaxkl
from jaxkl import distributions as D
from jaxkl import fit as jfit

P = jnp.array([[0.25, 0.75], [0.5, 0.5]])
Q = jnp.array([[0.5, 0.5], [0.1, 0.9]])
A = jnp.array([[1.0, 0.0], [0.0, 2.0]])
B = jnp.array([[0.0, 1.0], [0.5, 0.5]])
LABELS = jnp.array([0, 1])
H = jnp.eye(2)
W = jnp.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]])
TOPK = jnp.array([[0, 1], [2, 1]])
LOGPROBS = jnp.log(jnp.array([[0.6, 0.3], [0.5, 0.25]]))


def f_kl(t):
    return t * jnp.log(t)


# name -> (function, positional argument names, valid arguments, array arguments, float input poisoned)
API = {
    "alpha_divergence": (jaxkl.alpha_divergence, ("p", "q"), dict(p=P, q=Q, alpha=0.5)),
    "alpha_divergence_from_logits": (jaxkl.alpha_divergence_from_logits, ("p_logits", "q_logits"), dict(p_logits=A, q_logits=B, alpha=0.5)),
    "chi2_divergence": (jaxkl.chi2_divergence, ("p", "q"), dict(p=P, q=Q)),
    "chi2_divergence_from_logits": (jaxkl.chi2_divergence_from_logits, ("p_logits", "q_logits"), dict(p_logits=A, q_logits=B)),
    "conditional_entropy": (jaxkl.conditional_entropy, ("joint",), dict(joint=P / 2)),
    "conditional_entropy_from_logits": (jaxkl.conditional_entropy_from_logits, ("logits",), dict(logits=A)),
    "consistency_loss": (jaxkl.consistency_loss, ("logits", "target_logits"), dict(logits=A, target_logits=B)),
    "contrastive_loss": (jaxkl.contrastive_loss, ("x", "y"), dict(x=A, y=B)),
    "cross_entropy": (jaxkl.cross_entropy, ("p", "q"), dict(p=P, q=Q)),
    "cross_entropy_from_logits": (jaxkl.cross_entropy_from_logits, ("p", "q_logits"), dict(p=P, q_logits=B)),
    "cross_entropy_loss": (jaxkl.cross_entropy_loss, ("logits", "labels"), dict(logits=A, labels=LABELS)),
    "distillation_loss": (jaxkl.distillation_loss, ("student_logits", "teacher_logits"), dict(student_logits=A, teacher_logits=B)),
    "entropy": (jaxkl.entropy, ("p",), dict(p=P)),
    "entropy_from_logits": (jaxkl.entropy_from_logits, ("logits",), dict(logits=A)),
    "f_divergence": (jaxkl.f_divergence, ("p", "q", "f"), dict(p=P, q=Q, f=f_kl)),
    "f_divergence_from_logits": (jaxkl.f_divergence_from_logits, ("p_logits", "q_logits", "f"), dict(p_logits=A, q_logits=B, f=f_kl)),
    "fused_linear_cross_entropy": (jaxkl.fused_linear_cross_entropy, ("hidden", "head_weight", "labels"), dict(hidden=H, head_weight=W, labels=LABELS)),
    "fused_linear_distillation_loss": (
        jaxkl.fused_linear_distillation_loss,
        ("student_hidden", "student_head_weight", "teacher_hidden", "teacher_head_weight"),
        dict(student_hidden=H, student_head_weight=W, teacher_hidden=H[::-1], teacher_head_weight=W),
    ),
    "fused_linear_topk_distillation_loss": (
        jaxkl.fused_linear_topk_distillation_loss,
        ("hidden", "head_weight", "teacher_indices", "teacher_logprobs"),
        dict(hidden=H, head_weight=W, teacher_indices=TOPK, teacher_logprobs=LOGPROBS),
    ),
    "hellinger_distance": (jaxkl.hellinger_distance, ("p", "q"), dict(p=P, q=Q)),
    "hellinger_distance_from_logits": (jaxkl.hellinger_distance_from_logits, ("p_logits", "q_logits"), dict(p_logits=A, q_logits=B)),
    "joint_entropy": (jaxkl.joint_entropy, ("joint",), dict(joint=P / 2)),
    "joint_entropy_from_logits": (jaxkl.joint_entropy_from_logits, ("logits",), dict(logits=A)),
    "js_divergence": (jaxkl.js_divergence, ("p", "q"), dict(p=P, q=Q)),
    "js_divergence_from_logits": (jaxkl.js_divergence_from_logits, ("p_logits", "q_logits"), dict(p_logits=A, q_logits=B)),
    "kl_div": (jaxkl.kl_div, ("input", "target"), dict(input=jnp.log(Q), target=P)),
    "kl_divergence": (jaxkl.kl_divergence, ("p", "q"), dict(p=P, q=Q)),
    "kl_divergence_from_logits": (jaxkl.kl_divergence_from_logits, ("p_logits", "q_logits"), dict(p_logits=A, q_logits=B)),
    "kl_estimate": (jaxkl.kl_estimate, ("log_q", "log_p"), dict(log_q=A[0], log_p=B[0])),
    "log_softmax": (jaxkl.log_softmax, ("x",), dict(x=A)),
    "logsumexp": (jaxkl.logsumexp, ("x",), dict(x=A)),
    "mutual_information": (jaxkl.mutual_information, ("joint",), dict(joint=P / 2)),
    "mutual_information_from_counts": (jaxkl.mutual_information_from_counts, ("counts",), dict(counts=jnp.array([[1.0, 3.0], [2.0, 2.0]]))),
    "mutual_information_from_logits": (jaxkl.mutual_information_from_logits, ("logits",), dict(logits=A)),
    "reduce": (jaxkl.reduce, ("values",), dict(values=A[0])),
    "renyi_divergence": (jaxkl.renyi_divergence, ("p", "q"), dict(p=P, q=Q, alpha=0.5)),
    "renyi_divergence_from_logits": (jaxkl.renyi_divergence_from_logits, ("p_logits", "q_logits"), dict(p_logits=A, q_logits=B, alpha=0.5)),
    "renyi_entropy": (jaxkl.renyi_entropy, ("p",), dict(p=P, alpha=0.5)),
    "renyi_entropy_from_logits": (jaxkl.renyi_entropy_from_logits, ("logits",), dict(logits=A, alpha=0.5)),
    "softmax": (jaxkl.softmax, ("x",), dict(x=A)),
    "topk_distillation_loss": (
        jaxkl.topk_distillation_loss,
        ("student_logits", "teacher_indices", "teacher_logprobs"),
        dict(student_logits=jnp.array([[1.0, 0.0, 0.5], [0.0, 2.0, 1.0]]), teacher_indices=TOPK, teacher_logprobs=LOGPROBS),
    ),
    "total_variation": (jaxkl.total_variation, ("p", "q"), dict(p=P, q=Q)),
    "total_variation_from_logits": (jaxkl.total_variation_from_logits, ("p_logits", "q_logits"), dict(p_logits=A, q_logits=B)),
    "tsallis_entropy": (jaxkl.tsallis_entropy, ("p",), dict(p=P, alpha=0.5)),
    "tsallis_entropy_from_logits": (jaxkl.tsallis_entropy_from_logits, ("logits",), dict(logits=A, alpha=0.5)),
    "token_logprobs": (jaxkl.token_logprobs, ("logits", "tokens"), dict(logits=A, tokens=LABELS)),
    "fused_linear_token_logprobs": (
        jaxkl.fused_linear_token_logprobs,
        ("hidden", "head_weight", "tokens"),
        dict(hidden=H, head_weight=W, tokens=LABELS),
    ),
    "fused_linear_policy_loss": (
        jaxkl.fused_linear_policy_loss,
        ("hidden", "head_weight", "tokens", "old_logprobs", "advantages"),
        dict(hidden=jnp.stack([H, H[::-1]]), head_weight=W, tokens=TOPK, old_logprobs=jnp.log(P), advantages=jnp.array([1.0, -0.5])),
    ),
    "policy_loss": (
        jaxkl.policy_loss,
        ("logprobs", "old_logprobs", "advantages"),
        dict(logprobs=jnp.log(P), old_logprobs=jnp.log(Q), advantages=jnp.array([1.0, -0.5])),
    ),
    "preference_loss": (
        jaxkl.preference_loss,
        ("chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps"),
        dict(chosen_logps=A[0] - 3.0, rejected_logps=B[0] - 3.0, ref_chosen_logps=B[1] - 3.0, ref_rejected_logps=A[1] - 3.0),
    ),
}
# Names that are namespaces, not functions: their contents have their own tables.
NAMESPACES = {"distributions", "fit"}
# Result types (NamedTuples that functions return), not functions to call.
RESULT_TYPES = {"CrossEntropyAux", "PolicyStats"}
# Arguments that are not arrays (callables, numbers) are not replaced by None/str.
NOT_ARRAYS = {"f", "alpha"}
# Array arguments for which None means something (no reference model): only a string is bad.
NONE_MEANS_ABSENT = {"ref_chosen_logps", "ref_rejected_logps"}

FAMILIES = {
    "Bernoulli": dict(logits=0.3),
    "Beta": dict(a=2.0, b=3.0),
    "Binomial": dict(total_count=4, logits=0.3),
    "Categorical": dict(logits=jnp.array([0.0, 1.0, -1.0])),
    "Cauchy": dict(loc=0.0, scale=1.0),
    "Dirichlet": dict(concentration=jnp.array([1.0, 2.0])),
    "Exponential": dict(rate=2.0),
    "Gamma": dict(concentration=2.0, rate=1.0),
    "Geometric": dict(logits=0.3),
    "Gumbel": dict(loc=0.0, scale=1.0),
    "Laplace": dict(loc=0.0, scale=1.0),
    "LogNormal": dict(loc=0.0, scale=1.0),
    "MixtureSameFamily": dict(mixture_logits=jnp.zeros(2), components=D.Normal(jnp.array([0.0, 1.0]), 1.0)),
    "MultivariateNormalDiag": dict(loc=jnp.zeros(2), scale_diag=jnp.ones(2)),
    "MultivariateNormalTriL": dict(loc=jnp.zeros(2), scale_tril=jnp.eye(2)),
    "Normal": dict(loc=0.0, scale=1.0),
    "Poisson": dict(rate=2.0),
    "StudentT": dict(df=3.0, loc=0.0, scale=1.0),
    "Uniform": dict(low=0.0, high=1.0),
    "Independent": dict(base=D.Normal(jnp.zeros(2), 1.0)),
}
DISTRIBUTION_FUNCTIONS = {"Distribution", "has_kl", "kl_divergence", "register_kl"}
FIT_NAMES = {"FitResult", "fit", "plot"}


def call(name, **changes):
    fn, positional, valid = API[name]
    args = {**valid, **changes}
    leading = [args.pop(n) for n in positional]
    return fn(*leading, **args)


def test_every_public_name_is_covered():
    top = set(jaxkl.__all__) - NAMESPACES - RESULT_TYPES
    assert top == set(API), f"add to the table: {sorted(top - set(API))}; stale: {sorted(set(API) - top)}"
    dists = set(D.__all__)
    assert dists == set(FAMILIES) | DISTRIBUTION_FUNCTIONS, sorted(dists ^ (set(FAMILIES) | DISTRIBUTION_FUNCTIONS))
    assert set(jfit.__all__) == FIT_NAMES


def array_arguments(name):
    fn, positional, valid = API[name]
    return [n for n in valid if n not in NOT_ARRAYS and not callable(valid[n])] + ["where"] * (
        "where" in fn.__code__.co_varnames
    )


@pytest.mark.parametrize("name", sorted(API))
def test_none_and_strings_raise_a_type_error_naming_the_argument(name):
    for arg in array_arguments(name):
        if arg == "where":
            bads = ("abc", object())
        else:
            bads = ("abc",) if arg in NONE_MEANS_ABSENT else (None, "abc")
        for bad in bads:
            with pytest.raises(TypeError, match=rf"\b{arg}\b"):
                call(name, **{arg: bad})


# The first float input poisoned: NaN gives NaN, `+inf` gives NaN (logsumexp: +inf), never a number.
POISON_EXCEPT = {
    # reductions and estimators of plain numbers: NaN/inf propagate as in NumPy
    "reduce": {"inf": np.inf},
    "logsumexp": {"inf": np.inf},
    "kl_estimate": {},
    # PyTorch's element-wise formula target * (log target - input): input = +inf gives -inf
    "kl_div": {"inf": -np.inf},
}


@pytest.mark.parametrize("name", sorted(API))
def test_nan_and_inf_inputs_give_the_documented_value(name):
    fn, positional, valid = API[name]
    first = next(n for n in positional if jnp.issubdtype(jnp.asarray(valid[n]).dtype, jnp.floating))
    for kind, value in (("nan", np.nan), ("inf", np.inf)):
        x = jnp.asarray(valid[first]).at[(0,) * jnp.ndim(valid[first])].set(value)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = call(name, **{first: x})
            # (loss, stats) and (log-probabilities, entropy): the first output carries the value.
            out = np.asarray(out[0] if isinstance(out, tuple) else out, np.float64)
        expected = POISON_EXCEPT.get(name, {}).get(kind, np.nan)
        got = out.ravel()[0] if out.ndim else out
        if name in ("softmax", "log_softmax"):
            got = out[0, 0]
        if name == "kl_estimate" and kind == "inf":
            continue  # log_q = +inf is the documented +inf / NaN of the estimator's formula
        assert (np.isnan(got) if np.isnan(expected) else got == expected), (name, kind, out)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_distribution_parameters_none_and_strings_name_the_parameter(family):
    cls = getattr(D, family)
    valid = FAMILIES[family]
    d = cls(**valid)
    for param, value in valid.items():
        if param in ("total_count", "components", "base"):
            continue
        for bad in (None, "abc"):
            with pytest.raises(TypeError, match=rf"\b{param}\b|exactly one of"):
                cls(**{**valid, param: bad})
    for bad in (None, -1, "3"):
        with pytest.raises(TypeError, match="sample shape"):
            d.sample(jax.random.key(0), bad)


def test_distribution_functions_reject_non_distributions():
    with pytest.raises(TypeError, match="has no parameters"):
        D.Distribution().batch_shape
    d = D.Normal(0.0, 1.0)
    for fn in (D.kl_divergence, D.has_kl):
        with pytest.raises(TypeError):
            fn(None, d)
    with pytest.raises(TypeError):
        D.register_kl(None, D.Normal)(lambda p, q: 0.0)
    with pytest.raises(ValueError, match="logits must have at least one class"):
        D.Categorical(jnp.zeros(0))


def test_fit_and_plot_name_their_arguments():
    init = D.Normal(0.0, 1.0)
    with pytest.raises(TypeError, match="optimizer must be an optax"):
        jfit.fit(D.Normal(1.0, 1.0), init, optimizer="adam", progress=False)
    with pytest.raises(TypeError, match="target must be an array"):
        jfit.fit(None, init, progress=False)
    with pytest.raises(TypeError, match="init must be"):
        jfit.fit(D.Normal(1.0, 1.0), None, progress=False)
    with pytest.raises(TypeError, match="result must be a jaxkl.fit.FitResult"):
        jfit.plot(None, init)
    result = jfit.fit(D.Normal(1.0, 1.0), init, steps=2, progress=False)
    assert isinstance(result, jfit.FitResult)
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match="max_starts"):
        jfit.plot(result, init, max_starts=-1)
    with pytest.raises(ValueError, match="grid must be 1-D"):
        jfit.plot(result, init, grid=np.zeros((4, 2)))


# ------------------------------------------------------- the silent wrong results of issue 17


def np_label_ce(logits, labels):
    z = np.asarray(logits, np.float64)
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    ok = (labels >= 0) & (labels < z.shape[-1])
    return np.where(ok, lse - np.take_along_axis(z, np.where(ok, labels, 0)[:, None], -1)[:, 0], np.nan)


def test_64_bit_labels_never_wrap():
    big = np.array([2**32, 1], np.int64)  # 2**32 wraps to class 0 in int32
    want = np_label_ce(A, big)
    assert np.isnan(want[0])
    got = jaxkl.cross_entropy_loss(A, big, reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-6)
    fused = jaxkl.fused_linear_cross_entropy(H, W, big, reduction="none")
    np.testing.assert_allclose(fused, np_label_ce(np.asarray(H) @ np.asarray(W), big), rtol=1e-6)
    assert np.isnan(np.asarray(jaxkl.distillation_loss(A, B, labels=big, reduction="none"))[0])
    assert np.asarray(D.Categorical(jnp.zeros(3)).log_prob(np.array([2**32, -(2**40)]))).tolist() == [-np.inf] * 2
    with pytest.raises(checkify.JaxRuntimeError, match="outside"):
        jaxkl.cross_entropy_loss(A, big, check=True)
    with pytest.raises(ValueError, match="ignore_index"):
        jaxkl.fused_linear_cross_entropy(H, W, LABELS, ignore_index=2**40)


def test_invalid_probabilities_give_nan():
    neg, half = jnp.array([-0.5, 1.5]), jnp.array([0.5, 0.5])
    for value in (
        jaxkl.cross_entropy(neg, half),
        jaxkl.kl_divergence(jnp.array([0.0, 1.0]), neg),
        jaxkl.cross_entropy(jnp.array([-jnp.inf, 1.0]), half),
        jaxkl.kl_divergence(jnp.array([jnp.inf, 0.0]), half),
        jaxkl.entropy(jnp.array([jnp.inf, 0.0])),
    ):
        assert np.isnan(value)
    # a masked invalid entry is excluded, as documented
    masked = jaxkl.cross_entropy(neg, half, where=jnp.array([False, True]))
    np.testing.assert_allclose(masked, -1.5 * np.log(0.5), rtol=1e-6)


def np_tempered_kl(a, b, t):
    def logp(z):
        z = np.asarray(z, np.float64) / t
        return z - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True)) - z.max(-1, keepdims=True)

    la, lb = logp(a), logp(b)
    return (np.exp(la) * (la - lb)).sum(-1)


def test_temperature_shapes_and_signs():
    per_row = jnp.array([[1.0], [2.0]])
    got = jaxkl.kl_divergence_from_logits(A, B, temperature=per_row)
    np.testing.assert_allclose(got, np_tempered_kl(A, B, np.array([[1.0], [2.0]])), rtol=1e-5)
    for bad in (jnp.array([[1.0], [-1.0]]), jnp.array([[1.0], [0.0]])):
        with pytest.raises(ValueError, match="temperature must hold"):
            jaxkl.kl_divergence_from_logits(A, B, temperature=bad)
    for shape in ((2, 1, 1), (2,), (1, 2)):
        with pytest.raises(ValueError, match=r"temperature.shape"):
            jaxkl.kl_divergence_from_logits(A, B, temperature=jnp.ones(shape))
    traced = jax.jit(lambda t: jaxkl.kl_divergence_from_logits(A, B, temperature=t))
    assert np.isnan(np.asarray(traced(-1.0))).all()
    np.testing.assert_allclose(traced(2.0), np_tempered_kl(A, B, 2.0), rtol=1e-5)
    with pytest.raises(TypeError, match="temperature"):
        jaxkl.distillation_loss(A, B, temperature=jnp.ones((2, 1)))


def test_js_with_beta_0_or_1_propagates_nan():
    for beta in (0.0, 1.0):
        got = jaxkl.js_divergence_from_logits(jnp.array([[jnp.nan, 0.0], [1.0, 0.0]]), jnp.zeros((2, 2)), beta=beta)
        assert np.isnan(got[0]) and got[1] == 0.0


def test_tiny_temperature_gives_the_limit():
    a, b = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    assert jaxkl.kl_divergence_from_logits(a, b, temperature=1e-40) == np.inf
    assert jaxkl.kl_divergence_from_logits(a, a, temperature=1e-40) == 0.0
    np.testing.assert_allclose(jaxkl.js_divergence_from_logits(a, b, temperature=1e-40), math.log(2), rtol=1e-6)
    np.testing.assert_allclose(jaxkl.kl_divergence_from_logits(a, b, temperature=1e-7), np_tempered_kl(a, b, 1e-7), rtol=1e-5)
    assert jaxkl.distillation_loss(a[None], b[None], temperature=1e-40) == 0.0
    s_hidden, t_hidden = jnp.eye(2), jnp.eye(2)[::-1]
    head = jnp.eye(2)
    assert jaxkl.fused_linear_distillation_loss(s_hidden, head, t_hidden, head, temperature=1e-40) == 0.0


def test_fit_a_categorical_to_samples():
    samples = jnp.array([0, 1, 1, 2])
    r = jfit.fit(samples, D.Categorical(jnp.zeros(3)), objective="forward_kl", steps=60,
                 optimizer=optax.adam(0.3), progress=False)
    np.testing.assert_allclose(np.asarray(r.dist.probs), [0.25, 0.5, 0.25], atol=0.02)


def test_a_grid_that_misses_the_densities_warns():
    with pytest.warns(RuntimeWarning, match="grid"):
        jfit.fit(D.Normal(0.0, 1.0), D.Normal(0.5, 1.0), objective="js", grid=jnp.linspace(20.0, 30.0, 16),
                 steps=1, progress=False)


def test_invalid_discrete_parameters_and_empty_batches():
    key = jax.random.key(0)
    for logits in (jnp.full(3, -jnp.inf), jnp.array([0.0, jnp.nan, 1.0])):
        assert (np.asarray(D.Categorical(logits).sample(key, (4,))) == -1).all()
    assert np.isnan(np.asarray(D.Bernoulli(jnp.nan).sample(key, (3,)))).all()
    # an empty batch reduces to 0 for every reduction, in every loss
    for reduction in ("mean", "batchmean"):
        for value in (
            jaxkl.cross_entropy_loss(jnp.zeros((0, 3)), jnp.zeros(0, int), reduction=reduction),
            jaxkl.fused_linear_cross_entropy(jnp.zeros((0, 2)), W, jnp.zeros(0, int), reduction=reduction),
            jaxkl.distillation_loss(jnp.zeros((0, 3)), jnp.zeros((0, 3)), reduction=reduction),
            jaxkl.reduce(jnp.zeros(0), reduction),
        ):
            assert value == 0.0
