"""The fused heads with the classes sharded over 8 host devices (``axis_name=``).

Inside ``shard_map`` each device holds 2 of the 16 columns of the head (and of
the bias and class weights); hidden states and labels (global class ids) are
replicated. Values and gradients wrt hidden, head and bias must equal the
unsharded fused loss's, which ``tests/test_fused_parity.py`` and
``tests/test_head_options.py`` check against materialised references; the
compiled program must gather neither the head nor the logits.

Below, every fused loss that takes ``axis_name`` is checked against plain jnp on materialised
logits on that mesh and on a ``(data, model) = (2, 4)`` mesh (rows split over ``"data"``, the
head's classes over ``"model"``), under ``check_vma=True`` and ``False``; and with only the
rows split (a replicated head, untiled and class-tiled).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import jaxkl

SHARDS = 8
N, D, V = 7, 5, 16
LABELS = np.array([0, 15, 4, 11, -100, 7, 12])
CE_OPTIONS = dict(ignore_index=-100, label_smoothing=0.1, z_loss=1e-2, softcap=3.0, chunk_size=3)


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((SHARDS,), ("classes",), axis_types=(AxisType.Auto,))


def _head(seed):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(N, D)).astype(np.float32),
        rng.normal(size=(D, V)).astype(np.float32),
        rng.normal(size=(V,)).astype(np.float32),
        np.linspace(0.5, 2.0, V).astype(np.float32),
    )


def _value_and_grads(f):
    """jit(value and gradients wrt the first three arguments of sum(loss)), aux passed through."""
    scalar = lambda *a: (jnp.sum(f(*a)[0]), f(*a)[1])
    return jax.jit(jax.value_and_grad(scalar, (0, 1, 2), has_aux=True))


def test_sharded_fused_cross_entropy_equals_unsharded(mesh):
    # reduction="none": every row's gradient is checked separately (a sum of per-row losses).
    h, w, b, cw = _head(0)
    kw = dict(CE_OPTIONS, reduction="none", return_aux=True)

    def sharded(h, w, b, cw):
        f = lambda h, w, b, cw: jaxkl.fused_linear_cross_entropy(
            h, w, LABELS, head_bias=b, weight=cw, axis_name="classes", **kw
        )
        specs = (P(), P(None, "classes"), P("classes"), P("classes"))
        return jax.shard_map(f, mesh=mesh, in_specs=specs, out_specs=P())(h, w, b, cw)

    def unsharded(h, w, b, cw):
        return jaxkl.fused_linear_cross_entropy(h, w, LABELS, head_bias=b, weight=cw, **kw)

    step = _value_and_grads(sharded)
    (got, got_aux), got_grads = step(h, w, b, cw)
    (want, want_aux), want_grads = _value_and_grads(unsharded)(h, w, b, cw)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, r in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    for name, g, r in zip(want_aux._fields, got_aux, want_aux):
        np.testing.assert_allclose(g, r, rtol=1e-5, err_msg=name)
    assert "all-gather" not in step.lower(h, w, b, cw).compile().as_text()


def test_sharded_fused_distillation_equals_unsharded(mesh):
    h, w, _, _ = _head(1)
    th, tw, _, _ = _head(2)
    kw = dict(divergence="js", labels=LABELS.clip(0), alpha=0.7, temperature=2.0, softcap=4.0, chunk_size=3)

    def sharded(h, w, tw):
        f = lambda h, w, tw: jaxkl.fused_linear_distillation_loss(h, w, th, tw, axis_name="classes", **kw)
        specs = (P(), P(None, "classes"), P(None, "classes"))
        return jax.shard_map(f, mesh=mesh, in_specs=specs, out_specs=P())(h, w, tw), ()

    def unsharded(h, w, tw):
        return jaxkl.fused_linear_distillation_loss(h, w, th, tw, **kw), ()

    step = _value_and_grads(sharded)
    (got, _), got_grads = step(h, w, tw)
    (want, _), want_grads = _value_and_grads(unsharded)(h, w, tw)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, r in zip(got_grads[:2], want_grads[:2]):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    assert not np.asarray(got_grads[2]).any()  # the teacher gets no gradient
    assert "all-gather" not in step.lower(h, w, tw).compile().as_text()


@pytest.mark.parametrize("fused", [True, False])
def test_sharded_token_logprobs_and_entropy_equal_unsharded(mesh, fused):
    # Both outputs weighted by random coefficients, so every row's gradient of each is checked.
    h, w, b, _ = _head(3)
    tokens = LABELS.clip(0)
    c1, c2 = np.random.default_rng(4).normal(size=(2, N))
    kw = dict(temperature=0.8, softcap=3.0, return_entropy=True)

    def token_fn(axis_name):
        if fused:
            return lambda h, w, b: jaxkl.fused_linear_token_logprobs(
                h, w, tokens, head_bias=b, chunk_size=3, axis_name=axis_name, **kw
            )
        return lambda h, w, b: jaxkl.token_logprobs(h @ w + b[None, :], tokens, axis_name=axis_name, **kw)

    def sharded(h, w, b):
        specs = (P(), P(None, "classes"), P("classes"))
        return jax.shard_map(token_fn("classes"), mesh=mesh, in_specs=specs, out_specs=P())(h, w, b)

    def weighted(f):
        def total(h, w, b):
            lp, ent = f(h, w, b)
            return jnp.sum(c1 * lp + c2 * ent), (lp, ent)

        return jax.jit(jax.value_and_grad(total, (0, 1, 2), has_aux=True))

    step = weighted(sharded)
    (_, got), got_grads = step(h, w, b)
    (_, want), want_grads = weighted(token_fn(None))(h, w, b)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    for g, r in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    assert "all-gather" not in step.lower(h, w, b).compile().as_text()


# ---------------------------------------------------------------------------------------------
# Every fused head that takes ``axis_name``, against plain jnp on materialised logits, on two
# layouts: ``"classes"`` (1-D mesh of 8, hidden replicated, as above) and ``"data_model"`` (the
# (data, model) = (2, 4) mesh of docs/multiple-hosts.md: rows split over "data", the head's
# classes over "model"), each under check_vma=True (shard_map's default) and False. Gradients
# wrt hidden, head and bias: a kernel that sums ``d hidden`` itself counts every device twice
# under check_vma=False, and on the 2-D mesh the custom VJPs must return cotangents of their
# primals' types.

B2, T2, V2 = 4, 2, 16  # 8 rows: 4 per data shard, in chunks of 3 (one padded)
Z, EPS, TEMP = 1e-2, 0.1, 0.8


@pytest.fixture(scope="module")
def mesh2():
    return jax.make_mesh((2, 4), ("data", "model"), axis_types=(AxisType.Auto,) * 2)


def _lse(z):
    return jax.scipy.special.logsumexp(z, axis=-1)


def _ce_ref(h, w, b, y):
    """Cross-entropy with label smoothing and z-loss per row; label -100 counts 0 (plain jnp)."""
    z = h @ w + b[None, :]
    lse = _lse(z)
    picked = jnp.take_along_axis(z, jnp.clip(y, 0)[:, None], -1)[:, 0]
    rows = (1 - EPS) * (lse - picked) + EPS * jnp.mean(lse[:, None] - z, -1) + Z * lse**2
    return jnp.where(y == -100, 0.0, rows)


def _token_ref(h, w, b, y):
    logp = jax.nn.log_softmax((h @ w + b[None, :]) / TEMP)
    lp = jnp.take_along_axis(logp, y[:, None], -1)[:, 0]
    return lp, -jnp.sum(jnp.exp(logp) * logp, -1)


def _policy_ref(h, w, b, y, old, adv):
    """GRPO (every token real), clip 0.2, entropy bonus 0.1: the mean over tokens (plain jnp)."""
    lp, ent = _token_ref(h.reshape(-1, h.shape[-1]), w, b, y.reshape(-1))
    r = jnp.exp(lp.reshape(y.shape) - old)
    a = adv[:, None]
    return jnp.mean(-jnp.minimum(r * a, jnp.clip(r, 0.8, 1.2) * a) - 0.1 * ent.reshape(y.shape))


def _distillation_ref(h, w, th, tw):
    """T^2 KL(softmax(t / T) || softmax(s / T)) per row, T = 2 (plain jnp); the teacher is a constant."""
    logq = jax.nn.log_softmax(h @ w / 2.0)
    logp = jax.nn.log_softmax(jax.lax.stop_gradient(th @ tw) / 2.0)
    return 4.0 * jnp.sum(jnp.exp(logp) * (logp - logq), -1)


def _fused_case(name, rng, **extra):
    """`(args, kinds, fused(axis_name, *args), combine, reference(*args), argnums)`.

    `kinds` says how each argument is split: "rows" (leading axis over the data axis),
    "head" (columns over the class axis), "classes" (a [V] vector over the class axis).
    `combine`: how a device's result joins the others' over the data axis ("rows": an
    output per row, weighted by fixed coefficients outside).
    """
    n = B2 * T2
    h = rng.normal(size=(n, D)).astype(np.float32)
    w = rng.normal(size=(D, V2)).astype(np.float32)
    b = rng.normal(size=(V2,)).astype(np.float32)
    y = rng.integers(0, V2, size=n).astype(np.int32)
    if name == "cross_entropy_sum":
        y[5] = -100
        opts = dict(ignore_index=-100, label_smoothing=EPS, z_loss=Z, chunk_size=3, reduction="sum", **extra)
        fused = lambda a, h, w, b, y: jaxkl.fused_linear_cross_entropy(h, w, y, head_bias=b, axis_name=a, **opts)
        total = lambda *x: jnp.sum(_ce_ref(*x))
        return (h, w, b, y), ("rows", "head", "classes", "rows"), fused, "psum", total, (0, 1, 2)
    if name == "cross_entropy_none":
        y[5] = -100
        opts = dict(ignore_index=-100, label_smoothing=EPS, z_loss=Z, chunk_size=3, reduction="none", **extra)
        fused = lambda a, h, w, b, y: jaxkl.fused_linear_cross_entropy(h, w, y, head_bias=b, axis_name=a, **opts)
        return (h, w, b, y), ("rows", "head", "classes", "rows"), fused, "rows", _ce_ref, (0, 1, 2)
    if name == "token_logprobs":
        opts = dict(temperature=TEMP, return_entropy=True, chunk_size=3, **extra)
        fused = lambda a, h, w, b, y: jaxkl.fused_linear_token_logprobs(h, w, y, head_bias=b, axis_name=a, **opts)
        return (h, w, b, y), ("rows", "head", "classes", "rows"), fused, "rows", _token_ref, (0, 1, 2)
    if name == "policy":
        h3, y2 = h.reshape(B2, T2, D), y.reshape(B2, T2)
        old = rng.normal(-2.5, 0.3, size=(B2, T2)).astype(np.float32)
        adv = rng.normal(size=(B2,)).astype(np.float32)
        opts = dict(temperature=TEMP, entropy_coef=0.1, chunk_size=3, **extra)
        fused = lambda a, h, w, b, y, old, adv: jaxkl.fused_linear_policy_loss(
            h, w, y, old, adv, head_bias=b, axis_name=a, **opts
        )[0]
        # GRPO is a mean over sequences: equal data shards combine by their mean.
        kinds = ("rows", "head", "classes", "rows", "rows", "rows")
        return (h3, w, b, y2, old, adv), kinds, fused, "pmean", _policy_ref, (0, 1, 2)
    assert name == "distillation"
    th = rng.normal(size=(n, 3)).astype(np.float32)
    tw = rng.normal(size=(3, V2)).astype(np.float32)
    opts = dict(temperature=2.0, chunk_size=3, reduction="none", **extra)
    fused = lambda a, h, w, th, tw: jaxkl.fused_linear_distillation_loss(h, w, th, tw, axis_name=a, **opts)
    return (h, w, th, tw), ("rows", "head", "rows", "head"), fused, "rows", _distillation_ref, (0, 1, 3)


FUSED_CASES = ["cross_entropy_sum", "cross_entropy_none", "token_logprobs", "policy", "distillation"]


def _check_on_mesh(name, on, data, model, check_vma, **extra):
    """Values and gradients of case `name` under shard_map on `on` against its plain-jnp reference.

    `data`/`model`: the mesh axes the rows / the head's classes are split over (None: not split;
    `model` is also the loss's `axis_name`).
    """
    rng = np.random.default_rng(FUSED_CASES.index(name))
    args, kinds, fused, combine, reference, argnums = _fused_case(name, rng, **extra)
    spec = {"rows": P(data), "head": P(None, model), "classes": P(model)}
    coef = rng.normal(size=(2, B2 * T2)).astype(np.float32)

    def scalar(out):
        """Every row's output weighted by its own coefficient: each row's gradient is checked."""
        if combine != "rows":
            return out
        outs = out if isinstance(out, tuple) else (out,)
        return sum(jnp.sum(c * o) for c, o in zip(coef, outs))

    def local(*a):
        out = fused(model, *a)
        if combine == "psum" and data:
            return jax.lax.psum(out, data)
        if combine == "pmean" and data:
            return jax.lax.pmean(out, data)
        return out

    out_spec = P(data) if combine == "rows" else P()
    if name == "token_logprobs":
        out_spec = (out_spec, out_spec)
    sharded = jax.shard_map(
        local, mesh=on, in_specs=tuple(spec[k] for k in kinds), out_specs=out_spec, check_vma=check_vma
    )
    step = jax.jit(jax.value_and_grad(lambda *a: scalar(sharded(*a)), argnums))
    got, got_grads = step(*args)
    assert "all-gather" not in step.lower(*args).compile().as_text()  # neither the head nor the logits
    want, want_grads = jax.jit(jax.value_and_grad(lambda *a: scalar(reference(*a)), argnums))(*args)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for i, g, r in zip(argnums, got_grads, want_grads):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5, err_msg=f"gradient wrt argument {i}")


@pytest.mark.parametrize("check_vma", [True, False])
@pytest.mark.parametrize("layout", ["classes", "data_model"])
@pytest.mark.parametrize("name", FUSED_CASES)
def test_every_fused_head_on_a_class_mesh_and_a_data_model_mesh(mesh, mesh2, name, layout, check_vma):
    if layout == "classes":
        _check_on_mesh(name, mesh, None, "classes", check_vma)
    else:
        _check_on_mesh(name, mesh2, "data", "model", check_vma)


@pytest.mark.parametrize("check_vma", [True, False])
@pytest.mark.parametrize("tiles", [None, 5])
@pytest.mark.parametrize("name", ["cross_entropy_sum", "token_logprobs", "policy"])
def test_fused_heads_with_only_the_rows_split_over_a_data_axis(mesh2, name, tiles, check_vma):
    # Data parallelism inside shard_map: the head is replicated and no axis_name is given, so
    # the class-tiled path runs too (its running statistics and accumulators start as
    # constants and must take the data-split rows' type). The head's gradient is the sum
    # over the data shards.
    _check_on_mesh(name, mesh2, "data", None, check_vma, vocab_chunk_size=tiles)


@pytest.mark.parametrize("tiles", [None, 5])
def test_bfloat16_heads_on_the_data_model_mesh(mesh2, head_matmuls, tiles):
    # Both branches of the 16-bit matmuls (float32 on CPU, the accelerators' as-given one) keep
    # the operands' mesh types (check_vma=True; without it there are no types to keep).
    # Untiled: classes over "model"; tiled: a replicated head (no axis_name), rows over "data".
    # Reference: float32 logits from the same bf16-rounded inputs.
    rng = np.random.default_rng(21)
    h, w, b = (jnp.asarray(rng.normal(size=s), jnp.bfloat16) for s in ((B2 * T2, D), (D, V2), (V2,)))
    y = jnp.asarray(rng.integers(0, V2, size=B2 * T2), jnp.int32)
    model = "model" if tiles is None else None
    specs = (P("data", None), P(None, model), P(model), P("data"))

    def local(h, w, b, y):
        loss = jaxkl.fused_linear_cross_entropy(
            h, w, y, head_bias=b, reduction="sum", z_loss=Z, chunk_size=3, vocab_chunk_size=tiles, axis_name=model
        )
        return jax.lax.psum(loss.astype(jnp.float32), "data")

    sharded = jax.shard_map(local, mesh=mesh2, in_specs=specs, out_specs=P())
    got, got_grads = jax.jit(jax.value_and_grad(sharded, (0, 1, 2)))(h, w, b, y)
    assert all(g.dtype == jnp.bfloat16 for g in got_grads)
    as_f32 = [np.asarray(x, np.float32) for x in (h, w, b)]
    ce = lambda h, w, b: jnp.sum(jaxkl.cross_entropy_loss(h @ w + b[None, :], y, z_loss=Z, reduction="none"))
    want, want_grads = jax.value_and_grad(ce, (0, 1, 2))(*as_f32)
    np.testing.assert_allclose(got, want, rtol=1e-2)
    for g, r in zip(got_grads, want_grads):
        np.testing.assert_allclose(np.float32(g), r, atol=2e-2 * float(np.abs(r).max()))
