"""The documentation site builds with --strict (broken links and references fail)."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _mkdocs():
    beside_python = pathlib.Path(sys.executable).parent / "mkdocs"
    return str(beside_python) if beside_python.exists() else shutil.which("mkdocs")


def test_mkdocs_build_strict(tmp_path):
    mkdocs = _mkdocs()
    if mkdocs is None:
        if os.environ.get("CI"):
            pytest.fail("CI must build the docs: install the docs extra (pip install -e '.[test,docs]')")
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    command = [mkdocs, "build", "--strict", "--site-dir", str(tmp_path)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
