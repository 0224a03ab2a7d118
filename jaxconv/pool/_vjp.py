"""The backward pieces the pools share: routing gradients back without scattering.

Every function here is built from ``lax.pad``, ``lax.slice``, ``jnp.where``, ``reshape``,
``stack`` and gathers with static indices: no ``select_and_scatter_add``, no scatter with
colliding indices, no ``jax.vjp``. So the results are bitwise reproducible on every backend,
and JAX can differentiate this code again in both modes (grad-of-grad, ``jax.hessian``).

Notation for one spatial dimension: input length ``L``, window ``k``, stride ``s``, padding
``p``, dilation ``d``; output ``o`` reads padded position ``q = o*s + a*d`` for offsets
``a = 0..k-1``, i.e. input position ``q - p``.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._geometry import AdaptiveGeometry, PoolGeometry, adaptive_inverse, offset_phase, phase_length
from ._windows import merge_windows, pad_axes, window_axes, window_offsets

__all__ = [
    "crop_padding",
    "place_by_phase",
    "spread_adaptive",
    "spread_blocks",
    "tile_winners",
    "transpose_adaptive_gather",
    "winner_blocks",
]


def crop_padding(dx_padded: jax.Array, geom: PoolGeometry) -> jax.Array:
    """Padded-coordinate gradient -> input gradient: drop ``p`` on the left, fit ``L``.

    The implicit padding never receives gradient; positions past the last window get zero.
    """
    pads = {}
    for axis, n, p in zip(geom.spatial_axes, geom.in_size, geom.padding, strict=True):
        pads[axis] = (-p, n + p - dx_padded.shape[axis])
    return pad_axes(dx_padded, pads)


def place_by_phase(
    term: Callable[[int], jax.Array | None], geom: PoolGeometry, like: jax.Array
) -> jax.Array:
    """``dX[j] = sum_{(o, a): o*s + a*d - p = j} term(a)[o]``: every window's contributions
    back on the input positions they read (those in the padding dropped).

    Split the input axis by stride phase, ``j = t*s + r``. Offset ``a`` with
    ``a*d - p = u*s + r`` lands on phase ``r`` at ``t = o + u``, so each phase is a sum of
    output-resolution terms shifted by ``u`` (zero pads), with no collisions; each phase is
    cropped to its ``ceil(L/s)`` entries (``u < 0`` puts the first outputs' entries in the
    low padding), the phases are interleaved, and the tail past ``L`` is cropped.
    ``term(code)`` is the contribution of offset ``code`` at output resolution (``None``
    for none); ``like`` gives the batch and channel shape and the dtype.

    The phases are aligned with the input, not with the padded input: an input sharded
    along a spatial axis has phases sharded the same way (``L/s`` entries each), so XLA's
    SPMD partitioner turns the shifts into halo exchanges and the interleave into a local
    transpose, with nothing gathered.
    """
    axes = geom.spatial_axes
    lengths = [phase_length(n, s) for n, s in zip(geom.in_size, geom.stride, strict=True)]
    shifts = [
        [offset_phase(a, s, d, p) for a in range(k)]
        for k, s, d, p in zip(geom.window, geom.stride, geom.dilation, geom.padding, strict=True)
    ]
    # Terms are only ever zero-padded, into a span that holds every shift; each phase's sum
    # is cropped once (a crop per term fused measurably slower on CPU).
    lows = [max(0, -min(u for _, u in ru)) for ru in shifts]
    spans = [
        max(n_t + lo, max(o + u + lo for _, u in ru))
        for ru, n_t, o, lo in zip(shifts, lengths, geom.out_size, lows, strict=True)
    ]
    sums: dict[tuple[int, ...], jax.Array] = {}
    for code, offset in enumerate(window_offsets(geom.window)):
        t = term(code)
        if t is None:
            continue
        ru = [shifts[i][a] for i, a in enumerate(offset)]
        phase = tuple(r for r, _ in ru)
        pads = {
            axis: (u + lo, span - o - u - lo)
            for axis, (_, u), o, lo, span in zip(axes, ru, geom.out_size, lows, spans, strict=True)
        }
        shifted = pad_axes(t, pads)
        sums[phase] = shifted if phase not in sums else sums[phase] + shifted
    crops = {
        axis: (-lo, n_t + lo - span)
        for axis, n_t, lo, span in zip(axes, lengths, lows, spans, strict=True)
    }
    phases = {phase: pad_axes(v, crops) for phase, v in sums.items()}
    phase_shape = list(like.shape)
    for axis, n_t in zip(axes, lengths, strict=True):
        phase_shape[axis] = n_t
    dx = _interleave(phases, jnp.zeros(phase_shape, like.dtype), geom.stride, axes)
    tails = {
        axis: (0, n - dx.shape[axis])
        for axis, n in zip(axes, geom.in_size, strict=True)
        if dx.shape[axis] != n
    }
    return pad_axes(dx, tails) if tails else dx


def _interleave(
    phases: dict[tuple[int, ...], jax.Array],
    zeros: jax.Array,
    stride: Sequence[int],
    axes: Sequence[int],
) -> jax.Array:
    """``X[.., t_i*s_i + r_i, ..] = phases[r][.., t_i, ..]`` (``zeros`` for a missing phase).

    The phases are stacked into trailing axes ``(.., r_n, .., r_1)``, which one transpose
    moves next to their ``t_i`` before a reshape merges each pair. (Stacking each next to
    its ``t_i`` directly ends the fused computation in a concatenate, which XLA's CPU
    backend writes measurably slower.)
    """
    rank = len(stride)
    if all(s == 1 for s in stride):
        return phases.get((0,) * rank, zeros)

    def stacked(prefix: tuple[int, ...]) -> jax.Array:
        if len(prefix) == rank:
            return phases.get(prefix, zeros)
        parts = [stacked(prefix + (r,)) for r in range(stride[len(prefix)])]
        return jnp.stack(parts, axis=-1)

    p = stacked(())
    order: list[int] = []
    for axis in range(zeros.ndim):
        order.append(axis)
        if axis in axes:
            order.append(zeros.ndim + rank - 1 - list(axes).index(axis))  # r_i: stacked last
    shape = list(zeros.shape)
    for axis, s in zip(axes, stride, strict=True):
        shape[axis] *= s
    return jnp.transpose(p, order).reshape(shape)


def _with_window_axes(a: jax.Array, spatial_axes: Sequence[int]) -> jax.Array:
    """``a`` at output resolution with a length-1 window axis after each spatial axis."""
    shape: list[int] = []
    for axis, n in enumerate(a.shape):
        shape.append(n)
        if axis in spatial_axes:
            shape.append(1)
    return a.reshape(shape)


def spread_blocks(g: jax.Array, window: Sequence[int], spatial_axes: Sequence[int]) -> jax.Array:
    """``B[.., o_i, a_i, ..] = G[.., o_i, ..]``: each output's value on its whole window."""
    blocks = _with_window_axes(g, spatial_axes)
    full = list(blocks.shape)
    for axis, k in zip(window_axes(spatial_axes), window, strict=True):
        full[axis] = k
    return jnp.broadcast_to(blocks, full)


def winner_blocks(
    dy: jax.Array, winner: jax.Array, window: Sequence[int], spatial_axes: Sequence[int]
) -> jax.Array:
    """``B[.., o_i, a_i, ..] = dY[o]`` where ``a`` is output ``o``'s winner, else 0.

    One broadcast compare of the winner code against the grid of window codes.
    """
    codes = np.arange(math.prod(window), dtype=np.dtype(winner.dtype))
    grid_shape = [1] * (dy.ndim + len(window))
    for axis, k in zip(window_axes(spatial_axes), window, strict=True):
        grid_shape[axis] = k
    grid = jnp.asarray(codes.reshape(grid_shape))
    zero = jnp.zeros((), dy.dtype)
    return jnp.where(
        _with_window_axes(winner, spatial_axes) == grid, _with_window_axes(dy, spatial_axes), zero
    )


def tile_winners(
    dy: jax.Array, winner: jax.Array, window: Sequence[int], spatial_axes: Sequence[int]
) -> jax.Array:
    """``dX_pad[.., o_i*k_i + a_i, ..] = dY[o]`` where ``a`` is output ``o``'s winner, else 0:
    tiling windows' gradient, laid out on the padded input.

    Both ``dy`` and the codes are upsampled (each output repeated over its window, a
    broadcast and a reshape that XLA folds into index arithmetic) and compared with each
    position's own offset code, computed from iotas: one elementwise loop over the input
    that reads ``dy`` and the codes once and writes ``dX`` once, in the input's layout. (The
    same select built in the ``(.., o_i, k_i, ..)`` block layout and reshaped at the end
    runs its innermost loop over the ``k``-long window axis, up to 2x slower on CPU; the
    per-phase selects interleaved by stack + transpose fuse into a loop that XLA vectorises
    poorly as soon as ``dy`` is computed in it, e.g. ``2*y`` for ``sum(y**2)``.)
    """
    full = list(dy.shape)
    for axis, k in zip(spatial_axes, window, strict=True):
        full[axis] *= k
    code = jnp.zeros((), jnp.int32)
    for axis, k in zip(spatial_axes, window, strict=True):
        shape = [1] * dy.ndim
        shape[axis] = full[axis]
        code = code * k + lax.broadcasted_iota(jnp.int32, shape, axis) % k
    up_code = merge_windows(spread_blocks(winner, window, spatial_axes), spatial_axes)
    up_dy = merge_windows(spread_blocks(dy, window, spatial_axes), spatial_axes)
    return jnp.where(up_code == code.astype(winner.dtype), up_dy, jnp.zeros((), dy.dtype))


def transpose_adaptive_gather(g: jax.Array, geom: AdaptiveGeometry) -> jax.Array:
    """Adjoint of the forward's window gather ``W[.., o, a, ..] = X[.., start_o + a, ..]``.

    ``dX[l] = sum over windows (o, a) reading l of G[o, a]``: per slot of the static
    inverse table (``adaptive_inverse``), ``G`` read at the table's indices, which run in
    steps of one through each window (slices, :func:`_take_runs`; the padding slot reads a
    zero), and the slots added in order, one dimension at a time.
    """
    for i in reversed(range(geom.rank)):
        axis = geom.spatial_axes[i]  # earlier dims are still split as (o, a) pairs
        pos = axis + i
        n, o = geom.in_size[i], geom.out_size[i]
        inverse = np.asarray(adaptive_inverse(n, o), dtype=np.int64)
        shape = list(g.shape)
        merged = shape[:pos] + [shape[pos] * shape[pos + 1]] + shape[pos + 2 :]
        g_flat = pad_axes(g.reshape(merged), {pos: (0, 1)})  # the sentinel reads a zero
        slots = [_take_runs(g_flat, inverse[:, t], pos) for t in range(inverse.shape[1])]
        g = functools.reduce(operator.add, slots)
    return g


def spread_adaptive(g: jax.Array, geom: AdaptiveGeometry) -> jax.Array:
    """``dX[l] = sum_{o: start_o <= l < end_o} G[o]``: each window's value ``G[o]`` (output
    resolution) on every input position of its adaptive window, one dimension at a time.

    The windows holding ``l`` are consecutive (the inverse table lists them in order), from
    ``first(l)``; slot ``t`` reads ``G[first(l) + t]``, which is ``G`` repeated along the
    axis by static run lengths (broadcast slices, concatenated: no gather), selected away
    where ``l`` lies in fewer than ``t + 1`` windows, so a non-finite ``G[o]`` reaches only
    window ``o``'s cells. The slots are added in order. (Through a gather with the inverse
    table, what the adaptive max pool still does with its per-offset values, 32x64x32x32 ->
    7x7 took 17-20 ms.)
    """
    for i, axis in enumerate(geom.spatial_axes):
        n, o = geom.in_size[i], geom.out_size[i]
        inverse = np.asarray(adaptive_inverse(n, o))
        sentinel = o * geom.window[i]
        first, count = inverse[:, 0] // geom.window[i], np.sum(inverse != sentinel, axis=1)
        shape = [1] * g.ndim
        shape[axis] = n
        slots = []
        for t in range(inverse.shape[1]):
            slot = _take_runs(g, np.minimum(first + t, o - 1), axis)
            if (count <= t).any():
                slot = jnp.where((count > t).reshape(shape), slot, jnp.zeros((), g.dtype))
            slots.append(slot)
        g = functools.reduce(operator.add, slots)
    return g


def _take_runs(g: jax.Array, index: np.ndarray, axis: int) -> jax.Array:
    """``g[.., index[j], ..]`` for a static ``index`` made of runs that repeat one entry or
    step by one: a broadcast slice or a slice of ``g`` per run, concatenated (XLA:CPU's
    gather loops are several times slower than these copies)."""
    pieces, lo = [], 0
    while lo < index.size:
        start, hi = int(index[lo]), lo + 1
        step = int(index[hi] - index[lo]) if hi < index.size else 1
        if step in (0, 1):
            while hi < index.size and index[hi] - index[hi - 1] == step:
                hi += 1
        if step == 0:  # one entry, repeated
            shape = list(g.shape)
            shape[axis] = hi - lo
            pieces.append(jnp.broadcast_to(lax.slice_in_dim(g, start, start + 1, axis=axis), shape))
        else:  # consecutive entries (one, where the index jumps)
            pieces.append(lax.slice_in_dim(g, start, start + hi - lo, axis=axis))
        lo = hi
    return pieces[0] if len(pieces) == 1 else lax.concatenate(pieces, axis)
