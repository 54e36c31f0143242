"""Distribution families as immutable pytrees, with an extensible analytic-KL registry.

Every family broadcasts its parameters to one batch shape, works under `jit`,
`vmap` and `grad` (parameters are the pytree leaves), and checks concrete
parameter values at construction (`ValueError`); traced values are checked
with [jaxkl.distributions.Distribution.check][] under `jax.experimental.checkify`.
"""

from . import _kl_cross  # registers the cross-family pairs
from ._base import Distribution as Distribution
from ._counts import Binomial as Binomial
from ._counts import Geometric as Geometric
from ._counts import Poisson as Poisson
from ._discrete import Bernoulli as Bernoulli
from ._discrete import Categorical as Categorical
from ._independent import Independent as Independent
from ._kl import has_kl as has_kl
from ._kl import kl_divergence as kl_divergence
from ._kl import register_kl as register_kl
from ._mixture import MixtureSameFamily as MixtureSameFamily
from ._multivariate import Dirichlet as Dirichlet
from ._multivariate import MultivariateNormalDiag as MultivariateNormalDiag
from ._multivariate import MultivariateNormalTriL as MultivariateNormalTriL
from ._univariate import Beta as Beta
from ._univariate import Cauchy as Cauchy
from ._univariate import Exponential as Exponential
from ._univariate import Gamma as Gamma
from ._univariate import Gumbel as Gumbel
from ._univariate import Laplace as Laplace
from ._univariate import LogNormal as LogNormal
from ._univariate import Normal as Normal
from ._univariate import StudentT as StudentT
from ._univariate import Uniform as Uniform

__all__ = [
    "Bernoulli",
    "Beta",
    "Binomial",
    "Categorical",
    "Cauchy",
    "Dirichlet",
    "Distribution",
    "Exponential",
    "Gamma",
    "Geometric",
    "Gumbel",
    "Independent",
    "Laplace",
    "LogNormal",
    "MixtureSameFamily",
    "MultivariateNormalDiag",
    "MultivariateNormalTriL",
    "Normal",
    "Poisson",
    "StudentT",
    "Uniform",
    "has_kl",
    "kl_divergence",
    "register_kl",
]
