"""Monte Carlo estimators of KL(q || p) from samples of q (Schulman's k1, k2, k3)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _validate
from ._reductions import reduce
from ._rowwise import clip_value, compute_dtype

ESTIMATORS = ("k1", "k2", "k3")

# expm1(x) - x loses digits to cancellation for small |x| (relative error about
# 2 eps / |x|, already 20 eps at 0.1). Below 0.5 the Taylor series
# x^2/2! + x^3/3! + ... is used instead: its terms shrink fast, and those up to
# x^18/18! reach float64 precision at |x| = 0.5 (the next is 1e-19 relative).
_SERIES_BELOW = 0.5
_SERIES_TERMS = 18


def _expm1_minus_x(x: jax.Array) -> jax.Array:
    """`e^x - 1 - x` without cancellation near 0 and with finite gradients everywhere."""
    small = jnp.abs(x) < _SERIES_BELOW
    # Double where: the unused branch sees a harmless argument, so its
    # derivative cannot be inf/NaN (a huge x in the series would overflow).
    xs = jnp.where(small, x, 0.0)
    series = jnp.zeros_like(xs)
    for n in range(_SERIES_TERMS, 1, -1):
        factorial = 1.0
        for i in range(2, n + 1):
            factorial *= i
        series = (series + 1.0 / factorial) * xs
    series = series * xs  # sum_{n>=2} x^n / n!, evaluated by Horner's rule
    xl = jnp.where(small | (x == jnp.inf), 1.0, x)
    large = jnp.where(x == jnp.inf, jnp.inf, jnp.expm1(xl) - xl)  # r = inf: inf, not inf - inf
    return jnp.where(small, series, large)


def kl_estimate(
    log_q: ArrayLike,
    log_p: ArrayLike,
    *,
    estimator: str = "k3",
    reduction: str = "mean",
    where: ArrayLike | None = None,
) -> jax.Array:
    r"""Monte Carlo estimate of $\mathrm{KL}(q \,\|\, p)$ from samples `x ~ q`.

    Arguments are per-sample log-densities (or log-probabilities of sampled
    tokens) of the sampled points under `q` (the sampling distribution,
    e.g. the policy) and `p` (e.g. the reference model). With
    $\log r = \log p(x) - \log q(x)$, the per-sample estimators are
    (Schulman 2020):

    * `"k1"`: $-\log r$ — unbiased for the value, high variance, can
      be negative;
    * `"k2"`: $\tfrac12 (\log r)^2$ — biased for the value (low bias
      when `p` and `q` are close), always `>= 0`;
    * `"k3"`: $(r - 1) - \log r$ — unbiased for the value (because
      $\mathbb{E}_q[r] = 1$), lower variance than k1, always `>= 0`;
      computed as `expm1(log r) - log r` with a Taylor series near 0, so no
      digits are lost to cancellation when `p` and `q` are close.

    **Gradients.** Unbiasedness of a *value* does not make the *gradient* of a
    loss built from it the gradient of KL when the samples come from `q_θ`
    itself (samples treated as constants, the usual RLHF setting):

    * `mean(k1)` has gradient $\mathbb{E}_q[\nabla \log q_θ] = 0$ in
      expectation — it pushes nothing;
    * `mean(k2)` has gradient $\mathbb{E}_q[(\log q_θ - \log p)\nabla \log q_θ]
      = \nabla_θ \mathrm{KL}(q_θ \,\|\, p)$: the exact (unbiased) gradient of reverse KL;
    * `mean(k3)` has gradient $-\mathbb{E}_p[\nabla \log q_θ] =
      \nabla_θ \mathrm{KL}(p \,\|\, q_θ)$: the gradient of the *other*
      direction (as used, e.g., as GRPO's KL penalty);
    * the score-function form `mean(stop_gradient(k1) * log_q)` also gives
      $\nabla_θ \mathrm{KL}(q_θ\|p)$ unbiasedly (REINFORCE).

    For reparameterised samples (`x` itself depends on θ) the pathwise
    gradient of `mean(k1)` is unbiased. None of this is specific to jaxkl;
    it is verified by sampling in the tests.

    Args:
      log_q: `log q(x_i)` of samples `x_i ~ q`, any shape.
      log_p: `log p(x_i)`, same shape as `log_q`.
      estimator: `"k1"`, `"k2"` or `"k3"`.
      reduction: over samples, as [jaxkl.reduce][] (`"mean"` is the estimate).
      where: optional boolean mask over samples (e.g. padding tokens).

    Returns:
      A scalar, or per-sample values for `"none"`; dtype of the inputs.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> log_q = jnp.log(jnp.array([0.5, 0.25, 0.25]))
      >>> log_p = jnp.log(jnp.array([0.25, 0.5, 0.25]))
      >>> print(jaxkl.kl_estimate(log_q, log_p, estimator="k3", reduction="none").round(6))
      [0.193147 0.306853 0.      ]

    References:
      J. Schulman, "Approximating KL Divergence" (2020),
      http://joschu.net/blog/kl-approx.html; Shao et al., "DeepSeekMath"
      (2024) for k3 as the GRPO KL penalty; Tang & Munos, "On a few pitfalls in
      KL divergence gradient estimation for RL" (2025).
    """
    lq = _validate.float_array(log_q, "log_q")
    lp = _validate.float_array(log_p, "log_p")
    _validate.same_shape(lq, lp, "log_q", "log_p")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    reduction = _validate.reduction(reduction)
    where = _validate.mask(where, lq.shape)
    dtype = _validate.common_dtype(lq, lp)
    acc = compute_dtype(dtype)
    log_r = lp.astype(acc) - lq.astype(acc)
    if where is not None:
        # Masked samples (padding) may hold anything; 0 keeps their gradient 0, not NaN.
        log_r = jnp.where(where, log_r, 0.0)
    if estimator == "k1":
        values = -log_r
    elif estimator == "k2":
        values = 0.5 * jnp.square(log_r)
    else:
        values = clip_value(_expm1_minus_x(log_r), 0.0, None)
    return reduce(values, reduction, where=where).astype(dtype)
