"""Regression tests for kernel edge cases: each test is named after the bug it guards.

References are float64 NumPy/SciPy formulas written here, closed-form gradients, or central
finite differences of those references in float64.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkl
from tests import reference as ref

INF = math.inf


def _fd_grad(fn, x, h=1e-6):
    """Central finite differences of a float64 NumPy function of one array (sum of its output)."""
    x = np.asarray(x, np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (np.sum(fn(x + e)) - np.sum(fn(x - e))) / (2 * h)
    return g


def _grads(fn, *args):
    """The gradient of `sum(fn(*args))` wrt every argument, jitted."""
    return jax.jit(jax.grad(lambda *xs: jnp.sum(fn(*xs)), tuple(range(len(args)))))(*args)


# ------------------------------------------------- Rényi at large orders (log space)


def _ref_renyi_entropy(p, alpha):
    p = np.asarray(p, np.float64)
    return np.log(np.sum(p**alpha, -1) / np.sum(p, -1)) / (1 - alpha)


def _ref_renyi_divergence(p, q, alpha):
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return np.log(np.sum(p**alpha * q ** (1 - alpha), -1) / np.sum(p, -1)) / (alpha - 1)


@pytest.mark.parametrize("alpha", [40.0, 100.0, 150.0])
def test_renyi_at_large_orders_is_finite_not_underflowed_to_inf(alpha):
    # float32: 0.5**150 and 0.4**100 underflow, so the sum of the powers was 0 and log 0 = -inf.
    rng = np.random.default_rng(11)
    p, q = (ref.random_probs(rng, (3, 4)) for _ in range(2))
    p[0] = [0.5, 0.25, 0.125, 0.125]
    values = jax.jit(lambda p, q: (jaxkl.renyi_entropy(p, alpha=alpha), jaxkl.renyi_divergence(p, q, alpha=alpha)))
    h, d = values(p, q)
    np.testing.assert_allclose(h, _ref_renyi_entropy(p, alpha), rtol=1e-5)
    np.testing.assert_allclose(d, _ref_renyi_divergence(p, q, alpha), rtol=1e-5)
    gh = _grads(lambda p: jaxkl.renyi_entropy(p, alpha=alpha), jnp.asarray(p))[0]
    gp, gq = _grads(lambda p, q: jaxkl.renyi_divergence(p, q, alpha=alpha), jnp.asarray(p), jnp.asarray(q))
    np.testing.assert_allclose(gh, _fd_grad(lambda x: _ref_renyi_entropy(x, alpha), p), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gp, _fd_grad(lambda x: _ref_renyi_divergence(x, q, alpha), p), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(gq, _fd_grad(lambda x: _ref_renyi_divergence(p, x, alpha), q), rtol=1e-4, atol=1e-3)


def test_renyi_at_ordinary_orders_is_unchanged_by_log_space():
    rng = np.random.default_rng(12)
    p = ref.random_probs(rng, (5, 7), zeros=True)
    q = ref.random_probs(rng, (5, 7))
    for alpha in (0.0, 0.5, 2.0, 3.0):
        with np.errstate(divide="ignore"):
            want_h = np.log(np.sum(np.where(p > 0, np.where(p > 0, p, 1.0) ** alpha, 0.0), -1)) / (1 - alpha)
            want_d = np.log(np.sum(np.where(p > 0, np.where(p > 0, p, 1.0) ** alpha * q.astype(np.float64) ** (1 - alpha), 0.0), -1)) / (alpha - 1)
        np.testing.assert_allclose(jaxkl.renyi_entropy(p, alpha=alpha), want_h, rtol=2e-6, atol=1e-7)
        np.testing.assert_allclose(jaxkl.renyi_divergence(p, q, alpha=alpha), np.maximum(want_d, 0), rtol=2e-6, atol=1e-6)


# ------------------------------------------- f-divergence from logits, underflows


def _ref_f_from_logits(f, slope, a, b):
    """sum_i Q_i f(P_i / Q_i) in float64; both -inf contributes 0, Q = 0 < P gives P * slope."""
    logp, logq = ref.log_softmax(a), ref.log_softmax(b)
    p, q = np.exp(logp), np.exp(logq)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(q > 0, q * f(np.exp(logp - logq)), np.where(p > 0, p * slope, 0.0))
    return terms.sum(-1)


TV = (lambda t: 0.5 * np.abs(t - 1.0), lambda t: 0.5 * jnp.abs(t - 1.0), 0.5)
HELLINGER = (lambda t: (np.sqrt(t) - 1.0) ** 2, lambda t: (jnp.sqrt(t) - 1.0) ** 2, 1.0)


@pytest.mark.parametrize("generator", [TV, HELLINGER], ids=["tv", "hellinger"])
def test_f_divergence_from_logits_where_p_or_q_underflows_is_finite_with_finite_gradient(generator):
    f_np, f_jnp, slope = generator
    # Row 0: Q_1 = e^-95 underflows in float32 (P / Q is beyond its range); row 1: Q_0 = e^-120;
    # row 2: P_1 = e^-110 underflows opposite a positive Q; row 3: an exact -inf in P.
    a = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 2.0], [0.0, -110.0, 0.5], [0.0, 0.0, -np.inf]], np.float32)
    b = np.array([[0.0, -95.0, 0.0], [-120.0, 1.0, 0.0], [0.3, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
    fn = lambda a, b: jaxkl.f_divergence_from_logits(a, b, f_jnp, slope_at_infinity=slope)
    for x, y in [(a, b), (b, a)]:
        np.testing.assert_allclose(jax.jit(fn)(x, y), _ref_f_from_logits(f_np, slope, x, y), rtol=1e-5)
        ga, gb = _grads(fn, jnp.asarray(x), jnp.asarray(y))
        finite = np.isfinite(x)  # no derivative wrt an exact -inf logit
        want_a = _fd_grad(lambda z: _ref_f_from_logits(f_np, slope, np.where(finite, z, -np.inf), y), np.where(finite, x, 0.0))
        want_b = _fd_grad(lambda z: _ref_f_from_logits(f_np, slope, x, np.where(np.isfinite(y), z, -np.inf)), np.where(np.isfinite(y), y, 0.0))
        np.testing.assert_allclose(ga, np.where(finite, want_a, 0.0), atol=2e-5)
        np.testing.assert_allclose(gb, np.where(np.isfinite(y), want_b, 0.0), atol=2e-5)


def test_f_divergence_from_logits_kl_generator_with_subnormal_q_is_finite():
    # Q_1 = e^-88 is below float32's normal range (0 once flushed); P_1 / Q_1 = e^84 and
    # f(P_1 / Q_1) = 2.5e38 are not, so the term P_1 f(t) / t is exact.
    kl = lambda t: t * jnp.log(jnp.where(t == 0, 1.0, t))
    a, b = np.array([[0.0, -4.0]], np.float32), np.array([[0.0, -88.0]], np.float32)
    got = jaxkl.f_divergence_from_logits(a, b, kl)
    np.testing.assert_allclose(got, ref.kl(ref.softmax(a), ref.softmax(b)), rtol=1e-5)


def test_f_divergence_from_logits_infinite_row_leaves_other_rows_gradients_finite():
    kl = lambda t: t * jnp.log(jnp.where(t == 0, 1.0, t))
    rng = np.random.default_rng(13)
    a, b = ref.random_logits(rng, (3, 5)), ref.random_logits(rng, (3, 5))
    b[1, 2] = -np.inf  # Q = 0 < P: row 1 is +inf
    values = jaxkl.f_divergence_from_logits(a, b, kl)
    assert values[1] == np.inf
    ga, gb = _grads(lambda a, b: jaxkl.f_divergence_from_logits(a, b, kl), jnp.asarray(a), jnp.asarray(b))
    assert np.isfinite(ga).all() and np.isfinite(gb).all()
    # The finite rows are KL(P || Q): d/da = P (log P - log Q - KL), d/db = Q - P.
    for row in (0, 2):
        p, q = ref.softmax(a[row]), ref.softmax(b[row])
        np.testing.assert_allclose(gb[row], q - p, atol=1e-6)
        np.testing.assert_allclose(ga[row], p * (np.log(p) - np.log(q) - ref.kl(p, q)), atol=1e-5)


def test_f_divergence_docstring_generator_has_finite_gradient_at_p_zero():
    kl = lambda t: t * jnp.log(jnp.where(t == 0, 1.0, t))
    p, q = np.array([0.5, 0.5, 0.0], np.float32), np.array([0.25, 0.25, 0.5], np.float32)
    gp, gq = _grads(lambda p, q: jaxkl.f_divergence(p, q, kl), jnp.asarray(p), jnp.asarray(q))
    # d/dp = log(p/q) + 1 (0 at p = 0, as for 0 log 0); d/dq = -p/q.
    np.testing.assert_allclose(gp, [np.log(2) + 1, np.log(2) + 1, 0.0], rtol=1e-6)
    np.testing.assert_allclose(gq, [-2.0, -2.0, 0.0], rtol=1e-6)


# ------------------------------------------------ KL from logits, an empty P row


def test_kl_from_logits_gradient_wrt_q_on_an_empty_p_row_is_zero():
    rng = np.random.default_rng(14)
    a, b = ref.random_logits(rng, (3, 4)), ref.random_logits(rng, (3, 4))
    a[1] = -np.inf  # P empty: KL 0 whatever q is
    where = np.ones((3, 4), bool)
    where[2] = False  # fully masked: empty too
    fn = lambda a, b: jaxkl.kl_divergence_from_logits(a, b, where=jnp.asarray(where))
    np.testing.assert_array_equal(fn(a, b)[1:], [0.0, 0.0])
    ga, gb = _grads(fn, jnp.asarray(a), jnp.asarray(b))
    # d/db = (sum P) Q - P, d/da = P (log P - log Q - KL), with P = 0 on an empty row.
    def weights(x):  # softmax over the kept classes, 0 on a row with none (SciPy gives NaN)
        x = np.where(where, x, -np.inf)
        return np.stack([ref.softmax(r) if np.isfinite(r).any() else np.zeros_like(r, np.float64) for r in x])

    p, q = weights(a), weights(b)
    mass = p.sum(-1, keepdims=True)
    np.testing.assert_allclose(gb, mass * q - p, atol=1e-6)
    k = ref.kl(p[0], q[0])
    np.testing.assert_allclose(ga[0], p[0] * (np.log(p[0]) - np.log(q[0]) - k), atol=1e-6)
    np.testing.assert_array_equal(ga[1:], 0.0)


# ---------------------------------------------- reductions masking out inf rows


def _ce_grads(p, q):
    """Closed-form gradients of H(p, q) = -sum p log q wrt p and q, in float64."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return -np.log(q), -p / q


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("bad", ["q_zero_under_p", "p_inf", "q_inf"])
def test_reduce_where_false_row_with_inf_values_has_zero_gradient(bad, reduction):
    rng = np.random.default_rng(15)
    p, q = ref.random_probs(rng, (3, 4)), ref.random_probs(rng, (3, 4))
    if bad == "q_zero_under_p":
        q[1] = [1.0, 0.0, 0.0, 0.0]
    elif bad == "p_inf":
        p[1, 2] = np.inf
    else:
        q[1, 3] = np.inf
    keep = jnp.array([True, False, True])
    kept = np.array([0, 2])
    scale = 1.0 / len(kept) if reduction == "mean" else 1.0

    gp_ce, gq_ce = _ce_grads(p[kept], q[kept])
    with np.errstate(divide="ignore"):
        logq_logits = np.log(q)  # the logits form: 0 becomes -inf
    cases = {
        "cross_entropy": (jaxkl.cross_entropy, p, q, gp_ce, gq_ce),
        "kl_divergence": (
            jaxkl.kl_divergence, p, q,
            np.log(p[kept].astype(np.float64) / q[kept]) + 1.0, -p[kept].astype(np.float64) / q[kept],
        ),
        "cross_entropy_from_logits": (
            jaxkl.cross_entropy_from_logits, p, logq_logits,
            -np.log(q[kept].astype(np.float64)),
            p[kept].sum(-1, keepdims=True) * q[kept] - p[kept],
        ),
    }
    if bad == "q_inf":
        # +inf is not a logit (a logits kernel takes it as NaN): only the probability forms.
        del cases["cross_entropy_from_logits"]
    for name, (fn, x, y, want_gx, want_gy) in cases.items():
        loss = lambda x, y: jaxkl.reduce(fn(x, y), reduction, where=keep)
        gx, gy = jax.jit(jax.grad(loss, (0, 1)))(jnp.asarray(x), jnp.asarray(y))
        assert np.isfinite(loss(x, y)), name
        np.testing.assert_array_equal(gx[1], 0.0, err_msg=name)
        np.testing.assert_array_equal(gy[1], 0.0, err_msg=name)
        np.testing.assert_allclose(gx[kept], scale * want_gx, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(gy[kept], scale * want_gy, rtol=1e-5, atol=1e-6, err_msg=name)


def test_probability_kernels_still_propagate_nan_and_inf_values():
    p, q = jnp.array([[0.3, 0.3, 0.4], [0.5, np.nan, 0.5]]), jnp.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    for fn in (jaxkl.kl_divergence, jaxkl.cross_entropy):
        v = fn(p, q)
        assert v[0] == np.inf and np.isnan(v[1])
        gp, gq = _grads(fn, p, q)
        assert np.isnan(gp[1]).any() or np.isnan(gq[1]).any()  # NaN in, NaN out
        assert not np.isnan(gp[0]).any() and not np.isnan(gq[0]).any()
    # An entry that is not a probability makes its row NaN.
    assert np.isnan(jaxkl.kl_divergence(jnp.array([0.5, np.inf]), jnp.array([0.5, 0.5])))
    assert np.isnan(jaxkl.cross_entropy(jnp.array([0.5, 0.5]), jnp.array([-0.5, 0.5])))


# --------------------------------------------- traced temperature in 16-bit dtypes


def _ref_token_logprobs(x, tokens, t):
    logp = ref.log_softmax(np.asarray(x, np.float64) / t)
    return np.take_along_axis(logp, tokens[:, None], -1)[:, 0]


def test_traced_temperature_in_bfloat16_matches_float64_and_the_static_temperature():
    rng = np.random.default_rng(16)
    x = jnp.asarray(rng.normal(size=(6, 50)) * 3.0, jnp.bfloat16)
    tokens = jnp.asarray(rng.integers(0, 50, size=6))
    x64 = np.asarray(x.astype(jnp.float32), np.float64)  # the exact bf16 values
    for t in (0.004, 0.05, 0.7):
        traced = jax.jit(lambda x, t: jaxkl.token_logprobs(x, tokens, temperature=t))(x, jnp.float32(t))
        static = jaxkl.token_logprobs(x, tokens, temperature=t)
        want = _ref_token_logprobs(x64, np.asarray(tokens), t)
        scale = np.abs(x64).max() / t  # float32 rounds x / T relative to its size
        np.testing.assert_allclose(traced, want, rtol=1e-5, atol=4e-7 * scale)
        np.testing.assert_allclose(traced, static, rtol=1e-5, atol=4e-7 * scale)
    # The two-distribution kernels return bfloat16: equal to the reference to bfloat16 rounding.
    y = jnp.asarray(rng.normal(size=(6, 50)) * 3.0, jnp.bfloat16)
    y64 = np.asarray(y.astype(jnp.float32), np.float64)
    kl = jax.jit(lambda x, y, t: jaxkl.kl_divergence_from_logits(x, y, temperature=t))(x, y, jnp.float32(0.5))
    assert kl.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(kl, np.float64), ref.kl(ref.softmax(x64 / 0.5), ref.softmax(y64 / 0.5)), rtol=2**-7)
    grad = jax.jit(jax.grad(lambda t: jnp.sum(jaxkl.kl_divergence_from_logits(x, y, temperature=t).astype(jnp.float32))))
    h = 1e-4
    fd = (np.sum(ref.kl(ref.softmax(x64 / (0.5 + h)), ref.softmax(y64 / (0.5 + h))))
          - np.sum(ref.kl(ref.softmax(x64 / (0.5 - h)), ref.softmax(y64 / (0.5 - h))))) / (2 * h)
    np.testing.assert_allclose(grad(jnp.float32(0.5)), fd, rtol=3e-2)


def test_traced_small_temperature_in_float16_is_not_nan():
    rng = np.random.default_rng(17)
    x = jnp.asarray(rng.normal(size=(4, 30)) * 3.0, jnp.float16)
    tokens = jnp.asarray(rng.integers(0, 30, size=4))
    x64 = np.asarray(x.astype(jnp.float32), np.float64)
    t = 0.004
    traced = jax.jit(lambda x, t: jaxkl.token_logprobs(x, tokens, temperature=t))(x, jnp.float32(t))
    want = _ref_token_logprobs(x64, np.asarray(tokens), t)
    np.testing.assert_allclose(traced, want, rtol=1e-5, atol=4e-7 * np.abs(x64).max() / t)
    g = jax.jit(jax.grad(lambda x, t: jnp.sum(jaxkl.token_logprobs(x, tokens, temperature=t)), (0, 1)))(x, jnp.float32(t))
    assert all(np.isfinite(np.asarray(gi, np.float32)).all() for gi in g)


# ---------------------------------------------------- total variation at ties


def test_total_variation_gradient_at_ties_is_zero():
    p = np.array([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]], np.float32)
    q = np.array([[0.5, 0.4, 0.1], [0.2, 0.3, 0.5]], np.float32)
    gp, gq = _grads(jaxkl.total_variation, jnp.asarray(p), jnp.asarray(q))
    want = 0.5 * np.sign(p.astype(np.float64) - q)  # sign(0) = 0: the documented subgradient
    np.testing.assert_array_equal(gp, want)
    np.testing.assert_array_equal(gq, -want)
    ga, gb = _grads(jaxkl.total_variation_from_logits, jnp.log(jnp.asarray(p)), jnp.log(jnp.asarray(q)))
    np.testing.assert_array_equal(ga[1], 0.0)  # the logits form agrees at a tie


# --------------------------------------- special orders on unnormalised / masked rows


def _orders_near(fn, special_order, h, x64_arrays):
    """fn at the special order and at special_order +- h, in float64."""
    return [np.asarray(fn(special_order + s, *x64_arrays)) for s in (0.0, -h, h)]


@pytest.mark.parametrize(
    "name",
    ["renyi_divergence@1", "renyi_entropy@1", "alpha_divergence@1", "alpha_divergence@0",
     "renyi_divergence_from_logits@1", "renyi_entropy_from_logits@1", "alpha_divergence_from_logits@1",
     "alpha_divergence_from_logits@0"],
)
def test_special_orders_are_continuous_on_unnormalised_and_masked_rows(name, x64):
    rng = np.random.default_rng(18)
    p = rng.dirichlet(np.ones(5), size=3) * np.array([[1.0], [0.6], [1.7]])  # row masses 1, 0.6, 1.7
    q = rng.dirichlet(np.ones(5), size=3) * np.array([[0.8], [1.0], [1.3]])
    where = jnp.asarray(rng.random((3, 5)) < 0.75).at[:, 0].set(True)
    fn_name, order = name.split("@")
    fn = getattr(jaxkl, fn_name)
    two = "entropy" not in fn_name
    args = (jnp.asarray(np.log(p)), jnp.asarray(np.log(q))) if "logits" in fn_name else (jnp.asarray(p), jnp.asarray(q))
    call = lambda alpha, *xs: fn(*xs[: 1 + two], alpha=alpha, where=where)
    h = 1e-4
    at, below, above = _orders_near(jax.jit(call, static_argnums=0), float(order), h, args)
    # Smooth in alpha: the value at the order is the midpoint of its neighbours to O(h^2)
    # (second derivatives here are O(1)), and each neighbour is within h |D'| of it.
    np.testing.assert_allclose(at, (below + above) / 2, atol=1e-6, rtol=0)
    slope = np.abs(above - below) / (2 * h)
    assert np.all(np.abs(above - at) <= h * slope * 1.01 + 1e-6)
    assert np.all(np.isfinite(at))


def test_renyi_entropy_at_infinity_on_an_unnormalised_row_is_the_limit(x64):
    p = jnp.array([0.3, 0.2, 0.1])  # mass 0.6
    big = jaxkl.renyi_entropy(p, alpha=1e4)
    # H_alpha = (log sum p^alpha - log M) / (1 - alpha) -> -log max p.
    np.testing.assert_allclose(jaxkl.renyi_entropy(p, alpha=INF), -np.log(0.3), rtol=1e-12)
    np.testing.assert_allclose(big, -np.log(0.3), atol=2e-4)


def test_cross_entropy_of_a_masked_row_is_positive_zero():
    v = jaxkl.cross_entropy(jnp.array([[0.5, 0.5]]), jnp.array([[0.5, 0.5]]), where=jnp.array([[False, False]]))
    assert v[0] == 0.0 and not np.signbit(v[0])
