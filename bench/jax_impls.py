"""The JAX implementations compared, one scalar-valued function per (kernel, implementation).

Every function takes the kernel's inputs and returns the **sum over rows** of the
per-row value, so that forward and forward+backward (``jax.grad`` wrt every float
input) time the same computation. The final sum over rows is O(rows) and does not
change the ranking.

* ``jaxkl``: the library kernel.
* ``optax``: optax's nearest equivalent, written the way its documentation suggests.
* ``jnp``: plain ``jax.nn`` / ``jax.numpy`` with autodiff, what a user writes by hand.

Kernels and their inputs (``a``, ``b`` logits; ``p`` probabilities; ``y`` int labels):
entropy(a), cross_entropy(p, b), kl(a, b), js(a, b), ce_labels(a, y).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax

import jaxkl
from jaxkl import _rowwise

KERNELS = ("entropy", "cross_entropy", "kl", "js", "ce_labels")

# Which inputs each kernel takes: "logits", "probs" or "labels". Floats are differentiated.
INPUTS = {
    "entropy": ("logits",),
    "cross_entropy": ("probs", "logits"),
    "kl": ("logits", "logits"),
    "js": ("logits", "logits"),
    "ce_labels": ("logits", "labels"),
}

_LOG2 = math.log(2.0)


def _jaxkl_ce_labels():
    # cross_entropy_loss may not exist in every version of jaxkl; measured when it does.
    if not hasattr(jaxkl, "cross_entropy_loss"):
        return None
    return lambda a, y: jnp.sum(jaxkl.cross_entropy_loss(a, y))


def _jnp_js(a, b):
    lp, lq = jax.nn.log_softmax(a), jax.nn.log_softmax(b)
    lm = jnp.logaddexp(lp, lq) - _LOG2
    return 0.5 * jnp.sum(jnp.exp(lp) * (lp - lm)) + 0.5 * jnp.sum(jnp.exp(lq) * (lq - lm))


def _jnp_ce_labels(a, y):
    picked = jnp.take_along_axis(a, y[:, None], axis=-1)[:, 0]
    return jnp.sum(jax.nn.logsumexp(a, axis=-1) - picked)


def implementations() -> dict[str, dict[str, Callable | None]]:
    """``{kernel: {impl: scalar function or None when not available}}``."""
    return {
        "entropy": {
            "jaxkl": lambda a: jnp.sum(jaxkl.entropy_from_logits(a)),
            # optax has no entropy; its route is H(P) = CE(P, P) with its softmax CE.
            "optax": lambda a: jnp.sum(optax.losses.softmax_cross_entropy(a, jax.nn.softmax(a))),
            "jnp": lambda a: -jnp.sum(jax.nn.softmax(a) * jax.nn.log_softmax(a)),
        },
        "cross_entropy": {
            "jaxkl": lambda p, b: jnp.sum(jaxkl.cross_entropy_from_logits(p, b)),
            "optax": lambda p, b: jnp.sum(optax.losses.softmax_cross_entropy(b, p)),
            "jnp": lambda p, b: -jnp.sum(p * jax.nn.log_softmax(b)),
        },
        "kl": {
            "jaxkl": lambda a, b: jnp.sum(jaxkl.kl_divergence_from_logits(a, b)),
            "optax": lambda a, b: jnp.sum(
                optax.losses.kl_divergence_with_log_targets(
                    jax.nn.log_softmax(b), jax.nn.log_softmax(a)
                )
            ),
            "jnp": lambda a, b: jnp.sum(
                jax.nn.softmax(a) * (jax.nn.log_softmax(a) - jax.nn.log_softmax(b))
            ),
        },
        "js": {
            "jaxkl": lambda a, b: jnp.sum(jaxkl.js_divergence_from_logits(a, b)),
            "optax": None,  # optax has no Jensen-Shannon divergence
            "jnp": _jnp_js,
        },
        "ce_labels": {
            "jaxkl": _jaxkl_ce_labels(),
            "optax": lambda a, y: jnp.sum(
                optax.losses.softmax_cross_entropy_with_integer_labels(a, y)
            ),
            "jnp": _jnp_ce_labels,
        },
    }


def float_argnums(kernel: str) -> tuple[int, ...]:
    return tuple(i for i, kind in enumerate(INPUTS[kernel]) if kind != "labels")


def forward_and_backward(kernel: str, fn: Callable) -> tuple[Callable, Callable]:
    """``(forward, forward+backward)``: the value, and the gradient wrt every float input."""
    return fn, jax.grad(fn, argnums=float_argnums(kernel))


# ---------------------------------------------------------------------- floors


def _sum_of_exp(x):
    """``sum(exp(x))`` as fast as XLA computes it on this backend.

    XLA:CPU writes ``exp(x)`` out at full size before summing it; over blocks
    of rows (as jaxkl's kernels run on CPU) it stays in cache, so the floor is
    not inflated by a pass over memory that no kernel needs.
    """
    block = _rowwise.block_rows(x.shape, x.ndim - 1, None)
    if block is None:
        return jnp.sum(jnp.exp(x))
    blocks = x.reshape(-1, block, x.shape[-1])

    def blocked(blocks):
        return jnp.sum(jax.lax.map(lambda b: jnp.sum(jnp.exp(b)), blocks))

    return jax.lax.platform_dependent(blocks, cpu=blocked, default=lambda b: jnp.sum(jnp.exp(b)))


def floor_functions(kernel: str) -> dict[str, Callable]:
    """The machine's floors for a kernel's inputs.

    * ``read``: read every input once (a sum of each).
    * ``exp``: ``sum(exp(x))`` over every logits element, plus reading the
      other inputs once: the exponentials any softmax-based kernel must take.
    """
    kinds = INPUTS[kernel]

    def read(*xs):
        return sum(jnp.sum(x.astype(jnp.float32)) for x in xs)

    def exp(*xs):
        total = jnp.float32(0)
        for kind, x in zip(kinds, xs):
            x = x.astype(jnp.float32)
            total = total + (_sum_of_exp(x) if kind == "logits" else jnp.sum(x))
        return total

    return {"read": read, "exp": exp}
