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
from jax import lax
from jax.typing import ArrayLike

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
    y = jnp.asarray(y)
    flat_index, kept = _unpool_targets(jnp.asarray(indices).astype(jnp.int32), cfg)
    return _max_unpool(y, flat_index, kept, cfg)


def _to_planes(a: jax.Array, channels_last: bool) -> jax.Array:
    """``(N, C, *sp)`` or ``(N, *sp, C)`` -> ``(N*C, prod(sp))``."""
    if channels_last:
        a = jnp.moveaxis(a, -1, 1)
    return a.reshape(a.shape[0] * a.shape[1], math.prod(a.shape[2:]))


def _from_planes(a: jax.Array, lead: tuple[int, int], size: tuple[int, ...], channels_last: bool):
    a = a.reshape(lead + size)
    return jnp.moveaxis(a, 1, -1) if channels_last else a


def _unpool_targets(indices: jax.Array, cfg: UnpoolConfig) -> tuple[jax.Array, jax.Array]:
    """Per plane: each entry's index (clipped) and whether it is written.

    Written = in range and the last entry with that index: a stable sort puts equal indices
    in their original order, so the last of each run is the last occurrence.
    """
    plane = math.prod(cfg.out_size)
    idx = _to_planes(indices, cfg.channels_last)
    in_range = (idx >= 0) & (idx < plane)
    key = jnp.where(in_range, idx, -1)
    order = jnp.argsort(key, axis=1, stable=True)
    ranked = jnp.take_along_axis(key, order, axis=1)
    last = jnp.concatenate(
        [ranked[:, :-1] != ranked[:, 1:], jnp.ones((ranked.shape[0], 1), bool)], axis=1
    )
    last_in_place = jnp.take_along_axis(last, jnp.argsort(order, axis=1), axis=1)
    return jnp.clip(idx, 0, plane - 1), in_range & last_in_place


def _max_unpool_forward(y, flat_index, kept, cfg: UnpoolConfig) -> jax.Array:
    plane = math.prod(cfg.out_size)
    lead = (y.shape[0], y.shape[-1] if cfg.channels_last else y.shape[1])
    values = _to_planes(y, cfg.channels_last)
    b, m = values.shape
    # entries not written go to distinct out-of-range columns: every index is unique
    column = jnp.where(kept, flat_index, plane + lax.broadcasted_iota(jnp.int32, (b, m), 1))
    row = lax.broadcasted_iota(jnp.int32, (b, m), 0)
    out = (
        jnp.zeros((b, plane), y.dtype).at[row, column].set(values, mode="drop", unique_indices=True)
    )
    return _from_planes(out, lead, cfg.out_size, cfg.channels_last)


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
    lead = (d_out.shape[0], d_out.shape[-1] if cfg.channels_last else d_out.shape[1])
    dy = max_unpool_values_grad(_to_planes(d_out, cfg.channels_last), flat_index, kept)
    return _from_planes(dy, lead, cfg.in_size, cfg.channels_last), None, None


_max_unpool.defvjp(_max_unpool_fwd, _max_unpool_bwd)


# Forward:  Out[n, c, idx[n, c, j]] = Y[n, c, j]   (for the kept j: the last of equal indices)
# dL/dY:    dY[n, c, j] = dOut[n, c, idx[n, c, j]] if j is kept else 0
def max_unpool_values_grad(d_out: jax.Array, flat_index: jax.Array, kept: jax.Array) -> jax.Array:
    """Gather the cotangent of the unpooled planes at the indices.

    Args:
      d_out: cotangent of the output, ``(B, P)`` (planes flattened).
      flat_index: ``(B, M)`` int indices into each plane, clipped into range.
      kept: ``(B, M)`` bool, true where that value was written (in range, last duplicate).

    Returns:
      ``(B, M)`` cotangent of the pooled values.
    """
    gathered = jnp.take_along_axis(d_out, flat_index, axis=1, mode="clip")
    return jnp.where(kept, gathered, jnp.zeros((), d_out.dtype))
