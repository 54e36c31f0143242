"""Entropy, cross-entropy, KL and JS divergence from probabilities.

Zeros are the whole difficulty here. The elementwise terms use the "double
where" pattern: where `p_i = 0` the term is 0 *and* its inputs are replaced
by harmless ones before `log`, so no `0 * inf` appears in the value or in
any derivative (`jnp.where` alone still differentiates the unused branch and
yields NaN). Inputs are used as given: nothing is clipped or renormalised;
`check=True` adds checkify checks of the values.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _checks, _validate
from ._axes import class_axes
from ._rowwise import binary_entropy, clip_value_only, in_base, prepare_probs, split_probs


def rel_entr(p: jax.Array, q: jax.Array) -> jax.Array:
    """Elementwise `p log(p / q)`: 0 where `p = 0`, `+inf` where only `q = 0`, both with zero gradient.

    The infinite term is a constant rather than `p * (log p - log 0)`: its
    derivative would be infinite, and a zero cotangent (a row that a
    reduction masks out) times an infinite coefficient is NaN.
    """
    unused = p == 0
    infinite = (q == 0) & (p > 0)
    constant = unused | infinite
    safe_p = jnp.where(constant, 1.0, p)
    safe_q = jnp.where(constant, 1.0, q)
    # An unused term is 0 -- unless q is NaN there: NaN in, NaN out.
    unused_value = jnp.where(jnp.isnan(q), q, 0.0)
    inside = jnp.where(infinite, jnp.inf, safe_p * (jnp.log(safe_p) - jnp.log(safe_q)))
    return jnp.where(unused, unused_value, inside)


def xlogy(p: jax.Array, q: jax.Array) -> jax.Array:
    """Elementwise `p log q`: 0 where `p = 0`; gradient `log q` wrt `p` unless `q = 0`.

    Where `q = 0` the term is 0 (`p = 0`) or `-inf` (`p > 0`), a constant
    with zero gradient (see `rel_entr`).
    """
    q_zero = q == 0
    safe_q = jnp.where(q_zero, 1.0, q)
    return jnp.where(q_zero & (p > 0), -jnp.inf, p * jnp.log(safe_q))


def poisoned(terms: jax.Array, invalid: jax.Array) -> jax.Array:
    """`terms` with NaN where an input was not a probability (see `prepared_terms`).

    The NaN enters through the value only, so the derivative stays finite.
    """
    return jnp.where(invalid, jnp.nan, terms)


def _checked_pair(p, q, name_p, name_q, axis, where, base, check):
    """Validated `(p, q, axis, where, base)`, with checkify checks when asked."""
    p, q, axis, where = _validate.float_pair(p, q, name_p, name_q, axis, where)
    base = _validate.base(base)
    if check:
        _checks.probabilities(p, name_p, axis, where)
        _checks.probabilities(q, name_q, axis, where)
    return p, q, axis, where, base


def prepared_pair(p, q, name_p, name_q, axis, where, base, check):
    """Validate; return upcast, masked `p` and `q`, the axis, the base and the output dtype.

    Entries that are not probabilities (< 0, `+inf`) become NaN (`prepare_probs`).
    """
    p, q, axis, where, base = _checked_pair(p, q, name_p, name_q, axis, where, base, check)
    return prepare_probs(p, where), prepare_probs(q, where), axis, base, p.dtype


def prepared_terms(p, q, name_p, name_q, axis, where, base, check):
    """`prepared_pair` for kernels that are sums of elementwise terms.

    Returns `(p, q, invalid, axis, base, dtype)`: entries that are not
    probabilities are 0 in `p` and `q` and flagged in `invalid`, for
    `poisoned`. Their row is NaN as with `prepared_pair`, but its gradient is
    finite, so a row that a reduction's `where=` masks out gets a zero
    gradient instead of `0 * NaN` (which poisons a whole update).
    """
    p, q, axis, where, base = _checked_pair(p, q, name_p, name_q, axis, where, base, check)
    (t, bad_p), (u, bad_q) = split_probs(p, where), split_probs(q, where)
    return t, u, bad_p | bad_q, axis, base, p.dtype


@class_axes("p")
def entropy(
    p: ArrayLike, *, axis: int = -1, where: Any = None, base: float | None = None, check: bool = False
) -> jax.Array:
    r"""Shannon entropy of probabilities.

    $$
    H(p) = -\sum_i p_i \log p_i
    $$

    `0 log 0 = 0` with a zero gradient. Matches `scipy.stats.entropy(p,
    base=base, axis=axis)` for normalised `p` (SciPy renormalises first;
    jaxkl does not, see `check`).

    Args:
      p: probabilities `[..., K, ...]`.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes contribute nothing.
      base: logarithm base; `None` for nats.
      check: add checkify checks that `p` is non-negative with rows summing
        to 1 (see [conventions](conventions.md)).

    Returns:
      One entropy per distribution (`p.shape` without `axis`).

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.entropy(jnp.array([0.5, 0.5, 0.0]), base=2))
      1.0

    References:
      Cover & Thomas, "Elements of Information Theory", 2nd ed. (2006), ch. 2.
    """
    p, _, axis, base, dtype = prepared_pair(p, p, "p", "p", axis, where, base, check)
    h = -jnp.sum(rel_entr(p, jnp.ones_like(p)), axis=axis)
    return in_base(h, base).astype(dtype)


@class_axes("p", "q")
def cross_entropy(
    p: ArrayLike, q: Any, *, axis: int = -1, where: Any = None, base: float | None = None, check: bool = False
) -> jax.Array:
    r"""Cross-entropy of two probability vectors.

    $$
    H(p, q) = -\sum_i p_i \log q_i
    $$

    Target `p` first (the order of the mathematics). `p_i = 0`
    contributes 0 whatever `q_i` is; `p_i > 0` with `q_i = 0` gives
    `+inf`. Gradients: `-log q` wrt `p` and `-p / q` wrt `q`; an infinite
    term (`q_i = 0 < p_i`) has zero gradient, so that a row masked out by a
    reduction ([jaxkl.reduce][] `where=`) never gets `0 * inf = NaN`. An
    entry that is not a probability (`< 0` or `+inf`) makes its row NaN,
    with a finite gradient for the same reason; a NaN input gives NaN in
    both.

    Args:
      p: target probabilities `[..., K, ...]`.
      q: predicted probabilities, same shape.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes contribute nothing.
      base: logarithm base; `None` for nats.
      check: add checkify checks on `p` and `q`.

    Returns:
      One value per distribution (`p.shape` without `axis`).

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.cross_entropy(jnp.array([0.5, 0.5]), jnp.array([0.25, 0.25]), base=2))
      2.0

    References:
      Cover & Thomas, "Elements of Information Theory", 2nd ed. (2006), ch. 2.
    """
    p, q, invalid, axis, base, dtype = prepared_terms(p, q, "p", "q", axis, where, base, check)
    # `0.0 - sum` rather than `-sum`: an empty or fully masked row is +0.0, not -0.0.
    return in_base(0.0 - jnp.sum(poisoned(xlogy(p, q), invalid), axis=axis), base).astype(dtype)


@class_axes("p", "q")
def kl_divergence(
    p: ArrayLike, q: Any, *, axis: int = -1, where: Any = None, base: float | None = None, check: bool = False
) -> jax.Array:
    r"""Kullback-Leibler divergence of two probability vectors.

    $$
    \mathrm{KL}(p \,\|\, q) = \sum_i p_i \log \frac{p_i}{q_i}
    $$

    `KL(p, q)` measures `p` against `q` (target first; the reverse of
    `torch.nn.functional.kl_div(input, target)`). Equals
    `scipy.special.rel_entr(p, q).sum(axis)`. A zero in `p` contributes 0
    with a zero gradient; `q_i = 0` under `p_i > 0` gives `+inf` (never
    NaN). The value is clamped at 0 against rounding (the gradient is the
    formula's). Gradients: `log(p/q) + 1` wrt `p`, `-p/q` wrt `q`; an
    infinite term (`q_i = 0 < p_i`) has zero gradient, and an entry that is
    not a probability (`< 0` or `+inf`) makes the row NaN with a finite
    gradient, so that a row masked out by a reduction ([jaxkl.reduce][]
    `where=`) never gets `0 * inf = NaN`.

    Args:
      p: probabilities `[..., K, ...]`.
      q: probabilities, same shape (no broadcasting).
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes contribute nothing.
      base: logarithm base; `None` for nats.
      check: add checkify checks on `p` and `q`.

    Returns:
      One KL per distribution (`p.shape` without `axis`).

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.kl_divergence(jnp.array([0.5, 0.5, 0.0]), jnp.array([0.25, 0.25, 0.5]), base=2))
      1.0
      >>> print(jaxkl.kl_divergence(jnp.array([0.3, 0.3, 0.4]), jnp.array([0.5, 0.5, 0.0])))
      inf

    References:
      Kullback & Leibler, "On Information and Sufficiency" (1951).
    """
    p, q, invalid, axis, base, dtype = prepared_terms(p, q, "p", "q", axis, where, base, check)
    k = clip_value_only(jnp.sum(poisoned(rel_entr(p, q), invalid), axis=axis), 0.0, None)
    return in_base(k, base).astype(dtype)


@class_axes("p", "q")
def js_divergence(
    p: ArrayLike,
    q: ArrayLike,
    *,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    base: float | None = None,
    beta: float = 0.5,
    check: bool = False,
) -> jax.Array:
    r"""Generalised Jensen-Shannon divergence of two probability vectors.

    $$
    \mathrm{JS}_\beta(p, q) = \beta\,\mathrm{KL}(p \,\|\, m) + (1-\beta)\,\mathrm{KL}(q \,\|\, m),
    \qquad m = \beta p + (1 - \beta) q
    $$

    `beta = 0.5` gives the usual JSD in `[0, log 2]`; in general the value
    is in `[0, h(beta)]` (binary entropy), clamped there against rounding.
    This is the divergence; `scipy.spatial.distance.jensenshannon` returns
    its square root (and can be NaN from a tiny negative in float32).

    Args:
      p: probabilities `[..., K, ...]`.
      q: probabilities, same shape.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask; excluded classes contribute nothing.
      base: logarithm base; `None` for nats.
      beta: weight of `p` in the mixture, in `[0, 1]`.
      check: add checkify checks on `p` and `q`.

    Returns:
      One value per distribution (`p.shape` without `axis`).

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.js_divergence(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]), base=2))
      1.0

    References:
      Lin, "Divergence measures based on the Shannon entropy", IEEE Trans.
      Inf. Theory 37 (1991).
    """
    beta = _validate.unit_interval(beta, "beta")
    p, q, invalid, axis, base, dtype = prepared_terms(p, q, "p", "q", axis, where, base, check)
    m = beta * p + (1.0 - beta) * q
    terms = jnp.zeros_like(p)
    # A zero weight drops its term entirely (0 * inf would be NaN).
    if beta > 0:
        terms = terms + beta * rel_entr(p, m)
    if beta < 1:
        terms = terms + (1.0 - beta) * rel_entr(q, m)
    js = jnp.sum(poisoned(terms, invalid), axis=axis)
    js = clip_value_only(jnp.asarray(js, p.dtype), 0.0, binary_entropy(beta))
    return in_base(js, base).astype(dtype)
