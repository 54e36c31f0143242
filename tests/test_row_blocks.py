"""On CPU the row kernels run over blocks of rows; blocked results equal the references.

The block size is made tiny here so that small inputs take the blocked path.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkl
from jaxkl import _rowwise
from tests import reference as ref


@pytest.fixture
def tiny_blocks(monkeypatch):
    monkeypatch.setattr(_rowwise, "BLOCK_ELEMENTS", 20)  # 2 rows of 10 classes per block
    monkeypatch.setattr(_rowwise, "SMALL_INPUT_ELEMENTS", 0)  # every input is blocked
    jax.clear_caches()  # traces made with the default block size must not be reused
    yield
    jax.clear_caches()


def test_block_sizes():
    assert _rowwise.block_rows((2048, 32768), 1, None) == 8
    assert _rowwise.block_rows((2048, 32768), 0, None) is None  # class axis not last
    assert _rowwise.block_rows((2048, 32768), 1, "classes") is None  # sharded classes
    assert _rowwise.block_rows((10, 32768), 1, None) is None  # too few rows to block
    assert _rowwise.block_rows((32, 262144), 1, None) == 2
    assert _rowwise.block_rows((64, 524288), 1, None) == 2  # never a block of one row
    assert _rowwise.block_rows((3, 1024, 4096), 2, None) == 64  # leading axes are rows
    assert _rowwise.block_rows((4099, 32768), 1, None) is None  # a prime number of rows: no tiling


def _inputs():
    rng = np.random.default_rng(0)
    a = ref.random_logits(rng, (4, 6, 10))
    b = ref.random_logits(rng, (4, 6, 10))
    a[0, 0, 3] = -np.inf
    b[1, 2, :] = -np.inf  # a row where q is entirely -inf
    a[1, 2, :] = -np.inf
    keep = rng.random((6, 10)) > 0.2
    return a, b, keep


def test_blocked_path_is_taken(tiny_blocks):
    a, b, _ = _inputs()
    labels = np.zeros(a.shape[:-1], np.int32)
    for fn in (jaxkl.kl_divergence_from_logits, jaxkl.cross_entropy_loss, jaxkl.token_logprobs):
        hlo = jax.jit(fn).lower(a, b if fn is jaxkl.kl_divergence_from_logits else labels).compile().as_text()
        assert "while" in hlo, fn.__name__


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_small_inputs_of_log_normalizer_kernels_run_unblocked(dtype):
    # At most SMALL_INPUT_ELEMENTS elements: no row loop; one row block more: the loop.
    classes = 8192
    for rows, blocked in ((_rowwise.SMALL_INPUT_ELEMENTS // classes, False), (1024 + 128, True)):
        logits = jax.ShapeDtypeStruct((rows, classes), dtype)
        labels = jax.ShapeDtypeStruct((rows,), jnp.int32)
        for fn in (jaxkl.cross_entropy_loss, jaxkl.token_logprobs):
            hlo = jax.jit(fn).lower(logits, labels).compile().as_text()
            assert ("while" in hlo) == blocked, (fn.__name__, rows, dtype)
    # Kernels that do more work per row block keep their blocks at small sizes.
    logits = jax.ShapeDtypeStruct((512, classes), dtype)
    assert "while" in jax.jit(jaxkl.entropy_from_logits).lower(logits).compile().as_text()


@np.errstate(invalid="ignore", divide="ignore")  # the references meet -inf - -inf on empty rows
def test_blocked_kernels_match_references(tiny_blocks):
    a, b, keep = _inputs()
    p, q = ref.softmax(np.where(keep, a, -np.inf)), ref.softmax(np.where(keep, b, -np.inf))
    p, q = np.nan_to_num(p), np.nan_to_num(q)
    got = jax.jit(lambda a, b: jaxkl.kl_divergence_from_logits(a, b, where=keep))(a, b)
    want = np.sum(np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(np.where(p > 0, q, 1))), 0), -1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    got = jax.jit(lambda a: jaxkl.entropy_from_logits(a, where=keep[None]))(a)
    np.testing.assert_allclose(got, np.sum(-np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0), -1), rtol=1e-5, atol=1e-6)
    got = jax.jit(lambda a: jaxkl.log_softmax(a, where=keep[:, :1]))(a)
    want = ref.log_softmax(np.where(keep[:, :1], a, -np.inf))
    np.testing.assert_allclose(np.where(np.isfinite(want), got, 0), np.nan_to_num(want, neginf=0), rtol=1e-5, atol=1e-6)
    labels = np.argmax(np.nan_to_num(b, neginf=-1e9), -1)
    got = jax.jit(lambda a: jaxkl.cross_entropy_loss(a, labels, reduction="none"))(np.nan_to_num(a, neginf=-1e9))
    want = -np.take_along_axis(ref.log_softmax(np.nan_to_num(a, neginf=-1e9)), labels[..., None], -1)[..., 0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_blocked_gradients_match_the_formulas(tiny_blocks):
    a, b, _ = _inputs()
    a, b = np.nan_to_num(a, neginf=-30.0), np.nan_to_num(b, neginf=-30.0)
    ga, gb = jax.jit(jax.grad(lambda a, b: jnp.sum(jaxkl.kl_divergence_from_logits(a, b)), (0, 1)))(a, b)
    p, q = ref.softmax(a), ref.softmax(b)
    kl = ref.kl(p, q)[..., None]
    np.testing.assert_allclose(gb, q - p, atol=1e-6)
    np.testing.assert_allclose(ga, p * (np.log(p) - np.log(q) - kl), atol=1e-5)
    jac = jax.jit(jax.jacfwd(lambda a: jaxkl.logsumexp(a)[0, 0]))(a)
    expected = np.zeros_like(a)
    expected[0, 0] = p[0, 0]
    np.testing.assert_allclose(jac, expected, atol=1e-6)


def test_odd_row_counts_use_smaller_blocks(tiny_blocks, monkeypatch):
    monkeypatch.setattr(_rowwise, "BLOCK_ELEMENTS", 40)  # 4 rows of 10 classes per block
    a = ref.random_logits(np.random.default_rng(1), (9, 10))  # 9 rows tile as 3 blocks of 3
    assert _rowwise.block_rows(a.shape, 1, None) == 3
    got = jax.jit(jaxkl.logsumexp)(a)
    from scipy.special import logsumexp

    np.testing.assert_allclose(got, logsumexp(a, -1), rtol=1e-6)
