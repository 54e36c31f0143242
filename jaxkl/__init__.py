"""jaxkl: JAX kernels for entropy, cross-entropy, KL, Jensen-Shannon and related divergences."""

from . import distributions as distributions
from . import fit as fit
from ._contrastive import contrastive_loss as contrastive_loss
from ._cross_entropy_loss import CrossEntropyAux as CrossEntropyAux
from ._cross_entropy_loss import cross_entropy_loss as cross_entropy_loss
from ._divergences import cross_entropy as cross_entropy
from ._divergences import entropy as entropy
from ._divergences import js_divergence as js_divergence
from ._divergences import kl_divergence as kl_divergence
from ._distillation import consistency_loss as consistency_loss
from ._distillation import distillation_loss as distillation_loss
from ._estimators import kl_estimate as kl_estimate
from ._fused import fused_linear_cross_entropy as fused_linear_cross_entropy
from ._fused_token_logprobs import fused_linear_token_logprobs as fused_linear_token_logprobs
from ._fused_policy import fused_linear_policy_loss as fused_linear_policy_loss
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
from ._policy import PolicyStats as PolicyStats
from ._policy import policy_loss as policy_loss
from ._policy import preference_loss as preference_loss
from ._reductions import reduce as reduce
from ._softmax import log_softmax as log_softmax
from ._softmax import logsumexp as logsumexp
from ._softmax import softmax as softmax
from ._token_logprobs import token_logprobs as token_logprobs
from ._divergences_f import alpha_divergence as alpha_divergence
from ._divergences_f import chi2_divergence as chi2_divergence
from ._divergences_f import f_divergence as f_divergence
from ._divergences_f import hellinger_distance as hellinger_distance
from ._divergences_f import renyi_divergence as renyi_divergence
from ._divergences_f import renyi_entropy as renyi_entropy
from ._divergences_f import total_variation as total_variation
from ._divergences_f import tsallis_entropy as tsallis_entropy
from ._information import conditional_entropy as conditional_entropy
from ._information import conditional_entropy_from_logits as conditional_entropy_from_logits
from ._information import joint_entropy as joint_entropy
from ._information import joint_entropy_from_logits as joint_entropy_from_logits
from ._information import mutual_information as mutual_information
from ._information import mutual_information_from_counts as mutual_information_from_counts
from ._information import mutual_information_from_logits as mutual_information_from_logits
from ._logits_f import alpha_divergence_from_logits as alpha_divergence_from_logits
from ._logits_f import chi2_divergence_from_logits as chi2_divergence_from_logits
from ._logits_f import f_divergence_from_logits as f_divergence_from_logits
from ._logits_f import hellinger_distance_from_logits as hellinger_distance_from_logits
from ._logits_f import renyi_divergence_from_logits as renyi_divergence_from_logits
from ._logits_f import renyi_entropy_from_logits as renyi_entropy_from_logits
from ._logits_f import total_variation_from_logits as total_variation_from_logits
from ._logits_f import tsallis_entropy_from_logits as tsallis_entropy_from_logits

__version__ = "0.1.0"

__all__ = [
    "alpha_divergence",
    "alpha_divergence_from_logits",
    "chi2_divergence",
    "chi2_divergence_from_logits",
    "conditional_entropy",
    "conditional_entropy_from_logits",
    "consistency_loss",
    "contrastive_loss",
    "cross_entropy",
    "cross_entropy_from_logits",
    "CrossEntropyAux",
    "cross_entropy_loss",
    "distillation_loss",
    "distributions",
    "entropy",
    "entropy_from_logits",
    "f_divergence",
    "f_divergence_from_logits",
    "fit",
    "fused_linear_cross_entropy",
    "fused_linear_distillation_loss",
    "fused_linear_policy_loss",
    "fused_linear_token_logprobs",
    "fused_linear_topk_distillation_loss",
    "hellinger_distance",
    "hellinger_distance_from_logits",
    "joint_entropy",
    "joint_entropy_from_logits",
    "js_divergence",
    "js_divergence_from_logits",
    "kl_div",
    "kl_divergence",
    "kl_divergence_from_logits",
    "kl_estimate",
    "log_softmax",
    "logsumexp",
    "mutual_information",
    "mutual_information_from_counts",
    "mutual_information_from_logits",
    "policy_loss",
    "PolicyStats",
    "preference_loss",
    "reduce",
    "renyi_divergence",
    "renyi_divergence_from_logits",
    "renyi_entropy",
    "renyi_entropy_from_logits",
    "softmax",
    "token_logprobs",
    "topk_distillation_loss",
    "total_variation",
    "total_variation_from_logits",
    "tsallis_entropy",
    "tsallis_entropy_from_logits",
]
