"""Fit a distribution family to a target by minimising a divergence with optax.

See [jaxkl.fit.fit][] for the objectives and estimators, [jaxkl.fit.plot][] for 1-D plots,
and `python -m jaxkl.fit.study` for the forward-vs-reverse KL study.
"""

from ._fit import FitResult as FitResult
from ._fit import fit as fit
from ._plot import plot as plot

__all__ = ["FitResult", "fit", "plot"]
