"""Independent NumPy/SciPy references, written from the textbook formulas in float64."""

import numpy as np
from scipy import special


def log_softmax(x, axis=-1):
    return special.log_softmax(np.asarray(x, np.float64), axis=axis)


def softmax(x, axis=-1):
    return special.softmax(np.asarray(x, np.float64), axis=axis)


def entropy(p, axis=-1):
    p = np.asarray(p, np.float64)
    return -np.sum(special.xlogy(p, p), axis=axis)


def cross_entropy(p, q, axis=-1):
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    return -np.sum(special.xlogy(p, q), axis=axis)


def kl(p, q, axis=-1):
    return np.sum(special.rel_entr(np.asarray(p, np.float64), np.asarray(q, np.float64)), axis=axis)


def js(p, q, beta=0.5, axis=-1):
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    m = beta * p + (1 - beta) * q
    return beta * kl(p, m, axis) + (1 - beta) * kl(q, m, axis)


def random_logits(rng, shape, scale=3.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def random_probs(rng, shape, zeros=False):
    p = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    if zeros:
        p = np.where(rng.random(shape) < 0.3, 0.0, p)
        p[..., 0] += 1e-3  # keep every row non-empty
        p = p / p.sum(-1, keepdims=True)
    return p.astype(np.float32)


def reduce(values, reduction, mean_denominator):
    """PyTorch-style reductions over examples; ``"mean"`` divides by ``mean_denominator``
    (the number of kept examples, or the sum of their class weights), 0 when that is 0."""
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum()
    if reduction == "batchmean":
        return values.sum() / len(values)
    return values.sum() / mean_denominator if mean_denominator else 0.0
