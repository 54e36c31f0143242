"""What crosses the network, and what each device holds, for a vocabulary-parallel loss at scale.

    python docs/examples/multihost_budget.py

Two parts, both computed here (the numbers in docs/multiple-hosts.md are this script's output):

1. Communication. The class-sharded `cross_entropy_loss` and `kl_divergence_from_logits`
   (forward + backward, `shard_map` with `axis_name=`) are compiled on 8 CPU devices and
   the collectives in the compiled program are counted: how many numbers per row cross
   devices. That count is then scaled to 1M tokens x 256k classes and compared with what
   gathering the class axis would move.
2. Memory per device of the fused head + loss, each device holding a vocabulary slice of
   the head. The model's temporary term (a few chunks of logits) is checked against the
   compiler's own count for `fused_linear_cross_entropy` at small sizes.
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax
import jax.numpy as jnp
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import jaxkl

# The scale of the docs page: 1M tokens per step, a 256k vocabulary, a 4096-wide model, on
# 32 hosts x 8 accelerators, tokens over hosts ("data"), vocabulary within a host ("model").
TOKENS, VOCAB, WIDTH = 2**20, 2**18, 4096
DATA, MODEL = 32, 8
GiB, MiB, KiB = 2**30, 2**20, 2**10

KERNELS = {
    "cross_entropy_loss": lambda x, z, y: jaxkl.cross_entropy_loss(x, y, reduction="sum", axis_name="vocab"),
    "kl_divergence_from_logits": lambda x, z, y: jnp.sum(jaxkl.kl_divergence_from_logits(z, x, axis_name="vocab")),
}


def numbers_per_row(name: str, rows: int = 64, classes: int = 256) -> tuple[float, int]:
    """Elements all-reduced per local row by value_and_grad of the sharded kernel, and all-gathers."""
    mesh = jax.make_mesh((2, 4), ("data", "vocab"), axis_types=(AxisType.Auto,) * 2)
    loss = jax.shard_map(
        lambda x, z, y: jax.lax.psum(KERNELS[name](x, z, y), "data"),
        mesh=mesh, in_specs=(P("data", "vocab"), P("data", "vocab"), P("data")), out_specs=P(),
    )
    x = jax.ShapeDtypeStruct((rows, classes), jnp.float32)
    y = jax.ShapeDtypeStruct((rows,), jnp.int32)
    hlo = jax.jit(jax.value_and_grad(loss)).lower(x, x, y).compile().as_text()
    elements = 0
    for line in hlo.splitlines():
        if " all-reduce(" in line or " all-reduce-start(" in line:
            result_type = line.split("=", 1)[1].split("all-reduce", 1)[0]
            for dims in re.findall(r"\[([\d,]*)\]", result_type):
                elements += eval("*".join(dims.split(",")) or "1")  # noqa: S307 (digits and commas only)
    gathers = hlo.count(" all-gather(") + hlo.count(" all-gather-start(")
    local_rows = rows // 2
    # The scalar loss psum over "data" (1 element) is the loss itself, not a per-row statistic.
    return (elements - 1) / local_rows, gathers


def fused_temp_per_chunk() -> float:
    """Compiled temporary bytes of the fused loss's value_and_grad, in f32 chunks of logits."""
    ratios = []
    for n, d, v, chunk in [(1024, 256, 4096, 64), (2048, 256, 8192, 32), (1024, 512, 4096, 128)]:
        f = jax.jit(jax.value_and_grad(
            lambda h, w, y: jaxkl.fused_linear_cross_entropy(h, w, y, chunk_size=chunk), argnums=(0, 1)))
        shapes = (jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((d, v), jnp.float32),
                  jax.ShapeDtypeStruct((n,), jnp.int32))
        temp = f.lower(*shapes).compile().memory_analysis().temp_size_in_bytes
        ratios.append(temp / (chunk * v * 4))
        print(f"  compiled temp at N x D x V = {n} x {d} x {v}, chunk {chunk}: "
              f"{temp / MiB:.2f} MiB = {ratios[-1]:.2f} f32 chunks of logits")
    return max(ratios)


def main() -> None:
    rows_local, vocab_local = TOKENS // DATA, VOCAB // MODEL
    print(f"{TOKENS:,} tokens x {VOCAB:,} classes, width {WIDTH}; mesh data={DATA} (hosts) x model={MODEL}")
    print(f"each device: {rows_local:,} tokens x {vocab_local:,} classes\n")

    print("1. Communication per step (forward + backward), per device, over the model axis")
    logits_slice = rows_local * VOCAB * 4
    for name in KERNELS:
        per_row, gathers = numbers_per_row(name)
        sent = per_row * rows_local * 4
        print(f"  {name}: {per_row:g} f32 per row all-reduced, {gathers} all-gathers "
              f"-> {sent / KiB:,.0f} KiB per step ({sent / logits_slice:.1e} of gathering the class axis)")
    print(f"  gathering the class axis instead: the full-vocabulary f32 logits of the device's tokens, "
          f"{logits_slice / GiB:,.0f} GiB")
    print(f"  with the head sharded too (fused, vocabulary-parallel), d hidden is psummed over model: "
          f"{rows_local * WIDTH * 4 / MiB:,.0f} MiB per device (f32 [tokens, width], as in any tensor-parallel head)")
    print(f"  the head's gradient, all-reduced over data: {WIDTH * vocab_local * 4 / MiB:,.0f} MiB per device "
          "(f32; the same for any loss, and what data parallelism costs anyway)\n")

    print("2. Memory per device of a vocabulary-parallel fused head + loss (value and gradients)")
    chunks = fused_temp_per_chunk()
    # The default chunk_size of fused_linear_cross_entropy: about 2**22 logits,
    # but at least 256 rows while a chunk stays within 2**24 logits.
    chunk = max(2**22 // vocab_local, min(256, 2**24 // vocab_local), 1)
    terms = {
        "head slice W[:, V/model] (bf16)": WIDTH * vocab_local * 2,
        "its gradient (f32 accumulator)": WIDTH * vocab_local * 4,
        "hidden states of the device's tokens (bf16)": rows_local * WIDTH * 2,
        "their gradient (bf16)": rows_local * WIDTH * 2,
        f"temporaries: {chunks:.1f} f32 chunks of {chunk} x {vocab_local:,} logits": chunks * chunk * vocab_local * 4,
    }
    for what, size in terms.items():
        print(f"  {what:58s} {size / MiB:9,.0f} MiB")
    print(f"  {'total':58s} {sum(terms.values()) / MiB:9,.0f} MiB")
    print(f"  the device's logits, materialised (f32), and their gradient: {2 * rows_local * vocab_local * 4 / GiB:,.0f} GiB")


if __name__ == "__main__":
    main()
