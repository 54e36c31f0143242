"""Every example in a public docstring runs and prints what it says."""

import doctest
import importlib
import pkgutil

import jax
import pytest

import jaxkl


def _modules():
    names = ["jaxkl"]
    for info in pkgutil.walk_packages(jaxkl.__path__, prefix="jaxkl."):
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    module = importlib.import_module(name)
    # Examples are written for default JAX settings, as a user would run them.
    with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def test_every_public_name_has_an_example():
    missing = [
        name
        for name in jaxkl.__all__
        if callable(getattr(jaxkl, name)) and ">>>" not in (getattr(jaxkl, name).__doc__ or "")
    ]
    assert not missing, f"public functions without a runnable example: {missing}"
