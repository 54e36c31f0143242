"""Entropy, cross-entropy, KL and JS divergence from logits.

Each kernel works in log space (it never forms `log(softmax(x))` from a
rounded probability) and is a `jaxkl._rowwise.row_kernel`: the backward
pass rebuilds the per-class factors from the logits and a few per-row numbers,
in one fused sweep. With `P = softmax(a)`, `Q = softmax(b)` and the row's
value `K` the derivatives used are

* entropy `H(P)`:          dH/da = -P (log P + H)
* cross-entropy `H(p, Q)`:  dC/db = (sum p) Q - p,   dC/dp = -log Q
* `KL(P || Q)`:            dK/da = P (log P - log Q - K),  dK/db = (sum P) Q - P
* `JS_beta(P, Q)`:         dJ/da = beta P (log P - log M - KL(P||M)), likewise for b

and every `P * (...)` factor is taken as 0 where `P` is exactly 0, which is
what makes `-inf` logits and masked classes safe.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _validate
from ._axes import class_axes
from ._rowwise import (
    Axis,
    binary_entropy,
    clip_value,
    compute_dtype,
    finite_log_sum,
    in_base,
    log_normalizer,
    log_probs,
    prepare_logits,
    row_kernel,
    row_shift,
    row_sum,
    split_probs,
    with_tangent,
    zero_where_unused,
)


class Tempered(NamedTuple):
    """Static options of the two-distribution kernels (KL, JS)."""

    axis: int
    axis_name: Any = None
    scale: float = 1.0  # 1 / temperature, when the temperature is known at trace time
    beta: float = 0.5  # JS: the weight of P in the mixture


def temperature_scale(
    temperature: Any, *logits: jax.Array, axis: int = -1, where: Any = None, axis_name: Any = None
) -> tuple[float, tuple[jax.Array, ...]]:
    """jaxkl's one temperature policy: `(static scale, logits)` for logits / T.

    A temperature known at trace time becomes a static `1 / T` that the
    kernels fold into their own sweep (nothing extra is stored). A traced one
    (or one temperature per row, see `_validate.temperature`) divides the
    logits up front: it is still differentiated correctly (the temperature
    receives its gradient), at the cost of the divided logits being kept for
    the backward pass; a traced `T <= 0` gives NaN. The division is done in
    the compute dtype (float32 for 16-bit logits) and the divided logits are
    returned in it: rounded back to bfloat16, `x / T` at `T = 0.004` loses
    about 0.4 nats per logit (and float16 overflows to `inf - inf = NaN`),
    where a static `T` folded into the kernel is exact. For 16-bit logits the
    kept copy is therefore float32, twice the bytes of the input; callers
    return their results in the input's dtype.

    A tiny static `T` (`1 / T` above `_SHIFT_FIRST_SCALE`) would overflow
    `logits / T` to `inf - inf = NaN`: see `_tempered_from_max`.
    """
    axis = axis % logits[0].ndim if logits[0].ndim else 0
    t = _validate.temperature(temperature, logits[0].shape, axis)
    if isinstance(t, float):
        scale = 1.0 / t
        if scale <= _SHIFT_FIRST_SCALE:
            return scale, logits
        mask = None if where is None else jnp.asarray(where)
        return 1.0, tuple(_tempered_from_max(x, scale, axis, mask, axis_name) for x in logits)
    dtype = compute_dtype(logits[0].dtype)
    t = jnp.asarray(t, dtype)
    return 1.0, tuple(x.astype(dtype) / t for x in logits)


# Beyond this 1 / T, `logits / T` may overflow float32 for ordinary logits.
_SHIFT_FIRST_SCALE = 1e6


def _tempered_from_max(x, scale, axis, where, axis_name):
    """`(x - row max) * scale`, formed up front for a huge `scale = 1 / T`.

    The result is shift-invariant, and shifting first leaves 0 at the row max
    and numbers <= 0 elsewhere, which overflow only to `-inf` (the T -> 0
    limit: the argmax), never to `inf - inf`. `0 * inf` at the max is taken
    as 0 when `1 / T` itself overflows; NaN logits stay NaN.
    """
    z = x.astype(compute_dtype(x.dtype))
    d = z - jax.lax.stop_gradient(row_shift(prepare_logits(z, where), axis, axis_name))
    if scale > float(jnp.finfo(z.dtype).max):
        scale = math.inf  # what the cast would give, without numpy's overflow warning
    return jnp.where(d == 0, 0.0, d * jnp.asarray(scale, z.dtype)).astype(x.dtype)


# --------------------------------------------------------------------- entropy


def _normalised_mean(e, values, axis, axis_name):
    """`(log sum e, sum(e * values) / sum(e))` from unnormalised weights `e`.

    The forwards below take each distribution's exponentials once and use
    them both for its normaliser and as its weights, where `sum(P * f)`
    would take them a second time (XLA:CPU keeps `e` of a row block in
    cache). `e * values` is 0 where `e` is 0, and an empty row's mean is 0.
    """
    total = row_sum(e, axis, axis_name, keepdims=True)
    weighted = row_sum(zero_where_unused(e, values), axis, axis_name)
    return jnp.log(total), weighted / jnp.squeeze(jnp.where(total == 0, 1.0, total), axis)


def _entropy_forward(static, x, where):
    axis, axis_name = static
    z = prepare_logits(x, where)
    shift = row_shift(z, axis, axis_name)
    # H = log sum exp(z - shift) - E_P[z - shift].
    log_sum, mean = _normalised_mean(jnp.exp(z - shift), z - shift, axis, axis_name)
    h = jnp.squeeze(finite_log_sum(log_sum), axis) - mean
    return clip_value(h, 0.0, None).astype(x.dtype), ((shift, log_sum), h)


def _entropy_tangent(static, arrays, stats, tangents):
    axis, axis_name = static
    x, where = arrays
    norm, h = stats
    logp = log_probs(prepare_logits(x, where), norm)
    coef = -zero_where_unused(jnp.exp(logp), logp + jnp.expand_dims(h, axis))
    return with_tangent(coef, tangents[0], axis, axis_name)


_entropy = row_kernel(_entropy_forward, _entropy_tangent, ("full", "mask"))


@class_axes("logits")
def entropy_from_logits(
    logits: ArrayLike,
    *,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    base: float | None = None,
    axis_name: Any = None,
) -> jax.Array:
    r"""Shannon entropy of `softmax(logits)`.

    $$
    H(P) = -\sum_i P_i \log P_i, \qquad P = \operatorname{softmax}(\text{logits})
    $$

    `-inf` logits are classes with probability 0: they contribute 0 and get a
    zero gradient. Also accepts log-probabilities unchanged.

    Args:
      logits: `[..., K, ...]` floating point.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask broadcastable to `logits`; `False`
        classes are excluded (the distribution is renormalised over the rest).
      base: logarithm base; `None` for nats, `2` for bits.
      axis_name: mesh axis name over which `axis` is sharded inside
        `shard_map` (row statistics combined with `lax.pmax`/`lax.psum`;
        the class axis is never gathered), or None.

    Returns:
      One entropy per distribution: `logits.shape` without `axis`, in the
      dtype of `logits`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.entropy_from_logits(jnp.zeros(4), base=2))
      2.0
      >>> print(jaxkl.entropy_from_logits(jnp.array([0.0, -jnp.inf, -jnp.inf])))
      0.0

    References:
      Shannon, "A Mathematical Theory of Communication" (1948).
    """
    x = _validate.float_array(logits, "logits")
    axis = _validate.normalize_axis(axis, x.ndim)
    where = _validate.mask(where, x.shape)
    base = _validate.base(base)
    return in_base(_entropy(Axis(axis, _validate.axis_name(axis_name)), x, where), base)


# --------------------------------------------------------------- cross-entropy


def _cross_entropy_value(static, t, logq, invalid):
    axis, axis_name = static
    # Targets that are not probabilities make the row NaN through its value
    # only (see `split_probs`): the derivative works on finite targets.
    terms = jnp.where(invalid, jnp.nan, zero_where_unused(t, logq))
    c = -row_sum(terms, axis, axis_name)
    return clip_value(c, 0.0, None)


def _cross_entropy_forward(static, p, y, where):
    t, invalid = split_probs(p, where)
    z = prepare_logits(y, where)
    norm = log_normalizer(z, *static)
    # The targets' mass is a statistic of the forward (its row is in cache
    # there), so that the derivative below is purely elementwise: a row sum
    # in it made XLA write the checked targets out at full size first.
    mass = row_sum(t, *static, keepdims=True)
    return _cross_entropy_value(static, t, log_probs(z, norm), invalid).astype(y.dtype), (norm, mass)


def _cross_entropy_tangent(static, arrays, stats, tangents):
    p, y, where = arrays
    norm, mass = stats
    dp, dy = tangents[:2]
    t, _ = split_probs(p, where)
    logq = log_probs(prepare_logits(y, where), norm)
    # d/dp = -log Q, except where Q = 0: there the term is 0 log 0 (p = 0) or
    # +inf (p > 0), whose gradient is taken as 0 -- an infinite coefficient
    # would turn a zero cotangent (a row masked out by a reduction) into NaN.
    coef_p = jnp.where(logq == -jnp.inf, 0.0, -logq)
    coef_y = mass * jnp.exp(logq) - t
    return with_tangent(coef_p, dp, *static) + with_tangent(coef_y, dy, *static)


# No CPU rule (unlike `cross_entropy_loss`): forming `exp(logits - max)` once and
# building the gradient from it keeps it as a rows x classes temporary (the
# gradient wrt the targets needs its own buffer). In `python -m bench --sweep
# --kernels cross_entropy` (jax 0.10.1, 2 cores) that rule measured fwd+bwd
# 0.71-0.91x the fastest peer in float32 and 1.59-1.74x in bfloat16, against
# 0.70-0.93x and 1.72-2.02x for this one: no faster, so the simpler rule stays.
# Both lose in float32; see docs/benchmarks.md.
_cross_entropy = row_kernel(_cross_entropy_forward, _cross_entropy_tangent, ("full", "full", "mask"))


@class_axes("p", "q_logits")
def cross_entropy_from_logits(
    p: ArrayLike,
    q_logits: ArrayLike,
    *,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    base: float | None = None,
    axis_name: Any = None,
) -> jax.Array:
    r"""Cross-entropy of target probabilities `p` and predicted logits.

    $$
    H(p, Q) = -\sum_i p_i \log Q_i, \qquad Q = \operatorname{softmax}(\text{q\_logits})
    $$

    Argument order follows the mathematics (target first), unlike optax's
    `softmax_cross_entropy(logits, labels)`. The row maximum is subtracted,
    so adding any constant to a row of logits leaves the result unchanged.
    `p_i = 0` contributes 0 even where `q_logits_i = -inf`; `p_i > 0`
    there gives `+inf`. `p` is used as given (not renormalised); the
    gradient wrt `q_logits` is `sum(p) * Q - p`, and wrt `p` it is `-log Q`,
    0 where `Q = 0` (an infinite coefficient would turn the zero cotangent of
    a row masked out by a reduction into NaN). An entry of `p` that is not a
    probability (`< 0` or `+inf`) makes its row NaN through the value only,
    with a finite gradient, for the same reason; a NaN gives NaN in both.

    Args:
      p: target probabilities `[..., K, ...]`.
      q_logits: predicted logits (or log-probabilities), same shape as `p`.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes contribute nothing.
      base: logarithm base; `None` for nats.
      axis_name: mesh axis name over which `axis` is sharded inside
        `shard_map` (row statistics combined with `lax.pmax`/`lax.psum`;
        the class axis is never gathered), or None.

    Returns:
      One value per distribution (`p.shape` without `axis`).

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> p = jnp.array([1.0, 0.0, 0.0])
      >>> print(jaxkl.cross_entropy_from_logits(p, jnp.array([1.0, 2.0, 3.0])))
      2.407606

    References:
      Murphy, "Probabilistic Machine Learning: An Introduction" (2022), sec. 6.1.
    """
    p, y, axis, where = _validate.float_pair(p, q_logits, "p", "q_logits", axis, where)
    base = _validate.base(base)
    return in_base(_cross_entropy(Axis(axis, _validate.axis_name(axis_name)), p, y, where), base)


# ------------------------------------------------------------------------- KL


def _kl_log_probs(static, a, b, where, stats=None):
    axis, axis_name, scale = static.axis, static.axis_name, static.scale
    za = prepare_logits(a, where, scale)
    zb = prepare_logits(b, where, scale)
    if stats is None:
        stats = (log_normalizer(za, axis, axis_name), log_normalizer(zb, axis, axis_name))
    return log_probs(za, stats[0]), log_probs(zb, stats[1]), stats


def _kl_forward(static, a, b, where):
    axis, axis_name, scale = static.axis, static.axis_name, static.scale
    za = prepare_logits(a, where, scale)
    zb = prepare_logits(b, where, scale)
    norm_b = log_normalizer(zb, axis, axis_name)
    shift_a = row_shift(za, axis, axis_name)
    # KL = E_P[(za - shift_a) - (zb - shift_b)] - log_sum_a + log_sum_b: the
    # differences stay exact in the shifts (identical inputs give exactly 0).
    gap = (za - shift_a) - (zb - norm_b[0])
    log_sum_a, mean = _normalised_mean(jnp.exp(za - shift_a), gap, axis, axis_name)
    k = mean - jnp.squeeze(finite_log_sum(log_sum_a) - finite_log_sum(norm_b[1]), axis)
    # An empty P (all -inf or masked) has KL 0.
    k = jnp.where(jnp.squeeze(log_sum_a, axis) == -jnp.inf, 0.0, k)
    return clip_value(k, 0.0, None).astype(a.dtype), ((shift_a, log_sum_a), norm_b, k)


def _kl_tangent(static, arrays, stats, tangents):
    axis, axis_name, scale = static.axis, static.axis_name, static.scale
    a, b, where = arrays
    da, db = tangents[:2]
    norm_a, norm_b, k = stats
    logp, logq, _ = _kl_log_probs(static, a, b, where, (norm_a, norm_b))
    p = jnp.exp(logp)
    k = jnp.expand_dims(k, axis)
    # Where KL is +inf (q = 0 under p > 0) it stays +inf for any finite
    # change of a, so its a-gradient is 0 rather than inf - inf.
    coef_a = jnp.where(k == jnp.inf, 0.0, scale * zero_where_unused(p, logp - logq - k))
    # dK/db = (sum P) Q - P: sum P is 1, or 0 on an empty row (every logit of P
    # -inf or masked), whose KL is 0 whatever b is -- not Q.
    mass_p = jnp.where(norm_a[1] == -jnp.inf, 0.0, 1.0)
    coef_b = scale * (mass_p * jnp.exp(logq) - p)
    return with_tangent(coef_a, da, axis, axis_name) + with_tangent(
        coef_b, db, axis, axis_name
    )


_kl = row_kernel(_kl_forward, _kl_tangent, ("full", "full", "mask"))


@class_axes("p_logits", "q_logits")
def kl_divergence_from_logits(
    p_logits: ArrayLike,
    q_logits: ArrayLike,
    *,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    base: float | None = None,
    temperature: float = 1.0,
    axis_name: Any = None,
) -> jax.Array:
    r"""KL divergence `KL(softmax(p_logits / T) || softmax(q_logits / T))`.

    $$
    \mathrm{KL}(P \,\|\, Q) = \sum_i P_i (\log P_i - \log Q_i)
    $$

    Computed entirely in log space, so it stays finite where a probabilities
    path would underflow (`p = [0, 0]`, `q = [0, -103]` gives 50.80685 in
    float32). The gradient is rebuilt from the logits and two log-normalisers
    per row: reverse mode keeps O(rows) residuals. `dKL/dq_logits = (Q - P)/T`,
    and 0 on a row where `P` is empty (every logit `-inf` or masked: the KL
    is 0 whatever `q_logits` is), i.e. `((sum P) Q - P)/T`.

    Edge cases: a class with `-inf` in both contributes 0 and gets zero
    gradient; `-inf` in `q_logits` where `P > 0` gives `+inf`, with a
    zero gradient wrt `p_logits` on that row (the value is `+inf` on a
    whole neighbourhood) and `Q - P` wrt `q_logits`. Identical inputs give
    exactly 0 with exactly zero gradient.

    Args:
      p_logits: logits (or log-probabilities) of P, `[..., K, ...]`.
      q_logits: logits of Q, same shape and dtype family as `p_logits`.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes are removed from both.
      base: logarithm base; `None` for nats.
      temperature: divides both logits (`> 0`). A traced value is allowed
        and differentiated, at the cost of O(rows x classes) residuals (the
        divided logits, in float32 for 16-bit inputs, where the division is
        done so that it agrees with a static temperature).
      axis_name: mesh axis name over which `axis` is sharded inside
        `shard_map` (row statistics combined with `lax.pmax`/`lax.psum`;
        the class axis is never gathered), or None.

    Returns:
      One KL per distribution (`p_logits.shape` without `axis`), `>= 0`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.kl_divergence_from_logits(jnp.zeros(2), jnp.array([0.0, -103.0])).round(4))
      50.8069

    References:
      Kullback & Leibler, "On Information and Sufficiency" (1951).
    """
    a, b, axis, where = _validate.float_pair(p_logits, q_logits, "p_logits", "q_logits", axis, where)
    base = _validate.base(base)
    dtype = a.dtype  # a traced temperature returns the divided logits in the compute dtype
    scale, (a, b) = temperature_scale(temperature, a, b, axis=axis, where=where, axis_name=axis_name)
    return in_base(_kl(Tempered(axis, _validate.axis_name(axis_name), scale), a, b, where), base).astype(dtype)


# ------------------------------------------------------------------------- JS


def log_mixture(logp: jax.Array, logq: jax.Array, beta: float) -> jax.Array:
    """`log(beta P + (1 - beta) Q)` from log-probabilities, for `0 < beta < 1`."""
    u, v = logp + math.log(beta), logq + math.log1p(-beta)
    # Where both are -inf (masked classes) feed logaddexp zeros instead, so
    # that its higher-order derivatives see no -inf - -inf.
    unused = (u == -jnp.inf) & (v == -jnp.inf)
    return jnp.where(unused, -jnp.inf, jnp.logaddexp(jnp.where(unused, 0.0, u), jnp.where(unused, 0.0, v)))


def _js_parts(static, a, b, where, stats=None):
    logp, logq, norms = _kl_log_probs(static, a, b, where, stats)
    return logp, logq, log_mixture(logp, logq, static.beta), norms


def _js_forward(static, a, b, where):
    axis, axis_name, beta = static.axis, static.axis_name, static.beta
    logp, logq, logm, norms = _js_parts(static, a, b, where)
    kl_pm = row_sum(zero_where_unused(jnp.exp(logp), logp - logm), axis, axis_name)
    kl_qm = row_sum(zero_where_unused(jnp.exp(logq), logq - logm), axis, axis_name)
    js = beta * kl_pm + (1.0 - beta) * kl_qm
    return clip_value(js, 0.0, binary_entropy(beta)).astype(a.dtype), (norms, kl_pm, kl_qm)


def _js_tangent(static, arrays, stats, tangents):
    axis, axis_name, scale, beta = static
    a, b, where = arrays
    da, db = tangents[:2]
    norms, kl_pm, kl_qm = stats
    logp, logq, logm, _ = _js_parts(static, a, b, where, norms)

    def coefficient(weight, logx, kl):
        x = jnp.exp(logx)
        return weight * scale * zero_where_unused(x, logx - logm - jnp.expand_dims(kl, axis))

    return with_tangent(coefficient(beta, logp, kl_pm), da, axis, axis_name) + with_tangent(
        coefficient(1.0 - beta, logq, kl_qm), db, axis, axis_name
    )


_js = row_kernel(_js_forward, _js_tangent, ("full", "full", "mask"))


@class_axes("p_logits", "q_logits")
def js_divergence_from_logits(
    p_logits: ArrayLike,
    q_logits: ArrayLike,
    *,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    base: float | None = None,
    beta: float = 0.5,
    temperature: float = 1.0,
    axis_name: Any = None,
) -> jax.Array:
    r"""Generalised Jensen-Shannon divergence of `softmax(p_logits/T)` and `softmax(q_logits/T)`.

    $$
    \mathrm{JS}_\beta(P, Q) = \beta\,\mathrm{KL}(P \,\|\, M) + (1-\beta)\,\mathrm{KL}(Q \,\|\, M),
    \qquad M = \beta P + (1 - \beta) Q
    $$

    `beta = 0.5` is the usual JSD, bounded by `log 2` (1 bit); in general
    the value lies in `[0, h(beta)]` with `h` the binary entropy, and is
    always finite, even for disjoint supports. Unlike
    `scipy.spatial.distance.jensenshannon` this is the divergence, not its
    square root. `log M` is formed with `logaddexp` in log space.

    Args:
      p_logits: logits (or log-probabilities) of P, `[..., K, ...]`.
      q_logits: logits of Q, same shape.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes are removed from both.
      base: logarithm base; `None` for nats.
      beta: weight of P in the mixture, in `[0, 1]`.
      temperature: divides both logits (`> 0`).
      axis_name: mesh axis name over which `axis` is sharded inside
        `shard_map` (row statistics combined with `lax.pmax`/`lax.psum`;
        the class axis is never gathered), or None.

    Returns:
      One value per distribution (`p_logits.shape` without `axis`).

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> ninf = -jnp.inf
      >>> print(jaxkl.js_divergence_from_logits(jnp.array([0.0, ninf]), jnp.array([ninf, 0.0]), base=2))
      1.0

    References:
      Lin, "Divergence measures based on the Shannon entropy", IEEE Trans.
      Inf. Theory 37 (1991).
    """
    a, b, axis, where = _validate.float_pair(p_logits, q_logits, "p_logits", "q_logits", axis, where)
    base = _validate.base(base)
    beta = _validate.unit_interval(beta, "beta")
    dtype = a.dtype  # a traced temperature returns the divided logits in the compute dtype
    scale, (a, b) = temperature_scale(temperature, a, b, axis=axis, where=where, axis_name=axis_name)
    if beta in (0.0, 1.0):
        # M equals P or Q: the divergence is identically 0, except where an
        # (unmasked) logit is NaN or +inf, which gives NaN as in every kernel.
        invalid = ~(prepare_logits(a, where) < jnp.inf) | ~(prepare_logits(b, where) < jnp.inf)
        invalid = row_sum(invalid.astype(jnp.float32), axis, _validate.axis_name(axis_name)) > 0
        return jnp.where(invalid, jnp.nan, 0.0).astype(dtype)
    return in_base(_js(Tempered(axis, _validate.axis_name(axis_name), scale, beta), a, b, where), base).astype(dtype)
