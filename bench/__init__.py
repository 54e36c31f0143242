"""Benchmarks of jaxkl against NumPy baselines, optax, plain jnp and PyTorch.

Run ``python -m bench`` (quick), ``python -m bench --target`` (the 2048 x 32768
size the targets are stated at) or ``python -m bench --full --docs`` (the sweep
that regenerates ``docs/benchmarks.md`` and the README's numbers).
"""
