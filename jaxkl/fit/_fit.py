"""The fitter: optax on unconstrained parameters, one `lax.scan` per chunk under `jit`.

All starts (the leading batch dimensions of `init`) are flattened to one
axis and advanced together with `vmap`; each start has its own optimiser
state, its own convergence flag and its own failure flag. A start that
converges (`|loss_t - loss_{t-1}| < tol`) or whose loss or gradient is not
finite is frozen in place while the others continue. The scan runs in chunks
of equal length (the last one padded with frozen steps, so there is one
compilation) and control returns to Python between chunks to report progress
and stop early.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _validate
from ..distributions import Distribution
from . import _progress
from ._objectives import Target, make_loss, resolve_estimator
from ._transforms import constrain, unconstrain

_CHUNKS = 20  # progress updates per fit when progress or tol needs them
# One default instance, so fits with the default optimizer share compilations.
_DEFAULT_OPTIMIZER = optax.adam(0.05)


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What [jaxkl.fit.fit][] returns.

    Attributes:
      dist: the fitted distribution(s), same type and batch shape as `init`.
      losses: `[T, *starts]` loss history; `losses[t]` is the loss at the
        parameters before update `t`. A start that stopped early repeats its
        last loss.
      steps: `[*starts]` number of updates applied to each start.
      converged: `[*starts]` whether the `tol` criterion was met (all
        `False` when `tol` is None).
      failed: `[*starts]` whether the loss or gradient became NaN/inf (only
        reachable with `on_nan="warn"`; `"raise"` raises instead).
      failed_step: `[*starts]` the step at which it did, `-1` otherwise.
      objective: the objective that was minimised.
      estimator: the estimator that was used (`"auto"` resolved).

    Examples:
      >>> import jax.numpy as jnp
      >>> from jaxkl.distributions import Normal
      >>> from jaxkl.fit import fit
      >>> r = fit(Normal(1.0, 1.0), Normal(jnp.zeros(3), 1.0), steps=10, progress=False)
      >>> r.steps.tolist(), r.converged.tolist(), r.estimator
      ([10, 10, 10], [False, False, False], 'analytic')

    References:
      See [jaxkl.fit.fit][].
    """

    dist: Distribution
    losses: np.ndarray
    steps: np.ndarray
    converged: np.ndarray
    failed: np.ndarray
    failed_step: np.ndarray
    objective: str
    estimator: str


class _Carry(NamedTuple):
    """The state `lax.scan` carries from step to step; all but `key` lead with the start axis."""

    free: Any  # unconstrained parameters
    opt_state: Any  # the optimiser's state
    key: jax.Array  # PRNG key for Monte Carlo estimators (one, shared by all starts)
    last_loss: jax.Array  # the latest finite loss (inf before the first step)
    active: jax.Array  # still updating: neither converged, failed nor done
    converged: jax.Array  # met the `tol` criterion
    failed_step: jax.Array  # the step whose loss or gradient was not finite, -1 if none
    steps_taken: jax.Array  # updates applied


def _select(mask: jax.Array, new: Any, old: Any) -> Any:
    """Per start, `new` where `mask` else `old` (leaves lead with the start axis)."""

    def pick(a, b):
        m = jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a.shape)
        return jnp.where(m, a, b)

    return jax.tree.map(pick, new, old)


def _all_finite(tree: Any) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    flat = [jnp.all(jnp.isfinite(x).reshape(x.shape[0], -1), axis=1) for x in leaves]
    return jnp.all(jnp.stack(flat), axis=0)


def _optax_promotion():
    """optax mixes Python floats and int32 counters: let it, even under strict promotion."""
    stack = contextlib.ExitStack()
    stack.enter_context(jax.numpy_dtype_promotion("standard"))
    stack.enter_context(jax.numpy_rank_promotion("allow"))
    return stack


def _init_state(optimizer, free):
    with _optax_promotion():
        return jax.vmap(optimizer.init)(free)


@functools.partial(jax.jit, static_argnames=("spec", "optimizer", "length", "use_tol"))
def _fit_chunk(carry, start, steps, tol, target, grid, *, spec, optimizer, length, use_tol):
    """`length` steps of the fit for every start, as one `lax.scan`.

    Everything that changes the program is static (`spec`, the optimizer,
    the chunk length); the target's arrays, the grid, `steps` and `tol` are
    traced, so fitting new data of the same shapes reuses the compilation.
    """
    loss_fn = make_loss(spec)
    stochastic = spec.estimator == "mc"

    def loss_of(free, key):
        return loss_fn(constrain(free), key, target, grid)

    value_and_grad = jax.vmap(jax.value_and_grad(loss_of))
    update = jax.vmap(optimizer.update)

    def step(carry: _Carry, t):
        free, opt_state, key, last, active, converged, failed_step, count = carry
        if stochastic:
            key, sub = jax.random.split(key)
            keys = jax.random.split(sub, last.shape[0])
        else:  # deterministic losses ignore the key: skip the (costly to compile) RNG
            keys = jnp.zeros(last.shape[0])
        loss, grads = value_and_grad(free, keys)
        with _optax_promotion():
            updates, new_state = update(grads, opt_state, free)
            new_free = optax.apply_updates(free, updates)
        live = active & (t < steps)
        finite = jnp.isfinite(loss) & _all_finite(grads)
        ok = live & finite
        failed_step = jnp.where(live & ~finite, t, failed_step)
        active = active & finite
        if use_tol:
            done = ok & (count > 0) & (jnp.abs(loss - last) < tol)
            converged = converged | done
            active = active & ~done
        free = _select(ok, new_free, free)
        opt_state = _select(ok, new_state, opt_state)
        record = jnp.where(ok, loss, last)
        last = jnp.where(ok, loss, last)
        count = count + ok.astype(count.dtype)
        carry = _Carry(free, opt_state, key, last, active, converged, failed_step, count)
        return carry, record

    return jax.lax.scan(step, carry, start + jnp.arange(length, dtype=jnp.int32))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _initial_carry(init, key, optimizer, starts):
    """Everything the scan carries, built in one compiled call (not dozens of eager ops)."""
    n_starts, lead = math.prod(starts), len(starts)
    free = jax.tree.map(lambda x: x.reshape((n_starts,) + x.shape[lead:]), unconstrain(init))
    return _Carry(
        free=free,
        opt_state=_init_state(optimizer, free),
        key=key,
        last_loss=jnp.full((n_starts,), jnp.inf, init.dtype),
        active=jnp.ones((n_starts,), bool),
        converged=jnp.zeros((n_starts,), bool),
        failed_step=jnp.full((n_starts,), -1, jnp.int32),
        steps_taken=jnp.zeros((n_starts,), jnp.int32),
    )


@functools.partial(jax.jit, static_argnums=1)
def _final_dist(free, starts):
    return jax.tree.map(lambda x: x.reshape(starts + x.shape[1:]), constrain(free))


def _warn_if_grid_misses(grid: jax.Array, dist: Distribution, what: str) -> None:
    """Warn when a 1-D grid holds less than half of a continuous density's mass.

    The grid estimators normalise both densities on the grid, so a grid that
    misses them still gives a small, finite-looking loss.
    """
    if dist.event_shape != () or not jnp.issubdtype(dist.sample(jax.random.key(0)).dtype, jnp.floating):
        return
    x = np.asarray(grid, np.float64)
    points = jnp.asarray(x.reshape((-1,) + (1,) * len(dist.batch_shape)), dist.dtype)
    density = np.exp(np.asarray(dist.log_prob(points), np.float64)).reshape(x.shape[0], -1)
    mass = np.sum(0.5 * (density[1:] + density[:-1]) * np.diff(x)[:, None], axis=0)
    if np.nanmin(mass, initial=1.0) < 0.5:
        warnings.warn(
            f"fit: the grid [{x.min():.3g}, {x.max():.3g}] holds only {np.nanmin(mass):.3g} of "
            f"{what}'s probability mass; the grid loss normalises on the grid, so it is "
            "meaningless there: widen the grid",
            RuntimeWarning,
            stacklevel=3,
        )


def _validate_grid(grid: Any, init: Distribution) -> jax.Array:
    grid = _validate.as_array(grid, "grid")
    event = tuple(init.event_shape)
    if grid.ndim != 1 + len(event) or tuple(grid.shape[1:]) != event or grid.shape[0] < 2:
        raise ValueError(
            f"grid must have shape [n, *event_shape] with event_shape={event} and n >= 2, "
            f"got {grid.shape}"
        )
    if not jnp.issubdtype(grid.dtype, jnp.floating):
        raise TypeError(f"grid must be floating point, got dtype {grid.dtype}")
    return grid


def _outside_support(init: Distribution, target: Target) -> str | None:
    """Why a fit failed when samples of the target have zero density under `init`, else None.

    Maximum likelihood on a sample outside the family's support (a negative
    value for an `Exponential`, a value above 1 for a `Beta`) has loss
    `+inf` and a NaN gradient from the first step, whatever the learning
    rate: the failure message says so instead of suggesting a smaller step.
    Evaluated only after a fit has failed.
    """
    if target.kind != "samples":
        return None
    samples = target.value
    # As the loss sees them: one axis per batch dimension of `init`, the event last.
    x = samples.reshape(samples.shape[:1] + (1,) * len(init.batch_shape) + samples.shape[1:])
    x = x if jnp.issubdtype(x.dtype, jnp.integer) else x.astype(init.dtype)
    log_prob = np.asarray(init.log_prob(x))
    outside = np.any((log_prob == -np.inf).reshape(log_prob.shape[0], -1), axis=1)
    count = int(outside.sum())
    if not count:
        return None
    first = np.asarray(samples[int(np.argmax(outside))])
    return (
        f"The data are outside the support of {type(init).__name__}: {count} of "
        f"{samples.shape[0]} target samples have zero density there (log_prob = -inf; the "
        f"first is {np.array2string(first, precision=6)}), so the negative log-likelihood is "
        "+inf whatever the step size. Check the data (sign, scale, range) or fit a family "
        "whose support covers them."
    )


def _starts_shape(init: Distribution, target: Target) -> tuple[int, ...]:
    batch, inner = init.batch_shape, target.batch_shape
    if len(inner) > len(batch) or tuple(batch[len(batch) - len(inner) :]) != tuple(inner):
        raise ValueError(
            f"init.batch_shape={batch} must end with the target's batch shape {inner} "
            "(leading dimensions are independent starts)"
        )
    if target.event_shape is not None and tuple(target.event_shape) != tuple(init.event_shape):
        raise ValueError(
            f"init.event_shape={init.event_shape} differs from the target's {target.event_shape}"
        )
    return tuple(batch[: len(batch) - len(inner)])


def fit(
    target: Any,
    init: Distribution,
    *,
    objective: str = "reverse_kl",
    estimator: str = "auto",
    optimizer: optax.GradientTransformation | None = None,
    steps: int = 1000,
    key: jax.Array | None = None,
    num_samples: int = 1000,
    grid: Any = None,
    tol: float | None = None,
    progress: bool = True,
    on_nan: str = "raise",
) -> FitResult:
    r"""Fit the parameters of `init` to `target` by minimising a divergence with optax.

    Objectives (`P` the target, `Q` the fitted distribution):

    * `"forward_kl"`: $\mathrm{KL}(P\|Q) = \mathbb E_P[\log P - \log Q]$
      -- mass-covering; on samples it is maximum likelihood (the loss is then the
      negative log-likelihood, i.e. the KL plus the unknown entropy of `P`);
    * `"reverse_kl"`: $\mathrm{KL}(Q\|P)$ -- mode-seeking; with an
      unnormalised log-density it is variational inference (the loss is the
      negative ELBO, i.e. the KL minus $\log Z$);
    * `"js"`: $\tfrac12\mathrm{KL}(P\|M) + \tfrac12\mathrm{KL}(Q\|M)$, $M = \tfrac{P+Q}2$;
    * `"mse"`, `"l1"`, `"cosine"`: $\sum_i (p_i-q_i)^2$, $\sum_i |p_i-q_i|$
      and $1 - p\cdot q/(\|p\|\|q\|)$ between the masses $p_i, q_i$ that the
      two densities put on the grid points (normalised on the grid) -- baselines for
      comparison studies.

    Estimators: `"analytic"` (a registered closed form), `"grid"`
    (densities on `grid` normalised there in log space, then the core logits
    kernels), `"mc"` (`num_samples` reparameterised draws of `Q`, or
    draws of `P` for the forward direction) and `"auto"`: analytic if
    registered, else grid if `grid` is given, else Monte Carlo.

    Parameters are optimised in an unconstrained space (softplus for scales
    and rates, a Cholesky factor with a softplus diagonal for covariances). The
    loop is a `jax.lax.scan` under `jit`, run in equal chunks so that
    progress can be reported between them; with `progress=False` and
    `tol=None` the whole fit is one jitted call. Leading batch dimensions of
    `init` beyond the target's batch shape are independent starts, fitted
    together with `vmap`.

    Args:
      target: a [jaxkl.distributions.Distribution][]; a callable mapping one
        point (shape `event_shape`) to its unnormalised log density; or an
        array of samples `[n, *event_shape]`.
      init: the starting distribution; its type is the fitted family. Shape
        `[*starts, *target_batch]`.
      objective: one of the above.
      estimator: `"auto"`, `"analytic"`, `"grid"` or `"mc"`.
      optimizer: an optax transformation; default `optax.adam(0.05)`.
      steps: maximum number of updates.
      key: PRNG key for Monte Carlo estimators; default `jax.random.key(0)`.
      num_samples: draws per step for Monte Carlo estimators.
      grid: `[n, *event_shape]` points of a regular grid covering both densities.
      tol: stop a start once its loss changes by less than `tol` in one step.
      progress: show a progress bar (rich if installed, else a line on stderr).
      on_nan: `"raise"` (default) raises `FloatingPointError` naming the step
        and start where the loss or gradient stopped being finite; `"warn"`
        freezes that start, warns, and marks it in `FitResult.failed`.

    Returns:
      A [jaxkl.fit.FitResult][].

    Raises:
      ValueError: an unknown objective/estimator, a combination the target
        cannot support, or shapes that do not match.
      FloatingPointError: a NaN/inf loss or gradient with `on_nan="raise"`.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from jaxkl.distributions import Normal
      >>> from jaxkl.fit import fit
      >>> r = fit(Normal(3.0, 2.0), Normal(jnp.zeros(4), 1.0), objective="forward_kl",
      ...         steps=600, progress=False)
      >>> r.dist.batch_shape, r.losses.shape
      ((4,), (600, 4))
      >>> print("loc", np.asarray(r.dist.loc).round(2))
      loc [3. 3. 3. 3.]
      >>> print("scale", np.asarray(r.dist.scale).round(2))
      scale [2. 2. 2. 2.]

    References:
      Bishop, "Pattern Recognition and Machine Learning" (2006), section 10.1.2
      (forward vs reverse KL); Blei, Kucukelbir, McAuliffe, "Variational
      Inference: A Review for Statisticians" (2017); Kingma, Ba, "Adam" (2015).
    """
    if not isinstance(init, Distribution):
        raise TypeError(f"init must be a jaxkl distribution, got {type(init).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if tol is not None and not (float(tol) >= 0):
        raise ValueError(f"tol must be >= 0 or None, got {tol!r}")
    if on_nan not in ("raise", "warn"):
        raise ValueError(f"on_nan must be 'raise' or 'warn', got {on_nan!r}")
    target = Target(target)
    starts = _starts_shape(init, target)
    estimator = resolve_estimator(objective, estimator, target, init, grid)
    spec = target.spec(objective, estimator, num_samples)
    optimizer = _DEFAULT_OPTIMIZER if optimizer is None else optimizer
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation (e.g. optax.adam(0.05)), got {optimizer!r}"
        )
    key = jax.random.key(0) if key is None else key
    if grid is not None and estimator == "grid":
        grid = _validate_grid(grid, init)
        if target.kind == "distribution":
            _warn_if_grid_misses(grid, target.value, "the target")
    else:
        grid = None

    n_starts = math.prod(starts)
    length = steps if (not progress and tol is None) else max(1, math.ceil(steps / _CHUNKS))
    carry = _initial_carry(init, key, optimizer, starts)
    arguments = dict(
        steps=jnp.asarray(steps, jnp.int32),
        tol=jnp.asarray(0.0 if tol is None else tol, init.dtype),
        target=target.arrays,
        grid=grid,
        spec=spec,
        optimizer=optimizer,
        length=length,
        use_tol=tol is not None,
    )

    bar = _progress.reporter(progress, int(steps))
    history = []
    done = 0
    try:
        while done < steps:
            carry, losses = _fit_chunk(carry, jnp.asarray(done, jnp.int32), **arguments)
            done = min(done + length, steps)
            history.append(np.asarray(losses))
            active, failed_step = np.asarray(carry.active), np.asarray(carry.failed_step)
            bar.update(done, float(np.nanmin(np.asarray(carry.last_loss))))
            if (on_nan == "raise" and (failed_step >= 0).any()) or not active.any():
                break
    finally:
        bar.close()

    losses = np.concatenate(history)[:done]
    count = np.asarray(carry.steps_taken)
    failed_step = np.asarray(carry.failed_step)
    failed = failed_step >= 0
    if failed.any():
        index = int(np.argmax(failed))
        where = np.unravel_index(index, starts) if starts else ()
        # Data outside the family's support explain a failure better than any step size.
        hint = _outside_support(init, target) or (
            "Try a smaller learning rate, a wider grid, or more samples."
        )
        message = (
            f"fit: the {objective} loss or its gradient became NaN/inf at step "
            f"{int(failed_step[index])}"
            + (f" for start {tuple(int(i) for i in where)}" if starts else "")
            + f" ({int(failed.sum())} of {n_starts} start(s) affected); the last finite "
            f"parameters were kept. {hint}"
        )
        if on_nan == "raise":
            raise FloatingPointError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)

    fitted = _final_dist(carry.free, starts)
    if grid is not None:
        _warn_if_grid_misses(grid, fitted, "the fitted distribution")
    return FitResult(
        dist=fitted,
        losses=losses.reshape((losses.shape[0],) + starts),
        steps=count.reshape(starts),
        converged=np.asarray(carry.converged).reshape(starts),
        failed=failed.reshape(starts),
        failed_step=failed_step.reshape(starts),
        objective=objective,
        estimator=estimator,
    )
