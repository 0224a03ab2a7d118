"""``adaptive_avg_pool`` and ``adaptive_max_pool``: PyTorch's adaptive windows, and VJPs.

Output ``o`` of a dimension of length ``L`` reads ``[floor(o*L/out), ceil((o+1)*L/out))``.
When ``out`` divides every ``L`` these are the regular pool ``k = s = L / out``, which runs
instead (``regular_geometry``). Otherwise the windows, up to ``kmax`` long and possibly
overlapping, are gathered with a static index into the block layout ``(.., o_i, a_i, ..)``
(short windows padded with a fill entry). The backwards are that gather's adjoint, never a
scatter and never a gather: XLA:CPU's gather loops are slow (an avg pool backward of
32x64x32x32 -> 7x7 took 17-20 ms through one, 3 ms now, against a 0.7 ms copy). The max
pool reads its per-offset values through the inverse table, one slice per run of the table
(``transpose_adaptive_gather``); the avg pool spreads each window's one value as repeated
slices (``spread_adaptive``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from .._compat import on_auto_axes
from .._dtypes import compute_dtype
from .._materialize import materialized
from ._config import AvgPoolConfig, adaptive_geometry, static_bool
from ._geometry import AdaptiveGeometry, adaptive_bounds, adaptive_sizes, regular_geometry
from ._vjp import spread_adaptive, transpose_adaptive_gather, winner_blocks
from ._windows import (
    max_and_winner,
    spatial_constant,
    sum_windows,
    window_axes,
    winner_dtype,
    winner_to_indices,
)
from .avg import windowed_avg
from .max import windowed_max, winner_indices

__all__ = [
    "adaptive_avg_pool",
    "adaptive_avg_pool_input_grad",
    "adaptive_max_pool",
    "adaptive_max_pool_input_grad",
]


def _adaptive_windows(x: jax.Array, geom: AdaptiveGeometry, fill: float) -> jax.Array:
    """Gather ``W[.., o_i, a_i, ..] = X[.., start_o + a_i, ..]`` (``fill`` past ``end_o``)."""
    for i in reversed(range(geom.rank)):
        axis = geom.spatial_axes[i]  # earlier dims are not split yet: the axis is in place
        n, o, kmax = geom.in_size[i], geom.out_size[i], geom.window[i]
        index = np.full((o, kmax), n, dtype=np.int32)  # n: the appended fill entry
        for j, (start, end) in enumerate(adaptive_bounds(n, o)):
            index[j, : end - start] = np.arange(start, end)
        config = [(0, 0, 0)] * x.ndim
        config[axis] = (0, 1, 0)
        x = lax.pad(x, jnp.asarray(fill, x.dtype), config)
        x = jnp.take(x, jnp.asarray(index.reshape(-1)), axis=axis, mode="clip")
        shape = list(x.shape)
        shape[axis : axis + 1] = [o, kmax]
        x = x.reshape(shape)
    return x


# ----------------------------------------------------------------------------------------
# adaptive_avg_pool
# ----------------------------------------------------------------------------------------


def adaptive_avg_pool(
    x: ArrayLike,
    output_size: int | None | Sequence[int | None],
    *,
    channels_last: bool = False,
) -> jax.Array:
    """Adaptive average pooling, PyTorch's ``adaptive_avg_pool{1,2,3}d``.

    Output ``o`` averages ``X[start_o : end_o]`` with ``start_o = floor(o*L/out)`` and
    ``end_o = ceil((o+1)*L/out)`` in every spatial dim; global average pooling is
    ``output_size=1``. The backward spreads ``dY[o] / |window o|`` over the window.

    Args:
      x: ``(N, C, *spatial)`` or channels-last; a floating dtype.
      output_size: an int, or one int or ``None`` (keep that dim's size) per spatial dim.
      channels_last: layout of ``x`` and the output.

    Returns:
      ``(N, C, *output_size)`` (or channels-last), ``x``'s dtype.

    Raises:
      TypeError: ``x`` is not a floating array, or ``output_size`` holds a non-int.
      ValueError: ``output_size < 1`` or mismatched ranks.

    Example:
      >>> import jax.numpy as jnp
      >>> adaptive_avg_pool(jnp.arange(5.).reshape(1, 1, 5), 2)
      Array([[[1., 3.]]], dtype=float32)
    """
    geom = adaptive_geometry(x, output_size, channels_last)
    regular = regular_geometry(geom)

    def pool(x: jax.Array) -> jax.Array:
        if regular is not None:
            return windowed_avg(x, AvgPoolConfig(regular, True, None))
        return _adaptive_avg_pool(x, geom)

    return on_auto_axes(pool, jnp.asarray(x))


def _adaptive_counts(geom: AdaptiveGeometry, ndim: int, dtype: Any) -> jax.Array:
    """``|window o|``, the product of the per-dimension window lengths, per output."""
    full = np.ones((), dtype=np.float64)
    for n, o in zip(geom.in_size, geom.out_size, strict=True):
        full = np.multiply.outer(full, np.asarray(adaptive_sizes(n, o), dtype=np.float64))
    return spatial_constant(full, ndim, geom.spatial_axes, dtype)


def _adaptive_avg_pool_forward(x: jax.Array, geom: AdaptiveGeometry) -> jax.Array:
    acc = compute_dtype(x.dtype)
    windows = _adaptive_windows(x.astype(acc), geom, 0.0)
    total = sum_windows(windows, geom.spatial_axes)  # small windows: 2.7 vs 4.3 ms, 32 -> 7
    return (total / _adaptive_counts(geom, x.ndim, acc)).astype(x.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _adaptive_avg_pool(x: jax.Array, geom: AdaptiveGeometry) -> jax.Array:
    return _adaptive_avg_pool_forward(x, geom)


def _adaptive_avg_pool_fwd(x, geom):
    # Linear: no residual. The output is stored all the same, as avg_pool's is: a loss that
    # reads it (grad of sum(y**2) is 2y) would otherwise have XLA recompute the gathered
    # windows' sums inside the backward's gather (measured: 37 vs 21 ms, 32x64x32x32 -> 7).
    return materialized(_adaptive_avg_pool_forward(x, geom)), None


# Forward:  Y[o] = sum_{l in window o} X[l] / |window o|
# dL/dX:    dX[l] = sum_{o: l in window o} dY[o] / |window o|
def _adaptive_avg_pool_bwd(geom, _, dy):
    acc = compute_dtype(dy.dtype)
    g = dy.astype(acc) / _adaptive_counts(geom, dy.ndim, acc)
    return (adaptive_avg_pool_input_grad(g, geom).astype(dy.dtype),)


_adaptive_avg_pool.defvjp(_adaptive_avg_pool_fwd, _adaptive_avg_pool_bwd)


# Forward:  Y[o] = sum_{l in [start_o, end_o)} X[l] / |window o|   (separably in every dim)
# dL/dX:    dX[l] = sum_{o: l in window o} dY[o] / |window o|
def adaptive_avg_pool_input_grad(g: jax.Array, geom: AdaptiveGeometry) -> jax.Array:
    """Spread ``g = dY / count`` over each adaptive window (slices and selects, no gather)."""
    return spread_adaptive(g, geom)


# ----------------------------------------------------------------------------------------
# adaptive_max_pool
# ----------------------------------------------------------------------------------------


def adaptive_max_pool(
    x: ArrayLike,
    output_size: int | None | Sequence[int | None],
    return_indices: bool = False,
    *,
    channels_last: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Adaptive max pooling, PyTorch's ``adaptive_max_pool{1,2,3}d``.

    Windows as in ``adaptive_avg_pool``; ties, NaNs and gradients follow ``max_pool``'s
    conventions (first maximum wins, the last NaN wins, the gradient goes to the winner).

    Args:
      x: ``(N, C, *spatial)`` or channels-last; a floating dtype.
      output_size: an int, or one int or ``None`` (keep that dim) per spatial dim.
      return_indices: also return each winner's flat index into its ``(n, c)`` plane.
      channels_last: layout of ``x`` and the outputs.

    Returns:
      ``y`` of shape ``(N, C, *output_size)`` (or channels-last); with ``return_indices``,
      ``(y, indices)`` with int32 ``indices`` of the same shape.

    Raises:
      TypeError: ``x`` is not a floating array, or ``output_size`` holds a non-int.
      ValueError: ``output_size < 1`` or mismatched ranks.

    Example:
      >>> import jax.numpy as jnp
      >>> adaptive_max_pool(jnp.array([[[1., 3., 2., 5., 4.]]]), 2)
      Array([[[3., 5.]]], dtype=float32)
    """
    return_indices = static_bool(return_indices, "return_indices")
    geom = adaptive_geometry(x, output_size, channels_last)
    return on_auto_axes(
        partial(_adaptive_max_pool_on, geom=geom, return_indices=return_indices), jnp.asarray(x)
    )


def _adaptive_max_pool_on(
    x: jax.Array, geom: AdaptiveGeometry, return_indices: bool
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """``adaptive_max_pool`` on a validated geometry."""
    regular = regular_geometry(geom)
    if regular is not None:
        y, winner = windowed_max(x, regular)
        return (y, winner_indices(winner, regular)) if return_indices else y
    y, winner = _adaptive_max_pool(x, geom)
    if not return_indices:
        return y
    starts = [
        np.asarray([s for s, _ in adaptive_bounds(n, o)])
        for n, o in zip(geom.in_size, geom.out_size, strict=True)
    ]
    ones = (1,) * geom.rank
    return y, winner_to_indices(winner, geom.spatial_axes, geom.in_size, geom.window, ones, starts)


def _valid_entries(geom: AdaptiveGeometry, ndim: int) -> jax.Array:
    """Which gathered entries of each window are real (not fill): ``a_i < |window o_i|``
    in every dimension, shaped to broadcast against the ``(.., o_i, a_i, ..)`` windows of
    an ``ndim``-axis input."""
    valid = np.ones((), dtype=bool)
    for n, o, kmax in zip(geom.in_size, geom.out_size, geom.window, strict=True):
        ok = np.arange(kmax) < np.asarray(adaptive_sizes(n, o))[:, None]  # (o, kmax)
        valid = np.logical_and.outer(valid, ok)  # (o_1, k_1, .., o_i, k_i)
    axes = [a for axis in window_axes(geom.spatial_axes) for a in (axis - 1, axis)]
    return spatial_constant(valid, ndim + geom.rank, axes, bool)


def _adaptive_max_pool_forward(x: jax.Array, geom: AdaptiveGeometry):
    """Max and winner code of each adaptive window (vectorised over the window).

    The winner is the last NaN if the window holds one, else the first position equal to
    the max. Fill entries (``-inf`` past a window's end) come after the window's first
    entry in row-major order, but are masked so an all ``-inf`` window picks a real entry.
    """
    windows = _adaptive_windows(x, geom, -jnp.inf)
    code_dtype = winner_dtype(math.prod(geom.window))
    valid = _valid_entries(geom, x.ndim)
    return max_and_winner(windows, geom.window, geom.spatial_axes, code_dtype, valid)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _adaptive_max_pool(x: jax.Array, geom: AdaptiveGeometry):
    return _adaptive_max_pool_forward(x, geom)


def _adaptive_max_pool_fwd(x, geom):
    y, winner = _adaptive_max_pool_forward(x, geom)
    winner = materialized(winner)
    return (y, winner), winner  # residual: the winner's code in its window


# Forward:  Y[o] = X[start_o + a*(o)],  a*(o) = winner[o]
# dL/dX:    dX[l] = sum_{o: start_o + a*(o) = l} dY[o]
def _adaptive_max_pool_bwd(geom, winner, cotangents):
    dy, _ = cotangents
    return (adaptive_max_pool_input_grad(dy, winner, geom),)


_adaptive_max_pool.defvjp(_adaptive_max_pool_fwd, _adaptive_max_pool_bwd)


def adaptive_max_pool_input_grad(
    dy: jax.Array, winner: jax.Array, geom: AdaptiveGeometry
) -> jax.Array:
    """Route each upstream gradient to the winner of its adaptive window."""
    blocks = winner_blocks(dy, winner, geom.window, geom.spatial_axes)
    return transpose_adaptive_gather(blocks, geom)
