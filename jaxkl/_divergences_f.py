"""Divergences beyond KL, and Rényi / Tsallis entropies, from probabilities.

Total variation, Hellinger, Pearson's chi-squared, Rényi and Amari's alpha
divergences, a general f-divergence, and the Rényi and Tsallis entropies. They
sit one layer above `jaxkl._divergences`: the orders at which a family's
limit is KL or Shannon's entropy are handed to those kernels, never divided
by zero.

Zeros follow the same rules as KL: an elementwise term whose inputs make it
exactly 0 or `+inf` is that constant with a zero gradient ("double where":
the unused branch sees harmless inputs), so gradients are finite at zeros.
Where a one-sided derivative is infinite (`sqrt p` or `p**alpha` with
`alpha < 1` at `p = 0`) the gradient is taken as 0, as `0 log 0` is.

With `where=` (or rows that do not sum to 1) the measures are their forms
for positive measures, which still give 0 for `p = q` and for a fully
masked row: Hellinger `1/2 sum (sqrt p - sqrt q)**2`, Amari's
`sum(alpha p + (1 - alpha) q - p**alpha q**(1 - alpha)) / (alpha (1 - alpha))`,
Rényi's `log(sum p**alpha q**(1 - alpha) / sum p) / (alpha - 1)`. On rows
that sum to 1 they are the textbook formulas. The special orders (1, 0,
infinity) are the limits of these same forms, so every family is continuous
in its order on any row.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from . import _validate
from ._axes import class_axes
from ._divergences import entropy, prepared_pair, rel_entr
from ._rowwise import clip_value_only, in_base


def safe_log(x: jax.Array) -> jax.Array:
    """`log x`: `-inf` with a zero gradient where `x = 0` (a row that sums to 0)."""
    zero = x == 0
    return jnp.where(zero, -jnp.inf, jnp.log(jnp.where(zero, 1.0, x)))


def safe_sqrt(x: jax.Array) -> jax.Array:
    """`sqrt x` with gradient 0 at `x = 0`, where the one-sided derivative is `+inf`."""
    zero = x == 0
    return jnp.where(zero, 0.0, jnp.sqrt(jnp.where(zero, 1.0, x)))


def zero_side_limits(alpha: float) -> tuple[float, float]:
    """`p**alpha q**(1 - alpha)` where only `p = 0`, and where only `q = 0`: 0 or `inf`.

    A zero raised to a positive power is 0, to a negative power `+inf`. At
    `alpha = 0` a zero `p` gives 0 (`0**0 = 0`: Rényi's order 0 counts only
    the support of `p`). Both zero is always 0.
    """
    return (math.inf if alpha < 0 else 0.0), (math.inf if alpha > 1 else 0.0)


def power_terms(p: jax.Array, q: jax.Array | None, alpha: float) -> jax.Array:
    """Elementwise `p**alpha q**(1 - alpha)` (`p**alpha` on the support of `p` when `q` is None)."""
    p_zero = p == 0
    log_terms = alpha * jnp.log(jnp.where(p_zero, 1.0, p))
    if q is None:
        return jnp.where(p_zero, 0.0, jnp.exp(log_terms))
    q_zero = q == 0
    inside = jnp.exp(log_terms + (1.0 - alpha) * jnp.log(jnp.where(q_zero, 1.0, q)))
    at_p_zero, at_q_zero = zero_side_limits(alpha)
    value = jnp.where(p_zero, jnp.where(q_zero, 0.0, at_p_zero), jnp.where(q_zero, at_q_zero, inside))
    # NaN in, NaN out (a NaN opposite a zero would otherwise take the zero's limit).
    return jnp.where(jnp.isnan(p) | jnp.isnan(q), p + q, value)


def log_power_sum(p: jax.Array, q: jax.Array | None, alpha: float, axis: int) -> jax.Array:
    """`log sum_i p_i**alpha q_i**(1 - alpha)` per row, as a log-sum-exp of the log terms.

    Summing the powers themselves underflows to 0 (and the log to `-inf`)
    at large orders, e.g. `0.5**150`, and `q_i**(1 - alpha)` overflows; in
    log space the row's largest term is factored out first, as the logits
    forms do. Zeros take `zero_side_limits` (as logs: `-inf` or `+inf`) as
    constants with zero gradient; a row of zero terms gives `-inf`.
    """
    p_zero = p == 0
    log_p = alpha * jnp.log(jnp.where(p_zero, 1.0, p))
    if q is None:
        u = jnp.where(p_zero, -jnp.inf, log_p)
    else:
        q_zero = q == 0
        inside = log_p + (1.0 - alpha) * jnp.log(jnp.where(q_zero, 1.0, q))
        at_p_zero, at_q_zero = (math.log(v) if v else -math.inf for v in zero_side_limits(alpha))
        u = jnp.where(p_zero, jnp.where(q_zero, -jnp.inf, at_p_zero), jnp.where(q_zero, at_q_zero, inside))
        # NaN in, NaN out (a NaN opposite a zero would otherwise take the zero's limit).
        u = jnp.where(jnp.isnan(p) | jnp.isnan(q), p + q, u)
    initial = -jnp.inf if u.shape[axis] == 0 else None
    shift = jnp.max(u, axis=axis, keepdims=True, initial=initial)
    # The shift only conditions the sum: outside differentiation, 0 where not finite.
    shift = jax.lax.stop_gradient(jnp.where(jnp.isfinite(shift), shift, 0.0))
    total = jnp.sum(jnp.exp(u - shift), axis=axis)
    return safe_log(total) + jnp.squeeze(shift, axis)


def _done(value: jax.Array, dtype: Any, base: float | None = None) -> jax.Array:
    return in_base(value, base).astype(dtype)


# ------------------------------------------------------------------ divergences


@class_axes("p", "q")
def total_variation(
    p: Any, q: Any, *, axis: int = -1, where: Any = None, check: bool = False
) -> jax.Array:
    r"""Total variation distance of two probability vectors.

    $$
    \mathrm{TV}(p, q) = \tfrac12 \sum_i |p_i - q_i| \in [0, 1]
    $$

    A metric: symmetric, and zero only for `p = q`. Pinsker's inequality bounds
    it by the KL divergence, $\mathrm{TV} \le \sqrt{\mathrm{KL}/2}$. The gradient
    is $\tfrac12 \operatorname{sign}(p - q)$ wrt `p` (0 where `p_i = q_i`).

    Args:
      p: probabilities `[..., K, ...]`.
      q: probabilities, same shape (no broadcasting).
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes contribute nothing.
      check: add checkify checks on `p` and `q` (see [conventions](conventions.md)).

    Returns:
      One value per distribution (`p.shape` without `axis`).

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.total_variation(jnp.array([0.5, 0.5, 0.0]), jnp.array([0.25, 0.25, 0.5])))
      0.5

    References:
      Tsybakov, "Introduction to Nonparametric Estimation" (2009), sec. 2.4.
    """
    p, q, axis, _, dtype = prepared_pair(p, q, "p", "q", axis, where, None, check)
    diff = p - q
    # jnp.abs differentiates to +-1 at 0; a tie takes the subgradient 0, as documented
    # and as the logits form does.
    return _done(0.5 * jnp.sum(jnp.where(diff == 0, 0.0, jnp.abs(diff)), axis=axis), dtype)


@class_axes("p", "q")
def hellinger_distance(
    p: Any, q: Any, *, axis: int = -1, where: Any = None, check: bool = False
) -> jax.Array:
    r"""Hellinger distance of two probability vectors.

    $$
    H(p, q) = \sqrt{1 - \sum_i \sqrt{p_i q_i}}
            = \sqrt{\tfrac12 \sum_i \left(\sqrt{p_i} - \sqrt{q_i}\right)^2} \in [0, 1]
    $$

    A metric. It is computed in the second form, which has no cancellation for
    nearby `p` and `q` and equals the first on rows that sum to 1. TFP's
    `squared_hellinger` is $\sum_i (\sqrt{p_i} - \sqrt{q_i})^2 = 2H^2$. Bounds:
    $H^2 \le \mathrm{TV} \le \sqrt2\, H$. Gradients are finite: at `p_i = 0` (where
    the one-sided derivative is $-\infty$) the gradient wrt `p_i` is taken as 0,
    and at `p = q` (where `H` has a cusp) it is 0.

    Args:
      p: probabilities `[..., K, ...]`.
      q: probabilities, same shape.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes contribute nothing.
      check: add checkify checks on `p` and `q`.

    Returns:
      One value per distribution (`p.shape` without `axis`), in `[0, 1]`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.hellinger_distance(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])))
      1.0
      >>> print(jaxkl.hellinger_distance(jnp.array([0.5, 0.5]), jnp.array([0.5, 0.5])))
      0.0

    References:
      Le Cam & Yang, "Asymptotics in Statistics", 2nd ed. (2000), sec. 3.
    """
    p, q, axis, _, dtype = prepared_pair(p, q, "p", "q", axis, where, None, check)
    squared = 0.5 * jnp.sum((safe_sqrt(p) - safe_sqrt(q)) ** 2, axis=axis)
    return _done(safe_sqrt(clip_value_only(squared, None, 1.0)), dtype)


@class_axes("p", "q")
def chi2_divergence(
    p: Any, q: Any, *, axis: int = -1, where: Any = None, check: bool = False
) -> jax.Array:
    r"""Pearson's chi-squared divergence $\chi^2(p \,\|\, q)$.

    $$
    \chi^2(p \,\|\, q) = \sum_i \frac{(p_i - q_i)^2}{q_i}
    $$

    `q_i = 0 < p_i` gives `+inf` (never NaN); `p_i = q_i = 0` contributes 0
    with a zero gradient. SciPy's `power_divergence(..., lambda_="neyman")` is
    the reverse, $\chi^2(q \,\|\, p)$. It bounds KL from above:
    $\mathrm{KL} \le \log(1 + \chi^2)$ (the Rényi divergence of order 2).

    Args:
      p: probabilities `[..., K, ...]`.
      q: probabilities, same shape.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes contribute nothing.
      check: add checkify checks on `p` and `q`.

    Returns:
      One value per distribution (`p.shape` without `axis`), `>= 0`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.chi2_divergence(jnp.array([0.5, 0.5]), jnp.array([0.25, 0.75])))
      0.33333334
      >>> print(jaxkl.chi2_divergence(jnp.array([0.5, 0.5]), jnp.array([1.0, 0.0])))
      inf

    References:
      Pearson, "On the criterion that a given system of deviations..." (1900);
      Sason & Verdú, "f-Divergence Inequalities", IEEE Trans. Inf. Theory 62 (2016).
    """
    p, q, axis, _, dtype = prepared_pair(p, q, "p", "q", axis, where, None, check)
    q_zero = q == 0
    at_q_zero = jnp.where(p == 0, 0.0, jnp.where(jnp.isnan(p), p, jnp.inf))
    terms = jnp.where(q_zero, at_q_zero, (p - q) ** 2 / jnp.where(q_zero, 1.0, q))
    return _done(jnp.sum(terms, axis=axis), dtype)


@class_axes("p", "q")
def renyi_divergence(
    p: Any,
    q: Any,
    *,
    alpha: float,
    axis: int | tuple[int, ...] = -1,
    where: Any = None,
    base: float | None = None,
    check: bool = False,
) -> jax.Array:
    r"""Rényi divergence of order $\alpha \in [0, \infty]$.

    $$
    D_\alpha(p \,\|\, q) = \frac{1}{\alpha - 1} \log \sum_i p_i^\alpha q_i^{1-\alpha}
    $$

    The limits are taken, never divided by zero: $\alpha = 1$ is
    [jaxkl.kl_divergence][], $\alpha = \infty$ is $\log \max_{p_i > 0} p_i / q_i$,
    and $\alpha = 0$ is $-\log \sum_{p_i > 0} q_i$. $\alpha = 1/2$ is
    $-2 \log(1 - H^2)$ with `H` the [Hellinger distance][jaxkl.hellinger_distance],
    and $\alpha = 2$ is $\log(1 + \chi^2)$. Non-decreasing in $\alpha$.
    For $\alpha \ge 1$, `q_i = 0 < p_i` gives `+inf`; for $\alpha < 1$ only
    disjoint supports do. Close to (but not at) $\alpha = 1$ the value loses
    about $\epsilon / |\alpha - 1|$ of relative accuracy to rounding.
    On rows that do not sum to 1 (masks) this is Rényi's form for incomplete
    distributions, with $M = \sum_i p_i$ dividing the sum inside the log; its
    limits are taken too, so $\alpha = 1$ is $\mathrm{KL}(p \,\|\, q) / M$ and the
    value is continuous in $\alpha$ there. The sum is formed in log space (a
    log-sum-exp of $\alpha \log p_i + (1 - \alpha) \log q_i$), so large orders
    neither underflow nor overflow.

    Args:
      p: probabilities `[..., K, ...]`.
      q: probabilities, same shape.
      alpha: the order, a Python number in `[0, inf]` (`jnp.inf` included).
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes contribute nothing.
      base: logarithm base; `None` for nats.
      check: add checkify checks on `p` and `q`.

    Returns:
      One value per distribution (`p.shape` without `axis`), `>= 0`.

    Raises:
      ValueError: if `alpha < 0` or is NaN.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> p, q = jnp.array([0.5, 0.5]), jnp.array([0.25, 0.75])
      >>> print(jaxkl.renyi_divergence(p, q, alpha=2.0).round(5))  # log(1 + chi2)
      0.28768
      >>> print(jaxkl.renyi_divergence(p, q, alpha=jnp.inf).round(5))  # log 2
      0.69315

    References:
      Rényi, "On measures of entropy and information" (1961);
      van Erven & Harremoës, "Rényi Divergence and Kullback-Leibler Divergence",
      IEEE Trans. Inf. Theory 60 (2014).
    """
    alpha = _validate.order(alpha, renyi=True)
    p, q, axis, base, dtype = prepared_pair(p, q, "p", "q", axis, where, base, check)
    mass = jnp.sum(p, axis=axis)
    if alpha == 1.0:
        # The limit of the form below: KL divided by the mass of p (KL itself on
        # rows that sum to 1), so that the order-1 value joins its neighbours.
        kl = jnp.sum(rel_entr(p, q), axis=axis)
        infinite = kl == jnp.inf  # a constant: inf / mass would differentiate to NaN
        d = jnp.where(infinite, jnp.inf, jnp.where(infinite, 0.0, kl) / jnp.where(mass == 0, 1.0, mass))
    elif alpha == math.inf:
        # NaN compares unequal to 0, so a NaN p is kept and propagates.
        log_ratio = jnp.where(p == 0, -jnp.inf, safe_log(p) - safe_log(q))
        d = jnp.max(log_ratio, axis=axis, initial=-jnp.inf)
    else:
        log_sum = log_power_sum(p, q, alpha, axis)
        d = (log_sum - safe_log(jnp.where(mass == 0, 1.0, mass))) / (alpha - 1.0)
    # A row with no mass in p (fully masked) is 0, as KL's is.
    d = jnp.where(mass == 0, 0.0, d)
    return _done(clip_value_only(d, 0.0, None), dtype, base)


@class_axes("p", "q")
def alpha_divergence(
    p: Any, q: Any, *, alpha: float, axis: int = -1, where: Any = None, check: bool = False
) -> jax.Array:
    r"""Amari's alpha-divergence, any real order $\alpha$.

    $$
    D^{(\alpha)}(p \,\|\, q) = \frac{1 - \sum_i p_i^\alpha q_i^{1-\alpha}}{\alpha (1 - \alpha)}
    $$

    The limits are taken: $\alpha \to 1$ is $\mathrm{KL}(p \,\|\, q)$ and
    $\alpha \to 0$ is $\mathrm{KL}(q \,\|\, p)$ (both [jaxkl.kl_divergence][]);
    $\alpha = 1/2$ is $4 H^2$ (Hellinger) and $\alpha = 2$ is $\chi^2 / 2$.
    It is monotone in Rényi's divergence of the same order and `+inf` where
    that is (a zero of `q` under `p` for $\alpha \ge 1$, a zero of `p` under `q`
    for $\alpha \le 0$). Computed per class as
    $(\alpha p_i + (1-\alpha) q_i - p_i^\alpha q_i^{1-\alpha}) / (\alpha(1-\alpha)) \ge 0$
    (Amari's form for positive measures, equal to the above on rows that sum to 1).
    At $\alpha = 1$ and $0$ the per-class limits are taken, the generalised KL
    $\sum_i p_i \log(p_i / q_i) - p_i + q_i$ (and with `p`, `q` swapped), so
    the value is continuous in $\alpha$ also on rows that do not sum to 1.
    Conventions differ: TFP's `amari_alpha` uses $u^\alpha$ with the roles of
    `p` and `q` swapped, so its $\alpha$ is `1 - alpha` here.

    Args:
      p: probabilities `[..., K, ...]`.
      q: probabilities, same shape.
      alpha: the order, any finite Python number.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes contribute nothing.
      check: add checkify checks on `p` and `q`.

    Returns:
      One value per distribution (`p.shape` without `axis`), `>= 0`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> p, q = jnp.array([0.5, 0.5]), jnp.array([0.25, 0.75])
      >>> print(jaxkl.alpha_divergence(p, q, alpha=2.0).round(5))  # chi2 / 2
      0.16667

    References:
      Amari, "Information Geometry and Its Applications" (2016), sec. 3.6;
      Cichocki & Amari, "Families of Alpha- Beta- and Gamma-Divergences",
      Entropy 12 (2010).
    """
    alpha = _validate.order(alpha)
    p, q, axis, _, dtype = prepared_pair(p, q, "p", "q", axis, where, None, check)
    if alpha in (0.0, 1.0):
        # The per-class limits of the form below: p log(p/q) - p + q at 1 and
        # q log(q/p) - q + p at 0, the generalised KL (KL itself on rows of
        # equal mass), so that the special orders join their neighbours.
        first, second = (q, p) if alpha == 0.0 else (p, q)
        d = jnp.sum(rel_entr(first, second) - first + second, axis=axis)
        return _done(clip_value_only(d, 0.0, None), dtype)
    terms = alpha * p + (1.0 - alpha) * q - power_terms(p, q, alpha)
    d = jnp.sum(terms, axis=axis) / (alpha * (1.0 - alpha))
    return _done(clip_value_only(d, 0.0, None), dtype)


@class_axes("p", "q")
def f_divergence(
    p: Any,
    q: Any,
    f: Callable[[jax.Array], jax.Array],
    *,
    slope_at_infinity: float = math.inf,
    axis: int | tuple[int, ...] = -1,
    where: Any = None,
    check: bool = False,
) -> jax.Array:
    r"""Csiszár f-divergence for a convex `f` with `f(1) = 0`.

    $$
    D_f(p \,\|\, q) = \sum_i q_i\, f\!\left(\frac{p_i}{q_i}\right)
    $$

    The general form behind the others: $f(t) = t \log t$ is KL,
    $\tfrac12|t - 1|$ total variation, $(t - 1)^2$ Pearson's $\chi^2$,
    $(\sqrt t - 1)^2$ twice the squared Hellinger distance. `f` is called on
    an array of ratios (including `t = 0` where `p_i = 0 < q_i`), so it must be
    elementwise `jnp` code that is finite at 0 *with a finite derivative
    there*: write `t log t` as `t * jnp.log(jnp.where(t == 0, 1.0, t))` (the
    "double where", gradient 0 at `t = 0` as for `0 log 0`), not with
    `jax.scipy.special.xlogy`, whose derivative at 0 is NaN. Where `q_i = 0` the term is its limit
    $p_i \cdot f'(\infty)$ with $f'(\infty) = \lim_{t\to\infty} f(t)/t$, given as
    `slope_at_infinity` (default `inf`: `q_i = 0 < p_i` makes the divergence
    `+inf`, as for KL and $\chi^2$; total variation has $\tfrac12$); `p_i = q_i = 0`
    contributes 0. Gradients are `f`'s, through `jax.grad`.

    Args:
      p: probabilities `[..., K, ...]`.
      q: probabilities, same shape.
      f: the generator, elementwise and differentiable.
      slope_at_infinity: $\lim_{t\to\infty} f(t)/t$, the cost of mass
        where `q` has none; a Python number (`math.inf` allowed).
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes contribute nothing.
      check: add checkify checks on `p` and `q`.

    Returns:
      One value per distribution (`p.shape` without `axis`).

    Examples:
      >>> import jax, jax.numpy as jnp, jaxkl
      >>> p, q = jnp.array([0.5, 0.5, 0.0]), jnp.array([0.25, 0.25, 0.5])
      >>> tv = lambda t: 0.5 * jnp.abs(t - 1.0)
      >>> print(jaxkl.f_divergence(p, q, tv, slope_at_infinity=0.5))
      0.5
      >>> kl = lambda t: t * jnp.log(jnp.where(t == 0, 1.0, t))  # finite gradient at t = 0
      >>> print(jaxkl.f_divergence(p, q, kl, slope_at_infinity=jnp.inf).round(5))  # log 2
      0.69315
      >>> print(jax.grad(lambda p: jaxkl.f_divergence(p, q, kl))(p))  # log(p / q) + 1, 0 at p = 0
      [1.6931472 1.6931472 0.       ]

    References:
      Csiszár, "Information-type measures of difference of probability
      distributions and indirect observations", Studia Sci. Math. Hungar. 2 (1967).
    """
    f_slope = slope(slope_at_infinity)
    p, q, axis, _, dtype = prepared_pair(p, q, "p", "q", axis, where, None, check)
    q_zero = q == 0
    ratio = jnp.where(q_zero, 1.0, p) / jnp.where(q_zero, 1.0, q)
    return _done(jnp.sum(f_terms(f, f_slope, p, q, ratio), axis=axis), dtype)


def slope(slope_at_infinity: Any) -> float:
    """`slope_at_infinity` as a Python number (`inf` allowed)."""
    value = _validate.concrete_number(slope_at_infinity, "slope_at_infinity")
    if value is None or math.isnan(value):
        raise TypeError("slope_at_infinity must be a Python number known at trace time (math.inf allowed)")
    return value


def f_terms(f: Callable, slope: float, p: jax.Array, q: jax.Array, ratio: jax.Array) -> jax.Array:
    """Elementwise `q f(p / q)` given the ratio, with the limit `p * slope` where `q = 0`.

    `ratio` must be finite (any value) where `q = 0`: those terms are
    replaced, and `f` must not see an infinity whose gradient is NaN.
    """
    q_zero = q == 0
    terms = jnp.where(q_zero, 1.0, q) * f(ratio)
    at_q_zero = jnp.where(p == 0, 0.0, jnp.inf if slope == math.inf else slope * p)
    return jnp.where(q_zero, jnp.where(jnp.isnan(p), p, at_q_zero), terms)


# -------------------------------------------------------------------- entropies


@class_axes("p")
def renyi_entropy(
    p: Any,
    *,
    alpha: float,
    axis: int | tuple[int, ...] = -1,
    where: Any = None,
    base: float | None = None,
    check: bool = False,
) -> jax.Array:
    r"""Rényi entropy of order $\alpha \in [0, \infty]$.

    $$
    H_\alpha(p) = \frac{1}{1 - \alpha} \log \sum_{i:\, p_i > 0} p_i^\alpha
    $$

    $\alpha = 0$ is Hartley's $\log |\{i : p_i > 0\}|$, $\alpha = 1$ Shannon's
    ([jaxkl.entropy][], the limit), $\alpha = 2$ the collision entropy
    $-\log \sum_i p_i^2$ and $\alpha = \infty$ the min-entropy $-\log \max_i p_i$.
    Non-increasing in $\alpha$. The gradient wrt a zero `p_i` is taken as 0
    (for $\alpha < 1$ the one-sided derivative is infinite). On rows that do not
    sum to 1 (masks), the sum inside the log is divided by $M = \sum_i p_i$, and
    the limits are those of that form: $\alpha = 1$ is
    $-\frac{1}{M} \sum_i p_i \log p_i$ and $\alpha = \infty$ is $-\log \max_i p_i$,
    so the value is continuous in $\alpha$. The sum is formed in log space (a
    log-sum-exp of $\alpha \log p_i$): large orders do not underflow to `+inf`.

    Args:
      p: probabilities `[..., K, ...]`.
      alpha: the order, a Python number in `[0, inf]` (`jnp.inf` included).
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes contribute nothing.
      base: logarithm base; `None` for nats.
      check: add checkify checks on `p`.

    Returns:
      One entropy per distribution (`p.shape` without `axis`), `>= 0`.

    Raises:
      ValueError: if `alpha < 0` or is NaN.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> p = jnp.array([0.5, 0.25, 0.25, 0.0])
      >>> print(jaxkl.renyi_entropy(p, alpha=0.0, base=2))  # log2 of the support size 3
      1.5849625
      >>> print(jaxkl.renyi_entropy(p, alpha=jnp.inf, base=2))  # -log2 max p
      1.0

    References:
      Rényi, "On measures of entropy and information" (1961).
    """
    alpha = _validate.order(alpha, renyi=True)
    p, _, axis, base, dtype = prepared_pair(p, p, "p", "p", axis, where, base, check)
    mass = jnp.sum(p, axis=axis)
    safe_mass = safe_log(jnp.where(mass == 0, 1.0, mass))
    if alpha == 1.0:
        # The limit of the form below: Shannon's sum divided by the mass of p
        # (Shannon's entropy on rows that sum to 1), so that order 1 joins its neighbours.
        h = -jnp.sum(rel_entr(p, jnp.ones_like(p)), axis=axis) / jnp.where(mass == 0, 1.0, mass)
    elif alpha == math.inf:
        # The limit of the form below (log M cancels): -log max p.
        h = -safe_log(jnp.max(p, axis=axis, initial=0.0))
    else:
        h = (log_power_sum(p, None, alpha, axis) - safe_mass) / (1.0 - alpha)
    h = jnp.where(mass == 0, 0.0, h)
    return _done(clip_value_only(h, 0.0, None), dtype, base)


@class_axes("p")
def tsallis_entropy(
    p: Any, *, alpha: float, axis: int = -1, where: Any = None, check: bool = False
) -> jax.Array:
    r"""Tsallis entropy of any real order $\alpha$.

    $$
    S_\alpha(p) = \frac{1 - \sum_{i:\, p_i > 0} p_i^\alpha}{\alpha - 1}
    $$

    $\alpha \to 1$ is Shannon's entropy in nats ([jaxkl.entropy][], the limit);
    $\alpha = 2$ is the Gini impurity $1 - \sum_i p_i^2$. Computed per class as
    $-p_i \operatorname{expm1}((\alpha - 1)\log p_i) / (\alpha - 1) \ge 0$, which
    keeps full accuracy close to $\alpha = 1$ (and is Tsallis's form for
    incomplete distributions on rows that do not sum to 1). The gradient wrt a
    zero `p_i` is taken as 0.

    Args:
      p: probabilities `[..., K, ...]`.
      alpha: the order, any finite Python number.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes contribute nothing.
      check: add checkify checks on `p`.

    Returns:
      One value per distribution (`p.shape` without `axis`), `>= 0`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.tsallis_entropy(jnp.array([0.5, 0.5, 0.0]), alpha=2.0))  # Gini impurity
      0.5

    References:
      Tsallis, "Possible generalization of Boltzmann-Gibbs statistics",
      J. Stat. Phys. 52 (1988).
    """
    alpha = _validate.order(alpha)
    if alpha == 1.0:
        return entropy(p, axis=axis, where=where, check=check)
    p, _, axis, _, dtype = prepared_pair(p, p, "p", "p", axis, where, None, check)
    p_zero = p == 0
    log_p = jnp.log(jnp.where(p_zero, 1.0, p))
    terms = jnp.where(p_zero, 0.0, -p * jnp.expm1((alpha - 1.0) * log_p) / (alpha - 1.0))
    return _done(clip_value_only(jnp.sum(terms, axis=axis), 0.0, None), dtype)
