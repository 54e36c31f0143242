"""The fitter against analytic optima (never against its own earlier output)."""

import logging
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxkl.fit._fit as fit_module
from jaxkl.distributions import (
    Categorical,
    MixtureSameFamily,
    MultivariateNormalTriL,
    Normal,
)
from jaxkl.fit import fit, plot, study

SQRT26 = np.sqrt(26.0)  # standard deviation of 0.5 N(0,1) + 0.5 N(10,1): 1 + 25


def test_thousand_starts_in_one_jitted_call(monkeypatch, caplog):
    calls = []
    original = fit_module._fit_chunk

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(fit_module, "_fit_chunk", counting)
    init = Normal(jnp.linspace(-5.0, 5.0, 1000), jnp.linspace(0.5, 4.0, 1000))
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        r = fit(Normal(3.0, 2.0), init, objective="forward_kl", steps=1500, progress=False,
                optimizer=optax.adam(0.1, b2=0.99))
    compiles = [rec for rec in caplog.records if "Compiling jit(_fit_chunk)" in rec.getMessage()]
    assert len(calls) == 1 and len(compiles) <= 1
    assert r.dist.batch_shape == (1000,) and r.losses.shape == (1500, 1000)
    # the optimum of KL(N(3, 2) || q) over Normals is q = N(3, 2)
    np.testing.assert_allclose(r.dist.loc, 3.0, atol=2e-2)
    np.testing.assert_allclose(r.dist.scale, 2.0, atol=2e-2)
    assert (r.steps == 1500).all() and not r.converged.any() and not r.failed.any()


def test_new_target_values_reuse_the_compiled_loop(monkeypatch):
    # The target's arrays are traced arguments of the compiled loop, so a second fit to a
    # different Normal of the same shapes (same optimizer object) must not trace it again.
    chex.clear_trace_counter()
    counted = chex.assert_max_traces(fit_module._fit_chunk.__wrapped__, n=1)
    static = ("spec", "optimizer", "length", "use_tol")
    monkeypatch.setattr(fit_module, "_fit_chunk", jax.jit(counted, static_argnames=static))
    init = Normal(jnp.linspace(-1.0, 1.0, 7), jnp.ones(7))
    optimizer = optax.adam(0.1)
    for loc, scale in [(3.0, 2.0), (-1.0, 0.5)]:
        r = fit(Normal(loc, scale), init, objective="forward_kl", steps=1000, progress=False,
                optimizer=optimizer)
        # the optimum of KL(N(loc, scale) || q) over Normals is q = N(loc, scale), from every start
        chex.assert_trees_all_close(r.dist, Normal(jnp.full(7, loc), jnp.full(7, scale)), atol=2e-2)
    with pytest.raises(AssertionError, match="traced > 1 times"):  # a new optimizer object does
        fit(Normal(0.0, 1.0), init, objective="forward_kl", steps=1000, progress=False,
            optimizer=optax.adam(0.1))


def test_study_forward_kl_matches_moments_reverse_kl_finds_the_nearest_mode():
    results = study.run_study(
        objectives=("forward_kl", "reverse_kl"),
        steps=1500,
        learning_rate=0.1,
        grid=np.linspace(-25.0, 35.0, 601, dtype=np.float32),
    )
    fwd, rev = results["forward_kl"], results["reverse_kl"]
    np.testing.assert_allclose(fwd.dist.loc, [5.0, 5.0], atol=0.02)
    np.testing.assert_allclose(fwd.dist.scale, [SQRT26, SQRT26], atol=0.03)
    # KL(q || P) near one mode: the other is 10 sigma away, so q -> that N(mode, 1)
    np.testing.assert_allclose(rev.dist.loc, [0.0, 10.0], atol=0.02)
    np.testing.assert_allclose(rev.dist.scale, [1.0, 1.0], atol=0.02)
    # and the loss there is log 2 (q covers half of P's mass)
    np.testing.assert_allclose(rev.losses[-1], np.log(2.0), atol=1e-3)
    table = study.table(results)
    assert "moment match" in table and "mode 10" in table


def test_maximum_likelihood_from_samples_is_the_sample_mean_and_std():
    x = np.random.default_rng(0).normal(1.5, 0.7, size=500).astype(np.float32)
    r = fit(x, Normal(0.0, 1.0), objective="forward_kl", steps=800, progress=False)
    assert r.estimator == "mc"
    np.testing.assert_allclose(r.dist.loc, x.mean(), atol=2e-3)
    np.testing.assert_allclose(r.dist.scale, x.std(), atol=2e-3)  # the MLE uses ddof=0


def test_variational_inference_on_an_unnormalised_log_density():
    def log_density(x):  # N(2, 0.5^2) times an arbitrary constant
        return -0.5 * ((x - 2.0) / 0.5) ** 2 + 7.0

    r = fit(
        log_density,
        Normal(0.0, 1.0),
        objective="reverse_kl",
        steps=500,
        num_samples=256,
        key=jax.random.key(1),
        optimizer=optax.adam(0.05),
        progress=False,
    )
    assert r.estimator == "mc"
    # reparameterised gradients of an exactly Gaussian target are nearly noise-free
    np.testing.assert_allclose(r.dist.loc, 2.0, atol=0.03)
    np.testing.assert_allclose(r.dist.scale, 0.5, atol=0.03)


def test_full_covariance_fit_uses_the_cholesky_parameterisation():
    tril = jnp.array([[1.0, 0.0], [0.6, 0.5]])
    target = MultivariateNormalTriL(jnp.array([1.0, -1.0]), tril)
    init = MultivariateNormalTriL(jnp.zeros(2), jnp.eye(2))
    r = fit(target, init, objective="reverse_kl", steps=800, optimizer=optax.adam(0.05), progress=False)
    assert r.estimator == "analytic"
    np.testing.assert_allclose(r.dist.covariance(), tril @ tril.T, atol=1e-3)
    np.testing.assert_allclose(r.dist.loc, [1.0, -1.0], atol=1e-3)


def test_tol_stops_early_and_marks_convergence():
    r = fit(Normal(1.0, 1.0), Normal(jnp.array([0.0, 0.5]), 1.0), objective="reverse_kl",
            steps=2000, tol=1e-7, progress=False, optimizer=optax.adam(0.05))
    assert r.converged.all() and (r.steps < 2000).all()
    assert r.losses.shape[0] < 2000
    np.testing.assert_allclose(r.dist.loc, 1.0, atol=1e-2)


def test_nan_loss_raises_naming_the_step():
    with pytest.raises(FloatingPointError, match=r"NaN/inf at step \d+"):
        fit(Normal(0.0, 1.0), Normal(jnp.array([0.5, 1.0]), 1.0), objective="reverse_kl",
            optimizer=optax.sgd(100.0), steps=50, progress=False)


def test_nan_loss_can_warn_and_flag_only_the_failed_start():
    # the target density is NaN for x > 3: only the start that drifts there fails
    def log_density(x):
        return jnp.where(x > 3.0, jnp.nan, -0.5 * (x - 1.0) ** 2)

    init = Normal(jnp.array([0.0, 5.0]), jnp.array([0.3, 1.0]))
    with pytest.warns(RuntimeWarning, match=r"at step 0 for start \(1,\) \(1 of 2"):
        r = fit(log_density, init, objective="reverse_kl", steps=3, num_samples=64,
                optimizer=optax.sgd(0.01), progress=False, on_nan="warn")
    assert r.failed.tolist() == [False, True]
    assert r.failed_step.tolist() == [-1, 0] and r.steps.tolist() == [3, 0]
    np.testing.assert_allclose(r.dist.loc[1], 5.0)  # the failed start is left where it was


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(objective="kl"), ValueError, "objective must be one of"),
        (dict(objective="mse"), ValueError, "pass grid="),
        (dict(estimator="analytic", objective="js"), ValueError, "no analytic js"),
        (dict(steps=0), ValueError, "steps must be a positive int"),
        (dict(on_nan="ignore"), ValueError, "on_nan"),
        (dict(grid=jnp.zeros((5, 2)), estimator="grid"), ValueError, "grid must have shape"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fit(Normal(0.0, 1.0), Normal(1.0, 1.0), progress=False, **kwargs)


def test_unsupported_target_combinations():
    x = jnp.zeros(10)
    with pytest.raises(ValueError, match="only objective='forward_kl'"):
        fit(x, Normal(0.0, 1.0), objective="reverse_kl", progress=False)
    with pytest.raises(ValueError, match="needs samples from the target"):
        fit(lambda t: -t * t, Normal(0.0, 1.0), objective="forward_kl", progress=False)
    with pytest.raises(ValueError, match="not reparameterised"):
        fit(Categorical(jnp.zeros(3)), Categorical(jnp.ones(3)), objective="reverse_kl",
            estimator="mc", progress=False)
    with pytest.raises(ValueError, match="event_shape"):
        fit(jnp.zeros((10, 2)), Normal(0.0, 1.0), objective="forward_kl", progress=False)


def test_progress_text_line_without_rich(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setitem(sys.modules, "rich.progress", None)
    fit(Normal(1.0, 1.0), Normal(0.0, 1.0), steps=40, progress=True)
    err = capsys.readouterr().err
    assert "fit: step 40/40" in err and "loss" in err


def test_plot_draws_target_and_fits(monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    target = MixtureSameFamily(jnp.zeros(2), Normal(jnp.array([0.0, 10.0]), 1.0))
    r = fit(Normal(1.0, 1.0), Normal(jnp.array([0.0, 0.5]), 1.0), steps=5, progress=False)
    ax = plot(r, target)
    assert len(ax.lines) == 3  # target + two starts
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot(r, target)


def test_samples_outside_the_support_say_so():
    # Regression: maximum likelihood on negative data with a positive family
    # failed with "Try a smaller learning rate", which no step size fixes.
    from jaxkl.distributions import Beta, Exponential

    rng = np.random.default_rng(15)
    negative = jnp.asarray(-np.abs(rng.normal(size=50)) - 0.5, jnp.float32)
    with pytest.raises(FloatingPointError, match=r"outside the support of Exponential: 50 of 50 target samples") as info:
        fit(negative, Exponential(1.0), objective="forward_kl", steps=20, progress=False)
    assert "learning rate" not in str(info.value)
    # Part of the data outside [0, 1], two starts; with on_nan="warn" the message is the warning.
    data = jnp.asarray(np.concatenate([rng.uniform(0.1, 0.9, 40), [1.5, 2.0]]), jnp.float32)
    with pytest.warns(RuntimeWarning, match=r"outside the support of Beta: 2 of 42 target samples .* first is 1\.5"):
        r = fit(data, Beta(jnp.array([2.0, 3.0]), 2.0), objective="forward_kl", steps=5, progress=False, on_nan="warn")
    assert r.failed.all()
    # Data inside the support: the usual advice stays.
    with pytest.raises(FloatingPointError, match="smaller learning rate"):
        fit(Normal(0.0, 1.0), Normal(jnp.array([0.5, 1.0]), 1.0), objective="reverse_kl",
            optimizer=optax.sgd(100.0), steps=50, progress=False)
