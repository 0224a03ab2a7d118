"""The array pieces every pool shares: padding, windows as slices or blocks, winner codes.

A window offset ``a = (a_1, .., a_n)`` is numbered by its row-major position in the window,
its *code*; ``window_offsets`` lists the offsets in code order. A max pool's winner is stored
as that code (``winner_dtype``: one byte up to 256 offsets) and turned into PyTorch's flat
plane index only when asked (``winner_to_indices``).

Windows appear in two layouts. As *slices*: for a fixed offset, ``X_pad[o*s + a*d]`` over all
outputs ``o`` is one strided slice (``window_slice``), so a pool is a loop over offsets. As
*blocks*: when windows tile the input (or after the adaptive pools' gather), each spatial
axis ``L_i`` splits into ``(o_i, k_i)``, the window axes sitting right after their output
axes (``split_windows``, ``window_axes``), and a vectorised reduction runs over the window
axes in place (``max_and_winner``, with ``window_codes``).
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._geometry import PoolGeometry, read_positions

__all__ = [
    "MAX_UNROLLED_OFFSETS",
    "as_blocks",
    "max_and_winner",
    "merge_windows",
    "pad_axes",
    "pad_spatial",
    "read_mask",
    "spatial_constant",
    "split_windows",
    "sum_windows",
    "window_axes",
    "window_offsets",
    "window_codes",
    "window_slice",
    "winner_dtype",
    "winner_to_indices",
]

# Windows with more offsets than this that tile the input (global pooling, say) are
# reduced as one vectorised axis instead of an unrolled loop over offsets. Measured on
# 32x64x64x64 (grad of sum(pool(x)**2), jax 0.10 CPU): the slices win up to 8x8 windows
# (avg 2x2 3.7 vs 15.4 ms, 8x8 4.3 vs 6.5; max 8x8 12.3 vs 13.9), the reduction from
# 16x16 on (avg 4.3 vs 6.0 ms; max even).
MAX_UNROLLED_OFFSETS = 64


def as_blocks(geom: PoolGeometry) -> bool:
    """Whether a pool reduces ``geom``'s windows as blocks rather than offset by offset.

    Only for tiling windows with many offsets: for small windows the unrolled loop of
    slices is faster, and overlapping windows cannot be reshaped into blocks.
    """
    return geom.non_overlapping and geom.num_offsets > MAX_UNROLLED_OFFSETS


def window_offsets(window: Sequence[int]) -> list[tuple[int, ...]]:
    """Window offsets ``(a_1, .., a_n)`` in row-major order; the list index is the code."""
    return list(itertools.product(*(range(k) for k in window)))


def pad_axes(x: jax.Array, pads: Mapping[int, tuple[int, int]], value: float = 0.0) -> jax.Array:
    """``lax.pad`` with ``value`` on the given axes, ``{axis: (low, high)}``; negative crops."""
    config = [(0, 0, 0)] * x.ndim
    for axis, (lo, hi) in pads.items():
        config[axis] = (lo, hi, 0)
    return lax.pad(x, jnp.asarray(value, x.dtype), config)


def pad_spatial(x: jax.Array, geom: PoolGeometry, value: float) -> jax.Array:
    """Pad ``p`` low and ``extent - L - p`` high (a crop if negative) with ``value``."""
    pads = zip(geom.spatial_axes, geom.padding, geom.high_padding, strict=True)
    return pad_axes(x, {axis: (lo, hi) for axis, lo, hi in pads}, value)


def read_mask(geom: PoolGeometry, ndim: int) -> jax.Array | None:
    """Which input positions some window reads, shaped to broadcast against an ``ndim``
    array; ``None`` when every position is read (the common case: nothing to mask)."""
    per_dim = [np.asarray(read_positions(*args), dtype=bool) for args in geom.per_dim]
    if all(r.all() for r in per_dim):
        return None
    mask = np.ones((), dtype=bool)
    for r in per_dim:
        mask = np.logical_and.outer(mask, r)
    return spatial_constant(mask, ndim, geom.spatial_axes, bool)


def window_slice(xp: jax.Array, geom: PoolGeometry, offset: tuple[int, ...]) -> jax.Array:
    """``X_pad[o*s + a*d]`` for all outputs ``o``, at window offset ``a``: a strided slice."""
    start = [0] * xp.ndim
    limit = list(xp.shape)
    strides = [1] * xp.ndim
    for axis, a, o, s, d in zip(
        geom.spatial_axes, offset, geom.out_size, geom.stride, geom.dilation, strict=True
    ):
        start[axis] = a * d
        limit[axis] = a * d + (o - 1) * s + 1
        strides[axis] = s
    return lax.slice(xp, start, limit, strides)


def window_axes(spatial_axes: Sequence[int]) -> tuple[int, ...]:
    """Positions of the window axes ``k_i`` in the block layout ``(.., o_i, k_i, ..)``."""
    return tuple(axis + i + 1 for i, axis in enumerate(spatial_axes))


def sum_windows(blocks: jax.Array, spatial_axes: Sequence[int]) -> jax.Array:
    """Sum the window axes of a block-layout array ``(.., o_i, k_i, ..)``: one reduction for
    windows of more than :data:`MAX_UNROLLED_OFFSETS` entries, else the entries as slices
    added in row-major order (XLA:CPU's reduction over short axes is the slower one)."""
    axes = window_axes(spatial_axes)
    if math.prod(blocks.shape[a] for a in axes) > MAX_UNROLLED_OFFSETS:
        return jnp.sum(blocks, axis=axes)
    total = blocks
    for axis in reversed(axes):  # the last first: the earlier axes keep their positions
        parts = [lax.index_in_dim(total, i, axis, keepdims=False) for i in range(total.shape[axis])]
        total = functools.reduce(operator.add, parts)
    return total


def split_windows(xp: jax.Array, geom: PoolGeometry) -> jax.Array:
    """Tiling windows as blocks: ``(.., o_i*k_i, ..) -> (.., o_i, k_i, ..)`` (a reshape)."""
    shape: list[int] = []
    for axis, n in enumerate(xp.shape):
        shape.append(n)
        if axis in geom.spatial_axes:
            k = geom.window[geom.spatial_axes.index(axis)]
            shape[-1:] = [n // k, k]
    return xp.reshape(shape)


def merge_windows(blocks: jax.Array, spatial_axes: Sequence[int]) -> jax.Array:
    """``(.., o_i, k_i, ..) -> (.., o_i*k_i, ..)``: tiling windows back in place."""
    shape: list[int] = []
    split = set(window_axes(spatial_axes))
    for axis, n in enumerate(blocks.shape):
        if axis in split:
            shape[-1] *= n
        else:
            shape.append(n)
    return blocks.reshape(shape)


def window_codes(window: Sequence[int], spatial_axes: Sequence[int], ndim: int) -> jax.Array:
    """Each window offset's code (int32) in the block layout of an ``ndim``-axis array:
    ``k_i`` long on the window axes, 1 elsewhere, so it broadcasts against the blocks."""
    shape = [1] * ndim
    for axis, k in zip(window_axes(spatial_axes), window, strict=True):
        shape[axis] = k
    return jnp.asarray(np.arange(math.prod(window), dtype=np.int32).reshape(shape))


def max_and_winner(
    blocks: jax.Array,
    window: Sequence[int],
    spatial_axes: Sequence[int],
    code_dtype: Any,
    valid: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Max over each block's window axes and its winner's code: the last NaN if any, else the
    first max (row-major window order).

    ``blocks`` is ``(.., o_i, k_i, ..)`` (``window_axes``). Each result is a plain max or
    min reduction over the window axes -- no argmax, no transpose of the window axes into
    one: XLA's SPMD partitioner all-reduces such reductions along a sharded axis where it
    would gather a variadic argmax's partial results or the merged windows.

    ``valid`` (broadcast against ``blocks``) marks entries that may win a tie for the
    maximum; the adaptive pools' fill entries are not valid, so an all ``-inf`` window
    crowns a real entry. A NaN is never a fill entry, hence the mask does not apply to the
    last NaN.
    """
    win = window_axes(spatial_axes)
    codes = window_codes(window, spatial_axes, blocks.ndim)
    none = jnp.asarray(-1, jnp.int32)
    last_nan = jnp.max(jnp.where(blocks != blocks, codes, none), axis=win)
    has_nan = last_nan >= 0
    # The window's NaN is put back by hand: XLA's CPU max reduction (its YNNPACK fusion, jax
    # 0.10) drops NaNs from large enough reductions -- lax.reduce_window's max pool too.
    y = jnp.where(has_nan, jnp.asarray(jnp.nan, blocks.dtype), jnp.max(blocks, axis=win))
    y_b = jnp.expand_dims(y, win)
    is_max = blocks == y_b if valid is None else (blocks == y_b) & valid
    past_end = jnp.asarray(math.prod(window), jnp.int32)
    first_max = jnp.min(jnp.where(is_max, codes, past_end), axis=win)
    return y, jnp.where(has_nan, last_nan, first_max).astype(code_dtype)


def winner_dtype(num_offsets: int) -> Any:
    """The narrowest unsigned type that holds a code ``< num_offsets``: the residual's size."""
    if num_offsets <= 256:
        return jnp.uint8
    if num_offsets <= 65536:
        return jnp.uint16
    return jnp.int32


def winner_to_indices(
    winner: jax.Array,
    spatial_axes: Sequence[int],
    in_size: Sequence[int],
    window: Sequence[int],
    dilation: Sequence[int],
    starts: Sequence[np.ndarray],
) -> jax.Array:
    """Winner code -> PyTorch's flat index ``sum_i l_i * prod(L_{>i})`` into each plane.

    Along dimension ``i`` the code holds the offset ``a_i`` (row-major over ``window``), and
    output ``o`` reads input position ``l_i = starts[i][o] + a_i * dilation[i]``.
    """
    code = winner.astype(jnp.int32)
    flat = jnp.zeros(code.shape, jnp.int32)
    step = math.prod(window)
    for axis, n, k, d, start in zip(spatial_axes, in_size, window, dilation, starts, strict=True):
        step //= k
        a = (code // step) % k
        flat = flat * n + spatial_constant(start, code.ndim, (axis,), jnp.int32) + a * d
    return flat


def spatial_constant(values: np.ndarray, ndim: int, axes: Sequence[int], dtype: Any) -> jax.Array:
    """A per-output-position constant, ``values`` of shape ``(o_i, ..)`` along ``axes``,
    shaped to broadcast against an ``ndim`` array."""
    shape = [1] * ndim
    for i, axis in enumerate(axes):
        shape[axis] = values.shape[i]
    return jnp.asarray(values.reshape(shape), dtype=dtype)
