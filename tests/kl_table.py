"""The KL pair table of the docs, rendered from the registry of `jaxkl.distributions`.

`python -m tests.kl_table` rewrites docs/distributions-kl-table.md; a test in
tests/test_distributions_parity.py fails when the committed page differs from
what the registry gives now, so the page cannot go stale.
"""

import inspect
import pathlib

import jaxkl.distributions as jd
from jaxkl.distributions._kl import _lookup
from jaxkl.distributions._kl_cross import infinite

PATH = pathlib.Path(__file__).resolve().parents[1] / "docs" / "distributions-kl-table.md"
# KL compares like with like: densities on the line, masses on counts, densities on vectors
GROUPS = (
    {"Bernoulli", "Binomial", "Categorical", "Geometric", "Poisson"},
    {"Dirichlet", "MultivariateNormalDiag", "MultivariateNormalTriL"},
)
WRAPPERS = {"Distribution", "Independent", "MixtureSameFamily"}

HEADER = """\
<!-- Generated from jaxkl.distributions' KL registry by `python -m tests.kl_table`;
     tests/test_distributions_parity.py fails when this page is stale. Do not edit. -->
# KL pairs

Which pairs `jaxkl.distributions.kl_divergence(p, q)` computes in closed form,
which it knows to be `+inf` (`q` is 0 on part of `p`'s support, or `p`'s tails
are too heavy for `q`'s), and which have no closed form. For the last group
`kl_divergence` raises `NotImplementedError`, and [`jaxkl.fit.fit`](fitting.md)
with `estimator="auto"` uses the grid when `grid=` is given and Monte Carlo
otherwise. Each family is listed against the families of its kind: continuous
scalar, discrete, or vector-valued. `Independent(p) ‖ Independent(q)` is the sum
of `KL(p ‖ q)` over the reinterpreted dimensions (when both reinterpret as
many), so it is closed-form exactly when `p ‖ q` is; `MixtureSameFamily` has no
closed-form KL. Add pairs with `jaxkl.distributions.register_kl`.

| p | closed form against q = | `+inf` against q = | no closed form (fitter: grid or Monte Carlo) against q = |
|---|---|---|---|
"""


def families():
    """Every concrete family exported by jaxkl.distributions, by name."""
    return {
        name: obj
        for name in sorted(jd.__all__)
        if inspect.isclass(obj := getattr(jd, name)) and name not in WRAPPERS
    }


def render() -> str:
    all_families = families()
    rows = []
    for p_name, p_type in all_families.items():
        columns = ([], [], [])
        for q_name, q_type in all_families.items():
            if any((p_name in group) != (q_name in group) for group in GROUPS):
                continue
            fn = _lookup(p_type, q_type)
            kind = 2 if fn is None else 1 if fn is infinite else 0
            columns[kind].append(q_name)
        cells = [", ".join(c) or "—" for c in columns]
        rows.append(f"| {p_name} | " + " | ".join(cells) + " |\n")
    return HEADER + "".join(rows)


if __name__ == "__main__":
    PATH.write_text(render(), encoding="utf-8")
    print(f"wrote {PATH}")
