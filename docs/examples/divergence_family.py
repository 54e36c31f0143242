"""Draw docs/img/divergences.png: the divergences of jaxkl on one family of pairs.

P = (1/2, 1/2) against Q = (theta, 1 - theta) for theta in (0, 1):

    python docs/examples/divergence_family.py [--out docs/img/divergences.png]

Every curve is one jaxkl call on the whole grid of pairs (one row per theta).
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import jaxkl  # noqa: E402


def curves(theta: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """`{label: values}` for P = (1/2, 1/2) against Q = (theta, 1 - theta)."""
    q = jnp.stack([theta, 1 - theta], axis=-1)
    p = jnp.full_like(q, 0.5)
    return {
        "total variation": jaxkl.total_variation(p, q),
        "Hellinger": jaxkl.hellinger_distance(p, q),
        "Jensen-Shannon": jaxkl.js_divergence(p, q),
        "KL(P || Q)": jaxkl.kl_divergence(p, q),
        "KL(Q || P)": jaxkl.kl_divergence(q, p),
        "Rényi, alpha = 2": jaxkl.renyi_divergence(p, q, alpha=2.0),
        "Rényi, alpha = inf": jaxkl.renyi_divergence(p, q, alpha=jnp.inf),
        "chi-squared": jaxkl.chi2_divergence(p, q),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/img/divergences.png")
    args = parser.parse_args(argv)
    theta = jnp.linspace(0.0025, 0.9975, 399)
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for label, values in curves(theta).items():
        style = "--" if label.startswith(("KL", "Rényi", "chi")) else "-"
        ax.plot(theta, values, style, label=label, linewidth=1.8)
    ax.set_xlabel(r"$\theta$, with $P = (1/2, 1/2)$ and $Q = (\theta, 1 - \theta)$")
    ax.set_ylabel("value (nats; distances unitless)")
    ax.set_ylim(0, 2.0)
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(ncol=2, fontsize=8, loc="upper center")
    ax.set_title("Bounded (solid) and unbounded (dashed) measures on one family of pairs")
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
