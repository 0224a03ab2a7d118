"""The array pieces every pool shares: padding, windows as slices or blocks, winner codes.

A window offset ``a = (a_1, .., a_n)`` is numbered by its row-major position in the window,
its *code*; ``window_offsets`` lists the offsets in code order. A max pool's winner is stored
as that code (``winner_dtype``: one byte up to 256 offsets) and turned into PyTorch's flat
plane index only when asked (``winner_to_indices``).

Windows appear in two layouts. As *slices*: for a fixed offset, ``X_pad[o*s + a*d]`` over all
outputs ``o`` is one strided slice (``window_slice``), so a pool is a loop over offsets. As
*blocks*: when windows tile the input (or after the adaptive pools' gather), each spatial
axis ``L_i`` splits into ``(o_i, k_i)``, the window axes sitting right after their output
axes (``split_windows``, ``window_axes``); ``windows_last`` moves them into one trailing
axis of length ``K = prod(k_i)`` for a vectorised reduction.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._geometry import PoolGeometry

__all__ = [
    "MAX_UNROLLED_OFFSETS",
    "as_blocks",
    "max_and_winner",
    "merge_windows",
    "pad_axes",
    "pad_spatial",
    "spatial_constant",
    "split_windows",
    "window_axes",
    "window_offsets",
    "window_slice",
    "windows_last",
    "winner_dtype",
    "winner_to_indices",
]

# Windows with more offsets than this that tile the input (global pooling, say) are
# reduced as one vectorised axis instead of an unrolled loop over offsets.
MAX_UNROLLED_OFFSETS = 16


def as_blocks(geom: PoolGeometry) -> bool:
    """Whether the max pool reduces ``geom``'s windows as blocks rather than offset by offset.

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


def windows_last(blocks: jax.Array, spatial_axes: Sequence[int]) -> jax.Array:
    """``(.., o_i, k_i, ..) -> (.., o_i, .., K)``: the window axes as one trailing axis.

    ``K = prod(k_i)``, in row-major window order, so a position along it is the offset's code.
    """
    win = window_axes(spatial_axes)
    keep = [a for a in range(blocks.ndim) if a not in win]
    moved = jnp.transpose(blocks, keep + list(win))
    return moved.reshape(moved.shape[: len(keep)] + (math.prod(moved.shape[len(keep) :]),))


def max_and_winner(
    flat: jax.Array, code_dtype: Any, valid: jax.Array | None = None
) -> tuple[jax.Array, jax.Array]:
    """Max over the last axis and its winner's code: the last NaN if any, else the first max.

    ``valid`` (broadcast against ``flat``) marks entries that may win a tie for the maximum;
    the adaptive pools' fill entries are not valid, so an all ``-inf`` window crowns a real
    entry. A NaN is never a fill entry, hence the mask does not apply to the last NaN.
    """
    k = flat.shape[-1]
    y = jnp.max(flat, axis=-1)
    is_nan = flat != flat
    last_nan = (k - 1) - jnp.argmax(is_nan[..., ::-1], axis=-1)
    is_max = flat == y[..., None]
    first_max = jnp.argmax(is_max if valid is None else is_max & valid, axis=-1)
    winner = jnp.where(jnp.any(is_nan, axis=-1), last_nan, first_max).astype(code_dtype)
    return y, winner


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
