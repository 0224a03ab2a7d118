"""Hand-derived backward pieces of the pooling ops.

Every function here is built from ``lax.pad``, ``lax.slice``, ``jnp.where``, ``reshape``,
``stack`` and gathers with static indices: no ``select_and_scatter_add``, no scatter with
colliding indices, no ``jax.vjp``. So the results are bitwise reproducible on every backend,
and JAX can differentiate this code again in both modes (grad-of-grad, ``jax.hessian``).

Notation for one spatial dimension: input length ``L``, window ``k``, stride ``s``, padding
``p``, dilation ``d``; output ``o`` reads padded position ``q = o*s + a*d`` for offsets
``a = 0..k-1``, i.e. input position ``q - p``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._pool_shapes import (
    AdaptiveGeometry,
    PoolGeometry,
    adaptive_inverse,
    offset_phase,
    phase_length,
)

__all__ = [
    "adaptive_avg_pool_input_grad",
    "adaptive_max_pool_input_grad",
    "avg_pool_input_grad",
    "max_pool_input_grad",
    "max_unpool_values_grad",
    "window_offsets",
]


def window_offsets(window: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Window offsets ``(a_1, .., a_n)`` in row-major order; the list index is the winner code."""
    return list(itertools.product(*(range(k) for k in window)))


def _pad_axes(x: jax.Array, pads: dict[int, tuple[int, int]]) -> jax.Array:
    """``lax.pad`` with zeros on the given axes; negative amounts crop."""
    config = [(0, 0, 0)] * x.ndim
    for axis, (lo, hi) in pads.items():
        config[axis] = (lo, hi, 0)
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def _crop_padding(dx_padded: jax.Array, geom: PoolGeometry) -> jax.Array:
    """Padded-coordinate gradient -> input gradient: drop ``p`` on the left, fit ``L``.

    The implicit padding never receives gradient; positions past the last window get zero.
    """
    pads = {}
    for axis, n, p in zip(geom.spatial_axes, geom.in_size, geom.padding, strict=True):
        pads[axis] = (-p, n + p - dx_padded.shape[axis])
    return _pad_axes(dx_padded, pads)


def _split_window_axes(x: jax.Array, axes: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of ``x`` with a length-1 window axis inserted after each axis in ``axes``."""
    shape: list[int] = []
    for axis, n in enumerate(x.shape):
        shape.append(n)
        if axis in axes:
            shape.append(1)
    return tuple(shape)


def _merge_window_axes(blocks: jax.Array, geom: PoolGeometry, ndim: int) -> jax.Array:
    """``(.., o_i, k_i, ..)`` -> ``(.., o_i*k_i, ..)``: non-overlapping windows back in place."""
    shape = list(blocks.shape)
    merged: list[int] = []
    i = 0
    while i < len(shape):
        merged.append(shape[i])
        if len(merged) - 1 in geom.spatial_axes and i + 1 < len(shape):
            merged[-1] *= shape[i + 1]
            i += 1
        i += 1
    return blocks.reshape(merged)


def _place_by_phase(term: Callable[[int], jax.Array | None], geom: PoolGeometry, like: jax.Array):
    """``dX_pad[q] = sum_{(o, a): o*s + a*d = q} term(a)[o]`` for overlapping windows.

    Split the padded axis by stride phase, ``q = t*s + r``. Offset ``a`` with
    ``a*d = u*s + r`` lands on phase ``r`` at ``t = o + u``, so each phase is a sum of
    output-resolution terms shifted by ``u`` (a zero pad), with no collisions; the phases
    are then interleaved by ``stack`` + ``reshape``. ``term(code)`` is the contribution of
    offset ``code`` at output resolution (``None`` for none); ``like`` gives shape and dtype.
    """
    axes = geom.spatial_axes
    lengths = [phase_length(e, s) for e, s in zip(geom.extent, geom.stride, strict=True)]
    phases: dict[tuple[int, ...], jax.Array] = {}
    for code, offset in enumerate(window_offsets(geom.window)):
        t = term(code)
        if t is None:
            continue
        ru = [
            offset_phase(a, s, d)
            for a, s, d in zip(offset, geom.stride, geom.dilation, strict=True)
        ]
        phase = tuple(r for r, _ in ru)
        pads = {
            axis: (u, n_t - o - u)
            for axis, (_, u), n_t, o in zip(axes, ru, lengths, geom.out_size, strict=True)
        }
        shifted = _pad_axes(t, pads)
        phases[phase] = shifted if phase not in phases else phases[phase] + shifted

    phase_shape = list(like.shape)
    for axis, n_t in zip(axes, lengths, strict=True):
        phase_shape[axis] = n_t
    zeros = jnp.zeros(phase_shape, like.dtype)

    def interleave(prefix: tuple[int, ...]) -> jax.Array:
        i = len(prefix)
        if i == geom.rank:
            return phases.get(prefix, zeros)
        parts = [interleave(prefix + (r,)) for r in range(geom.stride[i])]
        if len(parts) == 1:
            return parts[0]
        # axes of later dimensions sit after axes[i], so axes[i] is still in place
        stacked = jnp.stack(parts, axis=axes[i] + 1)
        shape = list(stacked.shape)
        shape[axes[i] : axes[i] + 2] = [shape[axes[i]] * shape[axes[i] + 1]]
        return stacked.reshape(shape)

    return interleave(())


# Forward:  Y[o] = X_pad[o*s + a*(o)*d],  a*(o) = winner[o] (first max; last NaN)
# dL/dX:    dX_pad[q] = sum_{(o, a): o*s + a*d = q} dY[o] [winner[o] == a],  dX = crop(dX_pad)
def max_pool_input_grad(
    dy: jax.Array, winner: jax.Array, geom: PoolGeometry, max_unrolled_offsets: int = 16
) -> jax.Array:
    """Route each upstream gradient to the winning position of its window.

    Args:
      dy: cotangent of the pool output, ``(N, C, *out)`` (or channels-last).
      winner: row-major window code of each output's winner, same shape, unsigned int.
      geom: the pool's geometry.
      max_unrolled_offsets: tiling windows with more offsets take one broadcast compare
        instead of one select per offset.

    Returns:
      ``dL/dX`` with the input's shape and ``dy``'s dtype.
    """
    zero = jnp.zeros((), dy.dtype)
    if geom.non_overlapping and geom.num_offsets > max_unrolled_offsets:
        # large tiling windows: one broadcast compare of the code against the window grid
        shape = _split_window_axes(dy, geom.spatial_axes)
        codes = np.arange(geom.num_offsets, dtype=np.dtype(winner.dtype))
        grid_shape = [1] * (dy.ndim + geom.rank)
        for i, axis in enumerate(geom.spatial_axes):
            grid_shape[axis + i + 1] = geom.window[i]
        grid = jnp.asarray(codes.reshape(geom.window).reshape(grid_shape))
        blocks = jnp.where(winner.reshape(shape) == grid, dy.reshape(shape), zero)
        return _crop_padding(_merge_window_axes(blocks, geom, dy.ndim), geom)

    # Non-overlapping windows (s = k, d = 1) give one offset per stride phase and no shifts:
    # the placement is then a one-hot select per offset interleaved by stack + reshape, the
    # reshape path. (A broadcast compare over (.., o, k, ..) blocks is the same arithmetic
    # but ~30% slower on CPU: its innermost loop runs over the 2-wide window axis.)
    def term(code: int) -> jax.Array:
        return jnp.where(winner == code, dy, zero)

    return _crop_padding(_place_by_phase(term, geom, dy), geom)


# Forward:  Y[o] = sum_a X_pad[o*s + a*d] / D[o]   (D: PyTorch's divisor, or divisor_override)
# dL/dX:    dX_pad[q] = sum_{(o, a): o*s + a*d = q} G[o],  G = dY / D   (every offset, no mask)
def avg_pool_input_grad(g: jax.Array, geom: PoolGeometry) -> jax.Array:
    """Spread each (already divided) upstream gradient ``g`` over its whole window.

    Args:
      g: ``dY / divisor``, ``(N, C, *out)`` (or channels-last).
      geom: the pool's geometry.

    Returns:
      The sum over windows of ``g`` placed on every window position, cropped to the input.
    """
    if geom.non_overlapping:
        shape = _split_window_axes(g, geom.spatial_axes)
        full = list(shape)
        for i, axis in enumerate(geom.spatial_axes):
            full[axis + i + 1] = geom.window[i]
        blocks = jnp.broadcast_to(g.reshape(shape), full)
        return _crop_padding(_merge_window_axes(blocks, geom, g.ndim), geom)
    return _crop_padding(_place_by_phase(lambda code: g, geom, g), geom)


def _transpose_adaptive_gather(g: jax.Array, geom: AdaptiveGeometry) -> jax.Array:
    """Adjoint of the forward's window gather ``W[.., o, a, ..] = X[.., start_o + a, ..]``.

    ``dX[l] = sum over windows (o, a) reading l of G[o, a]``: a gather through the static
    inverse table (``adaptive_inverse``) and a sum in a fixed order, one dimension at a time.
    """
    for i in reversed(range(geom.rank)):
        axis = geom.spatial_axes[i]  # earlier dims are still split as (o, a) pairs
        pos = axis + i
        n, o = geom.in_size[i], geom.out_size[i]
        inverse = np.asarray(adaptive_inverse(n, o), dtype=np.int32)
        shape = list(g.shape)
        merged = shape[:pos] + [shape[pos] * shape[pos + 1]] + shape[pos + 2 :]
        g = _pad_axes(g.reshape(merged), {pos: (0, 1)})  # the sentinel reads a zero
        g = jnp.take(g, jnp.asarray(inverse.reshape(-1)), axis=pos, mode="clip")
        g = g.reshape(merged[:pos] + list(inverse.shape) + merged[pos + 1 :])
        g = jnp.sum(g, axis=pos + 1)
    return g


def adaptive_window_shape(x_shape: tuple[int, ...], geom: AdaptiveGeometry) -> list[int]:
    """Shape of the gathered windows ``(.., o_i, kmax_i, ..)`` for an array of ``x_shape``."""
    shape = list(x_shape)
    for i in reversed(range(geom.rank)):
        axis = geom.spatial_axes[i]
        shape[axis : axis + 1] = [geom.out_size[i], geom.window[i]]
    return shape


# Forward:  Y[o] = sum_{l in [start_o, end_o)} X[l] / |window o|   (separably in every dim)
# dL/dX:    dX[l] = sum_{o: l in window o} dY[o] / |window o|
def adaptive_avg_pool_input_grad(g: jax.Array, geom: AdaptiveGeometry) -> jax.Array:
    """Spread ``g = dY / count`` over each adaptive window (gather-only adjoint)."""
    shape = _split_window_axes(g, geom.spatial_axes)
    full = adaptive_window_shape(g.shape, geom)
    blocks = jnp.broadcast_to(g.reshape(shape), full)
    return _transpose_adaptive_gather(blocks, geom)


# Forward:  Y[o] = X[start_o + a*(o)],  a*(o) = winner[o]
# dL/dX:    dX[l] = sum_{o: start_o + a*(o) = l} dY[o]
def adaptive_max_pool_input_grad(
    dy: jax.Array, winner: jax.Array, geom: AdaptiveGeometry
) -> jax.Array:
    """Route each upstream gradient to the winner of its adaptive window."""
    shape = _split_window_axes(dy, geom.spatial_axes)
    window = geom.window
    codes = np.arange(int(np.prod(window)), dtype=np.dtype(winner.dtype)).reshape(window)
    grid_shape = [1] * (dy.ndim + geom.rank)
    for i, axis in enumerate(geom.spatial_axes):
        grid_shape[axis + i + 1] = window[i]
    grid = jnp.asarray(codes.reshape(grid_shape))
    zero = jnp.zeros((), dy.dtype)
    blocks = jnp.where(winner.reshape(shape) == grid, dy.reshape(shape), zero)
    return _transpose_adaptive_gather(blocks, geom)


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
