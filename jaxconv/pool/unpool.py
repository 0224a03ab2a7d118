"""``max_unpool``: PyTorch's partial inverse of ``max_pool``, and its VJP.

Each ``(n, c)`` plane is written at the pooled ``indices``, as one scatter whose indices are
made unique first (the last of equal indices is kept, the rest sent past the plane), so its
result does not depend on the scatter's order; the backward is a gather at the same indices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .._compat import on_auto_axes
from ._config import UnpoolConfig, unpool_config

__all__ = ["max_unpool", "max_unpool_values_grad"]


def max_unpool(
    y: ArrayLike,
    indices: ArrayLike,
    output_size: int | Sequence[int],
    *,
    channels_last: bool = False,
) -> jax.Array:
    """Partial inverse of ``max_pool``: PyTorch's ``max_unpool{1,2,3}d``.

    ``Out[n, c, idx[n, c, j]] = Y[n, c, j]`` on a zero plane of ``output_size``, where
    ``idx`` are flat indices into each ``(n, c)`` spatial plane (``max_pool(...,
    return_indices=True)``). When several entries carry the same index, the last in
    row-major order is written (PyTorch's CPU loop). Indices outside the plane raise
    ``ValueError`` when ``indices`` is concrete; under ``jit`` they are ignored.

    Gradient: ``dY[n, c, j] = dOut[n, c, idx[n, c, j]]`` for the written entries, 0 for
    overwritten duplicates and out-of-range entries (PyTorch gives duplicates the gathered
    gradient too; ours is the derivative of the forward above). ``indices`` gets none.

    Args:
      y: pooled values ``(N, C, *pooled)`` or channels-last; a floating dtype.
      indices: integer array of ``y``'s shape.
      output_size: the unpooled spatial size, an int or one int per spatial dim.
      channels_last: layout of ``y``, ``indices`` and the output.

    Returns:
      ``(N, C, *output_size)`` (or channels-last), ``y``'s dtype.

    Raises:
      TypeError: ``y`` is not floating or ``indices`` not integer.
      ValueError: shapes or ranks disagree, ``output_size < 1``, or an index is out of range.

    Example:
      >>> import jax.numpy as jnp
      >>> max_unpool(jnp.array([[[6., 8.]]]), jnp.array([[[1, 2]]]), 4)
      Array([[[0., 6., 8., 0.]]], dtype=float32)
    """
    cfg = unpool_config(y, indices, output_size, channels_last)

    def unpool(y: jax.Array, indices: jax.Array) -> jax.Array:
        flat_index, kept = _unpool_targets(indices.astype(jnp.int32), cfg)
        return _max_unpool(y, flat_index, kept, cfg)

    return on_auto_axes(unpool, jnp.asarray(y), jnp.asarray(indices))


def _to_planes(a: jax.Array, channels_last: bool) -> jax.Array:
    """``(N, C, *sp)`` or ``(N, *sp, C)`` -> ``(N, C, prod(sp))``.

    ``N`` and ``C`` stay separate axes, batch axes of every sort, scatter and gather below
    (``vmap``): a batch-sharded input keeps its sharding, where merging ``N*C`` into one
    axis of row indices made XLA gather the planes onto every device.
    """
    if channels_last:
        a = jnp.moveaxis(a, -1, 1)
    return a.reshape(a.shape[:2] + (math.prod(a.shape[2:]),))


def _from_planes(a: jax.Array, size: tuple[int, ...], channels_last: bool) -> jax.Array:
    a = a.reshape(a.shape[:2] + size)
    return jnp.moveaxis(a, 1, -1) if channels_last else a


def _per_plane(f):
    """``f`` on one ``(n, c)`` plane, mapped over both leading axes."""
    return jax.vmap(jax.vmap(f))


def _unpool_targets(indices: jax.Array, cfg: UnpoolConfig) -> tuple[jax.Array, jax.Array]:
    """Per plane: each entry's index (clipped) and whether it is written.

    Written = in range and the last entry with that index: a stable sort puts equal indices
    in their original order, so the last of each run is the last occurrence.
    """
    plane = math.prod(cfg.out_size)

    def targets(idx: jax.Array) -> tuple[jax.Array, jax.Array]:
        in_range = (idx >= 0) & (idx < plane)
        key = jnp.where(in_range, idx, -1)
        order = jnp.argsort(key, stable=True)
        ranked = key[order]
        last = jnp.concatenate([ranked[:-1] != ranked[1:], jnp.ones((1,), bool)])
        last_in_place = last[jnp.argsort(order)]
        return jnp.clip(idx, 0, plane - 1), in_range & last_in_place

    return _per_plane(targets)(_to_planes(indices, cfg.channels_last))


def _max_unpool_forward(y, flat_index, kept, cfg: UnpoolConfig) -> jax.Array:
    plane = math.prod(cfg.out_size)

    def write(values: jax.Array, index: jax.Array, written: jax.Array) -> jax.Array:
        # entries not written go to distinct out-of-range columns: every index is unique
        past_end = plane + jnp.arange(index.shape[0], dtype=index.dtype)
        column = jnp.where(written, index, past_end)
        out = jnp.zeros((plane,), values.dtype)
        return out.at[column].set(values, mode="drop", unique_indices=True)

    out = _per_plane(write)(_to_planes(y, cfg.channels_last), flat_index, kept)
    return _from_planes(out, cfg.out_size, cfg.channels_last)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _max_unpool(y, flat_index, kept, cfg: UnpoolConfig):
    return _max_unpool_forward(y, flat_index, kept, cfg)


def _max_unpool_fwd(y, flat_index, kept, cfg):
    out = _max_unpool_forward(y, flat_index, kept, cfg)
    return out, (flat_index, kept)  # residuals: where each value went


# Forward:  Out[idx[j]] = Y[j]  (written j only)
# dL/dY:    dY[j] = dOut[idx[j]] [j written]
def _max_unpool_bwd(cfg, residuals, d_out):
    flat_index, kept = residuals
    dy = max_unpool_values_grad(_to_planes(d_out, cfg.channels_last), flat_index, kept)
    return _from_planes(dy, cfg.in_size, cfg.channels_last), None, None


_max_unpool.defvjp(_max_unpool_fwd, _max_unpool_bwd)


# Forward:  Out[n, c, idx[n, c, j]] = Y[n, c, j]   (for the kept j: the last of equal indices)
# dL/dY:    dY[n, c, j] = dOut[n, c, idx[n, c, j]] if j is kept else 0
def max_unpool_values_grad(d_out: jax.Array, flat_index: jax.Array, kept: jax.Array) -> jax.Array:
    """Gather the cotangent of the unpooled planes at the indices.

    Args:
      d_out: cotangent of the output, ``(N, C, P)`` (planes flattened).
      flat_index: ``(N, C, M)`` int indices into each plane, clipped into range.
      kept: ``(N, C, M)`` bool, true where that value was written (in range, last duplicate).

    Returns:
      ``(N, C, M)`` cotangent of the pooled values.
    """

    def gather(plane: jax.Array, index: jax.Array, written: jax.Array) -> jax.Array:
        return jnp.where(written, plane[index], jnp.zeros((), plane.dtype))

    return _per_plane(gather)(d_out, flat_index, kept)
