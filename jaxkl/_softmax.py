"""`logsumexp`, `log_softmax` and `softmax` with stable custom derivatives."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _validate
from ._axes import class_axes
from ._rowwise import (
    Axis,
    log_normalizer,
    log_probs,
    logsumexp_of,
    prepare_logits,
    row_kernel,
    row_sum,
    with_tangent,
)

# Every kernel below takes `static = Axis(axis, axis_name)`; `axis_name` names
# the mesh axis the class axis is sharded over inside `shard_map` (or None).


def _prepared(x, where, axis, axis_name):
    """Validated logits, mask and static `(axis, axis_name)` shared by the three primitives."""
    x = _validate.float_array(x, "x")
    axis = _validate.normalize_axis(axis, x.ndim)
    where = _validate.mask(where, x.shape)
    return x, where, Axis(axis, _validate.axis_name(axis_name))


def _probabilities(x, where, norm):
    return jnp.exp(log_probs(prepare_logits(x, where), norm))


def _lse_forward(static, x, where):
    axis, axis_name = static
    norm = log_normalizer(prepare_logits(x, where), axis, axis_name)
    return jnp.squeeze(logsumexp_of(norm), axis).astype(x.dtype), norm


def _lse_tangent(static, arrays, norm, tangents):
    x, where = arrays
    return with_tangent(_probabilities(x, where, norm), tangents[0], *static)


_logsumexp = row_kernel(_lse_forward, _lse_tangent, ("full", "mask"))


@class_axes("x")
def logsumexp(x: ArrayLike, axis: int | tuple[int, ...] = -1, *, where: ArrayLike | None = None, axis_name: Any = None) -> jax.Array:
    r"""Log of the sum of exponentials over one axis, stable and safe to differentiate.

    $$
    \operatorname{logsumexp}(x) = \log \sum_i \mathbb{1}[\text{where}_i]\, e^{x_i}
    $$

    The row maximum is subtracted before exponentiating, so logits of any
    magnitude work. A row that is empty, entirely `-inf` or entirely masked
    gives `-inf` with a **zero** gradient (`jax.nn.logsumexp` gives a NaN
    gradient there). bfloat16/float16 inputs are accumulated in float32 and the
    result is returned in the input dtype.

    Args:
      x: logits, any shape `[..., K, ...]`, floating point.
      axis: the class axis to reduce, or a tuple of axes whose product is the classes.
      where: optional boolean mask broadcastable to `x`; `False` classes are
        excluded (treated as `-inf`) and receive zero gradient.
      axis_name: mesh axis name over which `axis` is sharded, when called
        inside `shard_map`; row statistics are combined with `lax.pmax` /
        `lax.psum` and the class axis is never gathered.

    Returns:
      `x` with `axis` removed, dtype of `x`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.logsumexp(jnp.array([0.0, jnp.log(3.0)])).round(4))
      1.3863
      >>> print(jaxkl.logsumexp(jnp.array([-jnp.inf, -jnp.inf])))
      -inf

    References:
      Blanchard, Higham & Higham, "Accurately computing the log-sum-exp and
      softmax functions", IMA J. Numer. Anal. 41 (2021).
    """
    x, where, static = _prepared(x, where, axis, axis_name)
    return _logsumexp(static, x, where)


def _log_softmax_forward(static, x, where):
    z = prepare_logits(x, where)
    norm = log_normalizer(z, *static)
    logp = log_probs(z, norm)
    if where is not None:
        # A constant -inf, so that differentiating this rule (higher order) gives 0 there.
        logp = jnp.where(where, logp, -jnp.inf)
    return logp.astype(x.dtype), norm


def _centred_tangent(x, where, norm, dx, static):
    """`dx - sum(softmax(x) * dx)`: the tangent of `log_softmax`."""
    p = _probabilities(x, where, norm)
    dx = dx.astype(p.dtype)
    return dx - row_sum(p * dx, *static, keepdims=True), p


def _log_softmax_tangent(static, arrays, norm, tangents):
    x, where = arrays
    t, _ = _centred_tangent(x, where, norm, tangents[0], static)
    # An excluded class has the constant output -inf: its tangent is 0.
    return t if where is None else jnp.where(where, t, 0.0)


_log_softmax = row_kernel(_log_softmax_forward, _log_softmax_tangent, ("full", "mask"))


@class_axes("x", same_shape=True)
def log_softmax(x: ArrayLike, axis: int | tuple[int, ...] = -1, *, where: ArrayLike | None = None, axis_name: Any = None) -> jax.Array:
    r"""Log-probabilities `x - logsumexp(x)` with a stable, cheap derivative.

    $$
    \log \operatorname{softmax}(x)_i = x_i - \log \sum_j e^{x_j}
    $$

    The derivative is rebuilt from `x` and one log-normaliser per row, so
    reverse mode stores nothing the size of `x` beyond the output. Masked
    classes come out as `-inf` with zero gradient; an entirely masked or
    `-inf` row gives `-inf` everywhere and no NaN. Low-precision inputs are
    accumulated in float32: 1e5 equal float16 logits give `-11.5129`, not
    `-inf`.

    Args:
      x: logits `[..., K, ...]`, floating point.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask broadcastable to `x`.
      axis_name: mesh axis name over which `axis` is sharded inside
        `shard_map` (see [jaxkl.logsumexp][]), or None.

    Returns:
      An array shaped like `x` with the dtype of `x`.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.log_softmax(jnp.array([1.0, 1.0])))
      [-0.6931472 -0.6931472]
      >>> print(jaxkl.log_softmax(jnp.array([0.0, 5.0]), where=jnp.array([True, False])))
      [  0. -inf]

    References:
      Bridle, "Probabilistic interpretation of feedforward classification
      network outputs" (1990).
    """
    x, where, static = _prepared(x, where, axis, axis_name)
    return _log_softmax(static, x, where)


def _softmax_forward(static, x, where):
    z = prepare_logits(x, where)
    norm = log_normalizer(z, *static)
    return jnp.exp(log_probs(z, norm)).astype(x.dtype), norm


def _softmax_tangent(static, arrays, norm, tangents):
    x, where = arrays
    t, p = _centred_tangent(x, where, norm, tangents[0], static)
    return p * t


_softmax = row_kernel(_softmax_forward, _softmax_tangent, ("full", "mask"))


@class_axes("x", same_shape=True)
def softmax(x: ArrayLike, axis: int | tuple[int, ...] = -1, *, where: ArrayLike | None = None, axis_name: Any = None) -> jax.Array:
    r"""Probabilities `exp(x - logsumexp(x))` with a stable, cheap derivative.

    $$
    \operatorname{softmax}(x)_i = e^{x_i} / \sum_j e^{x_j}
    $$

    Masked classes get probability 0 and a zero gradient even when their
    logit is huge (`jax.nn.softmax` with `where` returns a NaN gradient
    there). An entirely masked row gives all zeros.

    Args:
      x: logits `[..., K, ...]`, floating point.
      axis: the class axis, or a tuple of axes whose product is the classes.
      where: optional boolean mask broadcastable to `x`.
      axis_name: mesh axis name over which `axis` is sharded inside
        `shard_map` (see [jaxkl.logsumexp][]), or None.

    Returns:
      An array shaped like `x` with the dtype of `x`; each row sums to 1
      (or 0 if it is entirely masked).

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> print(jaxkl.softmax(jnp.array([0.0, jnp.log(3.0)])))
      [0.25 0.75]

    References:
      Bridle, "Probabilistic interpretation of feedforward classification
      network outputs" (1990).
    """
    x, where, static = _prepared(x, where, axis, axis_name)
    return _softmax(static, x, where)
