"""What the stand-alone benchmarks (`bench.fused_linear`, `bench.contrastive`, `bench.rl`) record and write."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import jax


def machine() -> dict:
    """The device, core count and jax version a result was measured with."""
    return {
        "device": f"{jax.devices()[0].platform} ({platform.processor() or platform.machine()})",
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
    }


def save(out: Path, name: str, result, table: str) -> None:
    """Write `name.json` and the Markdown `name.md` under `out`, and print the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text(table)
    print(table)
