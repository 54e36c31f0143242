"""Leading-axis chunks: how the fused heads and the tiled contrastive loss walk over rows."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def chunked(tree: Any, num_chunks: int, size: int) -> Any:
    """Pad the leading axis to `num_chunks * size` rows and split it into chunks."""

    def split(x):
        pad = num_chunks * size - x.shape[0]
        if pad:
            x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)])
        return x.reshape((num_chunks, size) + x.shape[1:])

    return jax.tree_util.tree_map(split, tree)


def unchunked(x: jax.Array, num_rows: int) -> jax.Array:
    """Undo `chunked` on one array: merge the chunks and drop the padding rows."""
    return x.reshape((-1,) + x.shape[2:])[:num_rows]
