"""Divergences beyond KL, and Rényi / Tsallis entropies, from logits.

Two row kernels (`jaxkl._rowwise.row_kernel`) carry all of them, so each has a
derivative rebuilt from the logits and O(rows) residuals. With `P =
softmax(a)`, `Q = softmax(b)`:

* the **log power sum** `L = log sum_i P_i**alpha Q_i**(1 - alpha)` (or `log
  sum_i P_i**alpha` for the entropies). With `W = softmax(u)` of the log terms
  `u = alpha log P + (1 - alpha) log Q` (the normalised geometric mixture),

      dL/da = alpha (W - P),   dL/db = (1 - alpha) (W - Q),

  three log-normalisers per row. Hellinger (alpha = 1/2), chi-squared (2),
  Rényi's and Amari's divergences and the Rényi / Tsallis entropies are
  per-row functions of `L`.
* **total variation** `TV = 1/2 sum |P - Q|`, with `s = sign(P - Q)`:

      dTV/da = 1/2 P (s - sum s P),   dTV/db = -1/2 Q (s - sum s Q),

  two numbers per row (`sum s Q = sum s P - 2 TV`).

A row whose value is infinite (`Q = 0 < P` at alpha >= 1, or `P = 0 < Q` at
alpha < 0) stays infinite for every finite change of the logits, so its
gradient is 0; so is that of a row where `P` is empty (all `-inf` or masked),
whose every measure is 0, as its KL is. The orders at which a family's limit
is KL or Shannon's entropy are handed to `jaxkl._logits`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from . import _validate
from ._axes import class_axes
from ._divergences_f import safe_sqrt, slope, zero_side_limits
from ._logits import Tempered, entropy_from_logits, kl_divergence_from_logits, temperature_scale
from ._rowwise import (
    clip_value,
    clip_value_only,
    finite_log_sum,
    in_base,
    log_normalizer,
    log_probs,
    logsumexp_of,
    prepare_logits,
    row_kernel,
    row_sum,
    with_tangent,
)
from ._softmax import log_softmax


class Powered(NamedTuple):
    """Static options of the log-power-sum kernel."""

    axis: int
    axis_name: Any
    scale: float  # 1 / temperature
    alpha: float  # the order


def _log_probabilities(x, where, scale, axis, axis_name, norm=None):
    z = prepare_logits(x, where, scale)
    if norm is None:
        norm = log_normalizer(z, axis, axis_name)
    return log_probs(z, norm), norm


def _empty(norm):
    """Rows (keepdims) whose distribution is empty: every logit `-inf` or masked."""
    return norm[1] == -jnp.inf


# ------------------------------------------------------------ log power sum


def log_terms(alpha: float, x: jax.Array, y: jax.Array | None) -> jax.Array:
    """Elementwise `alpha x + (1 - alpha) y` for log-weights `x`, `y` (`alpha x` if `y` is None).

    A `-inf` weight is a zero: the term takes the limit of
    `jaxkl._divergences_f.zero_side_limits` (`alpha x` is `-inf` wherever `x`
    is, for every order), and the `-inf` inputs are replaced inside, so no
    `0 * inf` reaches a derivative.
    """
    x_zero = x == -jnp.inf
    inside = alpha * jnp.where(x_zero, 0.0, x)
    if y is None:
        return jnp.where(x_zero, -jnp.inf, inside)
    y_zero = y == -jnp.inf
    # Equal weights give the weight itself, exactly (alpha x + (1 - alpha) x may round).
    inside = jnp.where(x == y, x, inside + (1.0 - alpha) * jnp.where(y_zero, 0.0, y))
    at_x_zero, at_y_zero = (math.log(v) if v else -math.inf for v in zero_side_limits(alpha))
    return jnp.where(x_zero, jnp.where(y_zero, -jnp.inf, at_x_zero), jnp.where(y_zero, at_y_zero, inside))


def _power_parts(static, a, b, where, norms=(None, None)):
    """`(za, zb, norms, u)`: the prepared logits, their normalisers and the log terms.

    The terms are formed from the shifted logits `z - max`, not from
    log-probabilities; the log-sums are subtracted from the row's result
    afterwards (as in `jaxkl._logits`' KL), so identical inputs give exactly
    `L = 0` and nothing is rounded against a normaliser first.
    """
    axis, axis_name, scale, alpha = static
    zs = [prepare_logits(x, where, scale) if x is not None else None for x in (a, b)]
    norms = tuple(
        norm if norm is not None or z is None else log_normalizer(z, axis, axis_name) for z, norm in zip(zs, norms)
    )
    shifted = [None if z is None else z - norm[0] for z, norm in zip(zs, norms)]
    return zs[0], zs[1], norms, log_terms(alpha, *shifted)


def _power_forward(static, a, b, where):
    axis, axis_name, _, alpha = static
    _, _, (norm_a, norm_b), u = _power_parts(static, a, b, where)
    norm_u = log_normalizer(u, axis, axis_name)
    log_sum = logsumexp_of(norm_u) - alpha * finite_log_sum(norm_a[1])
    if norm_b is not None:
        log_sum = log_sum - (1.0 - alpha) * finite_log_sum(norm_b[1])
    log_sum = jnp.where(_empty(norm_a), 0.0, log_sum)
    # Returned in the compute dtype: the callers transform it before rounding.
    return jnp.squeeze(log_sum, axis), ((norm_a, norm_b), norm_u)


def _power_tangent(static, arrays, stats, tangents):
    axis, axis_name, scale, alpha = static
    a, b, where = arrays
    da, db = tangents[:2]
    norms, (shift_u, log_sum_u) = stats
    za, zb, _, u = _power_parts(static, a, b, where, norms)
    # Infinite or empty rows are constant: zero gradient (see the module docstring).
    used = jnp.isfinite(log_sum_u) & ~_empty(norms[0])
    w = jnp.exp(jnp.where(used, (u - shift_u) - jnp.where(used, log_sum_u, 0.0), -jnp.inf))

    def coefficient(weight, z, norm):
        return jnp.where(used, scale * weight * (w - jnp.exp(log_probs(z, norm))), 0.0)

    if alpha == 0.0:  # P enters only through its support, which a finite change keeps.
        da = None
    out = jnp.zeros(jnp.squeeze(shift_u, axis).shape, w.dtype)
    out = out + with_tangent(coefficient(alpha, za, norms[0]), da, axis, axis_name)
    if zb is not None:
        out = out + with_tangent(coefficient(1.0 - alpha, zb, norms[1]), db, axis, axis_name)
    return out


_power = row_kernel(_power_forward, _power_tangent, ("full", "full", "mask"))


def _expm1_or_inf(x):
    """`expm1(x)`, `+inf` with a zero gradient at `x = +inf` (not `inf * 0 = NaN`)."""
    inf = x == jnp.inf
    return jnp.where(inf, jnp.inf, jnp.expm1(jnp.where(inf, 0.0, x)))


_ONE_DISTRIBUTION = object()  # `q_logits` of the entropies (a user's None is refused)


def _inputs(p_logits, q_logits, axis, where, temperature):
    """`(a, b, axis, where, scale, dtype)` validated; `q_logits=_ONE_DISTRIBUTION` gives `b=None`.

    `dtype` is the result's: the inputs', also when a traced temperature
    returns the divided logits in the compute dtype.
    """
    if q_logits is _ONE_DISTRIBUTION:
        a = _validate.float_array(p_logits, "logits")
        axis = _validate.normalize_axis(axis, a.ndim)
        return a, None, axis, _validate.mask(where, a.shape), 1.0, a.dtype
    a, b, axis, where = _validate.float_pair(p_logits, q_logits, "p_logits", "q_logits", axis, where)
    dtype = a.dtype
    scale, (a, b) = temperature_scale(temperature, a, b, axis=axis, where=where)
    return a, b, axis, where, scale, dtype


def _log_power_sum(p_logits, q_logits, alpha, axis, where, temperature, axis_name):
    """`(L, dtype, axis)` with `L` per row in the compute dtype; `q_logits=_ONE_DISTRIBUTION` for the entropies."""
    a, b, axis, where, scale, dtype = _inputs(p_logits, q_logits, axis, where, temperature)
    static = Powered(axis, _validate.axis_name(axis_name), scale, alpha)
    return _power(static, a, b, where), dtype, axis


def _max_log_ratio(p_logits, q_logits, axis, where, temperature, axis_name):
    """`max_{P_i > 0} log(P_i / Q_i)` per row (`max log P` if `q_logits` is None); 0 for an empty P.

    Plain autodiff through `jaxkl.log_softmax` (whose derivative is cheap) and
    a max: the max keeps a rows x classes mask for its gradient, which is not
    worth a custom rule for these rarely differentiated limits (alpha = inf).
    """
    a, b, axis, where, scale, dtype = _inputs(p_logits, q_logits, axis, where, temperature)

    def log_p(x):
        return log_softmax(prepare_logits(x, None, scale), axis, where=where, axis_name=axis_name)

    logp = log_p(a)
    p_zero = logp == -jnp.inf
    if b is None:
        ratio = logp
    else:
        logq = log_p(b)
        q_zero = logq == -jnp.inf
        ratio = jnp.where(q_zero, jnp.inf, logp - jnp.where(q_zero, 0.0, logq))
    ratio = jnp.where(p_zero, -jnp.inf, ratio)
    d = jnp.max(ratio, axis=axis, initial=-jnp.inf if a.shape[axis] == 0 else None)
    if axis_name is not None:
        # pmax has no derivative: the devices holding the maximum are picked with it, and
        # their values (one number per row) combined with psum, which differentiates.
        best = jax.lax.pmax(jax.lax.stop_gradient(d), axis_name)
        mine = d == best
        d = jax.lax.psum(jnp.where(mine, d, 0.0), axis_name) / jax.lax.psum(mine.astype(d.dtype), axis_name)
    return jnp.where(d == -jnp.inf, 0.0, d), dtype


# ------------------------------------------------------------ total variation


def _tv_parts(static, a, b, where, norms=(None, None)):
    axis, axis_name, scale = static.axis, static.axis_name, static.scale
    logp, norm_a = _log_probabilities(a, where, scale, axis, axis_name, norms[0])
    logq, norm_b = _log_probabilities(b, where, scale, axis, axis_name, norms[1])
    p, q = jnp.exp(logp), jnp.exp(logq)
    return p, q, jnp.sign(p - q), (norm_a, norm_b)


def _tv_forward(static, a, b, where):
    axis, axis_name = static.axis, static.axis_name
    p, q, s, norms = _tv_parts(static, a, b, where)
    tv = 0.5 * row_sum(jnp.abs(p - q), axis, axis_name)
    s_p = row_sum(s * p, axis, axis_name)
    return clip_value(tv, 0.0, 1.0).astype(a.dtype), (norms, s_p, tv)


def _tv_tangent_from(static, p, q, s, s_p, tv, tangents):
    axis, axis_name, scale = static.axis, static.axis_name, static.scale
    da, db = tangents[:2]
    s_q = s_p - 2.0 * tv  # sum s (P - Q) = sum |P - Q| = 2 TV
    coef_a = 0.5 * scale * p * (s - jnp.expand_dims(s_p, axis))
    coef_b = -0.5 * scale * q * (s - jnp.expand_dims(s_q, axis))
    return with_tangent(coef_a, da, axis, axis_name) + with_tangent(coef_b, db, axis, axis_name)


def _tv_tangent(static, arrays, stats, tangents):
    a, b, where = arrays
    norms, s_p, tv = stats
    p, q, s, _ = _tv_parts(static, a, b, where, norms)
    return _tv_tangent_from(static, p, q, s, s_p, tv, tangents)


# No CPU rule here, unlike `cross_entropy_loss`. One that kept `P` and `Q`
# from a single exponential each held four rows x classes float32 buffers under
# `value_and_grad` (1 GiB at 2048 x 32768). In `python -m bench --sweep
# --kernels tv --processes 2` (jax 0.10.1, 2 cores, AMD EPYC) it measured
# fwd+bwd 0.76-0.96x the fastest peer in bfloat16 and 1.15-1.90x in float32;
# this rematerialised rule, 1.18-1.28x and 1.41-1.54x.
_tv = row_kernel(_tv_forward, _tv_tangent, ("full", "full", "mask"))


# ------------------------------------------------------------------ public API


@class_axes("p_logits", "q_logits")
def total_variation_from_logits(
    p_logits: Any,
    q_logits: Any,
    *,
    axis: int | tuple[int, ...] = -1,
    where: Any = None,
    temperature: float = 1.0,
    axis_name: Any = None,
) -> jax.Array:
    r"""Total variation distance of `softmax(p_logits / T)` and `softmax(q_logits / T)`.

    $$
    \mathrm{TV}(P, Q) = \tfrac12 \sum_i |P_i - Q_i| \in [0, 1]
    $$

    See [jaxkl.total_variation][]. The gradient is rebuilt from the logits and
    two numbers per row (O(rows) residuals); it is 0 wherever `P = Q`.
    Liger-Kernel's `LigerTVDLoss` computes the same distance from probabilities,
    on GPU only.

    Args:
      p_logits: logits (or log-probabilities) of P, `[..., K, ...]`.
      q_logits: logits of Q, same shape.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes are removed from both.
      temperature: divides both logits (`> 0`).
      axis_name: mesh axis name over which `axis` is sharded inside
        `shard_map` (row statistics combined with `lax.pmax`/`lax.psum`;
        the class axis is never gathered), or None.

    Returns:
      One value per distribution (`p_logits.shape` without `axis`).

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.total_variation_from_logits(jnp.array([0.0, -jnp.inf]), jnp.zeros(2)))
      0.5

    References:
      Tsybakov, "Introduction to Nonparametric Estimation" (2009), sec. 2.4.
    """
    a, b, axis, where, scale, dtype = _inputs(p_logits, q_logits, axis, where, temperature)
    return _tv(Tempered(axis, _validate.axis_name(axis_name), scale), a, b, where).astype(dtype)


@class_axes("p_logits", "q_logits")
def hellinger_distance_from_logits(
    p_logits: Any,
    q_logits: Any,
    *,
    axis: int | tuple[int, ...] = -1,
    where: Any = None,
    temperature: float = 1.0,
    axis_name: Any = None,
) -> jax.Array:
    r"""Hellinger distance of `softmax(p_logits / T)` and `softmax(q_logits / T)`.

    $$
    H(P, Q) = \sqrt{1 - \sum_i \sqrt{P_i Q_i}} \in [0, 1]
    $$

    See [jaxkl.hellinger_distance][]. The Bhattacharyya coefficient
    $\sum_i \sqrt{P_i Q_i}$ is formed in log space (a log-sum-exp of
    $(\log P_i + \log Q_i)/2$), so it is exact for distributions that barely
    overlap. Disjoint supports give 1 with a zero gradient; so does `P = Q`
    (the distance has a cusp there).

    Args:
      p_logits: logits (or log-probabilities) of P, `[..., K, ...]`.
      q_logits: logits of Q, same shape.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes are removed from both.
      temperature: divides both logits (`> 0`).
      axis_name: mesh axis name over which `axis` is sharded inside
        `shard_map` (row statistics combined with `lax.pmax`/`lax.psum`;
        the class axis is never gathered), or None.

    Returns:
      One value per distribution (`p_logits.shape` without `axis`), in `[0, 1]`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> ninf = -jnp.inf
      >>> print(jaxkl.hellinger_distance_from_logits(jnp.array([0.0, ninf]), jnp.array([ninf, 0.0])))
      1.0

    References:
      Le Cam & Yang, "Asymptotics in Statistics", 2nd ed. (2000), sec. 3.
    """
    log_bc, dtype, _ = _log_power_sum(p_logits, q_logits, 0.5, axis, where, temperature, axis_name)
    squared = clip_value_only(-jnp.expm1(log_bc), 0.0, 1.0)
    return safe_sqrt(squared).astype(dtype)


@class_axes("p_logits", "q_logits")
def chi2_divergence_from_logits(
    p_logits: Any,
    q_logits: Any,
    *,
    axis: int | tuple[int, ...] = -1,
    where: Any = None,
    temperature: float = 1.0,
    axis_name: Any = None,
) -> jax.Array:
    r"""Pearson's $\chi^2(P \,\|\, Q)$ of `softmax(p_logits / T)` against `softmax(q_logits / T)`.

    $$
    \chi^2(P \,\|\, Q) = \sum_i \frac{(P_i - Q_i)^2}{Q_i} = \sum_i \frac{P_i^2}{Q_i} - 1
    $$

    See [jaxkl.chi2_divergence][]. $\log \sum_i P_i^2 / Q_i$ is a log-sum-exp of
    $2 \log P_i - \log Q_i$, so large ratios do not overflow before the end.
    `-inf` in `q_logits` where $P_i > 0$ gives `+inf` with a zero gradient.

    Args:
      p_logits: logits (or log-probabilities) of P, `[..., K, ...]`.
      q_logits: logits of Q, same shape.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes are removed from both.
      temperature: divides both logits (`> 0`).
      axis_name: mesh axis name over which `axis` is sharded inside
        `shard_map` (row statistics combined with `lax.pmax`/`lax.psum`;
        the class axis is never gathered), or None.

    Returns:
      One value per distribution (`p_logits.shape` without `axis`), `>= 0`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.chi2_divergence_from_logits(jnp.zeros(2), jnp.log(jnp.array([0.25, 0.75]))).round(5))
      0.33333

    References:
      Sason & Verdú, "f-Divergence Inequalities", IEEE Trans. Inf. Theory 62 (2016).
    """
    log_sum, dtype, _ = _log_power_sum(p_logits, q_logits, 2.0, axis, where, temperature, axis_name)
    return clip_value_only(_expm1_or_inf(log_sum), 0.0, None).astype(dtype)


@class_axes("p_logits", "q_logits")
def renyi_divergence_from_logits(
    p_logits: Any,
    q_logits: Any,
    *,
    alpha: float,
    axis: int | tuple[int, ...] = -1,
    where: Any = None,
    base: float | None = None,
    temperature: float = 1.0,
    axis_name: Any = None,
) -> jax.Array:
    r"""Rényi divergence of order $\alpha \in [0, \infty]$ between two softmax distributions.

    $$
    D_\alpha(P \,\|\, Q) = \frac{1}{\alpha - 1} \log \sum_i P_i^\alpha Q_i^{1-\alpha}
    $$

    See [jaxkl.renyi_divergence][] for the orders and limits: $\alpha = 1$ is
    [jaxkl.kl_divergence_from_logits][], $\alpha = \infty$ is
    $\max_{P_i > 0} \log(P_i / Q_i)$ (plain autodiff through a max, with
    rows x classes residuals), every other order one log-sum-exp with O(rows)
    residuals. Close to (but not at) $\alpha = 1$ the value loses about
    $\epsilon / |\alpha - 1|$ of relative accuracy.

    Args:
      p_logits: logits (or log-probabilities) of P, `[..., K, ...]`.
      q_logits: logits of Q, same shape.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes are removed from both.
      temperature: divides both logits (`> 0`).
      axis_name: mesh axis name over which `axis` is sharded inside
        `shard_map` (row statistics combined with `lax.pmax`/`lax.psum`;
        the class axis is never gathered), or None.
      alpha: the order, a Python number in `[0, inf]`.
      base: logarithm base; `None` for nats.

    Returns:
      One value per distribution (`p_logits.shape` without `axis`), `>= 0`.

    Raises:
      ValueError: if `alpha < 0` or is NaN.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> p, q = jnp.zeros(2), jnp.log(jnp.array([0.25, 0.75]))
      >>> print(jaxkl.renyi_divergence_from_logits(p, q, alpha=jnp.inf).round(5))  # log 2
      0.69315

    References:
      van Erven & Harremoës, "Rényi Divergence and Kullback-Leibler Divergence",
      IEEE Trans. Inf. Theory 60 (2014).
    """
    alpha = _validate.order(alpha, renyi=True)
    base = _validate.base(base)
    if alpha == 1.0:
        return kl_divergence_from_logits(
            p_logits, q_logits, axis=axis, where=where, base=base, temperature=temperature, axis_name=axis_name
        )
    if alpha == math.inf:
        d, dtype = _max_log_ratio(p_logits, q_logits, axis, where, temperature, axis_name)
    else:
        log_sum, dtype, _ = _log_power_sum(p_logits, q_logits, alpha, axis, where, temperature, axis_name)
        d = log_sum / (alpha - 1.0)
    return in_base(clip_value_only(d, 0.0, None), base).astype(dtype)


@class_axes("p_logits", "q_logits")
def alpha_divergence_from_logits(
    p_logits: Any,
    q_logits: Any,
    *,
    alpha: float,
    axis: int | tuple[int, ...] = -1,
    where: Any = None,
    temperature: float = 1.0,
    axis_name: Any = None,
) -> jax.Array:
    r"""Amari's alpha-divergence between two softmax distributions, any real $\alpha$.

    $$
    D^{(\alpha)}(P \,\|\, Q) = \frac{1 - \sum_i P_i^\alpha Q_i^{1-\alpha}}{\alpha (1 - \alpha)}
    $$

    See [jaxkl.alpha_divergence][]: $\alpha \to 1$ is $\mathrm{KL}(P \,\|\, Q)$,
    $\alpha \to 0$ is $\mathrm{KL}(Q \,\|\, P)$ (both
    [jaxkl.kl_divergence_from_logits][]). O(rows) residuals.

    Args:
      p_logits: logits (or log-probabilities) of P, `[..., K, ...]`.
      q_logits: logits of Q, same shape.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes are removed from both.
      temperature: divides both logits (`> 0`).
      axis_name: mesh axis name over which `axis` is sharded inside
        `shard_map` (row statistics combined with `lax.pmax`/`lax.psum`;
        the class axis is never gathered), or None.
      alpha: the order, any finite Python number.

    Returns:
      One value per distribution (`p_logits.shape` without `axis`), `>= 0`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> p, q = jnp.zeros(2), jnp.log(jnp.array([0.25, 0.75]))
      >>> print(jaxkl.alpha_divergence_from_logits(p, q, alpha=2.0).round(5))  # chi2 / 2
      0.16667

    References:
      Amari, "Information Geometry and Its Applications" (2016), sec. 3.6.
    """
    alpha = _validate.order(alpha)
    if alpha in (0.0, 1.0):
        first, second = (q_logits, p_logits) if alpha == 0.0 else (p_logits, q_logits)
        return kl_divergence_from_logits(
            first, second, axis=axis, where=where, temperature=temperature, axis_name=axis_name
        )
    log_sum, dtype, _ = _log_power_sum(p_logits, q_logits, alpha, axis, where, temperature, axis_name)
    d = -_expm1_or_inf(log_sum) / (alpha * (1.0 - alpha))
    return clip_value_only(d, 0.0, None).astype(dtype)


@class_axes("p_logits", "q_logits")
def f_divergence_from_logits(
    p_logits: Any,
    q_logits: Any,
    f: Callable[[jax.Array], jax.Array],
    *,
    slope_at_infinity: float = math.inf,
    axis: int | tuple[int, ...] = -1,
    where: Any = None,
    temperature: float = 1.0,
    axis_name: Any = None,
) -> jax.Array:
    r"""Csiszár f-divergence $\sum_i Q_i f(P_i / Q_i)$ of two softmax distributions.

    See [jaxkl.f_divergence][] for `f` and `slope_at_infinity`. The ratios
    $t_i = P_i / Q_i$ are formed in log space and each term is computed as
    $Q_i f(t_i)$ for $t_i \le 1$ and $P_i f(t_i) / t_i$ for $t_i > 1$, so a
    probability that underflows to 0 opposite a representable ratio still
    gives its exact term (finite for total variation, Hellinger, ... where
    `Q` underflows). Ratios beyond the dtype's range take the limits:
    $P_i \cdot$ `slope_at_infinity` above it and $Q_i f(0)$ below it, with
    zero gradient through the ratio (so an infinite $f'(0)$ gives no NaN);
    with `slope_at_infinity=inf` a ratio above the range (e.g. $Q_i < e^{-88}
    P_i$ in float32) gives `+inf` even where the exact value is finite: use
    [jaxkl.kl_divergence_from_logits][] or
    [jaxkl.chi2_divergence_from_logits][] for those. A `+inf` row never makes
    the gradient of other rows NaN. Differentiated by plain autodiff
    through [jaxkl.log_softmax][] and `f` (rows x classes residuals): a
    custom rule would need `f'` and `f''` of a user's function, and the
    named divergences have their own kernels.

    Args:
      p_logits: logits (or log-probabilities) of P, `[..., K, ...]`.
      q_logits: logits of Q, same shape.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes are removed from both.
      temperature: divides both logits (`> 0`).
      axis_name: mesh axis name over which `axis` is sharded inside
        `shard_map` (row statistics combined with `lax.pmax`/`lax.psum`;
        the class axis is never gathered), or None.
      f: the generator, elementwise `jnp` code, convex with `f(1) = 0`.
      slope_at_infinity: $\lim_{t\to\infty} f(t)/t$ (`math.inf` allowed).

    Returns:
      One value per distribution (`p_logits.shape` without `axis`).

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> pearson = lambda t: (t - 1.0) ** 2
      >>> q = jnp.log(jnp.array([0.25, 0.75]))
      >>> print(jaxkl.f_divergence_from_logits(jnp.zeros(2), q, pearson).round(5))
      0.33333

    References:
      Csiszár, "Information-type measures of difference of probability
      distributions and indirect observations", Studia Sci. Math. Hungar. 2 (1967).
    """
    f_slope = slope(slope_at_infinity)
    a, b, axis, where, scale, dtype = _inputs(p_logits, q_logits, axis, where, temperature)
    axis_name = _validate.axis_name(axis_name)
    logp, logq = (log_softmax(prepare_logits(x, None, scale), axis, where=where, axis_name=axis_name) for x in (a, b))
    terms = _f_terms_from_logs(f, f_slope, logp, logq)
    return row_sum(terms, axis, axis_name).astype(dtype)


def _times(weight: jax.Array, value: jax.Array) -> jax.Array:
    """`weight * value`; an infinite `value` is a constant (0 where `weight = 0`) with zero gradient.

    An infinite factor in a product would turn a zero cotangent (another
    row's, or a masked-out row's) into `0 * inf = NaN`.
    """
    inf = jnp.isinf(value)
    return jnp.where(inf, jnp.where(weight == 0, 0.0, value), weight * jnp.where(inf, 0.0, value))


def _f_terms_from_logs(f: Callable, f_slope: float, logp: jax.Array, logq: jax.Array) -> jax.Array:
    """Elementwise `Q f(P / Q)` from log-probabilities, finite wherever the dtype allows.

    The ratio `t = P / Q` is formed in log space, and the term is written so
    that the factor in front never underflows against a representable `t`:
    `Q f(t)` for `t <= 1` and `P f(t) / t` for `t > 1` (equal, since `Q =
    P / t`). A `Q` (or `P`) that underflows to 0 while the ratio is
    representable therefore still gives its exact term. Beyond the dtype's
    range the limits are taken: `P * slope_at_infinity` for `t` above it
    (`Q = 0 < P` included), `Q f(0)` below it (`P = 0` included; `t` is then
    a constant 0, so an infinite `f'(0)` reaches no gradient). Both `-inf`
    (masked classes) gives 0.
    """
    p_none, q_none = logp == -jnp.inf, logq == -jnp.inf
    both = p_none & q_none
    log_t = jnp.where(q_none, jnp.where(p_none, 0.0, jnp.inf), logp - jnp.where(q_none, 0.0, logq))
    beyond = log_t > math.log(float(jnp.finfo(logp.dtype).max))
    t = jnp.exp(jnp.where(beyond, 0.0, log_t))
    t = jnp.where(t == 0, 0.0, t)  # below the range: a constant, see above
    upper = log_t > 0
    fv = f(t)
    p, q = jnp.exp(logp), jnp.exp(logq)
    at_infinity = jnp.where(p == 0, 0.0, jnp.inf) if f_slope == math.inf else f_slope * p
    up = jnp.where(beyond, at_infinity, _times(p, fv / jnp.where(upper, t, 1.0)))
    return jnp.where(both, 0.0, jnp.where(upper, up, _times(q, fv)))


# -------------------------------------------------------------------- entropies


@class_axes("logits")
def renyi_entropy_from_logits(
    logits: Any,
    *,
    alpha: float,
    axis: int | tuple[int, ...] = -1,
    where: Any = None,
    base: float | None = None,
    axis_name: Any = None,
) -> jax.Array:
    r"""Rényi entropy of order $\alpha \in [0, \infty]$ of `softmax(logits)`.

    $$
    H_\alpha(P) = \frac{1}{1 - \alpha} \log \sum_{i:\, P_i > 0} P_i^\alpha
    $$

    See [jaxkl.renyi_entropy][]: 0 is Hartley's ($\log$ of the number of
    finite logits), 1 Shannon's ([jaxkl.entropy_from_logits][]), 2 the
    collision entropy, $\infty$ the min-entropy
    $\operatorname{logsumexp}(x) - \max_i x_i$.

    Args:
      logits: `[..., K, ...]` floating point (or log-probabilities).
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes are removed.
      axis_name: mesh axis name over which `axis` is sharded inside
        `shard_map`, or None.
      alpha: the order, a Python number in `[0, inf]`.
      base: logarithm base; `None` for nats.

    Returns:
      One entropy per distribution (`logits.shape` without `axis`).

    Raises:
      ValueError: if `alpha < 0` or is NaN.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.renyi_entropy_from_logits(jnp.zeros(4), alpha=2.0, base=2))
      2.0

    References:
      Rényi, "On measures of entropy and information" (1961).
    """
    alpha = _validate.order(alpha, renyi=True)
    base = _validate.base(base)
    if alpha == 1.0:
        return entropy_from_logits(logits, axis=axis, where=where, base=base, axis_name=axis_name)
    if alpha == math.inf:
        max_log_p, dtype = _max_log_ratio(logits, _ONE_DISTRIBUTION, axis, where, 1.0, axis_name)
        h = -max_log_p
    else:
        log_sum, dtype, _ = _log_power_sum(logits, _ONE_DISTRIBUTION, alpha, axis, where, 1.0, axis_name)
        h = log_sum / (1.0 - alpha)
    return in_base(clip_value_only(h, 0.0, None), base).astype(dtype)


@class_axes("logits")
def tsallis_entropy_from_logits(
    logits: Any, *, alpha: float, axis: int = -1, where: Any = None, axis_name: Any = None
) -> jax.Array:
    r"""Tsallis entropy of any real order $\alpha$ of `softmax(logits)`.

    $$
    S_\alpha(P) = \frac{1 - \sum_{i:\, P_i > 0} P_i^\alpha}{\alpha - 1}
    $$

    See [jaxkl.tsallis_entropy][]; $\alpha = 1$ is Shannon's entropy in nats
    ([jaxkl.entropy_from_logits][]). O(rows) residuals. Close to (but not
    at) $\alpha = 1$ the value loses about $\epsilon / |\alpha - 1|$ of
    relative accuracy (the probabilities form does not).

    Args:
      logits: `[..., K, ...]` floating point (or log-probabilities).
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes are removed.
      axis_name: mesh axis name over which `axis` is sharded inside
        `shard_map`, or None.
      alpha: the order, any finite Python number.

    Returns:
      One value per distribution (`logits.shape` without `axis`), `>= 0`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.tsallis_entropy_from_logits(jnp.array([0.0, 0.0, -jnp.inf]), alpha=2.0))
      0.5

    References:
      Tsallis, "Possible generalization of Boltzmann-Gibbs statistics",
      J. Stat. Phys. 52 (1988).
    """
    alpha = _validate.order(alpha)
    if alpha == 1.0:
        return entropy_from_logits(logits, axis=axis, where=where, axis_name=axis_name)
    log_sum, dtype, _ = _log_power_sum(logits, _ONE_DISTRIBUTION, alpha, axis, where, 1.0, axis_name)
    return clip_value_only(-_expm1_or_inf(log_sum) / (alpha - 1.0), 0.0, None).astype(dtype)


