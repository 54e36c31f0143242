"""jaxkl's class-sharded kernels, fused loss and a training loop on a mesh that spans processes.

On one machine, as 2 processes with 4 CPU devices each (8 devices, real
cross-process collectives over gloo):

    python docs/examples/multiprocess.py --processes 2

On a cluster (a TPU pod, multi-node GPUs under SLURM, ...), run the worker on
every host; `jax.distributed.initialize()` finds the coordinator by itself:

    python docs/examples/multiprocess.py --worker

Every process builds the same global arrays from a seed and hands JAX only its
own part (`jax.make_array_from_process_local_data`), as it would after loading
its shard of a dataset. Three things run on the global mesh:

1. the vocabulary-parallel kernels, with the class axis split over every
   device of every process: under `shard_map` with `axis_name=`, and under
   plain `jit` with `NamedSharding` inputs;
2. `fused_linear_cross_entropy` on a (data x model) mesh: tokens split over
   `data`, the head's vocabulary over `model`;
3. a few optimizer steps of a linear classifier on that mesh.

Process 0 then runs the same functions on the full arrays on one device in
float64 and prints how far every value and gradient is from it.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxkl

IGNORE = -100
TRAIN_STEPS = 20
LEARNING_RATE = 0.5
RTOL, ATOL = 1e-4, 1e-5  # float32 on the mesh against the float64 reference


# ---------------------------------------------------------------------------
# Data: the same on every process (seeded); each process passes on its part.


def make_data(num_devices: int, num_processes: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Float32 inputs sized so that every mesh axis divides them."""
    rng = np.random.default_rng(seed)
    rows, classes = 8, 4 * num_devices
    a = (3 * rng.standard_normal((rows, classes))).astype(np.float32)
    b = (3 * rng.standard_normal((rows, classes))).astype(np.float32)
    a[0, [1, classes // 2 + 1, classes - 1]] = -np.inf  # zero probabilities on several processes
    b[0, [1, classes // 2 + 1]] = -np.inf
    a[1] += np.float32(1e4)  # a huge row: the shards' maxima differ, the global one wins
    labels = rng.integers(0, classes, rows).astype(np.int32)
    labels[0] = 0  # a finite logit (a[0, 0]); another label on the last process
    labels[2] = classes - 2

    tokens, width = 16 * num_processes, 8
    hidden = rng.standard_normal((tokens, width)).astype(np.float32)
    head = (rng.standard_normal((width, classes)) / np.sqrt(width)).astype(np.float32)
    token_labels = rng.integers(0, classes, tokens).astype(np.int32)
    token_labels[[3, tokens - 2]] = IGNORE

    examples, features = 32 * num_processes, 6
    x = rng.standard_normal((examples, features)).astype(np.float32)
    y = np.argmax(x @ rng.standard_normal((features, classes)), axis=1).astype(np.int32)
    return dict(a=a, b=b, labels=labels, hidden=hidden, head=head, token_labels=token_labels, x=x, y=y)


def local_part(full: np.ndarray, sharding: NamedSharding) -> np.ndarray:
    """The block of `full` that this process's devices hold (what it would load from disk)."""
    indices = sharding.addressable_devices_indices_map(full.shape).values()
    block = tuple(
        slice(min(i[d].indices(n)[0] for i in indices), max(i[d].indices(n)[1] for i in indices))
        for d, n in enumerate(full.shape)
    )
    return full[block]


def global_array(full: np.ndarray, mesh: jax.sharding.Mesh, spec: P) -> jax.Array:
    sharding = NamedSharding(mesh, spec)
    return jax.make_array_from_process_local_data(sharding, local_part(full, sharding), full.shape)


# ---------------------------------------------------------------------------
# The computations, written once: `axis_name=None` is the unsharded form.

KERNELS = {
    "kl_divergence_from_logits": lambda a, b, y, **k: jaxkl.kl_divergence_from_logits(a, b, **k),
    "cross_entropy_loss": lambda a, b, y, **k: jaxkl.cross_entropy_loss(a, y, reduction="none", **k),
    "entropy_from_logits": lambda a, b, y, **k: jaxkl.entropy_from_logits(a, **k),
    "js_divergence_from_logits": lambda a, b, y, **k: jaxkl.js_divergence_from_logits(a, b, **k),
}


def kernel_results(rows_of):
    """`rows_of(name, a, b, labels)` -> per-row values; returns, per kernel, the rows and
    the gradients of their sum wrt both logits arrays (zero where a kernel ignores one)."""

    def results(a, b, labels):
        out = {}
        for name in KERNELS:

            def total(a, b):
                rows = rows_of(name, a, b, labels)
                return jnp.sum(rows), rows

            (_, rows), (da, db) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(a, b)
            out[name] = dict(value=rows, grad_a=da, grad_b=db)
        return out

    return jax.jit(results)


def unsharded_rows(name, a, b, labels):
    # Under jit with class-sharded inputs, XLA partitions this and adds the collectives itself.
    return KERNELS[name](a, b, labels)


def shard_map_rows(mesh):
    """The kernels inside shard_map: each device reduces its classes, then psum/pmax per row."""

    def rows_of(name, a, b, labels):
        return jax.shard_map(
            lambda a, b, y: KERNELS[name](a, b, y, axis_name="vocab"),
            mesh=mesh,
            in_specs=(P(None, "vocab"), P(None, "vocab"), P()),  # labels: global class ids
            out_specs=P(),
        )(a, b, labels)

    return rows_of


def fused_loss(hidden, head, labels):
    loss, (d_hidden, d_head) = jax.value_and_grad(
        lambda h, w: jaxkl.fused_linear_cross_entropy(h, w, labels, ignore_index=IGNORE, chunk_size=4),
        argnums=(0, 1),
    )(hidden, head)
    return dict(value=loss, grad_hidden=d_hidden, grad_head=d_head)


def train(x, y, params, steps=TRAIN_STEPS):
    """SGD with momentum on a linear classifier; the parameters after `steps` steps."""
    optimizer = optax.sgd(LEARNING_RATE, momentum=0.9)

    def loss(params, x, y):
        return jaxkl.cross_entropy_loss(x @ params["w"] + params["b"], y)

    # The data are arguments: a jitted function may not close over a global array.
    @jax.jit
    def step(params, state, x, y):
        updates, state = optimizer.update(jax.grad(loss)(params, x, y), state)
        return optax.apply_updates(params, updates), state

    state = optimizer.init(params)
    for _ in range(steps):
        params, state = step(params, state, x, y)
    return params


def initial_params(features: int, classes: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    w = (0.1 * rng.standard_normal((features, classes))).astype(np.float32)
    return dict(w=w, b=np.zeros(classes, np.float32))


# ---------------------------------------------------------------------------
# The worker: one per process.


def run_on_mesh(data: dict[str, np.ndarray]) -> dict:
    """Everything on the global meshes; every process returns the gathered global results."""
    vocab_mesh = jax.make_mesh((jax.device_count(),), ("vocab",), axis_types=(AxisType.Auto,))
    # Hosts along `data`, each host's devices along `model`: the class axis stays within a host.
    mesh = jax.make_mesh(
        (jax.process_count(), jax.local_device_count()), ("data", "model"), axis_types=(AxisType.Auto,) * 2
    )

    a, b = (global_array(data[k], vocab_mesh, P(None, "vocab")) for k in ("a", "b"))
    labels = global_array(data["labels"], vocab_mesh, P())
    kernels = {
        "shard_map": kernel_results(shard_map_rows(vocab_mesh))(a, b, labels),
        "jit": kernel_results(unsharded_rows)(a, b, labels),
    }

    hidden = global_array(data["hidden"], mesh, P("data", None))
    head = global_array(data["head"], mesh, P(None, "model"))
    token_labels = global_array(data["token_labels"], mesh, P("data"))
    fused = jax.jit(fused_loss)(hidden, head, token_labels)

    x = global_array(data["x"], mesh, P("data", None))
    y = global_array(data["y"], mesh, P("data"))
    start = initial_params(data["x"].shape[1], data["head"].shape[1])
    params = train(x, y, dict(w=global_array(start["w"], mesh, P(None, "model")),
                              b=global_array(start["b"], mesh, P("model"))))

    # Sharded results live on every process; gather them (a collective: all processes call it).
    return multihost_utils.process_allgather(dict(kernels=kernels, fused=fused, train=params), tiled=True)


def reference(data: dict[str, np.ndarray]) -> dict:
    """The same functions on the full arrays, on one device, in float64."""
    with jax.enable_x64(True):
        f64 = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in data.items()}
        kernels = kernel_results(unsharded_rows)(f64["a"], f64["b"], f64["labels"])
        fused = jax.jit(fused_loss)(f64["hidden"], f64["head"], f64["token_labels"])
        start = initial_params(data["x"].shape[1], data["head"].shape[1])
        params = train(f64["x"], f64["y"], {k: v.astype(np.float64) for k, v in start.items()})
        return jax.tree.map(np.asarray, dict(kernels=kernels, fused=fused, train=params))


def flatten(tree, prefix=""):
    """{"kernels/jit/kl_divergence_from_logits/value": array, ...}"""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in flatten(sub, f"{prefix}{key}/").items()}
    return {prefix[:-1]: np.asarray(tree)}


def report(got: dict, want: dict) -> bool:
    """Print the largest difference of every result from the reference; True if all agree."""
    want = flatten(want)
    agree = True
    print(f"{'result':62s} {'max |difference|':>16s}  (rtol {RTOL:g}, atol {ATOL:g})")
    for name, value in flatten(got).items():
        # kernels/<path>/<kernel>/<what>: the reference has no <path> level.
        ref = want[name.replace("kernels/shard_map/", "kernels/").replace("kernels/jit/", "kernels/")]
        ok = np.allclose(value, ref, rtol=RTOL, atol=ATOL)
        agree &= ok
        print(f"{name:62s} {np.max(np.abs(value - ref)):16.2e}  {'ok' if ok else 'DIFFERENT'}")
    return agree


def worker(args) -> int:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    if args.coordinator is None:
        jax.distributed.initialize()  # on a cluster: the address and ranks come from its environment
    else:
        jax.distributed.initialize(
            args.coordinator, num_processes=args.num_processes, process_id=args.process_id,
            initialization_timeout=60,
        )
    data = make_data(jax.device_count(), jax.process_count())
    results = run_on_mesh(data)
    if jax.process_index() != 0:
        return 0
    print(f"{jax.device_count()} devices in {jax.process_count()} processes; "
          f"the class axis ({data['a'].shape[1]} classes) is split over all of them")
    if args.out:
        np.savez(os.path.join(args.out, "results.npz"), **flatten(results))
    agree = report(results, reference(data))
    print("every result agrees with the single-process float64 reference" if agree
          else "SOME RESULTS DIFFER from the single-process float64 reference")
    return 0 if agree else 1


# ---------------------------------------------------------------------------
# The launcher: N local processes, a free port, a hard timeout, every output on failure.


class LaunchError(RuntimeError):
    """A process failed, or the run did not finish within its timeout."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(script_args, *, processes=2, devices_per_process=4, timeout=120.0, port=None, env=None):
    """Run `python *script_args --coordinator localhost:PORT --num-processes N --process-id I`
    for I = 0..N-1, each process with `devices_per_process` CPU devices.

    Returns every process's standard output. Raises `LaunchError`, with every process's
    output, as soon as one process exits with an error (the others are stopped: they would
    wait for it forever in a collective), or when `timeout` seconds pass. With `port=None` a
    free port is picked, and another one if the coordinator loses it before binding it.
    """
    for attempt in range(3):
        try:
            return _launch_once(script_args, processes, devices_per_process, timeout,
                                free_port() if port is None else port, env)
        except LaunchError as error:
            if port is not None or "port in use?" not in str(error) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _launch_once(script_args, processes, devices_per_process, timeout, port, env):
    env = dict(os.environ if env is None else env)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "force_host_platform_device_count" not in f]
    env.update(
        XLA_FLAGS=" ".join([*flags, f"--xla_force_host_platform_device_count={devices_per_process}"]),
        JAX_PLATFORMS="cpu",
        PYTHONUNBUFFERED="1",  # the output of a process that gets stopped is still shown
    )
    with tempfile.TemporaryDirectory() as logs:
        # Files, not pipes: a process blocked on a full pipe would look like a hang.
        out = [os.path.join(logs, f"{i}.out") for i in range(processes)]
        err = [os.path.join(logs, f"{i}.err") for i in range(processes)]
        running = []
        try:
            for i in range(processes):
                command = [sys.executable, *script_args, "--coordinator", f"localhost:{port}",
                           "--num-processes", str(processes), "--process-id", str(i)]
                with open(out[i], "wb") as stdout, open(err[i], "wb") as stderr:
                    running.append(subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env))
            start = time.monotonic()
            while True:
                codes = [p.poll() for p in running]
                elapsed = time.monotonic() - start
                failed = [f"process {i} exited with code {c}" for i, c in enumerate(codes) if c not in (None, 0)]
                if failed:
                    problem = f"{', '.join(failed)} after {elapsed:.1f} s"
                    break
                if all(code == 0 for code in codes):
                    return [_read(path) for path in out]
                if elapsed > timeout:
                    waiting = [i for i, code in enumerate(codes) if code is None]
                    problem = f"timed out after {timeout:g} s with processes {waiting} still running"
                    break
                time.sleep(0.05)
        finally:
            for p in running:
                if p.poll() is None:
                    p.kill()
                p.wait()
        shown = [(_read(o), _read(e)) for o, e in zip(out, err)]
    # gRPC reports a taken port either way, depending on when it notices (and the
    # coordinator may then crash rather than exit).
    if any(sign in shown[0][1] for sign in ("Failed to start RPC server", "Failed to add port to server")):
        problem += f" (the coordinator could not listen on localhost:{port}: port in use?)"
    details = "".join(
        f"\n--- process {i} (exit code {p.returncode}): stdout, then the last 40 lines of stderr ---\n"
        + o + "\n".join(e.splitlines()[-40:])
        for i, (p, (o, e)) in enumerate(zip(running, shown))
    )
    raise LaunchError(f"{problem}; the other processes were stopped.{details}")


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2, help="local processes to launch")
    parser.add_argument("--devices-per-process", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds before every process is stopped")
    parser.add_argument("--out", help="a folder where process 0 writes results.npz")
    parser.add_argument("--worker", action="store_true", help="be one process (on a cluster: every host)")
    parser.add_argument("--coordinator", help="host:port of process 0 (set by the launcher)")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    args = parser.parse_args(argv)
    if args.worker or args.coordinator:
        return worker(args)
    script = [os.path.abspath(__file__), "--worker"] + (["--out", args.out] if args.out else [])
    try:
        outputs = launch(script, processes=args.processes, devices_per_process=args.devices_per_process,
                         timeout=args.timeout)
    except LaunchError as error:
        print(error, file=sys.stderr)
        return 1
    # Gloo logs its connections on stdout; show process 0's results without them.
    print("".join(line for line in outputs[0].splitlines(keepends=True) if "peer ranks" not in line), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
