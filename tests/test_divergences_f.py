"""Divergences beyond KL and the Rényi / Tsallis entropies, both input forms.

References are NumPy/SciPy float64 formulas written here (and SciPy's Cressie-Read
`power_divergence`, which is Amari's alpha-divergence up to a factor 2);
properties are the textbook inequalities between the measures.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.ad_checkpoint import print_saved_residuals
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads
from scipy import stats

import jaxkl
from tests import reference as ref

INF = math.inf

# ------------------------------------------------------------------ references


def _power_sum(p, q, alpha):
    """sum p**alpha q**(1 - alpha): over the support of p at alpha = 0, else where either is > 0."""
    keep = (p > 0) if alpha == 0 else (p > 0) | (q > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sum(np.where(keep, p**alpha * q ** (1 - alpha), 0.0), -1)


def _support_power_sum(p, alpha):
    """sum of p**alpha over the support of p."""
    return np.sum(np.where(p > 0, np.where(p > 0, p, 1) ** alpha, 0), -1)


def ref_tv(p, q):
    return 0.5 * np.abs(p - q).sum(-1)


def ref_hellinger(p, q):
    return np.sqrt(np.maximum(1 - np.sqrt(p * q).sum(-1), 0))


def ref_chi2(p, q):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((p == 0) & (q == 0), 0.0, (p - q) ** 2 / q).sum(-1)


def ref_renyi(p, q, alpha):
    if alpha == 1:
        return ref.kl(p, q)
    with np.errstate(divide="ignore"):
        if alpha == INF:
            return np.max(np.where(p > 0, np.log(p) - np.log(q), -np.inf), -1)
        return np.log(_power_sum(p, q, alpha)) / (alpha - 1)


def ref_alpha(p, q, alpha):
    if alpha in (0, 1):
        return ref.kl(q, p) if alpha == 0 else ref.kl(p, q)
    return (1 - _power_sum(p, q, alpha)) / (alpha * (1 - alpha))


def ref_renyi_entropy(p, alpha):
    if alpha == 1:
        return stats.entropy(p, axis=-1)
    if alpha == INF:
        return -np.log(p.max(-1))
    return np.log(_support_power_sum(p, alpha)) / (1 - alpha)


def ref_tsallis(p, alpha):
    if alpha == 1:
        return stats.entropy(p, axis=-1)
    return (1 - _support_power_sum(p, alpha)) / (alpha - 1)


# name: (probabilities form, logits form, keywords, reference)
DIVERGENCES = {
    "tv": (jaxkl.total_variation, jaxkl.total_variation_from_logits, {}, ref_tv),
    "hellinger": (jaxkl.hellinger_distance, jaxkl.hellinger_distance_from_logits, {}, ref_hellinger),
    "chi2": (jaxkl.chi2_divergence, jaxkl.chi2_divergence_from_logits, {}, ref_chi2),
    **{
        f"renyi{a}": (jaxkl.renyi_divergence, jaxkl.renyi_divergence_from_logits, {"alpha": a}, functools.partial(ref_renyi, alpha=a))
        for a in (0.0, 0.5, 1.0, 2.5, INF)
    },
    **{
        f"alpha{a}": (jaxkl.alpha_divergence, jaxkl.alpha_divergence_from_logits, {"alpha": a}, functools.partial(ref_alpha, alpha=a))
        for a in (-0.5, 0.0, 0.3, 2.0)
    },
}
ENTROPIES = {
    **{
        f"renyi{a}": (jaxkl.renyi_entropy, jaxkl.renyi_entropy_from_logits, {"alpha": a}, functools.partial(ref_renyi_entropy, alpha=a))
        for a in (0.0, 0.5, 2.0, INF)
    },
    **{
        f"tsallis{a}": (jaxkl.tsallis_entropy, jaxkl.tsallis_entropy_from_logits, {"alpha": a}, functools.partial(ref_tsallis, alpha=a))
        for a in (-0.5, 0.5, 2.0)
    },
}


def _edge_rows():
    """Rows that exercise the zeros: a zero in p, zeros of q under p, p = q, disjoint supports."""
    rng = np.random.default_rng(0)
    p = ref.random_probs(rng, (5, 6), zeros=True)
    q = ref.random_probs(rng, (5, 6))
    q[1] = p[0]  # row 1: q has zeros where p (a positive row) does not
    p[2] = q[2] = p[0]  # row 2: p = q, with zeros
    p[3], q[3] = [0.5, 0.5, 0, 0, 0, 0], [0, 0, 0.25, 0.25, 0.25, 0.25]  # row 3: disjoint
    return p.astype(np.float32), q.astype(np.float32)


def _log(x):
    with np.errstate(divide="ignore"):
        return np.log(x)


def _values_and_grads(fn, kw, *args):
    """`fn(*args, **kw)` and the gradient of its sum wrt every argument, compiled once."""
    total = lambda *xs: jnp.sum(fn(*xs, **kw))
    return jax.jit(lambda *xs: (fn(*xs, **kw), jax.grad(total, range(len(xs)))(*xs)))(*map(jnp.asarray, args))


def _both_forms(probs_fn, logits_fn, kw, probs, logits):
    """`_values_and_grads` of the probabilities form on `probs` and of the logits form on
    `logits`, compiled as one program: ((value, grads) of probs_fn, (value, grads) of logits_fn)."""
    n = len(probs)
    both = lambda *xs: jnp.stack([probs_fn(*xs[:n], **kw), logits_fn(*xs[n:], **kw)])
    (value_p, value_l), grads = _values_and_grads(both, {}, *probs, *logits)
    return (value_p, grads[:n]), (value_l, grads[n:])


@pytest.mark.parametrize("name", sorted(DIVERGENCES))
def test_divergences_match_references_with_zeros(name):
    probs_fn, logits_fn, kw, reference = DIVERGENCES[name]
    p, q = _edge_rows()
    want = reference(*(x / x.sum(-1, keepdims=True) for x in (p.astype(np.float64), q.astype(np.float64))))
    (got_p, grads_p), (got_l, grads_l) = _both_forms(probs_fn, logits_fn, kw, (p, q), (_log(p), _log(q)))
    for got in (got_p, got_l):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    assert got_l[2] == 0.0  # identical logits give exactly 0
    # Gradients are finite at every zero and -inf, for both forms and both arguments (an
    # infinite term, q = 0 < p at the KL limits, is a constant with zero gradient).
    for g in grads_l + grads_p:
        assert np.isfinite(np.asarray(g)).all(), (name, g)


@pytest.mark.parametrize("name", sorted(ENTROPIES))
def test_entropies_match_references_with_zeros(name):
    probs_fn, logits_fn, kw, reference = ENTROPIES[name]
    p, _ = _edge_rows()
    want = reference(p.astype(np.float64))
    for value, (g,) in _both_forms(probs_fn, logits_fn, kw, (p,), (_log(p),)):
        np.testing.assert_allclose(value, want, rtol=2e-5, atol=2e-6)
        assert np.isfinite(np.asarray(g)).all(), (name, g)


def test_chi2_and_alpha_match_scipy_power_divergence():
    # Cressie-Read with lambda = alpha - 1 is twice Amari's alpha-divergence; lambda = 1 is Pearson.
    rng = np.random.default_rng(1)
    p, q = (ref.random_probs(rng, (3, 5)).astype(np.float64) for _ in range(2))
    p, q = p / p.sum(-1, keepdims=True), q / q.sum(-1, keepdims=True)  # SciPy checks the sums agree
    alphas = (-0.5, 0.3, 2.0, 3.0)
    got_alpha, got_chi2 = jax.jit(lambda p, q: (
        [jaxkl.alpha_divergence(p, q, alpha=alpha) for alpha in alphas],
        jaxkl.chi2_divergence_from_logits(jnp.log(p), jnp.log(q)),
    ))(p.astype(np.float32), q.astype(np.float32))
    for alpha, got in zip(alphas, got_alpha):
        want = stats.power_divergence(p, q, lambda_=alpha - 1, axis=-1).statistic / 2
        np.testing.assert_allclose(got, want, rtol=1e-4)
    want = stats.power_divergence(p, q, lambda_="pearson", axis=-1).statistic
    np.testing.assert_allclose(got_chi2, want, rtol=1e-4)


def test_random_logits_axis_where_temperature_and_base():
    rng = np.random.default_rng(2)
    a, b = ref.random_logits(rng, (6, 4)), ref.random_logits(rng, (6, 4))
    keep = np.array([True, False, True, True, True, False])
    T = 2.0
    pa, pb = ref.softmax(a[keep] / T, axis=0), ref.softmax(b[keep] / T, axis=0)
    p, q = _edge_rows()
    # f_divergence with Pearson's generator is chi2; with TV's (slope 1/2 at infinity) is TV.
    pearson = lambda t: (t - 1.0) ** 2
    tv = lambda t: 0.5 * jnp.abs(t - 1.0)
    # Probability masks: the measure forms give 0 for p = q even though the kept mass is < 1.
    mask = jnp.asarray([True, True, False, True, True, True])

    @jax.jit  # every kernel call in one program
    def measures(a, b, p, q):
        kw = dict(axis=0, where=jnp.asarray(keep)[:, None], temperature=T)
        return {
            "renyi": jaxkl.renyi_divergence_from_logits(a, b, alpha=0.5, base=2, **kw),
            "tv": jaxkl.total_variation_from_logits(a, b, **kw),
            "hellinger": jaxkl.hellinger_distance_from_logits(a, b, **kw),
            "pearson": jaxkl.f_divergence_from_logits(a, b, pearson, **kw),
            "f tv": jaxkl.f_divergence(p, q, tv, slope_at_infinity=0.5),
            "f kl": jaxkl.f_divergence(p, q, lambda t: jax.scipy.special.xlogy(t, t)),
            "zeros": [fn(p, p, where=mask) for fn in (jaxkl.total_variation, jaxkl.hellinger_distance, jaxkl.chi2_divergence)],
            "zeros alpha": [jaxkl.renyi_divergence(p, p, alpha=2.0, where=mask), jaxkl.alpha_divergence(p, p, alpha=0.3, where=mask)],
        }

    got = measures(a, b, p, q)
    np.testing.assert_allclose(got["renyi"], ref_renyi(pa.T, pb.T, 0.5) / np.log(2), rtol=1e-5)
    np.testing.assert_allclose(got["tv"], ref_tv(pa.T, pb.T), rtol=1e-5)
    np.testing.assert_allclose(got["hellinger"], ref_hellinger(pa.T, pb.T), rtol=1e-5)
    np.testing.assert_allclose(got["pearson"], ref_chi2(pa.T, pb.T), rtol=1e-5)
    np.testing.assert_allclose(got["f tv"], ref_tv(p, q), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["f kl"], ref.kl(p, q), rtol=1e-5, atol=1e-6)
    for zero in got["zeros"]:
        np.testing.assert_allclose(zero, 0.0, atol=1e-7)
    for zero in got["zeros alpha"]:
        np.testing.assert_allclose(zero, 0.0, atol=1e-6)


def test_fully_masked_and_empty_rows_are_zero_with_zero_gradient():
    a = jnp.array([[1.0, 2.0, 3.0], [-INF, -INF, -INF]])
    where = jnp.array([[False, False, False], [True, True, True]])

    def every_measure(x, y):  # each is >= 0, so a sum of 0 means each is 0
        divergences = [
            jaxkl.total_variation_from_logits(x, y, where=where),
            jaxkl.hellinger_distance_from_logits(x, y, where=where),
            jaxkl.chi2_divergence_from_logits(x, y, where=where),
            jaxkl.renyi_divergence_from_logits(x, y, alpha=0.5, where=where),
            jaxkl.renyi_divergence_from_logits(x, y, alpha=INF, where=where),
            jaxkl.alpha_divergence_from_logits(x, y, alpha=3.0, where=where),
            jaxkl.renyi_entropy_from_logits(x, alpha=2.0, where=where),
            jaxkl.tsallis_entropy_from_logits(y, alpha=0.5, where=where),
        ]
        return jnp.stack(divergences)

    values, grads = _values_and_grads(every_measure, {}, a, a + 1)
    np.testing.assert_array_equal(values, 0.0)
    for g in grads:
        np.testing.assert_array_equal(g, 0.0)
    zeros = jax.jit(lambda p: jnp.stack([
        jaxkl.renyi_divergence(p, p, alpha=0.5), jaxkl.alpha_divergence(p, p, alpha=0.5), jaxkl.renyi_entropy(p, alpha=2.0)
    ]))(jnp.zeros((2, 3)))
    assert (zeros == 0).all()


def test_infinite_values_have_zero_gradient_and_nan_propagates():
    p = jnp.array([0.0, 0.0])
    q = jnp.array([0.0, -INF])

    def infinite(x, y):
        return jnp.stack([
            jaxkl.chi2_divergence_from_logits(x, y),
            jaxkl.renyi_divergence_from_logits(x, y, alpha=2.0),
            jaxkl.alpha_divergence_from_logits(x, y, alpha=3.0),
            jaxkl.alpha_divergence_from_logits(y, x, alpha=-1.0),
        ])

    values, grads = _values_and_grads(infinite, {}, p, q)
    np.testing.assert_array_equal(values, INF)
    for g in grads:
        np.testing.assert_array_equal(g, 0.0)
    # Where P = 0 < Q, only negative orders are infinite.
    measures = [(jaxkl.total_variation, {}), (jaxkl.chi2_divergence, {}), (jaxkl.renyi_divergence, {"alpha": 2.0}), (jaxkl.hellinger_distance, {})]

    @jax.jit
    def finite_and_nans(p, q, nan, logits_nan):
        return (jaxkl.alpha_divergence_from_logits(q, p, alpha=0.5),
                [fn(nan, jnp.array([1.0, 0.0]), **kw) for fn, kw in measures],
                jaxkl.renyi_divergence_from_logits(logits_nan, jnp.zeros(2), alpha=0.5))

    finite, nans, logits_nan = finite_and_nans(p, q, jnp.array([0.5, jnp.nan]), jnp.array([0.0, jnp.nan]))
    assert np.isfinite(finite)
    for (fn, _), value in zip(measures, nans):
        assert np.isnan(value), fn
    assert np.isnan(logits_nan)


# ------------------------------------------------------------------ properties

ORDERS = (0.0, 0.25, 0.5, 1.0, 2.0, 3.0, INF)


@functools.partial(jax.jit, static_argnames="alpha")
def _renyi_both(a, b, alpha):
    return jaxkl.renyi_divergence_from_logits(a, b, alpha=alpha), jaxkl.renyi_entropy_from_logits(a, alpha=alpha)


@jax.jit
def _measures(a, b):
    p, q = jax.nn.softmax(a), jax.nn.softmax(b)
    return dict(
        kl=jaxkl.kl_divergence_from_logits(a, b),
        tv=jaxkl.total_variation_from_logits(a, b),
        tv_p=jaxkl.total_variation(p, q),
        h=jaxkl.hellinger_distance_from_logits(a, b),
        chi2=jaxkl.chi2_divergence_from_logits(a, b),
        r_half=jaxkl.renyi_divergence_from_logits(a, b, alpha=0.5),
        r_two=jaxkl.renyi_divergence(p, q, alpha=2.0),
        a_half=jaxkl.alpha_divergence_from_logits(a, b, alpha=0.5),
        a_two=jaxkl.alpha_divergence(p, q, alpha=2.0),
    )


@settings(max_examples=15)
@given(st.integers(0, 2**31 - 1), st.floats(0.1, 4.0))
def test_inequalities_and_identities(seed, scale):
    rng = np.random.default_rng(seed)
    a, b = ref.random_logits(rng, (4, 7), scale), ref.random_logits(rng, (4, 7), scale)
    m = {k: np.asarray(v, np.float64) for k, v in _measures(a, b).items()}
    tol = 1e-5
    assert (m["tv"] <= np.sqrt(m["kl"] / 2) + tol).all()  # Pinsker
    assert (m["h"] ** 2 <= m["tv"] + tol).all() and (m["tv"] <= np.sqrt(2) * m["h"] + tol).all()  # Le Cam
    assert (m["kl"] <= np.log1p(m["chi2"]) + tol).all()  # KL <= Renyi_2
    np.testing.assert_allclose(m["tv"], m["tv_p"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m["r_half"], -2 * np.log1p(-m["h"] ** 2), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m["r_two"], np.log1p(m["chi2"]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m["a_half"], 4 * m["h"] ** 2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(m["a_two"], m["chi2"] / 2, rtol=1e-4, atol=1e-6)


@settings(max_examples=10)
@given(st.integers(0, 2**31 - 1))
def test_renyi_is_monotone_in_the_order(seed):
    rng = np.random.default_rng(seed)
    a, b = ref.random_logits(rng, (3, 5)), ref.random_logits(rng, (3, 5))
    divergences, entropies = zip(*(map(np.asarray, _renyi_both(a, b, alpha)) for alpha in ORDERS))
    assert (np.diff(np.stack(divergences), axis=0) >= -1e-5).all()  # non-decreasing
    assert (np.diff(np.stack(entropies), axis=0) <= 1e-5).all()  # non-increasing


def test_limits_at_order_one_and_zero(x64):
    rng = np.random.default_rng(3)
    p, q = (jnp.asarray(ref.random_probs(rng, (3, 5)), jnp.float64) for _ in range(2))
    b = jnp.log(q)
    kl_pq = ref.kl(p, q)
    @functools.partial(jax.jit, static_argnums=1)
    def near_one(p, eps):  # each should be KL(p || q) or H(p), in this order
        return jnp.stack([
            jaxkl.renyi_divergence(p, q, alpha=1 + eps),
            jaxkl.renyi_divergence_from_logits(jnp.log(p), b, alpha=1 + eps),
            jaxkl.alpha_divergence_from_logits(jnp.log(p), b, alpha=1 + eps),
            jaxkl.alpha_divergence(q, p, alpha=eps),
            jaxkl.renyi_entropy_from_logits(jnp.log(p), alpha=1 + eps),
            jaxkl.tsallis_entropy(p, alpha=1 + eps),
        ])

    want = np.stack([kl_pq] * 4 + [ref.entropy(p)] * 2)
    for eps in (1e-4, -1e-4):
        np.testing.assert_allclose(near_one(p, eps), want, rtol=1e-3)
    # Tsallis' probabilities form keeps full accuracy next to alpha = 1 even in float32.
    p32 = p.astype(jnp.float32)
    np.testing.assert_allclose(jaxkl.tsallis_entropy(p32, alpha=1 + 1e-6), ref.entropy(p), rtol=1e-5)


# ------------------------------------------------------------------ derivatives


def test_logits_gradients_match_plain_autodiff_and_finite_differences(x64):
    rng = np.random.default_rng(4)
    a, b = (jnp.asarray(rng.normal(size=(3, 5))) for _ in range(2))

    def plain(a, b, alpha):  # log sum P^alpha Q^(1 - alpha), by jax.nn and autodiff
        return jax.nn.logsumexp(alpha * jax.nn.log_softmax(a / 2) + (1 - alpha) * jax.nn.log_softmax(b / 2), axis=-1)

    @jax.jit  # every pair of gradients in one program
    def gradients(a, b):
        pairs = [
            (lambda a, b: jnp.sum(jaxkl.renyi_divergence_from_logits(a, b, alpha=alpha, temperature=2.0)),
             lambda a, b: jnp.sum(plain(a, b, alpha)) / (alpha - 1))
            for alpha in (0.3, 2.0)
        ]
        pairs.append((lambda a, b: jnp.sum(jaxkl.total_variation_from_logits(a, b)),
                      lambda a, b: 0.5 * jnp.sum(jnp.abs(jax.nn.softmax(a) - jax.nn.softmax(b)))))
        return [(jax.grad(ours, (0, 1))(a, b), jax.grad(theirs, (0, 1))(a, b)) for ours, theirs in pairs]

    for got, want in gradients(a, b):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    def several(a, b):
        return (
            jaxkl.total_variation_from_logits(a, b)
            + jaxkl.hellinger_distance_from_logits(a, b)
            + jaxkl.alpha_divergence_from_logits(a, b, alpha=-0.5)
            + jaxkl.tsallis_entropy_from_logits(a, alpha=0.5)
            + jaxkl.renyi_entropy_from_logits(b, alpha=2.0)
        )

    # Jitted: check_grads then compiles each derivative once instead of op by op.
    check_grads(jax.jit(several), (a, b), order=1, modes=("fwd", "rev"))
    power_sum = jax.jit(lambda a, b: jaxkl.alpha_divergence_from_logits(a, b, alpha=-0.5, temperature=2.0))
    check_grads(power_sum, (a, b), order=2, modes=("rev",))


def test_reverse_mode_residuals_are_per_row(capsys, rematerialised):
    rows, classes = 4, 16
    a = jnp.zeros((rows, classes))
    kernels = (
        lambda a, b: jaxkl.total_variation_from_logits(a, b),
        lambda a, b: jaxkl.renyi_divergence_from_logits(a, b, alpha=0.5, where=jnp.arange(classes) > 2),
        lambda a, b: jaxkl.chi2_divergence_from_logits(a, b, temperature=2.0),
        lambda a, b: jaxkl.tsallis_entropy_from_logits(a, alpha=2.0) + jaxkl.renyi_entropy_from_logits(b, alpha=3.0),
    )
    for kernel in kernels:
        print_saved_residuals(lambda a, b: jnp.sum(kernel(a, b)), a, a)
        lines = capsys.readouterr().out.strip().splitlines()
        big = [line for line in lines if f"[{rows},{classes}]" in line.split()[0]]
        assert all("argument" in line for line in big) and len(big) <= 2, lines


def test_probability_gradients_at_zeros_follow_the_conventions():
    p = jnp.array([0.0, 0.4, 0.6])
    q = jnp.array([0.2, 0.0, 0.8])
    g = jax.jit(jax.grad(lambda p: jaxkl.hellinger_distance(p, q) ** 2))(p)
    assert g[0] == 0.0  # the one-sided derivative at p = 0 is -inf: taken as 0
    np.testing.assert_allclose(g[1:], 0.5 * (1 - np.sqrt(np.array([0.0, 0.8]) / np.array([0.4, 0.6]))), rtol=1e-6)
    g = jax.jit(jax.grad(lambda q: jaxkl.chi2_divergence(jnp.array([0.0, 0.5, 0.5]), q)))(jnp.array([0.0, 0.25, 0.75]))
    np.testing.assert_allclose(g, [0.0, 1 - 0.25 / 0.0625, 1 - 0.25 / 0.5625], rtol=1e-6)


# ------------------------------------------------------------------ the rest of the contract


def test_sharded_class_axis_matches_unsharded():
    mesh = jax.make_mesh((4,), ("classes",), axis_types=(AxisType.Auto,))
    rng = np.random.default_rng(5)
    a, b = ref.random_logits(rng, (3, 16)), ref.random_logits(rng, (3, 16))
    a[0, [1, 9]] = -np.inf
    kernels = {
        "tv": lambda a, b, **k: jaxkl.total_variation_from_logits(a, b, **k),
        "renyi": lambda a, b, **k: jaxkl.renyi_divergence_from_logits(a, b, alpha=0.5, temperature=2.0, **k),
        "renyi_inf": lambda a, b, **k: jaxkl.renyi_divergence_from_logits(a, b, alpha=INF, **k),
        "tsallis": lambda a, b, **k: jaxkl.tsallis_entropy_from_logits(b, alpha=2.0, **k),
    }
    def every_kernel(a, b, **k):
        return jnp.stack([kernel(a, b, **k) for kernel in kernels.values()])

    sharded = jax.shard_map(
        functools.partial(every_kernel, axis_name="classes"), mesh=mesh, in_specs=(P(None, "classes"),) * 2, out_specs=P()
    )
    want_values, want_grads = _values_and_grads(every_kernel, {}, a, b)
    got_values, got_grads = _values_and_grads(sharded, {}, a, b)
    np.testing.assert_allclose(got_values, want_values, rtol=1e-6)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_cpu_row_blocks_match_the_reference():
    # 256 x 2048 runs in row blocks on CPU (jaxkl._rowwise.block_rows); small inputs do not.
    rng = np.random.default_rng(6)
    a, b = ref.random_logits(rng, (256, 2048)), ref.random_logits(rng, (256, 2048))
    pa, pb = ref.softmax(a), ref.softmax(b)
    tv, renyi = jax.jit(lambda a, b: (jaxkl.total_variation_from_logits(a, b), jaxkl.renyi_divergence_from_logits(a, b, alpha=2.0)))(a, b)
    np.testing.assert_allclose(tv, ref_tv(pa, pb), rtol=1e-4)
    np.testing.assert_allclose(renyi, ref_renyi(pa, pb, 2.0), rtol=1e-4)


def test_low_precision_in_low_precision_out():
    rng = np.random.default_rng(7)
    a, b = ref.random_logits(rng, (2, 8)), ref.random_logits(rng, (2, 8))
    run = jax.jit(lambda a, b, p: (jaxkl.hellinger_distance_from_logits(a, b), jaxkl.tsallis_entropy(p, alpha=2.0)))
    for dtype in (jnp.bfloat16, jnp.float16):
        got, tsallis = run(a.astype(dtype), b.astype(dtype), ref.softmax(a).astype(dtype))
        assert got.dtype == dtype
        np.testing.assert_allclose(got.astype(np.float32), ref_hellinger(ref.softmax(a), ref.softmax(b)), rtol=2e-2)
        assert tsallis.dtype == dtype


def test_bad_arguments_raise():
    p = jnp.array([0.5, 0.5])
    with pytest.raises(ValueError, match="alpha must lie in"):
        jaxkl.renyi_divergence(p, p, alpha=-1.0)
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        jaxkl.alpha_divergence_from_logits(p, p, alpha=INF)
    with pytest.raises(TypeError, match="known at trace time"):
        jax.jit(lambda a: jaxkl.renyi_entropy_from_logits(p, alpha=a))(2.0)
    with pytest.raises(ValueError, match="same shape"):
        jaxkl.total_variation_from_logits(p, jnp.zeros(3))
    with pytest.raises(TypeError, match="slope_at_infinity"):
        jaxkl.f_divergence(p, p, lambda t: t, slope_at_infinity=None)


def test_total_variation_gradient_matches_the_formula():
    # d TV / d a_j = 1/2 sum_i s_i dP_i/da_j with s = sign(P - Q), dP_i/da_j = P_i ([i=j] - P_j) / T,
    # written in float64 NumPy; a -inf logit and a temperature included.
    rng = np.random.default_rng(21)
    a = rng.normal(size=(3, 5)).astype(np.float32)
    b = rng.normal(size=(3, 5)).astype(np.float32)
    a[1, 3] = -np.inf
    t = 1.5

    def softmax(x):
        e = np.exp(x / t - np.max(x / t, -1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = softmax(a.astype(np.float64)), softmax(b.astype(np.float64))
    s = np.sign(p - q)
    grad_a = 0.5 * p * (s - (s * p).sum(-1, keepdims=True)) / t
    grad_b = -0.5 * q * (s - (s * q).sum(-1, keepdims=True)) / t
    loss = lambda a, b: jnp.sum(jaxkl.total_variation_from_logits(a, b, temperature=t))
    got_a, got_b = jax.jit(jax.grad(loss, argnums=(0, 1)))(a, b)
    np.testing.assert_allclose(got_a, grad_a, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got_b, grad_b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jax.jit(loss)(a, b), 0.5 * np.abs(p - q).sum(), rtol=1e-6)
