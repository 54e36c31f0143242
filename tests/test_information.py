"""Joint, conditional entropy and mutual information against NumPy formulas and scikit-learn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import mutual_info_score

import jaxkl
from tests import reference as ref


def ref_mi(joint):
    """sum p log(p / (p_x p_y)) over the cells with p > 0, float64."""
    joint = np.asarray(joint, np.float64)
    product = joint.sum(-1, keepdims=True) * joint.sum(-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(joint > 0, joint * np.log(joint / product), 0.0).sum((-2, -1))


def ref_conditional(joint):
    """H(Y | X) = -sum p log(p / p_x), float64."""
    joint = np.asarray(joint, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(joint > 0, joint * np.log(joint / joint.sum(-1, keepdims=True)), 0.0).sum((-2, -1))


def _tables(seed, shape=(3, 4, 5)):
    """Random joint tables with some zero cells, summing to 1 each."""
    rng = np.random.default_rng(seed)
    flat = ref.random_probs(rng, shape[:-2] + (shape[-2] * shape[-1],), zeros=True)
    return flat.reshape(shape)


def _log(x):
    with np.errstate(divide="ignore"):
        return np.log(x)


@jax.jit
def _every_form(joint):
    logits = jnp.log(joint)
    return dict(
        h_xy=jaxkl.joint_entropy(joint),
        h_y_x=jaxkl.conditional_entropy(joint),
        mi=jaxkl.mutual_information(joint),
        h_xy_l=jaxkl.joint_entropy_from_logits(logits),
        h_y_x_l=jaxkl.conditional_entropy_from_logits(logits),
        mi_l=jaxkl.mutual_information_from_logits(logits),
    )


def test_match_references_in_both_forms():
    joint = _tables(0)
    got = _every_form(jnp.asarray(joint))
    h_xy = ref.entropy(joint.reshape(3, -1))
    for key in ("h_xy", "h_xy_l"):
        np.testing.assert_allclose(got[key], h_xy, rtol=1e-5)
    for key in ("h_y_x", "h_y_x_l"):
        np.testing.assert_allclose(got[key], ref_conditional(joint), rtol=1e-5)
    for key in ("mi", "mi_l"):
        np.testing.assert_allclose(got[key], ref_mi(joint), rtol=1e-4, atol=1e-6)
    # MI = H(X) + H(Y) - H(X, Y), with the marginals' entropies from SciPy-style references.
    h_x, h_y = ref.entropy(joint.sum(-1)), ref.entropy(joint.sum(-2))
    np.testing.assert_allclose(got["mi"], h_x + h_y - h_xy, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(jaxkl.mutual_information(joint, base=2), ref_mi(joint) / np.log(2), rtol=1e-4)


@pytest.mark.parametrize("x64_on", [False, True])
def test_counts_match_scikit_learn(x64_on):
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 50, size=(4, 6))
    counts[1] = 0  # an empty row of the table
    with jax.enable_x64(x64_on):
        got = jaxkl.mutual_information_from_counts(counts)
        assert got.dtype == (jnp.float64 if x64_on else jnp.float32)
    np.testing.assert_allclose(got, mutual_info_score(None, None, contingency=counts), rtol=1e-12 if x64_on else 1e-5)
    # Large counts in float64: the result keeps full precision.
    big = counts * 10**5 + 1  # (scikit-learn's int64 products overflow beyond ~1e9 per cell)
    with jax.enable_x64(True):
        np.testing.assert_allclose(jaxkl.mutual_information_from_counts(big), mutual_info_score(None, None, contingency=big), rtol=1e-10)
    assert jaxkl.mutual_information_from_counts(np.zeros((2, 3), np.int32)) == 0.0


@settings(max_examples=10)
@given(st.integers(0, 2**31 - 1))
def test_invariant_under_permutations_symmetric_and_zero_for_products(seed):
    rng = np.random.default_rng(seed)
    joint = _tables(seed, (4, 5))
    permuted = joint[rng.permutation(4)][:, rng.permutation(5)]
    mi = np.asarray(jax.jit(jax.vmap(jaxkl.mutual_information))(jnp.asarray(np.stack([joint, permuted]))))
    np.testing.assert_allclose(mi[1], mi[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jaxkl.mutual_information(joint.T), mi[0], rtol=1e-5, atol=1e-7)
    product = np.outer(joint.sum(1), joint.sum(0)).astype(np.float32)
    assert 0.0 <= jaxkl.mutual_information(product) <= 1e-6


def test_gradients_are_finite_at_zeros_and_minus_inf_and_masks_drop_cells():
    joint = _tables(2, (2, 3, 4))
    joint[0, 0, :] = 0.0  # a whole row of X with no mass
    joint[0] /= joint[0].sum()

    def every_measure(p, logits):
        return jnp.sum(
            jaxkl.mutual_information(p) + jaxkl.conditional_entropy(p)
            + jaxkl.mutual_information_from_logits(logits) + jaxkl.conditional_entropy_from_logits(logits)
        )

    for g in jax.jit(jax.grad(every_measure, (0, 1)))(jnp.asarray(joint), jnp.asarray(_log(joint))):
        assert np.isfinite(np.asarray(g)).all()
    # Masking a cell of the logits renormalises over the rest; of probabilities, drops it.
    logits = np.random.default_rng(3).normal(size=(3, 4)).astype(np.float32)
    keep = np.ones((3, 4), bool)
    keep[1, 2] = False
    masked = np.where(keep, np.exp(logits), 0.0)
    masked /= masked.sum()
    np.testing.assert_allclose(jaxkl.mutual_information_from_logits(logits, where=keep), ref_mi(masked), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(jaxkl.mutual_information(masked, where=keep), ref_mi(masked), rtol=1e-4, atol=1e-6)


def test_bad_tables_raise():
    with pytest.raises(ValueError, match="at least 2 axes"):
        jaxkl.mutual_information(jnp.ones(4) / 4)
    with pytest.raises(TypeError, match="counts"):
        jaxkl.mutual_information_from_counts(jnp.ones((2, 2), bool))
