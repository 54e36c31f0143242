"""Benchmarks of jaxkl against its JAX peers (optax, plain jnp), NumPy and PyTorch.

Run `python -m bench` (quick: one size), `python -m bench --sweep --docs`
(the never-slower sweep over four shapes, which regenerates `docs/benchmarks.md`
and the README's numbers) or `python -m bench --help` for every preset.
"""
