"""``max_pool``: the windowed max and its hand-derived VJP, with a one-byte residual.

The forward returns the max and the winner's code in its window; the code is the only
residual (uint8 for up to 256 offsets), and the backward routes each upstream gradient to it
without a scatter: for windows tiling the input, one elementwise pass in which every input
position compares its own offset code with its window's winner; otherwise stride phase by
stride phase. ``windowed_max`` is the op on a resolved
geometry (with ``winner_indices`` for ``return_indices``), shared with ``lp_pool``'s
``p = +-inf`` and the adaptive max pool's regular case.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .._compat import on_auto_axes
from .._materialize import materialized
from ._config import pool_geometry, static_bool
from ._geometry import PoolGeometry, first_valid_offsets
from ._vjp import crop_padding, place_by_phase, tile_winners, winner_blocks
from ._windows import (
    as_blocks,
    max_and_winner,
    merge_windows,
    pad_spatial,
    spatial_constant,
    split_windows,
    window_offsets,
    window_slice,
    winner_dtype,
    winner_to_indices,
)

__all__ = ["max_pool", "max_pool_input_grad", "windowed_max", "winner_indices"]


def max_pool(
    x: ArrayLike,
    window: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    *,
    channels_last: bool = False,
    return_indices: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Max pooling over 1-3 spatial dimensions, with PyTorch's semantics.

    ``Y[n, c, o] = max_a X[n, c, o*s + a*d - p]`` over window offsets ``a``; the implicit
    padding is ``-inf`` and never receives gradient.

    Conventions at the non-differentiable points: among tied maxima the first in row-major
    window order wins and receives the whole gradient; if a window holds a NaN the output is
    NaN and the gradient goes to the window's last NaN (PyTorch's rule; ``jax.grad`` of
    ``lax.reduce_window`` gives it to a number after the NaN instead). A window whose real
    entries are all ``-inf`` routes its gradient to its first in-bounds position (PyTorch).
    NaN and inf stay local: a non-finite entry of ``x`` or of the upstream gradient reaches
    only the outputs and gradient entries of the windows holding it.

    Args:
      x: ``(N, C, *spatial)``, or ``(N, *spatial, C)`` if ``channels_last``; 1-3 spatial
        dims; float16, bfloat16, float32 or float64 (integer arrays are refused: pool a
        float array, the gradient of an integer array is not defined).
      window: window size ``k``, an int or one int per spatial dim.
      stride: ``s``, an int or one per dim; ``None`` means ``window``.
      padding: implicit ``-inf`` padding ``p`` on both sides, at most ``window // 2``.
      dilation: spacing ``d`` between window elements.
      ceil_mode: use ``ceil`` instead of ``floor`` for the output size (a last window that
        would start in the right padding is dropped).
      channels_last: layout of ``x`` and of the outputs.
      return_indices: also return PyTorch-style indices.

    Returns:
      ``y``: ``(N, C, *out)`` (or channels-last) in ``x``'s dtype; with ``return_indices``,
      ``(y, indices)`` where ``indices`` (int32, same shape) is each winner's flat index into
      its ``(n, c)`` spatial plane, as ``torch.nn.functional.max_pool2d`` returns.

    Raises:
      TypeError: ``x`` is not a floating array, or an argument has the wrong type.
      ValueError: a bad window/stride/padding/dilation, mismatched ranks, or ``x`` too
        small for one window.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[[[1., 1., 2., 4.], [5., 6., 7., 8.],
      ...                  [3., 2., 1., 0.], [1., 2., 3., 4.]]]])
      >>> max_pool(x, 2)
      Array([[[[6., 8.],
               [3., 4.]]]], dtype=float32)
    """
    return_indices = static_bool(return_indices, "return_indices")
    geom = pool_geometry(
        x, window, stride, padding, dilation, ceil_mode=ceil_mode, channels_last=channels_last
    )

    def pool(x: jax.Array) -> jax.Array | tuple[jax.Array, jax.Array]:
        y, winner = windowed_max(x, geom)
        return (y, winner_indices(winner, geom)) if return_indices else y

    return on_auto_axes(pool, jnp.asarray(x))


def winner_indices(winner: jax.Array, geom: PoolGeometry) -> jax.Array:
    """Winner codes -> ``max_pool``'s ``indices``: flat positions in each ``(n, c)`` plane."""
    starts = [
        np.arange(o) * s - p
        for o, s, p in zip(geom.out_size, geom.stride, geom.padding, strict=True)
    ]
    return winner_to_indices(
        winner, geom.spatial_axes, geom.in_size, geom.window, geom.dilation, starts
    )


def _max_pool_forward(x: jax.Array, geom: PoolGeometry) -> tuple[jax.Array, jax.Array]:
    """Max and winner code together, in one pass over the window offsets.

    ``>`` keeps the first of equal maxima; ``v != v`` lets every later NaN take over, so the
    last NaN wins (NaN never loses to a number, which fails ``v > NaN``).
    """
    xp = pad_spatial(x, geom, -jnp.inf)
    code_dtype = winner_dtype(geom.num_offsets)
    if as_blocks(geom):
        # large tiling windows (global pooling): one vectorised reduction, not K slices
        blocks = split_windows(xp, geom)
        y, winner = max_and_winner(blocks, geom.window, geom.spatial_axes, code_dtype)
    else:
        offsets = window_offsets(geom.window)
        y = window_slice(xp, geom, offsets[0])
        winner = jnp.zeros(y.shape, code_dtype)
        for code, offset in enumerate(offsets[1:], start=1):
            v = window_slice(xp, geom, offset)
            take = (v > y) | (v != v)
            y = jnp.where(take, v, y)
            winner = jnp.where(take, jnp.asarray(code, code_dtype), winner)
    if any(geom.padding):
        # an all -inf window must not crown a padding position: PyTorch starts at the first
        # in-bounds position, a static function of the output position.
        first = spatial_constant(_first_valid_codes(geom), x.ndim, geom.spatial_axes, code_dtype)
        winner = jnp.where(y == -jnp.inf, first, winner)
    return y, winner


def _first_valid_codes(geom: PoolGeometry) -> np.ndarray:
    """Per output position, the code of its window's first in-bounds offset."""
    codes = np.zeros(geom.out_size, dtype=np.int64)
    for i, (n, o, k, s, p, d) in enumerate(geom.per_dim):
        shape = [1] * geom.rank
        shape[i] = o
        firsts = np.asarray(first_valid_offsets(n, o, k, s, p, d)).reshape(shape)
        codes = codes * k + firsts
    return codes


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def windowed_max(x: jax.Array, geom: PoolGeometry) -> tuple[jax.Array, jax.Array]:
    """``max_pool`` on a validated geometry: the max and each winner's code in its window."""
    return _max_pool_forward(x, geom)


def _max_pool_fwd(x, geom):
    # residual: only the winner's window code (uint8 for <= 256 offsets), not x and not y.
    # The max is stored with it: a backward that reads y (the gradient of sum(y**2), say)
    # would otherwise have XLA recompute the max chain once per window offset.
    y, winner = materialized(_max_pool_forward(x, geom))
    return (y, winner), winner


# Forward:  Y[o] = X_pad[o*s + a*(o)*d],   a*(o) = winner[o]
# dL/dX:    dX[o*s + a*(o)*d - p] += dY[o]   (the winner's position; padding drops out)
def _max_pool_bwd(geom, winner, cotangents):
    dy, _ = cotangents  # the winner codes are integers: their cotangent is float0
    return (max_pool_input_grad(dy, winner, geom),)


windowed_max.defvjp(_max_pool_fwd, _max_pool_bwd)


# Forward:  Y[o] = X_pad[o*s + a*(o)*d],  a*(o) = winner[o] (first max; last NaN)
# dL/dX:    dX[j] = sum_{(o, a): o*s + a*d - p = j} dY[o] [winner[o] == a]   (j in [0, L))
def max_pool_input_grad(dy: jax.Array, winner: jax.Array, geom: PoolGeometry) -> jax.Array:
    """Route each upstream gradient to the winning position of its window.

    Args:
      dy: cotangent of the pool output, ``(N, C, *out)`` (or channels-last).
      winner: row-major window code of each output's winner, same shape, unsigned int.
      geom: the pool's geometry.

    Returns:
      ``dL/dX`` with the input's shape and ``dy``'s dtype.
    """
    if geom.non_overlapping and not any(geom.padding):
        # Tiling windows from the input's first entry: each input position compares its own
        # offset code with its window's winner. (With padding the tiles sit on the padded
        # input and straddle the shards of an input split along that axis, which the SPMD
        # partitioner gathers; the phases below are aligned with the input instead.)
        return crop_padding(tile_winners(dy, winner, geom.window, geom.spatial_axes), geom)
    if as_blocks(geom):
        # large padded tiling windows: one broadcast compare of the code against the grid
        blocks = winner_blocks(dy, winner, geom.window, geom.spatial_axes)
        return crop_padding(merge_windows(blocks, geom.spatial_axes), geom)

    zero = jnp.zeros((), dy.dtype)

    def term(code: int) -> jax.Array:
        return jnp.where(winner == code, dy, zero)

    return place_by_phase(term, geom, dy)
