"""Where the time goes: count the passes each compiled program makes over the data.

`python -m bench.profile [--size 2048x32768] [--dump DIR]` compiles every JAX
implementation (forward and forward+backward) and reads the optimised HLO of
its entry computation: each top-level instruction (a fusion, a library call, a
copy) is one loop over memory. For each it counts the rows x classes arrays it
reads and writes. `passes` = (full-size reads + writes) / number of full-size
inputs: 1.0 would be "read every input once"; a forward that must take a row
max first cannot go below 2.0 without a one-pass (online) softmax.
With `--dump` the optimised HLO text of each program is written out too (the
same text `XLA_FLAGS=--xla_dump_to=DIR --xla_dump_hlo_as_text` writes).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import jax

from . import harness, jax_impls

_INSTR = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.+?) ([a-z][\w-]*)\((.*)$")


def entry_instructions(hlo_text: str):
    """`[(name, shape_text, opcode, operand_names, kind)]` of the ENTRY computation."""
    body = hlo_text.split("\nENTRY ", 1)[1]
    out = []
    for line in body.splitlines()[1:]:
        if line.startswith("}"):
            break
        m = _INSTR.match(line)
        if not m:
            continue
        name, shape, opcode, rest = m.groups()
        kind = re.search(r"kind=(\w+)", rest)
        custom = re.search(r'"kind":"(\w+)"', rest)
        operands = re.findall(r"%([\w.-]+)", rest.split("),", 1)[0])
        label = opcode if opcode != "fusion" else f"fusion:{custom.group(1) if custom else kind.group(1) if kind else ''}"
        out.append((name, shape, label, operands))
    return out


def count_passes(hlo_text: str, rows: int, classes: int, n_inputs: int) -> dict:
    full = f"[{rows},{classes}]"
    shapes = {}
    reads = writes = loops = 0
    kinds: dict[str, int] = {}
    for name, shape, label, operands in entry_instructions(hlo_text):
        shapes[name] = shape
        if label in ("parameter", "constant", "bitcast", "get-tuple-element", "tuple"):
            continue
        loops += 1
        kinds[label] = kinds.get(label, 0) + 1
        reads += sum(full in shapes.get(op, "") for op in set(operands))
        writes += shape.count(full)
    return dict(loops=loops, full_reads=reads, full_writes=writes, passes=(reads + writes) / n_inputs, kinds=kinds)


def profile(rows: int, classes: int, dtype: str = "float32", kernels=jax_impls.KERNELS, dump: Path | None = None) -> list[dict]:
    arrays = {k: jax.numpy.asarray(v) for k, v in harness.host_inputs(rows, classes, dtype).items()}
    out = []
    for kernel in kernels:
        args = harness.kernel_args(kernel, arrays)
        # Passes are counted in rows x classes arrays; a fused head has none as input.
        n_inputs = max(1, sum(name in jax_impls.FULL_SIZE for name in jax_impls.TABLE[kernel].inputs))
        programs = {f"{name}-floor": fn for name, fn in jax_impls.floor_functions(kernel).items()}
        for impl, fn in jax_impls.TABLE[kernel].impls.items():
            if fn is not None:
                fwd, fb = jax_impls.forward_and_backward(kernel, fn)
                programs[f"{impl}-fwd"], programs[f"{impl}-fwdbwd"] = fwd, fb
        for label, fn in programs.items():
            compiled = jax.jit(fn).lower(*args).compile()
            text = compiled.as_text()
            if dump is not None:
                dump.mkdir(parents=True, exist_ok=True)
                (dump / f"{kernel}-{label}-{dtype}.hlo.txt").write_text(text)
            stats = count_passes(text, rows, classes, n_inputs)
            temp = compiled.memory_analysis().temp_size_in_bytes
            out.append(dict(kernel=kernel, program=label, temp_mb=temp / 2**20, **stats))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    ap.add_argument("--size", default="2048x32768")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--kernels", nargs="+", default=list(jax_impls.KERNELS), choices=jax_impls.KERNELS)
    ap.add_argument("--dump", type=Path)
    args = ap.parse_args(argv)
    rows, classes = (int(x) for x in args.size.lower().split("x"))
    print(f"| kernel | program | loops | full-size reads | full-size writes | passes | temp MB | loop kinds |")
    print("|---|---|---|---|---|---|---|---|")
    for r in profile(rows, classes, args.dtype, args.kernels, args.dump):
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["kinds"].items()))
        print(f"| {r['kernel']} | {r['program']} | {r['loops']} | {r['full_reads']} | {r['full_writes']} | {r['passes']:.1f} | {r['temp_mb']:.0f} | {kinds} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
