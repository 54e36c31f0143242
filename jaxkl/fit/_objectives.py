"""Objectives and estimators: the loss `L(q)` the fitter minimises for one start.

A target is one of three things: a jaxkl distribution, an unnormalised
log-density callable (one point in, a scalar out), or an array of samples.
Every loss returns one scalar per start (values over the target's own batch
dimensions are summed).

Estimators:

* `analytic` -- a registered closed form ([jaxkl.distributions.kl_divergence][]);
* `grid` -- both densities evaluated on a user grid, normalised on it in log
  space (`softmax` of the log-densities: equal-weight quadrature on a regular
  grid) and compared with the core logits kernels;
* `mc` -- Monte Carlo: reparameterised samples of `q` for the reverse
  direction, samples of the target (or the given samples) for the forward one.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from .. import _validate
from .._logits import js_divergence_from_logits, kl_divergence_from_logits
from .._softmax import softmax
from ..distributions import Distribution, has_kl, kl_divergence

OBJECTIVES = ("forward_kl", "reverse_kl", "js", "mse", "l1", "cosine")
ESTIMATORS = ("auto", "analytic", "grid", "mc")
_GRID_ONLY = ("mse", "l1", "cosine")


class LossSpec(NamedTuple):
    """The hashable description `make_loss` builds a loss from (a static argument of `jit`)."""

    kind: str  # the target's kind: "distribution", "log_density" or "samples"
    objective: str
    estimator: str  # resolved: "analytic", "grid" or "mc"
    num_samples: int  # draws per step for "mc"
    log_density: Callable[..., jax.Array] | None  # the target itself when it is a callable


class Target:
    """What is being fitted: a distribution, a log-density callable or samples."""

    def __init__(self, target: Any):
        if isinstance(target, Distribution):
            self.kind, self.value = "distribution", target
            self.batch_shape, self.event_shape = target.batch_shape, target.event_shape
        elif callable(target):
            self.kind, self.value = "log_density", target
            self.batch_shape, self.event_shape = (), None
        else:
            samples = _validate.as_array(target, "target")
            if samples.ndim < 1 or samples.shape[0] == 0:
                raise ValueError(
                    f"target samples must have shape [n, *event_shape] with n > 0, "
                    f"got {samples.shape}"
                )
            self.kind, self.value = "samples", samples
            self.batch_shape, self.event_shape = (), tuple(samples.shape[1:])

    def log_prob(self, x: jax.Array, event_ndims: int) -> jax.Array:
        """Log density at `x = [n, ..., *event]` (unnormalised for a callable)."""
        if self.kind == "samples":
            raise ValueError("a target given as samples has no density")
        return _target_log_prob(self.kind, self.value, x, event_ndims)

    def spec(self, objective: str, estimator: str, num_samples: int) -> LossSpec:
        """The hashable description `make_loss` builds the loss from."""
        n = int(num_samples)
        if n < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples!r}")
        log_density = self.value if self.kind == "log_density" else None
        return LossSpec(self.kind, objective, estimator, n, log_density)

    @property
    def arrays(self) -> Any:
        """The target's traced part: a distribution or samples (None for a callable)."""
        return None if self.kind == "log_density" else self.value


def resolve_estimator(
    objective: str, estimator: str, target: Target, init: Distribution, grid: Any
) -> str:
    """Validate the objective/estimator pair for this target and pick one for 'auto'."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    analytic_ok = (
        objective in ("forward_kl", "reverse_kl")
        and target.kind == "distribution"
        and (has_kl(target.value, init) if objective == "forward_kl" else has_kl(init, target.value))
    )
    if estimator == "auto":
        if analytic_ok:
            estimator = "analytic"
        elif grid is not None and target.kind != "samples":
            estimator = "grid"
        else:
            estimator = "mc"
    if estimator == "analytic" and not analytic_ok:
        raise ValueError(
            f"no analytic {objective} for target {_describe(target)} and {type(init).__name__}; "
            "use estimator='grid' or 'mc'"
        )
    if objective in _GRID_ONLY and estimator != "grid":
        raise ValueError(f"objective={objective!r} compares densities on a grid: pass grid=")
    if estimator == "grid":
        if grid is None:
            raise ValueError("estimator='grid' needs grid= (points of shape [n, *event_shape])")
        if target.kind == "samples":
            raise ValueError("a target given as samples has no density to put on a grid")
    if estimator == "mc":
        if target.kind == "samples" and objective != "forward_kl":
            raise ValueError(
                f"a target given as samples supports only objective='forward_kl' "
                f"(maximum likelihood), got {objective!r}"
            )
        if target.kind == "log_density" and objective != "reverse_kl":
            raise ValueError(
                f"objective={objective!r} by Monte Carlo needs samples from the target; a "
                "log-density callable supports reverse_kl by Monte Carlo, or pass grid="
            )
        if objective in ("reverse_kl", "js") and not init.reparameterized:
            raise ValueError(
                f"{type(init).__name__} samples are not reparameterised, so {objective!r} "
                "by Monte Carlo has no useful gradient; pass grid= or use estimator='analytic'"
            )
    return estimator


def _describe(target: Target) -> str:
    return type(target.value).__name__ if target.kind == "distribution" else target.kind


def _target_log_prob(kind: str, value: Any, x: jax.Array, event_ndims: int) -> jax.Array:
    """Log density of the target at `x = [n, ..., *event]` (unnormalised for a callable)."""
    if kind == "distribution":
        return value.log_prob(x)
    fn = value
    for _ in range(x.ndim - event_ndims):
        fn = jax.vmap(fn)
    return fn(x)


def _grid_logits(kind: str, value: Any, q: Distribution, grid: jax.Array):
    """Log densities on the grid with the grid axis last: `[*batch, n]` each."""
    event_ndims = len(q.event_shape)
    n = grid.shape[0]
    points = grid.reshape((n,) + (1,) * len(q.batch_shape) + tuple(q.event_shape))
    q_logits = jnp.moveaxis(q.log_prob(points), 0, -1)
    p_logits = jnp.moveaxis(_target_log_prob(kind, value, points, event_ndims), 0, -1)
    p_logits = jnp.broadcast_to(p_logits.astype(q_logits.dtype), q_logits.shape)
    return p_logits, q_logits


def _grid_loss(objective: str, p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
    if objective == "forward_kl":
        return kl_divergence_from_logits(p_logits, q_logits)
    if objective == "reverse_kl":
        return kl_divergence_from_logits(q_logits, p_logits)
    if objective == "js":
        return js_divergence_from_logits(p_logits, q_logits)
    p, q = softmax(p_logits), softmax(q_logits)
    if objective == "mse":
        return jnp.sum(jnp.square(p - q), axis=-1)
    if objective == "l1":
        return jnp.sum(jnp.abs(p - q), axis=-1)
    # cosine distance; the masses are non-negative so this lies in [0, 1]
    dot = jnp.sum(p * q, axis=-1)
    norms = jnp.sqrt(jnp.sum(p * p, axis=-1) * jnp.sum(q * q, axis=-1))
    return 1.0 - dot / norms


def make_loss(spec: LossSpec) -> Callable[..., jax.Array]:
    """`loss(q, key, target, grid) -> scalar` for one start.

    `spec` is hashable (it is a static argument of the compiled loop); the target's
    arrays (a distribution or samples) and the grid are passed as `target` and
    `grid` so that a second fit with new values reuses the compilation.
    """
    kind, objective, estimator, n, log_density = spec

    def p_log_prob(target, x, q):
        value = log_density if kind == "log_density" else target
        return _target_log_prob(kind, value, x, len(q.event_shape))

    if estimator == "analytic":
        if objective == "forward_kl":
            return lambda q, key, target, grid: jnp.sum(kl_divergence(target, q))
        return lambda q, key, target, grid: jnp.sum(kl_divergence(q, target))

    if estimator == "grid":

        def grid_loss(q, key, target, grid):
            value = log_density if kind == "log_density" else target
            p_logits, q_logits = _grid_logits(kind, value, q, grid.astype(q.dtype))
            return jnp.sum(_grid_loss(objective, p_logits, q_logits))

        return grid_loss

    if kind == "samples":  # forward KL = maximum likelihood, up to H(target)

        def nll(q, key, samples, grid):
            x = samples.reshape(samples.shape[:1] + (1,) * len(q.batch_shape) + samples.shape[1:])
            # integer samples (class indices, counts) stay integers for discrete families
            x = x if jnp.issubdtype(x.dtype, jnp.integer) else x.astype(q.dtype)
            return jnp.sum(-jnp.mean(q.log_prob(x), axis=0))

        return nll

    if objective == "forward_kl":

        def forward(q, key, target, grid):
            x = jax.lax.stop_gradient(target.sample(key, (n,)))
            return jnp.sum(jnp.mean(p_log_prob(target, x, q) - q.log_prob(x), axis=0))

        return forward

    if objective == "reverse_kl":

        def reverse(q, key, target, grid):
            x = q.sample(key, (n,))
            return jnp.sum(jnp.mean(q.log_prob(x) - p_log_prob(target, x, q), axis=0))

        return reverse

    log2 = math.log(2.0)

    def js(q, key, target, grid):
        key_p, key_q = jax.random.split(key)
        xp = jax.lax.stop_gradient(target.sample(key_p, (n,)))
        xq = q.sample(key_q, (n,))
        lp_p, lq_p = p_log_prob(target, xp, q), q.log_prob(xp)
        lp_q, lq_q = p_log_prob(target, xq, q), q.log_prob(xq)
        term_p = lp_p - (jnp.logaddexp(lp_p, lq_p) - log2)
        term_q = lq_q - (jnp.logaddexp(lp_q, lq_q) - log2)
        return jnp.sum(0.5 * jnp.mean(term_p, axis=0) + 0.5 * jnp.mean(term_q, axis=0))

    return js
