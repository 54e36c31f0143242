"""jaxkl: JAX kernels for entropy, cross-entropy, KL and Jensen-Shannon divergence."""

from . import distributions as distributions
from . import fit as fit
from ._contrastive import contrastive_loss as contrastive_loss
from ._cross_entropy_loss import cross_entropy_loss as cross_entropy_loss
from ._divergences import cross_entropy as cross_entropy
from ._divergences import entropy as entropy
from ._divergences import js_divergence as js_divergence
from ._divergences import kl_divergence as kl_divergence
from ._distillation import consistency_loss as consistency_loss
from ._distillation import distillation_loss as distillation_loss
from ._estimators import kl_estimate as kl_estimate
from ._fused import fused_linear_cross_entropy as fused_linear_cross_entropy
from ._fused_distillation import (
    fused_linear_distillation_loss as fused_linear_distillation_loss,
)
from ._topk_distillation import (
    fused_linear_topk_distillation_loss as fused_linear_topk_distillation_loss,
)
from ._topk_distillation import topk_distillation_loss as topk_distillation_loss
from ._logits import cross_entropy_from_logits as cross_entropy_from_logits
from ._logits import entropy_from_logits as entropy_from_logits
from ._logits import js_divergence_from_logits as js_divergence_from_logits
from ._logits import kl_divergence_from_logits as kl_divergence_from_logits
from ._losses import kl_div as kl_div
from ._reductions import reduce as reduce
from ._softmax import log_softmax as log_softmax
from ._softmax import logsumexp as logsumexp
from ._softmax import softmax as softmax

__version__ = "0.1.0"

__all__ = [
    "consistency_loss",
    "contrastive_loss",
    "cross_entropy",
    "cross_entropy_from_logits",
    "cross_entropy_loss",
    "distillation_loss",
    "distributions",
    "entropy",
    "entropy_from_logits",
    "fit",
    "fused_linear_cross_entropy",
    "fused_linear_distillation_loss",
    "fused_linear_topk_distillation_loss",
    "js_divergence",
    "js_divergence_from_logits",
    "kl_div",
    "kl_divergence",
    "kl_divergence_from_logits",
    "kl_estimate",
    "log_softmax",
    "logsumexp",
    "reduce",
    "softmax",
    "topk_distillation_loss",
]
