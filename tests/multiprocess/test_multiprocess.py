"""The sharded kernels across a real process boundary: 2 processes x 4 CPU devices, gloo collectives.

One launch of docs/examples/multiprocess.py (the example users run) computes every
result on the 8-device mesh; here each is checked against float64 NumPy written from
the formulas (values and closed-form gradients) on the full arrays. The launcher's
fault handling (a dead process, a port in use, a hang) is checked with small workers.
Every launch has a hard timeout and shows all processes' output when it fails.
"""

import importlib.util
import os
import pathlib
import socket
import sys
import time

import numpy as np
import pytest
from scipy import special

from tests import reference as ref

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "docs" / "examples" / "multiprocess.py"
DYING_WORKER = pathlib.Path(__file__).with_name("dying_worker.py")
PROCESSES, DEVICES_PER_PROCESS = 2, 4
TIMEOUT = 240  # seconds; a loaded 2-core CI machine runs the whole launch in about 20


def _load_example():
    spec = importlib.util.spec_from_file_location("jaxkl_multiprocess_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _load_example()


def _launch(args, **kw):
    # The workers import this checkout's jaxkl, whatever is installed.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return example.launch(args, processes=PROCESSES, devices_per_process=DEVICES_PER_PROCESS, env=env, **kw)


def _close(got, want, what, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


# ---------------------------------------------------------------------------
# Float64 NumPy references with closed-form gradients.


def _where_positive(p, x):
    """x where p > 0, else 0 (p log p and its derivative vanish at p = 0)."""
    return np.where(p > 0, x, 0.0)


def _kernel_references(a, b, labels):
    """Per kernel: per-row values and the gradients of their sum wrt a and b."""
    p, q = ref.softmax(a), ref.softmax(b)
    # Where p = 0 the log is -inf; the formulas below only use it where p > 0.
    logp, logq = np.where(p > 0, ref.log_softmax(a), 0.0), np.where(q > 0, ref.log_softmax(b), 0.0)
    rows = np.arange(len(labels))
    onehot = np.eye(a.shape[1])[labels]

    kl = ref.kl(p, q)
    entropy = ref.entropy(p)
    m = (p + q) / 2
    # JS = (H(m) - (H(p) + H(q)) / 2); d JS / d p_i = log(p_i / m_i) / 2, then through softmax.
    logm = np.where(m > 0, np.log(np.where(m > 0, m, 1.0)), 0.0)
    dp, dq = _where_positive(p, 0.5 * (logp - logm)), _where_positive(q, 0.5 * (logq - logm))

    def through_softmax(p, dp):
        return p * (dp - np.sum(p * dp, axis=1, keepdims=True))

    zero = np.zeros_like(p)
    return {
        "kl_divergence_from_logits": (kl, _where_positive(p, p * (logp - logq - kl[:, None])), q - p),
        "cross_entropy_loss": (special.logsumexp(a, axis=1) - a[rows, labels], p - onehot, zero),
        "entropy_from_logits": (entropy, -_where_positive(p, p * (logp + entropy[:, None])), zero),
        "js_divergence_from_logits": (ref.js(p, q), through_softmax(p, dp), through_softmax(q, dq)),
    }


def _fused_reference(hidden, head, labels):
    """Mean cross-entropy of hidden @ head over the kept tokens, and its gradients."""
    z = hidden @ head
    kept = labels != example.IGNORE
    y = np.where(kept, labels, 0)
    loss = special.logsumexp(z, axis=1) - z[np.arange(len(y)), y]
    dz = (ref.softmax(z) - np.eye(z.shape[1])[y]) * kept[:, None] / kept.sum()
    return {"value": np.sum(loss * kept) / kept.sum(), "grad_hidden": dz @ head.T, "grad_head": hidden.T @ dz}


def _train_reference(x, y, w, b):
    """SGD with momentum 0.9 (optax.sgd's trace: t <- g + 0.9 t; update -lr t) on mean cross-entropy."""
    onehot = np.eye(w.shape[1])[y]
    tw, tb = np.zeros_like(w), np.zeros_like(b)
    for _ in range(example.TRAIN_STEPS):
        dz = (ref.softmax(x @ w + b) - onehot) / len(y)
        tw, tb = x.T @ dz + 0.9 * tw, dz.sum(0) + 0.9 * tb
        w, b = w - example.LEARNING_RATE * tw, b - example.LEARNING_RATE * tb
    return {"w": w, "b": b}


# ---------------------------------------------------------------------------


def test_two_processes_agree_with_float64_numpy(tmp_path):
    # One launch for every check (a launch costs seconds; xdist would split separate tests).
    stdout = _launch([str(EXAMPLE), "--worker", "--out", str(tmp_path)], timeout=TIMEOUT)[0]
    with np.load(tmp_path / "results.npz") as npz:
        got = dict(npz)
    data = example.make_data(PROCESSES * DEVICES_PER_PROCESS, PROCESSES)
    data = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in data.items()}

    # Vocabulary-parallel kernels; the class axis spans both processes (classes 0-15 live
    # on process 0, 16-31 on process 1), under shard_map and under jit with NamedSharding.
    assert data["a"].shape[1] == 32
    kernels = _kernel_references(data["a"], data["b"], data["labels"])
    for path in ("shard_map", "jit"):
        for name, (value, grad_a, grad_b) in kernels.items():
            key = f"kernels/{path}/{name}"
            _close(got[f"{key}/value"], value, key)
            _close(got[f"{key}/grad_a"], grad_a, f"{key} d/da")
            _close(got[f"{key}/grad_b"], grad_b, f"{key} d/db")
            assert not got[f"{key}/grad_a"][0, [1, 17, 31]].any(), f"{key}: -inf logits get no gradient"

    # The fused head on the (data x model) mesh: loss, d hidden, d head; ignored tokens count nowhere.
    for name, want in _fused_reference(data["hidden"], data["head"], data["token_labels"]).items():
        _close(got[f"fused/{name}"], want, f"fused {name}")
    ignored = data["token_labels"] == example.IGNORE
    assert ignored.sum() == 2 and not got["fused/grad_hidden"][ignored].any()

    # The training loop ends at the parameters of the same loop in one process.
    start = example.initial_params(data["x"].shape[1], data["head"].shape[1])
    want = _train_reference(data["x"], data["y"], start["w"].astype(np.float64), start["b"].astype(np.float64))
    assert np.abs(want["w"] - start["w"]).max() > 0.1  # the parameters did move
    for name in ("w", "b"):
        _close(got[f"train/{name}"], want[name], f"train {name}", rtol=1e-4, atol=1e-5)

    # What the example prints for its users: agreement with its own float64 run on one device.
    assert "8 devices in 2 processes" in stdout
    assert "every result agrees with the single-process float64 reference" in stdout
    assert "DIFFERENT" not in stdout


# ---------------------------------------------------------------------------
# Faults: a clear error within the timeout, never a hang.


def test_a_dead_process_stops_the_run():
    start = time.monotonic()
    with pytest.raises(example.LaunchError, match=r"process 1 exited with code 3") as error:
        _launch([str(DYING_WORKER)], timeout=TIMEOUT)
    assert time.monotonic() - start < TIMEOUT / 2  # not the timeout: the death is noticed
    message = str(error.value)
    assert "the other processes were stopped" in message
    assert "--- process 0" in message and "--- process 1" in message


def test_a_port_in_use_is_named():
    with socket.socket() as held:
        held.bind(("localhost", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(example.LaunchError, match=rf"could not listen on localhost:{port}: port in use"):
            _launch([str(DYING_WORKER)], timeout=TIMEOUT, port=port)


def test_a_hang_ends_at_the_timeout():
    start = time.monotonic()
    with pytest.raises(example.LaunchError, match=r"timed out after 1 s with processes \[0, 1\] still running"):
        _launch(["-c", "import time; time.sleep(60)"], timeout=1)
    assert time.monotonic() - start < 10
