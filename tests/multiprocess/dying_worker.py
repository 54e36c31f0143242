"""A worker whose process 1 dies after joining the cluster, while process 0 waits for it in a psum.

Run by tests/multiprocess/test_multiprocess.py through the example's launcher, which
appends ``--coordinator HOST:PORT --num-processes N --process-id I``.
"""

import argparse
import os

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

parser = argparse.ArgumentParser()
parser.add_argument("--coordinator")
parser.add_argument("--num-processes", type=int)
parser.add_argument("--process-id", type=int)
args = parser.parse_args()

jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(args.coordinator, num_processes=args.num_processes, process_id=args.process_id)
if args.process_id == 1:
    os._exit(3)  # no cleanup, no goodbye to the coordinator: as if the host had failed
mesh = jax.make_mesh((jax.device_count(),), ("x",))
x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("x")), jnp.ones(jax.local_device_count()))
total = jax.jit(jax.shard_map(lambda v: jax.lax.psum(v.sum(), "x"), mesh=mesh, in_specs=P("x"), out_specs=P()))(x)
print("process 0 should never get here:", total)
