"""The Python code shown in the README and the guide pages runs as written."""

import pathlib
import re

import jax
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Pages whose code blocks are complete programs (the porting and distillation pages show
# side-by-side fragments instead).
PAGES = [
    "README.md",
    "docs/index.md",
    "docs/getting-started.md",
    "docs/conventions.md",
    "docs/numerics.md",
    "docs/choosing-a-divergence.md",
    "docs/kl-estimators.md",
    "docs/rl-fine-tuning.md",
    "docs/large-vocabularies.md",
    "docs/contrastive-and-topk.md",
    "docs/fitting.md",
]


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("page", PAGES)
def test_page_code_runs(page):
    blocks = python_blocks(ROOT / page)
    assert blocks, f"{page} shows no Python code"
    namespace = {}
    # Pages are written for default JAX settings, as a reader would run them.
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        for block in blocks:  # blocks on a page build on each other
            exec(compile(block, page, "exec"), namespace)
