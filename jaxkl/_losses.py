"""Training losses built on the kernels."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from . import _validate
from ._reductions import reduce
from ._rowwise import compute_dtype


def kl_div(
    input: ArrayLike, target: Any, *, reduction: str = "mean", log_target: bool = False
) -> jax.Array:
    r"""`torch.nn.functional.kl_div` with PyTorch's argument order and reductions.

    `input` holds log-probabilities `log q` and `target` holds `p` (or
    `log p` when `log_target=True`); the pointwise loss is

    $$
    \ell_i = p_i (\log p_i - \text{input}_i)
    $$

    so `kl_div(log_q, p, reduction="batchmean")` is the batch mean of
    `KL(p || q)` for 2-D inputs. Reductions copy PyTorch exactly:

    * `"none"`: pointwise losses, shape of `input`;
    * `"sum"`: sum of all elements;
    * `"mean"`: mean over **all elements** (classes included) — PyTorch's
      default, which is *not* a KL; prefer `"batchmean"`;
    * `"batchmean"`: sum divided by `input.shape[0]`.

    Where jaxkl differs from PyTorch, it is to avoid NaN: a zero target
    (`-inf` log-target) contributes exactly 0 with zero gradient even where
    `input` is `-inf` (PyTorch returns NaN there). Shapes must match: no
    broadcasting.

    Args:
      input: log-probabilities of the model, any shape `[N, ...]`.
      target: probabilities (or log-probabilities), same shape as `input`.
      reduction: `"none"`, `"sum"`, `"mean"` or `"batchmean"`.
      log_target: whether `target` holds log-probabilities.

    Returns:
      A scalar, or `input`'s shape for `"none"`; dtype of the inputs.

    Examples:
      >>> import jax.numpy as jnp, jaxkl
      >>> log_q = jaxkl.log_softmax(jnp.array([[4.0, 3.9, 1.0]]))
      >>> p = jaxkl.softmax(jnp.array([[5.0, 4.0, 0.1]]))
      >>> print(jaxkl.kl_div(log_q, p, reduction="sum").round(6))
      0.100483

    References:
      PyTorch documentation, `torch.nn.KLDivLoss`.
    """
    x = _validate.float_array(input, "input")
    t = _validate.float_array(target, "target")
    _validate.same_shape(x, t, "input", "target")
    reduction = _validate.reduction(reduction)
    dtype = _validate.common_dtype(x, t)
    x = x.astype(compute_dtype(dtype))
    t = t.astype(compute_dtype(dtype))
    if log_target:
        p, log_p = jnp.exp(t), t
    else:
        p, log_p = t, jnp.log(jnp.where(t == 0, 1.0, t))
    # p (log p - input), computed as one product (no cancellation between two
    # sums); where p = 0 the term is 0 with zero gradient, unless input is NaN.
    unused = p == 0
    pointwise = jnp.where(
        unused,
        jnp.where(jnp.isnan(x), x, 0.0),
        p * (jnp.where(unused, 0.0, log_p) - jnp.where(unused, 0.0, x)),
    )
    return reduce(pointwise, reduction).astype(dtype)
