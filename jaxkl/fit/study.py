"""The forward-vs-reverse KL study: fit one Normal to a two-mode mixture.

Target `P = 0.5 N(0, 1) + 0.5 N(10, 1)`, family Normal, starts `mu = 0` and
`mu = 8` (`sigma = 1`), every objective of [jaxkl.fit.fit][] on a grid.
The analytic answers:

* forward KL is minimised by moment matching: `mu = 5`,
  `sigma = sqrt(1 + 25) = sqrt(26) ~ 5.10` (mean and variance of `P`);
* reverse KL has a local minimum at each mode (`mu ~ 0` or `10`,
  `sigma ~ 1`; the other mode is ten standard deviations away), and gradient
  descent falls into the nearest one;
* the density distances (MSE, L1, cosine) only see where the two densities
  overlap, so they settle on a mode or stall between shapes.

Run `python -m jaxkl.fit.study --out docs/assets` to write `fit_study.png`
and `fit_study.md` (needs matplotlib for the figure).
"""

from __future__ import annotations

import argparse
import math
import pathlib

import jax.numpy as jnp
import numpy as np
import optax

from ..distributions import MixtureSameFamily, Normal
from ._fit import FitResult, fit
from ._objectives import OBJECTIVES
STARTS = (0.0, 8.0)
MOMENT_MATCH = (5.0, math.sqrt(26.0))

EXPECTED = {
    "forward_kl": "moment match (mu = 5, sigma = 5.10)",
    "reverse_kl": "nearest mode (mu = {mode}, sigma = 1)",
    "js": "no closed form",
    "mse": "no closed form",
    "l1": "no closed form",
    "cosine": "no closed form",
}


def outcome(mu: float, sigma: float) -> str:
    """Classify a fitted Normal: moment match, a mode, or stalled near one."""
    if abs(mu - MOMENT_MATCH[0]) < 0.1 and abs(sigma - MOMENT_MATCH[1]) < 0.1:
        return "moment match"
    mode = 0 if mu < 5 else 10
    if abs(mu - mode) < 0.1 and abs(sigma - 1.0) < 0.05:
        return f"mode {mode}"
    return f"stalled near mode {mode} (sigma {sigma:.2f})"


def target() -> MixtureSameFamily:
    """`0.5 N(0, 1) + 0.5 N(10, 1)`."""
    return MixtureSameFamily(jnp.zeros(2), Normal(jnp.array([0.0, 10.0]), 1.0))


def default_grid() -> np.ndarray:
    """A regular grid that holds both modes and the moment-matched Normal (to 5 sigma)."""
    return np.linspace(-25.0, 35.0, 1201, dtype=np.float32)


def run_study(
    *,
    objectives=OBJECTIVES,
    steps: int = 3000,
    learning_rate: float = 0.05,
    grid=None,
    progress: bool = False,
) -> dict[str, FitResult]:
    """Fit every objective from both starts (one vmapped fit per objective).

    Returns:
      `{objective: FitResult}`; each result has batch shape `(2,)` (the starts).
    """
    grid = default_grid() if grid is None else grid
    init = Normal(jnp.asarray(STARTS), 1.0)
    optimizer = optax.adam(learning_rate)
    return {
        name: fit(
            target(),
            init,
            objective=name,
            estimator="grid",
            grid=grid,
            optimizer=optimizer,
            steps=steps,
            progress=progress,
        )
        for name in objectives
    }


def table(results: dict[str, FitResult]) -> str:
    """A markdown table: objective, start, fitted mu and sigma, final loss, expectation."""
    lines = [
        "| objective | start mu | fitted mu | fitted sigma | final loss | outcome | analytic answer |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for name, result in results.items():
        locs = np.asarray(result.dist.loc)
        scales = np.asarray(result.dist.scale)
        for i, start in enumerate(STARTS):
            mode = 0 if start < 5 else 10
            mu, sigma = round(float(locs[i]), 3) + 0.0, round(float(scales[i]), 3)
            lines.append(
                f"| {name} | {start:g} | {mu:.3f} | {sigma:.3f} | "
                f"{result.losses[-1, i]:.4g} | {outcome(mu, sigma)} | "
                f"{EXPECTED[name].format(mode=mode)} |"
            )
    return "\n".join(lines) + "\n"


def figure(results: dict[str, FitResult], path) -> None:
    """One panel per objective with the target and the fits from both starts."""
    from ._plot import _pyplot, plot

    plt = _pyplot()
    columns = 3
    rows = math.ceil(len(results) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    grid = np.linspace(-12.0, 22.0, 600)
    for ax, (name, result) in zip(axes.flat, results.items()):
        plot(result, target(), grid=grid, ax=ax, title=name)
        for line, start in zip(ax.lines[1:], STARTS):
            line.set_label(f"from mu = {start:g}")
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(results) :]:
        ax.set_visible(False)
    fig.suptitle("Fitting N(mu, sigma) to 0.5 N(0,1) + 0.5 N(10,1)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    """Command line: `python -m jaxkl.fit.study --out DIR [--steps N]`."""
    parser = argparse.ArgumentParser(prog="python -m jaxkl.fit.study", description=__doc__)
    parser.add_argument("--out", default="docs/assets", help="directory for the PNG and table")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = run_study(steps=args.steps, progress=not args.no_progress)
    (out / "fit_study.md").write_text(table(results))
    figure(results, out / "fit_study.png")
    print(table(results))
    print(f"wrote {out / 'fit_study.png'} and {out / 'fit_study.md'}")


if __name__ == "__main__":
    main()
