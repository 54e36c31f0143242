"""1-D plots of a fit: the target density and the fitted density of each start.

matplotlib is optional and imported only when [jaxkl.fit.plot][] is called.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from .. import _validate
from ._fit import FitResult
from ._objectives import Target


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(
            "jaxkl.fit.plot needs matplotlib, which jaxkl does not install: "
            "pip install matplotlib"
        ) from error
    return plt


def plot(
    result: FitResult,
    target: Any,
    *,
    grid: Any = None,
    ax: Any = None,
    max_starts: int = 10,
    title: str | None = None,
) -> Any:
    r"""Draw the target density and the fitted densities of a 1-D fit with matplotlib.

    The target is drawn as its density (a distribution), its density normalised
    on `grid` (a log-density callable, by the trapezoid rule) or a histogram
    (samples); each fitted start as `exp(log_prob)` on `grid`.

    Args:
      result: a [jaxkl.fit.FitResult][] whose distribution has event shape `()`.
      target: what was fitted (the same object passed to [jaxkl.fit.fit][]).
      grid: `[n]` points; default spans the fitted means plus or minus four
        standard deviations and the target samples, if any.
      ax: a matplotlib `Axes`; default a new figure's.
      max_starts: draw at most this many starts (the first ones, flattened).
      title: axes title; default names the objective.

    Returns:
      The matplotlib `Axes`.

    Raises:
      ImportError: matplotlib is not installed.
      ValueError: a distribution that is not one-dimensional.

    Examples:
      >>> import matplotlib
      >>> matplotlib.use("Agg")
      >>> from jaxkl.distributions import Normal
      >>> from jaxkl.fit import fit, plot
      >>> r = fit(Normal(2.0, 1.0), Normal(0.0, 1.0), steps=50, progress=False)
      >>> ax = plot(r, Normal(2.0, 1.0))
      >>> len(ax.lines)
      2

    References:
      Hunter, "Matplotlib: A 2D Graphics Environment" (2007).
    """
    if not isinstance(result, FitResult):
        raise TypeError(f"result must be a jaxkl.fit.FitResult, got {type(result).__name__}")
    if isinstance(max_starts, bool) or not isinstance(max_starts, (int, np.integer)) or max_starts < 1:
        raise ValueError(f"max_starts must be a positive int, got {max_starts!r}")
    plt = _pyplot()
    dist = result.dist
    if dist.event_shape != ():
        raise ValueError(f"plot draws 1-D densities; event_shape is {dist.event_shape}")
    tgt = Target(target)
    flat = np.arange(int(np.prod(dist.batch_shape, dtype=int)))[:max_starts]
    if grid is None:
        mean = np.ravel(np.asarray(dist.mean()))[flat]
        std = np.sqrt(np.ravel(np.asarray(dist.variance()))[flat])
        points = [mean - 4 * std, mean + 4 * std]
        if tgt.kind == "distribution":
            tm, ts = np.asarray(tgt.value.mean()), np.sqrt(np.asarray(tgt.value.variance()))
            points += [np.ravel(tm - 4 * ts), np.ravel(tm + 4 * ts)]
        elif tgt.kind == "samples":
            points.append(np.ravel(np.asarray(tgt.value)))
        lo, hi = min(np.min(p) for p in points), max(np.max(p) for p in points)
        grid = np.linspace(lo, hi, 512)
    grid = np.asarray(_validate.as_array(grid, "grid"))
    if grid.ndim != 1 or grid.shape[0] < 2 or not np.issubdtype(grid.dtype, np.number):
        raise ValueError(f"grid must be 1-D [n] numbers with n >= 2, got shape {grid.shape} ({grid.dtype})")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    x = jnp.asarray(grid, dist.dtype)
    if tgt.kind == "samples":
        ax.hist(np.ravel(np.asarray(tgt.value)), bins=60, density=True, color="0.8", label="target")
    else:
        log_p = np.asarray(tgt.log_prob(x, 0), np.float64)
        if tgt.kind == "log_density":  # unnormalised: normalise on the grid
            density = np.exp(log_p - log_p.max())
            trapezoid = getattr(np, "trapezoid", None) or np.trapz
            density = density / trapezoid(density, grid)
        else:
            density = np.exp(log_p)
        ax.plot(grid, density, color="black", lw=2, label="target")
    log_q = np.asarray(dist.log_prob(x.reshape((-1,) + (1,) * len(dist.batch_shape))))
    log_q = log_q.reshape(grid.shape[0], -1)
    for i in flat:
        ax.plot(grid, np.exp(log_q[:, i]), lw=1.5, label=f"fit {i}" if len(flat) > 1 else "fit")
    ax.set_title(title if title is not None else result.objective)
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    return ax
