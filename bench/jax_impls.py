"""The JAX implementations compared: one table entry per kernel.

Each entry of :data:`TABLE` names the kernel's inputs, the jaxkl call and its
JAX peers; adding a kernel to every preset, report and plot is adding one entry
(plus, optionally, a NumPy or PyTorch baseline in `baselines.py`).

Every function returns a scalar — the **sum over rows** of a kernel's per-row
value, or a loss at its default reduction — so that forward and forward+backward
(`jax.value_and_grad` wrt the entry's `grad` inputs: a training step needs the
loss it logs as well as its gradient) time the same computation. The final sum
over rows is O(rows) and does not change the ranking.

* `jaxkl`: the library function.
* `optax`: optax's nearest equivalent, written the way its documentation suggests.
* `jnp`: plain `jax.nn` / `jax.numpy` with autodiff, what a user writes by hand.

Inputs are named by the arrays of `harness.host_inputs`: `a`, `b` logits
(`b` is the fixed target of the distillation and consistency losses), `p`
probabilities, `y` int labels, `h` hidden states `[rows, D]` and `w` a
head weight `[D, classes]`, `e`/`g` paired embeddings `[rows, D]`, `i`
and `l` a teacher's top-k indices and log-probabilities `[rows, k]`.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

import jaxkl
from jaxkl import _rowwise

from .contrastive import materialised_topk

_LOG2 = math.log(2.0)
LOGITS = "ab"  # the inputs the exp floor exponentiates
FULL_SIZE = "abp"  # the rows x classes inputs

# distillation_loss at T = 2 exercises the temperature and its T² scaling.
DISTILLATION_T = 2.0
# contrastive_loss at CLIP's initial temperature.
CONTRASTIVE_T = 0.07
# consistency_loss with UDA's settings: a sharpened target (T = 0.4) and confidence masking.
CONSISTENCY_T, CONSISTENCY_THRESHOLD = 0.4, 0.8


class Kernel(NamedTuple):
    title: str  # how reports name the kernel: the jaxkl call measured
    inputs: str  # array names, in call order (see the module docstring)
    grad: tuple[int, ...]  # positions differentiated in fwd+bwd
    impls: dict[str, Callable | None]  # {"jaxkl" | "optax" | "jnp": fn, or None when it has none}




def _jnp_js(a, b):
    lp, lq = jax.nn.log_softmax(a), jax.nn.log_softmax(b)
    lm = jnp.logaddexp(lp, lq) - _LOG2
    return 0.5 * jnp.sum(jnp.exp(lp) * (lp - lm)) + 0.5 * jnp.sum(jnp.exp(lq) * (lq - lm))


# The orders of the Rényi entries: generic ones (not 1/2 or 2, which Hellinger and chi2 time).
RENYI_ALPHA, RENYI_ENTROPY_ALPHA = 1.5, 3.0


def _jnp_renyi(a, b):
    lp, lq = jax.nn.log_softmax(a), jax.nn.log_softmax(b)
    return jnp.sum(jax.nn.logsumexp(RENYI_ALPHA * lp + (1 - RENYI_ALPHA) * lq, axis=-1)) / (RENYI_ALPHA - 1)


def _jnp_ce_labels(a, y):
    picked = jnp.take_along_axis(a, y[:, None], axis=-1)[:, 0]
    return jnp.sum(jax.nn.logsumexp(a, axis=-1) - picked)


def _optax_distillation(s, t):
    t = jax.lax.stop_gradient(t)
    kl = optax.losses.kl_divergence_with_log_targets(
        jax.nn.log_softmax(s / DISTILLATION_T), jax.nn.log_softmax(t / DISTILLATION_T)
    )
    return DISTILLATION_T**2 * jnp.sum(kl) / s.shape[0]


def _jnp_distillation(s, t):
    # batchmean of T² KL(softmax(t/T) || softmax(s/T)): Hinton et al.'s soft loss.
    lt = jax.nn.log_softmax(jax.lax.stop_gradient(t) / DISTILLATION_T)
    ls = jax.nn.log_softmax(s / DISTILLATION_T)
    return DISTILLATION_T**2 * jnp.sum(jnp.exp(lt) * (lt - ls)) / s.shape[0]


def _jnp_consistency(x, t):
    # Mean over confident rows of KL(softmax(t/T) || softmax(x)), 0 when none is confident.
    t = jax.lax.stop_gradient(t)
    lt = jax.nn.log_softmax(t / CONSISTENCY_T)
    kl = jnp.sum(jnp.exp(lt) * (lt - jax.nn.log_softmax(x)), axis=-1)
    kept = jnp.max(jax.nn.softmax(t), axis=-1) > CONSISTENCY_THRESHOLD
    return jnp.sum(jnp.where(kept, kl, 0)) / jnp.maximum(jnp.sum(kept, dtype=kl.dtype), 1)


def _jnp_contrastive(x, y):
    # CLIP's symmetric InfoNCE from the whole N x N similarity matrix.
    s = x @ y.T / CONTRASTIVE_T
    lse = 0.5 * (jax.nn.logsumexp(s, axis=1) + jax.nn.logsumexp(s, axis=0))
    return jnp.mean(lse - jnp.diagonal(s))


def _jnp_fused_ce(h, w, y):
    return _jnp_ce_labels(h @ w, y) / h.shape[0]


# The RL entries score every row's label `y` as its sampled token. The policy
# loss reads the rows as sequences of RL_TOKENS tokens (one when rows do not
# divide), with `b` as the sampling policy's logits and a fixed advantage per
# sequence; the preference loss pairs rows (chosen, rejected) against `b`.
RL_TOKENS = 4


def _jnp_token_logprobs(a, y):
    return jnp.take_along_axis(jax.nn.log_softmax(a), y[:, None], axis=-1)[:, 0]


def _rl_shape(rows):
    t = RL_TOKENS if rows % RL_TOKENS == 0 else 1
    return rows // t, t


def _grpo(token_logprobs):
    def loss(a, b, y):
        shape = _rl_shape(a.shape[0])
        lp = token_logprobs(a, y).reshape(shape)
        old = jax.lax.stop_gradient(token_logprobs(b, y)).reshape(shape)
        adv = jnp.where(jnp.arange(shape[0]) % 2 == 0, 1.0, -1.0).astype(lp.dtype)
        return lp, old, adv

    return loss


def _jaxkl_grpo(a, b, y):
    lp, old, adv = _grpo(jaxkl.token_logprobs)(a, b, y)
    return jaxkl.policy_loss(lp, old, adv)[0]


def _trl_grpo(lp, old, adv):
    # TRL's GRPO loss written out: clipped surrogate, mean per sequence, then over sequences.
    ratio = jnp.exp(lp - old)
    per_token = -jnp.minimum(ratio * adv[:, None], jnp.clip(ratio, 0.8, 1.2) * adv[:, None])
    return jnp.mean(jnp.mean(per_token, axis=1))


def _jnp_grpo(a, b, y):
    return _trl_grpo(*_grpo(_jnp_token_logprobs)(a, b, y))


def _head_grpo(h, w):
    """Sequences `(B, T)` of the head's rows, the sampling policy's log-probs (uniform) and the advantages."""
    b, t = _rl_shape(h.shape[0])
    old = jnp.full((b, t), -math.log(w.shape[1]), jnp.float32)
    adv = jnp.where(jnp.arange(b) % 2 == 0, 1.0, -1.0).astype(jnp.float32)
    return (b, t), old, adv


def _jaxkl_fused_grpo(h, w, y):
    shape, old, adv = _head_grpo(h, w)
    return jaxkl.fused_linear_policy_loss(h.reshape(*shape, -1), w, y.reshape(shape), old, adv)[0]


def _jnp_fused_grpo(h, w, y):
    shape, old, adv = _head_grpo(h, w)
    logits = jnp.dot(h, w, preferred_element_type=jnp.float32)
    return _trl_grpo(_jnp_token_logprobs(logits, y).reshape(shape), old, adv)


def _dpo(token_logprobs, a, b, y):
    lp, ref = token_logprobs(a, y), jax.lax.stop_gradient(token_logprobs(b, y))
    n = lp.shape[0] - lp.shape[0] % 2
    return lp[0:n:2], lp[1:n:2], ref[0:n:2], ref[1:n:2]


def _jnp_dpo(a, b, y):
    c, r, rc, rr = _dpo(_jnp_token_logprobs, a, b, y)
    return jnp.mean(-jax.nn.log_sigmoid(0.1 * ((c - rc) - (r - rr))))


TABLE: dict[str, Kernel] = {
    "entropy": Kernel(
        "entropy_from_logits",
        "a",
        (0,),
        {
            "jaxkl": lambda a: jnp.sum(jaxkl.entropy_from_logits(a)),
            # optax has no entropy; its route is H(P) = CE(P, P) with its softmax CE.
            "optax": lambda a: jnp.sum(optax.losses.softmax_cross_entropy(a, jax.nn.softmax(a))),
            "jnp": lambda a: -jnp.sum(jax.nn.softmax(a) * jax.nn.log_softmax(a)),
        },
    ),
    "cross_entropy": Kernel(
        "cross_entropy_from_logits",
        "pb",
        (0, 1),
        {
            "jaxkl": lambda p, b: jnp.sum(jaxkl.cross_entropy_from_logits(p, b)),
            "optax": lambda p, b: jnp.sum(optax.losses.softmax_cross_entropy(b, p)),
            "jnp": lambda p, b: -jnp.sum(p * jax.nn.log_softmax(b)),
        },
    ),
    "kl": Kernel(
        "kl_divergence_from_logits",
        "ab",
        (0, 1),
        {
            "jaxkl": lambda a, b: jnp.sum(jaxkl.kl_divergence_from_logits(a, b)),
            "optax": lambda a, b: jnp.sum(
                optax.losses.kl_divergence_with_log_targets(jax.nn.log_softmax(b), jax.nn.log_softmax(a))
            ),
            "jnp": lambda a, b: jnp.sum(jax.nn.softmax(a) * (jax.nn.log_softmax(a) - jax.nn.log_softmax(b))),
        },
    ),
    "js": Kernel(
        "js_divergence_from_logits",
        "ab",
        (0, 1),
        {
            "jaxkl": lambda a, b: jnp.sum(jaxkl.js_divergence_from_logits(a, b)),
            "optax": None,  # optax has no Jensen-Shannon divergence
            "jnp": _jnp_js,
        },
    ),
    "tv": Kernel(
        "total_variation_from_logits",
        "ab",
        (0, 1),
        {
            "jaxkl": lambda a, b: jnp.sum(jaxkl.total_variation_from_logits(a, b)),
            "optax": None,  # optax has none of the divergences below
            "jnp": lambda a, b: 0.5 * jnp.sum(jnp.abs(jax.nn.softmax(a) - jax.nn.softmax(b))),
        },
    ),
    "hellinger": Kernel(
        "hellinger_distance_from_logits",
        "ab",
        (0, 1),
        {
            "jaxkl": lambda a, b: jnp.sum(jaxkl.hellinger_distance_from_logits(a, b)),
            "optax": None,
            "jnp": lambda a, b: jnp.sum(
                jnp.sqrt(1 - jnp.sum(jnp.sqrt(jax.nn.softmax(a) * jax.nn.softmax(b)), axis=-1))
            ),
        },
    ),
    "chi2": Kernel(
        "chi2_divergence_from_logits",
        "ab",
        (0, 1),
        {
            "jaxkl": lambda a, b: jnp.sum(jaxkl.chi2_divergence_from_logits(a, b)),
            "optax": None,
            "jnp": lambda a, b: jnp.sum((jax.nn.softmax(a) - jax.nn.softmax(b)) ** 2 / jax.nn.softmax(b)),
        },
    ),
    "renyi": Kernel(
        f"renyi_divergence_from_logits (alpha={RENYI_ALPHA:g})",
        "ab",
        (0, 1),
        {
            "jaxkl": lambda a, b: jnp.sum(jaxkl.renyi_divergence_from_logits(a, b, alpha=RENYI_ALPHA)),
            "optax": None,
            "jnp": _jnp_renyi,
        },
    ),
    "renyi_entropy": Kernel(
        f"renyi_entropy_from_logits (alpha={RENYI_ENTROPY_ALPHA:g})",
        "a",
        (0,),
        {
            "jaxkl": lambda a: jnp.sum(jaxkl.renyi_entropy_from_logits(a, alpha=RENYI_ENTROPY_ALPHA)),
            "optax": None,
            "jnp": lambda a: jnp.sum(
                jax.nn.logsumexp(RENYI_ENTROPY_ALPHA * jax.nn.log_softmax(a), axis=-1) / (1 - RENYI_ENTROPY_ALPHA)
            ),
        },
    ),
    "ce_labels": Kernel(
        "cross_entropy_loss (int labels)",
        "ay",
        (0,),
        {
            "jaxkl": lambda a, y: jaxkl.cross_entropy_loss(a, y, reduction="sum"),
            "optax": lambda a, y: jnp.sum(optax.losses.softmax_cross_entropy_with_integer_labels(a, y)),
            "jnp": _jnp_ce_labels,
        },
    ),
    "distillation": Kernel(
        f"distillation_loss (T={DISTILLATION_T:g})",
        "ab",
        (0,),  # the teacher is under stop_gradient: only the student is differentiated
        {
            "jaxkl": lambda s, t: jaxkl.distillation_loss(s, t, temperature=DISTILLATION_T),
            "optax": _optax_distillation,
            "jnp": _jnp_distillation,
        },
    ),
    "consistency": Kernel(
        f"consistency_loss (T={CONSISTENCY_T:g}, threshold {CONSISTENCY_THRESHOLD:g})",
        "ab",
        (0,),
        {
            "jaxkl": lambda x, t: jaxkl.consistency_loss(
                x, t, temperature=CONSISTENCY_T, confidence_threshold=CONSISTENCY_THRESHOLD
            ),
            "optax": None,  # optax has no consistency loss; its KL is the distillation peer's
            "jnp": _jnp_consistency,
        },
    ),
    "contrastive": Kernel(
        f"contrastive_loss (T={CONTRASTIVE_T:g}, rows x 128 embeddings)",
        "eg",
        (0, 1),
        {
            "jaxkl": lambda x, y: jaxkl.contrastive_loss(x, y, temperature=CONTRASTIVE_T),
            "optax": None,  # optax's ntxent is SimCLR's single-view loss, not CLIP's paired one
            "jnp": _jnp_contrastive,
        },
    ),
    "topk_distillation": Kernel(
        "topk_distillation_loss (T=2, k=64, bucket tail)",
        "ail",
        (0,),
        {
            "jaxkl": lambda z, i, l: jaxkl.topk_distillation_loss(z, i, l, temperature=2.0),
            "optax": None,  # optax has no sparse-target distillation
            "jnp": materialised_topk,
        },
    ),
    "fused_ce": Kernel(
        "fused_linear_cross_entropy",
        "hwy",
        (0, 1),
        {
            # Positional: the keyword names of the head arguments are not settled.
            "jaxkl": lambda h, w, y: jaxkl.fused_linear_cross_entropy(h, w, y),
            "optax": lambda h, w, y: jnp.mean(optax.losses.softmax_cross_entropy_with_integer_labels(h @ w, y)),
            "jnp": _jnp_fused_ce,
        },
    ),
    "token_logprobs": Kernel(
        "token_logprobs",
        "ay",
        (0,),
        {
            "jaxkl": lambda a, y: jnp.sum(jaxkl.token_logprobs(a, y)),
            "optax": None,  # optax has no selective log-softmax
            "jnp": lambda a, y: jnp.sum(_jnp_token_logprobs(a, y)),
        },
    ),
    "policy_grpo": Kernel(
        f"policy_loss (grpo) on token_logprobs, {RL_TOKENS} tokens a sequence",
        "aby",
        (0,),
        {"jaxkl": _jaxkl_grpo, "optax": None, "jnp": _jnp_grpo},
    ),
    "fused_grpo": Kernel(
        f"fused_linear_policy_loss (grpo), {RL_TOKENS} tokens a sequence",
        "hwy",
        (0, 1),
        {"jaxkl": _jaxkl_fused_grpo, "optax": None, "jnp": _jnp_fused_grpo},
    ),
    "preference_dpo": Kernel(
        "preference_loss (sigmoid, beta=0.1) on token_logprobs of paired rows",
        "aby",
        (0,),
        {
            "jaxkl": lambda a, b, y: jaxkl.preference_loss(*_dpo(jaxkl.token_logprobs, a, b, y)),
            "optax": None,
            "jnp": _jnp_dpo,
        },
    ),
}
KERNELS = tuple(TABLE)


def forward_and_backward(kernel: str, fn: Callable) -> tuple[Callable, Callable]:
    """`(forward, forward+backward)`: the value, and `(value, gradient)` wrt the kernel's `grad` inputs.

    `value_and_grad`, not `grad`: with `grad` alone XLA drops the value's own
    reduction from a peer's program, a saving no training step that logs its
    loss gets.
    """
    return fn, jax.value_and_grad(fn, argnums=TABLE[kernel].grad)


# ---------------------------------------------------------------------- floors


def _sum_of_exp(x):
    """`sum(exp(x))` as fast as XLA computes it on this backend.

    XLA:CPU writes `exp(x)` out at full size before summing it; over blocks
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

    * `read`: read every input once (a sum of each).
    * `exp`: `sum(exp(x))` over every logits element, plus reading the
      other inputs once: the exponentials any softmax-based kernel must take.
      Only for kernels with logits inputs (a fused head's floor is its matmuls).
    """
    names = TABLE[kernel].inputs

    def read(*xs):
        return sum(jnp.sum(x.astype(jnp.float32)) for x in xs)

    def exp(*xs):
        total = jnp.float32(0)
        for name, x in zip(names, xs):
            x = x.astype(jnp.float32)
            total = total + (_sum_of_exp(x) if name in LOGITS else jnp.sum(x))
        return total

    return {"read": read, "exp": exp} if set(names) & set(LOGITS) else {"read": read}
