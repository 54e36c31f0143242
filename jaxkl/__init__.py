"""jaxkl: JAX kernels for entropy, cross-entropy, KL and Jensen-Shannon divergence."""

from . import distributions as distributions
from . import fit as fit
from ._divergences import cross_entropy as cross_entropy
from ._divergences import entropy as entropy
from ._divergences import js_divergence as js_divergence
from ._divergences import kl_divergence as kl_divergence
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
    "cross_entropy",
    "distributions",
    "fit",
    "cross_entropy_from_logits",
    "entropy",
    "entropy_from_logits",
    "js_divergence",
    "js_divergence_from_logits",
    "kl_div",
    "kl_divergence",
    "kl_divergence_from_logits",
    "log_softmax",
    "logsumexp",
    "reduce",
    "softmax",
]
