"""NumPy and PyTorch baselines, with the same (forward, forward+backward) contract.

The NumPy code (for the logits kernels; the sweep skips NumPy) is what a careful NumPy user writes: vectorised over rows,
`scipy.special.log_softmax` for stability, analytic gradients (the formulas
in `jaxkl/_logits.py`) computed from the forward's log-probabilities, in-place
updates where they save a temporary. Each forward returns the sum over rows;
each forward+backward returns the gradients wrt every float input.

PyTorch is optional: `torch_implementations` returns `{}` when
`import torch` fails. Its gradients come from autograd.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy.special import log_softmax, logsumexp

from .jax_impls import CONSISTENCY_T, CONSISTENCY_THRESHOLD, DISTILLATION_T

_LOG2 = math.log(2.0)


# ---------------------------------------------------------------------- NumPy


def _np_entropy(a):
    lp = log_softmax(a, axis=-1)
    return lp, -np.sum(np.exp(lp) * lp, axis=-1)


def _np_kl(a, b):
    lp, lq = log_softmax(a, axis=-1), log_softmax(b, axis=-1)
    p = np.exp(lp)
    diff = lp - lq
    return p, lq, diff, np.sum(p * diff, axis=-1)


def _np_js(a, b):
    lp, lq = log_softmax(a, axis=-1), log_softmax(b, axis=-1)
    lm = np.logaddexp(lp, lq)
    lm -= _LOG2
    p, q = np.exp(lp), np.exp(lq)
    lp -= lm  # lp, lq now hold log(P/M), log(Q/M)
    lq -= lm
    return p, q, lp, lq, np.sum(p * lp, axis=-1), np.sum(q * lq, axis=-1)


def np_entropy(a):
    return _np_entropy(a)[1].sum()


def np_entropy_grad(a):
    lp, h = _np_entropy(a)
    p = np.exp(lp)
    lp += h[:, None]
    p *= lp
    return (np.negative(p, out=p),)


def np_cross_entropy(p, b):
    return -np.sum(p * log_softmax(b, axis=-1))


def np_cross_entropy_grad(p, b):
    lq = log_softmax(b, axis=-1)
    db = np.exp(lq)
    db *= p.sum(axis=-1, keepdims=True)
    db -= p
    return -lq, db


def np_kl(a, b):
    return _np_kl(a, b)[3].sum()


def np_kl_grad(a, b):
    p, lq, diff, k = _np_kl(a, b)
    diff -= k[:, None]
    da = p * diff
    db = np.exp(lq)
    db -= p
    return da, db


def np_js(a, b):
    *_, kl_pm, kl_qm = _np_js(a, b)
    return 0.5 * kl_pm.sum() + 0.5 * kl_qm.sum()


def np_js_grad(a, b):
    p, q, lpm, lqm, kl_pm, kl_qm = _np_js(a, b)
    lpm -= kl_pm[:, None]
    lqm -= kl_qm[:, None]
    return 0.5 * p * lpm, 0.5 * q * lqm


def np_ce_labels(a, y):
    rows = np.arange(a.shape[0])
    return np.sum(logsumexp(a, axis=-1) - a[rows, y])


def np_ce_labels_grad(a, y):
    g = np.exp(log_softmax(a, axis=-1))
    g[np.arange(a.shape[0]), y] -= 1.0
    return (g,)


NUMPY = {
    "entropy": (np_entropy, np_entropy_grad),
    "cross_entropy": (np_cross_entropy, np_cross_entropy_grad),
    "kl": (np_kl, np_kl_grad),
    "js": (np_js, np_js_grad),
    "ce_labels": (np_ce_labels, np_ce_labels_grad),
}


# -------------------------------------------------------------------- PyTorch


def torch_module():
    try:
        import torch
    except Exception:  # not installed, or broken: the peer is skipped
        return None
    return torch


def torch_implementations() -> dict[str, Callable]:
    """`{kernel: scalar function of torch tensors}`; empty without PyTorch."""
    torch = torch_module()
    if torch is None:
        return {}
    F = torch.nn.functional

    def entropy(a):
        lp = F.log_softmax(a, dim=-1)
        return -(lp.exp() * lp).sum()

    def cross_entropy(p, b):
        return F.cross_entropy(b, p, reduction="sum")

    def kl(a, b):
        # PyTorch's documented idiom: input is log Q, target is log P.
        return F.kl_div(F.log_softmax(b, -1), F.log_softmax(a, -1), reduction="sum", log_target=True)

    def js(a, b):
        lp, lq = F.log_softmax(a, -1), F.log_softmax(b, -1)
        lm = torch.logaddexp(lp, lq) - _LOG2
        return 0.5 * F.kl_div(lm, lp, reduction="sum", log_target=True) + 0.5 * F.kl_div(
            lm, lq, reduction="sum", log_target=True
        )

    def ce_labels(a, y):
        return F.cross_entropy(a, y, reduction="sum")

    def distillation(s, t):
        temp = DISTILLATION_T
        soft = F.kl_div(F.log_softmax(s / temp, -1), F.log_softmax(t.detach() / temp, -1), reduction="batchmean", log_target=True)
        return temp**2 * soft

    def consistency(x, t):
        t = t.detach()
        lt = F.log_softmax(t / CONSISTENCY_T, -1)
        kl = (lt.exp() * (lt - F.log_softmax(x, -1))).sum(-1)
        kept = t.softmax(-1).amax(-1) > CONSISTENCY_THRESHOLD
        return torch.where(kept, kl, 0).sum() / kept.sum().clamp(min=1)

    def fused_ce(h, w, y):
        return F.cross_entropy(h @ w, y)

    return {
        "entropy": entropy,
        "cross_entropy": cross_entropy,
        "kl": kl,
        "js": js,
        "ce_labels": ce_labels,
        "distillation": distillation,
        "consistency": consistency,
        "fused_ce": fused_ce,
    }


def torch_forward_and_backward(fn: Callable, grad: tuple[int, ...]):
    """`(forward, forward+backward)` for a torch scalar function; `grad`: positions differentiated."""
    torch = torch_module()

    def forward(*xs):
        with torch.no_grad():
            return fn(*xs)

    def forward_backward(*xs):
        xs = [x.detach().requires_grad_(i in grad) for i, x in enumerate(xs)]
        fn(*xs).backward()
        return [xs[i].grad for i in grad]

    return forward, forward_backward
