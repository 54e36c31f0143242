"""Entropies and mutual information of joint distributions `joint[..., X, Y]`.

A joint table is a distribution over its last two axes. The probability forms
are sums of `rel_entr` terms (`p log(p / r)` with `r` a marginal or a product
of marginals), so each term's sign is known, zeros have zero gradients and
nothing cancels: `mutual_information` is `KL(joint || p_X p_Y)` and is 0 for
a product table up to rounding, never negative. The logits forms combine
`entropy_from_logits` and `logsumexp` (the marginals' logits are log-sum-exps
of the joint's), whose derivatives already keep O(rows) residuals; joint
tables are small, so a fused rule of their own would not pay.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from . import _checks, _validate
from ._divergences import rel_entr
from ._logits import entropy_from_logits
from ._rowwise import clip_value_only, in_base, prepare_probs
from ._softmax import logsumexp


def _table(joint: Any, name: str, where: Any) -> tuple[jax.Array, jax.Array | None]:
    """A validated float table of rank >= 2 and its mask broadcast to the table's shape."""
    joint = _validate.float_array(joint, name)
    if joint.ndim < 2:
        raise ValueError(f"{name} must have at least 2 axes [..., X, Y], got shape {joint.shape}")
    where = _validate.mask(where, joint.shape)
    return joint, None if where is None else jnp.broadcast_to(where, joint.shape)


def _flat(x: jax.Array | None) -> jax.Array | None:
    """The last two axes as one (a joint table as one distribution)."""
    return None if x is None else x.reshape(x.shape[:-2] + (-1,))


def _probabilities(joint, where, base, check):
    """`(p, base, dtype)`: the validated, upcast, masked table."""
    joint, where = _table(joint, "joint", where)
    base = _validate.base(base)
    if check:
        _checks.probabilities(_flat(joint), "joint", -1, _flat(where))
    return prepare_probs(joint, where), base, joint.dtype


def _sum_xy(terms):
    return jnp.sum(terms, axis=(-2, -1))


def joint_entropy(joint: Any, *, where: Any = None, base: float | None = None, check: bool = False) -> jax.Array:
    r"""Joint entropy $H(X, Y)$ of a table of probabilities `joint[..., X, Y]`.

    $$
    H(X, Y) = -\sum_{x, y} p(x, y) \log p(x, y)
    $$

    The entropy of the table read as one distribution over its last two axes
    (see [jaxkl.entropy][]).

    Args:
      joint: probabilities `[..., X, Y]`; each table sums to 1.
      where: optional boolean mask broadcastable to `joint`; excluded cells
        contribute nothing.
      base: logarithm base; `None` for nats.
      check: add checkify checks that each table is non-negative and sums to 1.

    Returns:
      One value per table (`joint.shape[:-2]`).

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.joint_entropy(jnp.full((2, 2), 0.25), base=2))
      2.0

    References:
      Cover & Thomas, "Elements of Information Theory", 2nd ed. (2006), sec. 2.2.
    """
    p, base, dtype = _probabilities(joint, where, base, check)
    return in_base(-_sum_xy(rel_entr(p, jnp.ones_like(p))), base).astype(dtype)


def conditional_entropy(
    joint: Any, *, where: Any = None, base: float | None = None, check: bool = False
) -> jax.Array:
    r"""Conditional entropy $H(Y \mid X)$ of a table `joint[..., X, Y]`.

    $$
    H(Y \mid X) = -\sum_{x, y} p(x, y) \log \frac{p(x, y)}{p(x)} = H(X, Y) - H(X),
    \qquad p(x) = \sum_y p(x, y)
    $$

    `X` is the second-to-last axis, `Y` the last; for $H(X \mid Y)$ pass
    `jnp.swapaxes(joint, -1, -2)`. Every term is non-negative; the value is
    clamped at 0 against rounding.

    Args:
      joint: probabilities `[..., X, Y]`.
      where: optional boolean mask broadcastable to `joint`.
      base: logarithm base; `None` for nats.
      check: add checkify checks on each table.

    Returns:
      One value per table (`joint.shape[:-2]`), `>= 0`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> joint = jnp.array([[0.5, 0.0], [0.25, 0.25]])
      >>> print(jaxkl.conditional_entropy(joint, base=2))  # Y is known when X = 0, a coin when X = 1
      0.5

    References:
      Cover & Thomas, "Elements of Information Theory", 2nd ed. (2006), sec. 2.2.
    """
    p, base, dtype = _probabilities(joint, where, base, check)
    p_x = jnp.sum(p, axis=-1, keepdims=True)
    h = clip_value_only(-_sum_xy(rel_entr(p, jnp.broadcast_to(p_x, p.shape))), 0.0, None)
    return in_base(h, base).astype(dtype)


def mutual_information(
    joint: Any, *, where: Any = None, base: float | None = None, check: bool = False
) -> jax.Array:
    r"""Mutual information $I(X; Y)$ of a table of probabilities `joint[..., X, Y]`.

    $$
    I(X; Y) = \sum_{x, y} p(x, y) \log \frac{p(x, y)}{p(x)\, p(y)}
            = H(X) + H(Y) - H(X, Y)
    $$

    Computed as $\mathrm{KL}(p_{XY} \,\|\, p_X \otimes p_Y)$ term by term, so it is
    0 for a product table up to rounding and never negative (clamped against
    rounding), and symmetric in `X` and `Y`. For counts use
    [jaxkl.mutual_information_from_counts][].

    Args:
      joint: probabilities `[..., X, Y]`.
      where: optional boolean mask broadcastable to `joint`.
      base: logarithm base; `None` for nats.
      check: add checkify checks on each table.

    Returns:
      One value per table (`joint.shape[:-2]`), `>= 0`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.mutual_information(jnp.array([[0.5, 0.0], [0.0, 0.5]]), base=2))
      1.0
      >>> print(jaxkl.mutual_information(jnp.full((2, 3), 1 / 6)))
      0.0

    References:
      Cover & Thomas, "Elements of Information Theory", 2nd ed. (2006), sec. 2.4.
    """
    p, base, dtype = _probabilities(joint, where, base, check)
    return in_base(_mutual_information(p), base).astype(dtype)


def _mutual_information(p):
    product = jnp.sum(p, axis=-1, keepdims=True) * jnp.sum(p, axis=-2, keepdims=True)
    return clip_value_only(_sum_xy(rel_entr(p, product)), 0.0, None)


def mutual_information_from_counts(counts: Any, *, base: float | None = None) -> jax.Array:
    r"""Mutual information of the empirical joint distribution of a contingency table.

    $$
    I(X; Y) = \sum_{x, y} \frac{n_{xy}}{N} \log \frac{N\, n_{xy}}{n_{x\cdot}\, n_{\cdot y}},
    \qquad N = \sum_{x, y} n_{xy}
    $$

    Matches `sklearn.metrics.mutual_info_score(None, None, contingency=counts)`
    (nats by default). Counts (integers or floats) are accumulated in float64
    when `jax_enable_x64` is on (float32 loses about 1e-4 relative on large
    tables) and in float32 otherwise. An empty table gives 0; the value is
    never negative.

    Args:
      counts: non-negative counts `[..., X, Y]`, integer or floating point.
      base: logarithm base; `None` for nats.

    Returns:
      One value per table (`counts.shape[:-2]`), in float64 with x64 on,
      otherwise float32.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.mutual_information_from_counts(jnp.array([[10, 0], [0, 10]]), base=2))
      1.0

    References:
      Cover & Thomas, "Elements of Information Theory", 2nd ed. (2006), sec. 2.4;
      scikit-learn, `sklearn.metrics.mutual_info_score`.
    """
    counts = _validate.as_array(counts, "counts")
    if counts.dtype == jnp.bool_ or not (
        jnp.issubdtype(counts.dtype, jnp.integer) or jnp.issubdtype(counts.dtype, jnp.floating)
    ):
        raise TypeError(f"counts must be an integer or floating-point array, got dtype {counts.dtype}")
    if counts.ndim < 2:
        raise ValueError(f"counts must have at least 2 axes [..., X, Y], got shape {counts.shape}")
    base = _validate.base(base)
    # float64 where x64 is on: canonicalize_dtype maps it to float32 otherwise.
    wide = jax.dtypes.canonicalize_dtype(jnp.float64)
    n = counts.astype(wide)
    total = jnp.sum(n, axis=(-2, -1), keepdims=True)
    p = n / jnp.where(total == 0, 1.0, total)
    return in_base(_mutual_information(p), base)


# ------------------------------------------------------------------ from logits


def joint_entropy_from_logits(
    logits: Any, *, where: Any = None, base: float | None = None
) -> jax.Array:
    r"""Joint entropy $H(X, Y)$ of `softmax` over both axes of `logits[..., X, Y]`.

    $$
    p(x, y) = \frac{e^{z_{xy}}}{\sum_{x', y'} e^{z_{x'y'}}}, \qquad
    H(X, Y) = -\sum_{x, y} p(x, y) \log p(x, y)
    $$

    [jaxkl.entropy_from_logits][] of the table read as one row. Also accepts
    a table of log-probabilities; `-inf` cells have probability 0.

    Args:
      logits: `[..., X, Y]` floating point.
      where: optional boolean mask broadcastable to `logits`; excluded cells
        are removed (the table is renormalised over the rest).
      base: logarithm base; `None` for nats.

    Returns:
      One value per table (`logits.shape[:-2]`).

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.joint_entropy_from_logits(jnp.zeros((2, 4)), base=2))
      3.0

    References:
      Cover & Thomas, "Elements of Information Theory", 2nd ed. (2006), sec. 2.2.
    """
    x, where = _table(logits, "logits", where)
    return entropy_from_logits(_flat(x), where=_flat(where), base=base)


def _marginal_entropy_from_logits(x, where, axis, base):
    """The entropy of one marginal: its logits are the log-sum-exp of the joint's over the other axis."""
    return entropy_from_logits(logsumexp(x, axis, where=where), base=base)


def conditional_entropy_from_logits(
    logits: Any, *, where: Any = None, base: float | None = None
) -> jax.Array:
    r"""Conditional entropy $H(Y \mid X)$ of `softmax` over both axes of `logits[..., X, Y]`.

    $$
    H(Y \mid X) = H(X, Y) - H(X)
    $$

    The marginal of `X` has logits $\operatorname{logsumexp}_y z_{xy}$, so both
    entropies come from [jaxkl.entropy_from_logits][] with O(rows) residuals.
    The difference is clamped at 0 against rounding (its absolute error is
    about $\epsilon \cdot H(X, Y)$).

    Args:
      logits: `[..., X, Y]` floating point.
      where: optional boolean mask broadcastable to `logits`.
      base: logarithm base; `None` for nats.

    Returns:
      One value per table (`logits.shape[:-2]`), `>= 0`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.conditional_entropy_from_logits(jnp.zeros((2, 4)), base=2))
      2.0

    References:
      Cover & Thomas, "Elements of Information Theory", 2nd ed. (2006), sec. 2.2.
    """
    x, where = _table(logits, "logits", where)
    h = joint_entropy_from_logits(x, where=where, base=base) - _marginal_entropy_from_logits(x, where, -1, base)
    return clip_value_only(h, 0.0, None)


def mutual_information_from_logits(
    logits: Any, *, where: Any = None, base: float | None = None
) -> jax.Array:
    r"""Mutual information $I(X; Y)$ of `softmax` over both axes of `logits[..., X, Y]`.

    $$
    I(X; Y) = H(X) + H(Y) - H(X, Y)
    $$

    Each entropy is [jaxkl.entropy_from_logits][] of the joint's or a
    marginal's logits (a log-sum-exp over the other axis), with O(rows)
    residuals. The value is clamped at 0 against rounding; its absolute error
    is about $\epsilon \cdot H(X, Y)$, so for nearly independent tables in
    float32 prefer [jaxkl.mutual_information][] of `jaxkl.softmax` of the
    flattened table, which sums non-negative terms.

    Args:
      logits: `[..., X, Y]` floating point.
      where: optional boolean mask broadcastable to `logits`.
      base: logarithm base; `None` for nats.

    Returns:
      One value per table (`logits.shape[:-2]`), `>= 0`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> ninf = -jnp.inf
      >>> print(jaxkl.mutual_information_from_logits(jnp.array([[0.0, ninf], [ninf, 0.0]]), base=2))
      1.0

    References:
      Cover & Thomas, "Elements of Information Theory", 2nd ed. (2006), sec. 2.4.
    """
    x, where = _table(logits, "logits", where)
    marginals = sum(_marginal_entropy_from_logits(x, where, axis, base) for axis in (-1, -2))
    return clip_value_only(marginals - joint_entropy_from_logits(x, where=where, base=base), 0.0, None)
