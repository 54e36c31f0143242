"""Guards against XLA:CPU miscompiles that silently change jaxkl's results.

jaxlib 0.10.2 miscompiles ``dx - sum(p * dx, -1, keepdims=True)`` when ``p`` is
broadcast over a leading batch axis (the tangent of a softmax under ``vmap``,
e.g. ``jax.jacfwd``), returning wrong numbers under ``jit`` only (see
jax-ml/jax#39103). pyproject.toml excludes that release; this test fails if an
affected jaxlib is installed anyway.
"""

import jax
import jax.numpy as jnp
import numpy as np

import jaxkl
from tests import reference as ref


def test_jit_of_forward_mode_log_softmax_jacobian_matches_the_closed_form():
    x = ref.random_logits(np.random.default_rng(0), (4, 6, 10))
    jac = jax.jit(jax.jacfwd(lambda x: jaxkl.log_softmax(x)[0, 0]))(x)
    p = ref.softmax(x[0, 0])
    expected = np.zeros((10,) + x.shape)
    expected[:, 0, 0, :] = np.eye(10) - p[None, :]
    np.testing.assert_allclose(jac, expected, atol=1e-6)


def test_broadcast_row_sum_subtraction_under_jit():
    rng = np.random.default_rng(1)
    p = rng.random((24, 10)).astype(np.float32)
    dx = rng.standard_normal((240, 24, 10)).astype(np.float32)
    got = jax.jit(lambda p, dx: dx - jnp.sum(p[None] * dx, -1, keepdims=True))(p, dx)
    np.testing.assert_allclose(got, dx - np.sum(p * dx, -1, keepdims=True), atol=1e-5)
