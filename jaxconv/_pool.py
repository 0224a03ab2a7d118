"""Pooling layers with hand-derived VJPs: max, average, Lp, adaptive, and max-unpool.

Every public function validates its arguments, resolves them once into a frozen hashable
geometry, and calls a private ``jax.custom_vjp`` function whose backward rule lives in
``_pool_vjp``. Semantics (output sizes, ``ceil_mode`` windows, divisors, indices) follow
PyTorch, so a ported model gives the same numbers and gradients.

Layouts: ``(N, C, *spatial)``, or ``(N, *spatial, C)`` with ``channels_last=True``; one to
three spatial dimensions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from ._checks import (
    check_at_most,
    check_bool,
    check_float_array,
    check_int,
    check_ndim,
    normalize_tuple,
)
from ._pool_shapes import (
    AdaptiveGeometry,
    PoolGeometry,
    adaptive_bounds,
    avg_divisors,
    first_valid_offsets,
    pool_output_size,
    spatial_axes,
    uniform_adaptive,
)
from ._pool_vjp import (
    adaptive_avg_pool_input_grad,
    adaptive_max_pool_input_grad,
    avg_pool_input_grad,
    max_pool_input_grad,
    max_unpool_values_grad,
    window_offsets,
)

__all__ = [
    "AvgPoolConfig",
    "LpPoolConfig",
    "UnpoolConfig",
    "adaptive_avg_pool",
    "adaptive_max_pool",
    "avg_pool",
    "lp_pool",
    "max_pool",
    "max_unpool",
]

_LAYOUT = {False: "(N, C, *spatial)", True: "(N, *spatial, C)"}
# Windows with more offsets than this that tile the input (global pooling, say) are
# reduced as one vectorised axis instead of an unrolled loop over offsets.
MAX_UNROLLED_OFFSETS = 16


# ----------------------------------------------------------------------------------------
# Validation: arguments -> frozen geometry (before anything is traced)
# ----------------------------------------------------------------------------------------


def _spatial_rank(x: Any, name: str, spec: Any, spec_name: str, channels_last: bool) -> int:
    """Spatial rank from ``spec`` (a sequence: its length) or from ``x.ndim - 2``."""
    layout = _LAYOUT[channels_last]
    if isinstance(spec, Sequence) and not isinstance(spec, str | bytes):
        rank = len(spec)
        if not 1 <= rank <= 3:
            raise ValueError(
                f"`{spec_name}` must have 1, 2 or 3 entries (one per spatial dimension), "
                f"got {spec!r}"
            )
        if np.ndim(x) != rank + 2:
            raise ValueError(
                f"`{name}` must be {layout} with ndim {rank + 2} to match `{spec_name}` "
                f"({rank} spatial dims), got shape {tuple(np.shape(x))}"
            )
        return rank
    check_ndim(x, name, (3, 4, 5), layout)
    return np.ndim(x) - 2


def _check_array(x: Any, name: str) -> None:
    check_float_array(x, name)


def _spatial_size(x: Any, rank: int, channels_last: bool) -> tuple[int, ...]:
    shape = tuple(np.shape(x))
    return tuple(shape[a] for a in spatial_axes(rank, channels_last))


def _pool_geometry(
    x: Any,
    window: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: Any,
    channels_last: Any,
) -> PoolGeometry:
    """Validate a windowed pool's arguments and resolve them into a ``PoolGeometry``."""
    channels_last = check_bool(channels_last, "channels_last")
    ceil_mode = check_bool(ceil_mode, "ceil_mode")
    _check_array(x, "x")
    rank = _spatial_rank(x, "x", window, "window", channels_last)
    window = normalize_tuple(window, rank, "window", minimum=1)
    stride = window if stride is None else normalize_tuple(stride, rank, "stride", minimum=1)
    padding = normalize_tuple(padding, rank, "padding", minimum=0)
    dilation = normalize_tuple(dilation, rank, "dilation", minimum=1)
    check_at_most(
        padding,
        [k // 2 for k in window],
        "padding",
        "at most half of `window` (padding <= window // 2, as PyTorch requires)",
        f"padding={padding} for window={window}",
    )
    in_size = _spatial_size(x, rank, channels_last)
    out_size = tuple(
        pool_output_size(n, k, s, p, d, ceil_mode)
        for n, k, s, p, d in zip(in_size, window, stride, padding, dilation, strict=True)
    )
    if any(o < 1 for o in out_size):
        raise ValueError(
            f"`x` spatial size {in_size} is too small for window={window}, stride={stride}, "
            f"padding={padding}, dilation={dilation}: the output would be {out_size}, "
            "got an output size < 1"
        )
    for n, o, k, s, p, d in zip(in_size, out_size, window, stride, padding, dilation, strict=True):
        if -1 in first_valid_offsets(n, o, k, s, p, d):
            raise ValueError(
                f"`x` spatial size {in_size} is too small for window={window}, "
                f"dilation={dilation}, padding={padding}: a window would lie entirely in the "
                f"padding, got input length {n} in a dimension with window {k}, dilation {d}"
            )
    return PoolGeometry(
        in_size, window, stride, padding, dilation, ceil_mode, channels_last, out_size
    )


@dataclass(frozen=True)
class AvgPoolConfig:
    """Static configuration of ``avg_pool``: geometry and PyTorch's divisor options."""

    geom: PoolGeometry
    count_include_pad: bool
    divisor_override: int | None


@dataclass(frozen=True)
class LpPoolConfig:
    """Static configuration of ``lp_pool``: geometry (no padding) and the norm's ``p``."""

    geom: PoolGeometry
    p: float


@dataclass(frozen=True)
class UnpoolConfig:
    """Static configuration of ``max_unpool``: pooled and output spatial sizes, layout."""

    in_size: tuple[int, ...]
    out_size: tuple[int, ...]
    channels_last: bool


# ----------------------------------------------------------------------------------------
# Shared forward pieces
# ----------------------------------------------------------------------------------------


def _pad_spatial(x: jax.Array, geom: PoolGeometry, value: float) -> jax.Array:
    """Pad ``p`` low and ``extent - L - p`` high (a crop if negative) with ``value``."""
    config = [(0, 0, 0)] * x.ndim
    for axis, lo, hi in zip(geom.spatial_axes, geom.padding, geom.high_padding, strict=True):
        config[axis] = (lo, hi, 0)
    return lax.pad(x, jnp.asarray(value, x.dtype), config)


def _window_slice(xp: jax.Array, geom: PoolGeometry, offset: tuple[int, ...]) -> jax.Array:
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


def _spatial_constant(values: np.ndarray, ndim: int, axes: tuple[int, ...], dtype: Any):
    """A per-output-position constant shaped to broadcast against the pooled array."""
    shape = [1] * ndim
    for i, axis in enumerate(axes):
        shape[axis] = values.shape[i]
    return jnp.asarray(values.reshape(shape), dtype=dtype)


def _accumulation_dtype(dtype: Any) -> Any:
    """Sums of float16/bfloat16 accumulate in float32, as PyTorch's CPU kernels do."""
    return jnp.float32 if jnp.dtype(dtype).itemsize < 4 else dtype


def _winner_dtype(num_offsets: int) -> Any:
    if num_offsets <= 256:
        return jnp.uint8
    if num_offsets <= 65536:
        return jnp.uint16
    return jnp.int32


# ----------------------------------------------------------------------------------------
# max_pool
# ----------------------------------------------------------------------------------------


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
    NaN and the gradient goes to the window's last NaN (PyTorch and XLA). A window whose real
    entries are all ``-inf`` routes its gradient to its first in-bounds position (PyTorch).

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
      ValueError: a bad window/stride/padding/dilation, mismatched ranks, or an output < 1.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[[[1., 1., 2., 4.], [5., 6., 7., 8.],
      ...                  [3., 2., 1., 0.], [1., 2., 3., 4.]]]])
      >>> max_pool(x, 2)
      Array([[[[6., 8.],
               [3., 4.]]]], dtype=float32)
    """
    return_indices = check_bool(return_indices, "return_indices")
    geom = _pool_geometry(x, window, stride, padding, dilation, ceil_mode, channels_last)
    y, winner = _max_pool(jnp.asarray(x), geom)
    if return_indices:
        return y, _winner_to_indices(winner, geom)
    return y


def _max_pool_forward(x: jax.Array, geom: PoolGeometry) -> tuple[jax.Array, jax.Array]:
    """Max and winner code together, in one pass over the window offsets.

    ``>`` keeps the first of equal maxima; ``v != v`` lets every later NaN take over, so the
    last NaN wins (NaN never loses to a number, which fails ``v > NaN``).
    """
    xp = _pad_spatial(x, geom, -jnp.inf)
    wdtype = _winner_dtype(geom.num_offsets)
    if geom.non_overlapping and geom.num_offsets > MAX_UNROLLED_OFFSETS:
        # large tiling windows (global pooling): one vectorised reduction, not K slices
        y, winner = _max_and_first_argmax(_window_blocks(xp, geom), wdtype)
    else:
        offsets = window_offsets(geom.window)
        y = _window_slice(xp, geom, offsets[0])
        winner = jnp.zeros(y.shape, wdtype)
        for code, offset in enumerate(offsets[1:], start=1):
            v = _window_slice(xp, geom, offset)
            take = (v > y) | (v != v)
            y = jnp.where(take, v, y)
            winner = jnp.where(take, jnp.asarray(code, wdtype), winner)
    if any(geom.padding):
        # an all -inf window must not crown a padding position: PyTorch starts at the first
        # in-bounds position, a static function of the output position.
        firsts = _first_valid_codes(geom)
        first = _spatial_constant(firsts, x.ndim, geom.spatial_axes, wdtype)
        winner = jnp.where(y == -jnp.inf, first, winner)
    return y, winner


def _window_blocks(xp: jax.Array, geom: PoolGeometry) -> jax.Array:
    """Tiling windows as a trailing axis: ``(.., o_i*k_i, ..) -> (.., o_i, .., K)``."""
    shape: list[int] = []
    for axis, n in enumerate(xp.shape):
        if axis in geom.spatial_axes:
            k = geom.window[geom.spatial_axes.index(axis)]
            shape += [n // k, k]
        else:
            shape.append(n)
    window_axes = [a + i + 1 for i, a in enumerate(geom.spatial_axes)]
    keep = [a for a in range(len(shape)) if a not in window_axes]
    blocks = jnp.transpose(xp.reshape(shape), keep + window_axes)
    return blocks.reshape(blocks.shape[: xp.ndim] + (geom.num_offsets,))


def _max_and_first_argmax(flat: jax.Array, wdtype: Any) -> tuple[jax.Array, jax.Array]:
    """Max over the last axis and the winner: the last NaN if any, else the first maximum."""
    k = flat.shape[-1]
    y = jnp.max(flat, axis=-1)
    is_nan = flat != flat
    last_nan = (k - 1) - jnp.argmax(is_nan[..., ::-1], axis=-1)
    first_max = jnp.argmax(flat == y[..., None], axis=-1)
    winner = jnp.where(jnp.any(is_nan, axis=-1), last_nan, first_max).astype(wdtype)
    return y, winner


def _materialized(a: jax.Array) -> jax.Array:
    """Identity that XLA computes once and stores (a residual for the backward).

    Fused into the backward, the forward's argmax (or window-sum) chain would be recomputed
    for every window offset that reads it -- 5-10x slower on CPU -- and XLA's CPU pipeline
    drops ``lax.optimization_barrier`` before fusion. A conditional's operands are always
    materialised: on the CPU the codes pass through one whose branches are both the
    identity, so its data-dependent predicate (which XLA cannot fold away) does not matter;
    under ``vmap`` it becomes a cheap select. Elsewhere (GPU, TPU), where the barrier holds
    and a conditional would cost a device-to-host sync, the barrier is used.
    """
    if a.size == 0:
        return a

    def on_cpu(v: jax.Array) -> jax.Array:
        pred = v.reshape(-1)[0] > jnp.zeros((), v.dtype)
        return lax.cond(pred, lambda w: w, lambda w: w * jnp.ones((), w.dtype), v)

    return lax.platform_dependent(a, cpu=on_cpu, default=lax.optimization_barrier)


def _first_valid_codes(geom: PoolGeometry) -> np.ndarray:
    per_dim = [
        np.asarray(first_valid_offsets(n, o, k, s, p, d))
        for n, o, k, s, p, d in zip(
            geom.in_size,
            geom.out_size,
            geom.window,
            geom.stride,
            geom.padding,
            geom.dilation,
            strict=True,
        )
    ]
    codes = np.zeros(geom.out_size, dtype=np.int64)
    for i, firsts in enumerate(per_dim):
        shape = [1] * geom.rank
        shape[i] = geom.out_size[i]
        codes = codes * geom.window[i] + firsts.reshape(shape)
    return codes


def _winner_to_indices(winner: jax.Array, geom: PoolGeometry) -> jax.Array:
    """Winner code -> flat index ``sum_i pos_i * prod(L_{>i})`` into each spatial plane."""
    code = winner.astype(jnp.int32)
    flat = jnp.zeros(code.shape, jnp.int32)
    step = geom.num_offsets
    for axis, n, k, s, p, d in zip(
        geom.spatial_axes,
        geom.in_size,
        geom.window,
        geom.stride,
        geom.padding,
        geom.dilation,
        strict=True,
    ):
        step //= k
        a = (code // step) % k
        o = lax.broadcasted_iota(jnp.int32, code.shape, axis)
        flat = flat * n + (o * s - p + a * d)
    return flat


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x: jax.Array, geom: PoolGeometry) -> tuple[jax.Array, jax.Array]:
    return _max_pool_forward(x, geom)


def _max_pool_fwd(x, geom):
    y, winner = _max_pool_forward(x, geom)
    # residual: only the winner's window code (uint8 for <= 256 offsets), not x and not y
    winner = _materialized(winner)
    return (y, winner), winner


# Forward:  Y[o] = X_pad[o*s + a*(o)*d],   a*(o) = winner[o]
# dL/dX:    dX[o*s + a*(o)*d - p] += dY[o]   (the winner's position; padding drops out)
def _max_pool_bwd(geom, winner, cotangents):
    dy, _ = cotangents  # the winner codes are integers: their cotangent is float0
    return (max_pool_input_grad(dy, winner, geom, MAX_UNROLLED_OFFSETS),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


# ----------------------------------------------------------------------------------------
# avg_pool
# ----------------------------------------------------------------------------------------


def avg_pool(
    x: ArrayLike,
    window: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    *,
    channels_last: bool = False,
) -> jax.Array:
    """Average pooling over 1-3 spatial dimensions, with PyTorch's divisors.

    ``Y[o] = sum_a X[o*s + a - p] / D[o]`` with zero padding. ``D`` is ``divisor_override``
    if given; else the window's size clipped to the padded input (``count_include_pad``) or
    to the input (otherwise). A ``ceil_mode`` window hanging past the right padding never
    counts the overhang. The backward spreads ``dY[o] / D[o]`` over the window.

    Args:
      x: ``(N, C, *spatial)``, or ``(N, *spatial, C)`` if ``channels_last``; a floating
        dtype (integer arrays raise ``TypeError``: a mean needs a float).
      window: ``k``, an int or one int per spatial dim.
      stride: ``s``; ``None`` means ``window``.
      padding: zero padding ``p`` on both sides, at most ``window // 2``.
      ceil_mode: ``ceil`` instead of ``floor`` for the output size.
      count_include_pad: count padded positions in the divisor.
      divisor_override: a fixed divisor (an int >= 1) for every window.
      channels_last: layout of ``x`` and the output.

    Returns:
      ``(N, C, *out)`` (or channels-last), ``x``'s dtype. float16/bfloat16 accumulate in
      float32.

    Raises:
      TypeError: ``x`` is not a floating array, or an argument has the wrong type.
      ValueError: a bad window/stride/padding/divisor, mismatched ranks, or an output < 1.

    Example:
      >>> import jax.numpy as jnp
      >>> avg_pool(jnp.arange(16.).reshape(1, 1, 4, 4), 2)
      Array([[[[ 2.5,  4.5],
               [10.5, 12.5]]]], dtype=float32)
    """
    count_include_pad = check_bool(count_include_pad, "count_include_pad")
    if divisor_override is not None:
        divisor_override = check_int(divisor_override, "divisor_override", minimum=1)
    geom = _pool_geometry(x, window, stride, padding, 1, ceil_mode, channels_last)
    cfg = AvgPoolConfig(geom, count_include_pad, divisor_override)
    return _avg_pool(jnp.asarray(x), cfg)


def _avg_divisor(cfg: AvgPoolConfig, ndim: int, dtype: Any) -> jax.Array:
    """``D[o]``: a scalar when every window shares it, else a per-position constant."""
    geom = cfg.geom
    if cfg.divisor_override is not None:
        return jnp.asarray(cfg.divisor_override, dtype)
    per_dim = [
        np.asarray(avg_divisors(n, o, k, s, p, cfg.count_include_pad), dtype=np.float64)
        for n, o, k, s, p in zip(
            geom.in_size, geom.out_size, geom.window, geom.stride, geom.padding, strict=True
        )
    ]
    if all(np.all(d == d[0]) for d in per_dim):
        return jnp.asarray(math.prod(float(d[0]) for d in per_dim), dtype)
    full = per_dim[0]
    for d in per_dim[1:]:
        full = np.multiply.outer(full, d)
    return _spatial_constant(full, ndim, geom.spatial_axes, dtype)


def _window_sum(x: jax.Array, geom: PoolGeometry) -> jax.Array:
    """``sum_a X_pad[o*s + a*d]`` with zero padding (a reshape-sum when windows tile)."""
    xp = _pad_spatial(x, geom, 0.0)
    if geom.non_overlapping:
        shape: list[int] = []
        for axis, n in enumerate(xp.shape):
            if axis in geom.spatial_axes:
                k = geom.window[geom.spatial_axes.index(axis)]
                shape += [n // k, k]
            else:
                shape.append(n)
        window_axes = tuple(a + i + 1 for i, a in enumerate(geom.spatial_axes))
        return jnp.sum(xp.reshape(shape), axis=window_axes)
    offsets = window_offsets(geom.window)
    total = _window_slice(xp, geom, offsets[0])
    for offset in offsets[1:]:
        total = total + _window_slice(xp, geom, offset)
    return total


def _avg_pool_forward(x: jax.Array, cfg: AvgPoolConfig) -> jax.Array:
    acc = _accumulation_dtype(x.dtype)
    total = _window_sum(x.astype(acc), cfg.geom)
    return (total / _avg_divisor(cfg, x.ndim, acc)).astype(x.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _avg_pool(x: jax.Array, cfg: AvgPoolConfig) -> jax.Array:
    return _avg_pool_forward(x, cfg)


def _avg_pool_fwd(x, cfg):
    return _avg_pool_forward(x, cfg), None  # linear: the backward needs no residual


# Forward:  Y[o] = sum_a X_pad[o*s + a] / D[o]
# dL/dX:    dX[q - p] = sum_{(o, a): o*s + a = q} dY[o] / D[o]
def _avg_pool_bwd(cfg, _, dy):
    acc = _accumulation_dtype(dy.dtype)
    g = dy.astype(acc) / _avg_divisor(cfg, dy.ndim, acc)
    return (avg_pool_input_grad(g, cfg.geom).astype(dy.dtype),)


_avg_pool.defvjp(_avg_pool_fwd, _avg_pool_bwd)


# ----------------------------------------------------------------------------------------
# lp_pool
# ----------------------------------------------------------------------------------------


def lp_pool(
    x: ArrayLike,
    p: float,
    window: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    ceil_mode: bool = False,
    *,
    channels_last: bool = False,
) -> jax.Array:
    """Power-average pooling, PyTorch's ``lp_pool{1,2,3}d``: ``(sum_a X[o*s + a]^p)^(1/p)``.

    Exactly PyTorch's formula ``(K * avg_pool(X^p))^(1/p)`` with ``K = prod(window)``: for
    a full window that is the sum of ``X^p``; a ``ceil_mode`` window clipped by the input's
    edge has its sum scaled by ``K / (clipped size)``, as in PyTorch. ``X^p`` and the root
    follow ``pow``: NaN for a negative base and a non-integer exponent, so odd ``p`` on
    negative sums gives NaN as in PyTorch. ``p = inf`` is ``max_pool(|X|)`` and
    ``p = -inf`` is ``-max_pool(-|X|)`` (PyTorch's special cases).

    Gradient: ``dX_j = sum_o dY[o] (K/D[o]) S[o]^(1/p - 1) X_j^(p-1)`` where
    ``S = K * avg_pool(X^p)``. A window with ``S = 0`` passes zero gradient (PyTorch's
    documented choice), so the VJP is finite wherever PyTorch's is.

    Args:
      x: ``(N, C, *spatial)`` or channels-last, a floating dtype.
      p: the norm's exponent, a real number ``> 0`` or ``+-inf``.
      window: ``k``, an int or one per spatial dim.
      stride: ``s``; ``None`` means ``window``.
      ceil_mode: ``ceil`` instead of ``floor`` for the output size.
      channels_last: layout of ``x`` and the output.

    Returns:
      ``(N, C, *out)`` (or channels-last), ``x``'s dtype.

    Raises:
      TypeError: ``x`` is not a floating array or ``p`` is not a real number.
      ValueError: ``p <= 0`` or NaN, or a bad window/stride.

    Example:
      >>> import jax.numpy as jnp
      >>> lp_pool(jnp.array([[[3., 4., 1., 0.]]]), 2, 2)
      Array([[[5., 1.]]], dtype=float32)
    """
    if isinstance(p, bool | np.bool_) or not isinstance(p, int | float | np.integer | np.floating):
        raise TypeError(f"`p` must be a real number (int or float), got {p!r}")
    p = float(p)
    if not (p > 0 or p == -math.inf):
        raise ValueError(f"`p` must be > 0, inf or -inf, got {p!r}")
    geom = _pool_geometry(x, window, stride, 0, 1, ceil_mode, channels_last)
    x = jnp.asarray(x)
    if math.isinf(p):
        # PyTorch's special cases; |x| is differentiated by JAX (d|x|/dx = sign(x), 0 at 0)
        if p > 0:
            return _max_pool(jnp.abs(x), geom)[0]
        return -_max_pool(-jnp.abs(x), geom)[0]
    return _lp_pool(x, LpPoolConfig(geom, p))


def _pow(x: jax.Array, e: float) -> jax.Array:
    """``x ** e``: ``integer_pow`` for integral ``e`` (valid for negative x), else ``pow``."""
    if float(e).is_integer():
        return lax.integer_pow(x, int(e))
    return jnp.power(x, jnp.asarray(e, x.dtype))


def _lp_scale(cfg: LpPoolConfig, ndim: int, dtype: Any) -> jax.Array:
    """``K / D[o]``: the window size over PyTorch's avg-pool divisor (1 for full windows)."""
    avg_cfg = AvgPoolConfig(cfg.geom, True, None)
    return math.prod(cfg.geom.window) / _avg_divisor(avg_cfg, ndim, dtype)


def _lp_sum(x: jax.Array, cfg: LpPoolConfig) -> jax.Array:
    """``S[o] = (K / D[o]) * sum_a X[o*s + a]^p``, accumulated in float32 at least."""
    acc = _accumulation_dtype(x.dtype)
    return _window_sum(_pow(x.astype(acc), cfg.p), cfg.geom) * _lp_scale(cfg, x.ndim, acc)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _lp_pool(x: jax.Array, cfg: LpPoolConfig) -> jax.Array:
    return _pow(_lp_sum(x, cfg), 1.0 / cfg.p).astype(x.dtype)


def _lp_pool_fwd(x, cfg):
    s = _materialized(_lp_sum(x, cfg))
    # residuals: x (for X^(p-1)) and the output-sized window sums S
    return _pow(s, 1.0 / cfg.p).astype(x.dtype), (x, s)


# Forward:  Y[o] = S[o]^(1/p),  S[o] = (K/D[o]) sum_a X[o*s + a]^p
# dL/dX:    dX[j] = X[j]^(p-1) * sum_{(o, a): o*s + a = j} G[o],
#           G[o] = dY[o] (K/D[o]) S[o]^(1/p - 1)   (0 where S[o] = 0)
def _lp_pool_bwd(cfg, residuals, dy):
    x, s = residuals
    acc = s.dtype
    nonzero = s != 0
    s_safe = jnp.where(nonzero, s, jnp.ones((), acc))  # keeps both branches finite
    g = dy.astype(acc) * _lp_scale(cfg, dy.ndim, acc) * _pow(s_safe, 1.0 / cfg.p - 1.0)
    g = jnp.where(nonzero, g, jnp.zeros((), acc))
    spread = avg_pool_input_grad(g, cfg.geom)
    return ((spread * _pow(x.astype(acc), cfg.p - 1.0)).astype(x.dtype),)


_lp_pool.defvjp(_lp_pool_fwd, _lp_pool_bwd)


# ----------------------------------------------------------------------------------------
# adaptive pools
# ----------------------------------------------------------------------------------------


def _adaptive_geometry(x: Any, output_size: Any, channels_last: Any) -> AdaptiveGeometry:
    channels_last = check_bool(channels_last, "channels_last")
    _check_array(x, "x")
    rank = _spatial_rank(x, "x", output_size, "output_size", channels_last)
    in_size = _spatial_size(x, rank, channels_last)
    if isinstance(output_size, Sequence) and not isinstance(output_size, str | bytes):
        items = tuple(output_size)
    else:
        items = (output_size,) * rank
    out = []
    for n, o in zip(in_size, items, strict=True):
        if o is None:
            out.append(n)
            continue
        if isinstance(o, bool | np.bool_) or not isinstance(o, int | np.integer):
            raise TypeError(
                f"`output_size` must be an int, None, or a sequence of ints/None, "
                f"got {output_size!r}"
            )
        out.append(int(o))
    if any(o < 1 for o in out):
        raise ValueError(f"`output_size` must be >= 1 in every dimension, got {output_size!r}")
    if any(n < 1 for n in in_size):
        raise ValueError(f"`x` must have a non-empty spatial size, got shape {np.shape(x)}")
    return AdaptiveGeometry(in_size, tuple(out), channels_last)


def _uniform_geometry(geom: AdaptiveGeometry) -> PoolGeometry | None:
    """Adaptive windows with ``L % out == 0`` are the regular pool ``k = s = L / out``."""
    if not all(uniform_adaptive(n, o) for n, o in zip(geom.in_size, geom.out_size, strict=True)):
        return None
    window = tuple(n // o for n, o in zip(geom.in_size, geom.out_size, strict=True))
    zeros = (0,) * geom.rank
    return PoolGeometry(
        geom.in_size,
        window,
        window,
        zeros,
        (1,) * geom.rank,
        False,
        geom.channels_last,
        geom.out_size,
    )


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


def _adaptive_counts(geom: AdaptiveGeometry, ndim: int, dtype: Any) -> jax.Array:
    full = np.ones((), dtype=np.float64)
    for n, o in zip(geom.in_size, geom.out_size, strict=True):
        sizes = np.asarray([e - s for s, e in adaptive_bounds(n, o)], dtype=np.float64)
        full = np.multiply.outer(full, sizes)
    return _spatial_constant(full, ndim, geom.spatial_axes, dtype)


def _window_axes(geom: AdaptiveGeometry) -> tuple[int, ...]:
    """Positions of the ``a_i`` axes in the gathered ``(.., o_i, a_i, ..)`` array."""
    return tuple(axis + i + 1 for i, axis in enumerate(geom.spatial_axes))


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
    geom = _adaptive_geometry(x, output_size, channels_last)
    x = jnp.asarray(x)
    regular = _uniform_geometry(geom)
    if regular is not None:
        return _avg_pool(x, AvgPoolConfig(regular, True, None))
    return _adaptive_avg_pool(x, geom)


def _adaptive_avg_pool_forward(x: jax.Array, geom: AdaptiveGeometry) -> jax.Array:
    acc = _accumulation_dtype(x.dtype)
    windows = _adaptive_windows(x.astype(acc), geom, 0.0)
    total = jnp.sum(windows, axis=_window_axes(geom))
    return (total / _adaptive_counts(geom, x.ndim, acc)).astype(x.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _adaptive_avg_pool(x: jax.Array, geom: AdaptiveGeometry) -> jax.Array:
    return _adaptive_avg_pool_forward(x, geom)


def _adaptive_avg_pool_fwd(x, geom):
    return _adaptive_avg_pool_forward(x, geom), None  # linear: no residual


# Forward:  Y[o] = sum_{l in window o} X[l] / |window o|
# dL/dX:    dX[l] = sum_{o: l in window o} dY[o] / |window o|
def _adaptive_avg_pool_bwd(geom, _, dy):
    acc = _accumulation_dtype(dy.dtype)
    g = dy.astype(acc) / _adaptive_counts(geom, dy.ndim, acc)
    return (adaptive_avg_pool_input_grad(g, geom).astype(dy.dtype),)


_adaptive_avg_pool.defvjp(_adaptive_avg_pool_fwd, _adaptive_avg_pool_bwd)


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
    return_indices = check_bool(return_indices, "return_indices")
    geom = _adaptive_geometry(x, output_size, channels_last)
    x = jnp.asarray(x)
    regular = _uniform_geometry(geom)
    if regular is not None:
        y, winner = _max_pool(x, regular)
        return (y, _winner_to_indices(winner, regular)) if return_indices else y
    y, winner = _adaptive_max_pool(x, geom)
    if return_indices:
        return y, _adaptive_winner_to_indices(winner, geom)
    return y


def _adaptive_max_pool_forward(x: jax.Array, geom: AdaptiveGeometry):
    """Max and winner code of each adaptive window (vectorised over the window).

    The winner is the last NaN if the window holds one, else the first position equal to
    the max. Fill entries (``-inf`` past a window's end) come after the window's first
    entry in row-major order, but are masked so an all ``-inf`` window picks a real entry.
    """
    windows = _adaptive_windows(x, geom, -jnp.inf)
    win_axes = _window_axes(geom)
    keep = [a for a in range(windows.ndim) if a not in win_axes]
    k = math.prod(geom.window)
    flat = jnp.transpose(windows, keep + list(win_axes))
    flat = flat.reshape(flat.shape[: x.ndim] + (k,))
    valid = np.zeros([o for o in geom.out_size] + list(geom.window), dtype=bool)
    for i, (n, o) in enumerate(zip(geom.in_size, geom.out_size, strict=True)):
        sizes = np.asarray([e - s for s, e in adaptive_bounds(n, o)])
        shape_o = [1] * (2 * geom.rank)
        shape_o[i] = o
        shape_a = [1] * (2 * geom.rank)
        shape_a[geom.rank + i] = geom.window[i]
        ok = np.arange(geom.window[i]).reshape(shape_a) < sizes.reshape(shape_o)
        valid = ok if i == 0 else valid & ok
    valid_shape = [1] * (x.ndim + 1)
    for i, axis in enumerate(geom.spatial_axes):
        valid_shape[axis] = geom.out_size[i]
    valid_shape[-1] = k
    valid_mask = jnp.asarray(valid.reshape(geom.out_size + (k,)).reshape(valid_shape))

    y = jnp.max(flat, axis=-1)
    is_nan = flat != flat
    last_nan = (k - 1) - jnp.argmax(is_nan[..., ::-1], axis=-1)
    first_max = jnp.argmax((flat == y[..., None]) & valid_mask, axis=-1)
    wdtype = _winner_dtype(k)
    winner = jnp.where(jnp.any(is_nan, axis=-1), last_nan, first_max).astype(wdtype)
    return y, winner


def _adaptive_winner_to_indices(winner: jax.Array, geom: AdaptiveGeometry) -> jax.Array:
    code = winner.astype(jnp.int32)
    flat = jnp.zeros(code.shape, jnp.int32)
    step = math.prod(geom.window)
    for i, axis in enumerate(geom.spatial_axes):
        n, o, kmax = geom.in_size[i], geom.out_size[i], geom.window[i]
        step //= kmax
        a = (code // step) % kmax
        starts = np.asarray([s for s, _ in adaptive_bounds(n, o)], dtype=np.int32)
        start = _spatial_constant(starts, code.ndim, (axis,), jnp.int32)
        flat = flat * n + start + a
    return flat


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _adaptive_max_pool(x: jax.Array, geom: AdaptiveGeometry):
    return _adaptive_max_pool_forward(x, geom)


def _adaptive_max_pool_fwd(x, geom):
    y, winner = _adaptive_max_pool_forward(x, geom)
    winner = _materialized(winner)
    return (y, winner), winner  # residual: the winner's code in its window


# Forward:  Y[o] = X[start_o + a*(o)],  a*(o) = winner[o]
# dL/dX:    dX[start_o + a*(o)] += dY[o]
def _adaptive_max_pool_bwd(geom, winner, cotangents):
    dy, _ = cotangents
    return (adaptive_max_pool_input_grad(dy, winner, geom),)


_adaptive_max_pool.defvjp(_adaptive_max_pool_fwd, _adaptive_max_pool_bwd)


# ----------------------------------------------------------------------------------------
# max_unpool
# ----------------------------------------------------------------------------------------


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
    channels_last = check_bool(channels_last, "channels_last")
    _check_array(y, "y")
    rank = _spatial_rank(y, "y", output_size, "output_size", channels_last)
    idx_dtype = np.dtype(getattr(indices, "dtype", np.float64))
    if not hasattr(indices, "dtype") or not np.issubdtype(idx_dtype, np.integer):
        raise TypeError(f"`indices` must be an integer array, got {idx_dtype.name}")
    if tuple(np.shape(indices)) != tuple(np.shape(y)):
        raise ValueError(
            f"`indices` must have the shape of `y` {tuple(np.shape(y))}, "
            f"got {tuple(np.shape(indices))}"
        )
    out_size = normalize_tuple(output_size, rank, "output_size", minimum=1)
    plane = math.prod(out_size)
    try:  # concrete indices are checked here; traced ones cannot be (see above)
        concrete = np.asarray(indices)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        concrete = None
    if concrete is not None:
        if concrete.size and (concrete.min() < 0 or concrete.max() >= plane):
            raise ValueError(
                f"`indices` must lie in [0, {plane}) for output_size={out_size}, got values "
                f"in [{concrete.min()}, {concrete.max()}]"
            )
    cfg = UnpoolConfig(_spatial_size(y, rank, channels_last), out_size, channels_last)
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
