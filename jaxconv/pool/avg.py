"""``avg_pool`` and ``lp_pool``: window sums with PyTorch's divisors, and their VJPs.

Both are a window sum (of ``X``, or of ``X^p``) scaled per output position; the backward of
either spreads a scaled upstream gradient over every window position
(``avg_pool_input_grad``). Half precision sums in float32 (``jaxconv._dtypes``).
``windowed_avg`` is the op on a resolved config, shared with the adaptive average pool's
regular case.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
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
from ._config import AvgPoolConfig, LpPoolConfig, avg_pool_config, lp_pool_config
from ._geometry import PoolGeometry, avg_divisors
from ._vjp import crop_padding, place_by_phase, spread_blocks
from ._windows import (
    as_blocks,
    merge_windows,
    pad_spatial,
    read_mask,
    spatial_constant,
    split_windows,
    sum_windows,
    window_offsets,
    window_slice,
)
from .max import windowed_max

__all__ = ["avg_pool", "avg_pool_input_grad", "lp_pool", "windowed_avg"]


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
      ValueError: a bad window/stride/padding/divisor, mismatched ranks, or ``x`` too small
        for one window.

    Example:
      >>> import jax.numpy as jnp
      >>> avg_pool(jnp.arange(16.).reshape(1, 1, 4, 4), 2)
      Array([[[[ 2.5,  4.5],
               [10.5, 12.5]]]], dtype=float32)
    """
    cfg = avg_pool_config(
        x, window, stride, padding, ceil_mode, count_include_pad, divisor_override, channels_last
    )
    return on_auto_axes(lambda x: windowed_avg(x, cfg), jnp.asarray(x))


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
    return spatial_constant(full, ndim, geom.spatial_axes, dtype)


def _window_sum(x: jax.Array, geom: PoolGeometry) -> jax.Array:
    """``sum_a X_pad[o*s + a*d]`` with zero padding (a reshape-sum when large windows tile;
    small tiling windows take the slices: XLA:CPU's reduction over 2x2 blocks ran 7x slower
    than four strided slices added, 14 vs 2 ms on 32x64x64x64, jax 0.10)."""
    xp = pad_spatial(x, geom, 0.0)
    if as_blocks(geom):
        return sum_windows(split_windows(xp, geom), geom.spatial_axes)
    offsets = window_offsets(geom.window)
    total = window_slice(xp, geom, offsets[0])
    for offset in offsets[1:]:
        total = total + window_slice(xp, geom, offset)
    return total


def _avg_pool_forward(x: jax.Array, cfg: AvgPoolConfig) -> jax.Array:
    acc = compute_dtype(x.dtype)
    total = _window_sum(x.astype(acc), cfg.geom)
    return (total / _avg_divisor(cfg, x.ndim, acc)).astype(x.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def windowed_avg(x: jax.Array, cfg: AvgPoolConfig) -> jax.Array:
    """``avg_pool`` on a validated config."""
    return _avg_pool_forward(x, cfg)


def _avg_pool_fwd(x, cfg):
    # Linear: the backward needs no residual. The output is stored once all the same: a
    # loss that feeds ``y`` back into ``dY`` (the gradient of ``sum(y**2)`` is ``2y``) would
    # otherwise have XLA recompute the window sum inside every offset of the spreading.
    return materialized(_avg_pool_forward(x, cfg)), None


# Forward:  Y[o] = sum_a X_pad[o*s + a] / D[o]
# dL/dX:    dX[q - p] = sum_{(o, a): o*s + a = q} dY[o] / D[o]
def _avg_pool_bwd(cfg, _, dy):
    acc = compute_dtype(dy.dtype)
    g = dy.astype(acc) / _avg_divisor(cfg, dy.ndim, acc)
    return (avg_pool_input_grad(g, cfg.geom).astype(dy.dtype),)


windowed_avg.defvjp(_avg_pool_fwd, _avg_pool_bwd)


# Forward:  Y[o] = sum_a X_pad[o*s + a*d] / D[o]   (D: PyTorch's divisor, or divisor_override)
# dL/dX:    dX[j] = sum_{(o, a): o*s + a*d - p = j} G[o],  G = dY / D   (every offset, no mask)
def avg_pool_input_grad(g: jax.Array, geom: PoolGeometry) -> jax.Array:
    """Spread each (already divided) upstream gradient ``g`` over its whole window.

    Args:
      g: ``dY / divisor``, ``(N, C, *out)`` (or channels-last).
      geom: the pool's geometry.

    Returns:
      The sum over windows of ``g`` placed on every window position, cropped to the input.
    """
    if geom.non_overlapping:
        blocks = spread_blocks(g, geom.window, geom.spatial_axes)
        return crop_padding(merge_windows(blocks, geom.spatial_axes), geom)
    # every offset spreads the same g: the placement is separable, one dimension at a time
    # (k_1 + .. + k_n shifted terms instead of k_1 * .. * k_n)
    for i in range(geom.rank):
        g = place_by_phase(_same_for_every_offset(g), _along(geom, i, g.shape), g)
    return g


def _same_for_every_offset(g: jax.Array) -> Callable[[int], jax.Array]:
    return lambda code: g


def _along(geom: PoolGeometry, i: int, shape: Sequence[int]) -> PoolGeometry:
    """``geom`` restricted to spatial dimension ``i``: the others have window, stride and
    dilation 1, no padding, and keep their current length in ``shape``."""
    sizes = [shape[a] for a in geom.spatial_axes]

    def only(values: tuple[int, ...], other: int) -> tuple[int, ...]:
        return tuple(v if j == i else other for j, v in enumerate(values))

    in_size = tuple(geom.in_size[i] if j == i else n for j, n in enumerate(sizes))
    return dataclasses.replace(
        geom,
        in_size=in_size,
        window=only(geom.window, 1),
        stride=only(geom.stride, 1),
        padding=only(geom.padding, 0),
        dilation=only(geom.dilation, 1),
        out_size=tuple(sizes),
    )


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
    documented choice), so the VJP is finite wherever PyTorch's is. For ``p = +-inf`` the
    gradient is ``max_pool``'s routed to the winner times ``sign(X_j)`` (0 at 0, NaN at NaN,
    as PyTorch's ``abs``). NaN and inf stay local: an entry that no window reads gets a zero
    gradient whatever its value; a NaN entry that a window reads gets a NaN gradient.

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
    cfg = lp_pool_config(x, p, window, stride, ceil_mode, channels_last)
    return on_auto_axes(lambda x: _lp_pool_on(x, cfg), jnp.asarray(x))


def _lp_pool_on(x: jax.Array, cfg: LpPoolConfig) -> jax.Array:
    """``lp_pool`` on a validated config."""
    if math.isinf(cfg.p):
        # PyTorch's special cases, differentiated by JAX through _abs (sign rule). Entries no
        # window reads are zeroed first, so a NaN there cannot reach the gradient as NaN * 0.
        read = read_mask(cfg.geom, x.ndim)
        a = _abs(x if read is None else jnp.where(read, x, jnp.zeros((), x.dtype)))
        if cfg.p > 0:
            return windowed_max(a, cfg.geom)[0]
        return -windowed_max(-a, cfg.geom)[0]
    return _lp_pool(x, cfg)


@jax.custom_jvp
def _abs(x: jax.Array) -> jax.Array:
    """``|x|`` with PyTorch's derivative ``sign(x)``: 0 at 0 and NaN at NaN (``jnp.abs``'s
    own rule gives +1 at 0 and -1 at NaN)."""
    return jnp.abs(x)


@_abs.defjvp
def _abs_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return jnp.abs(x), jnp.sign(x) * t


def _pow(x: jax.Array, e: float) -> jax.Array:
    """``x ** e``: ``integer_pow`` for integral ``e`` (valid for negative x), ``sqrt`` for
    ``e = 0.5`` (as PyTorch: NaN at ``-inf``, where ``pow`` gives ``inf``), else ``pow``."""
    if float(e).is_integer():
        return lax.integer_pow(x, int(e))
    if e == 0.5:
        return jnp.sqrt(x)
    return jnp.power(x, jnp.asarray(e, x.dtype))


def _lp_scale(cfg: LpPoolConfig, ndim: int, dtype: Any) -> jax.Array:
    """``K / D[o]``: the window size over PyTorch's avg-pool divisor (1 for full windows)."""
    avg_cfg = AvgPoolConfig(cfg.geom, True, None)
    return math.prod(cfg.geom.window) / _avg_divisor(avg_cfg, ndim, dtype)


def _lp_sum(x: jax.Array, cfg: LpPoolConfig) -> jax.Array:
    """``S[o] = (K / D[o]) * sum_a X[o*s + a]^p``, accumulated in float32 at least."""
    acc = compute_dtype(x.dtype)
    return _window_sum(_pow(x.astype(acc), cfg.p), cfg.geom) * _lp_scale(cfg, x.ndim, acc)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _lp_pool(x: jax.Array, cfg: LpPoolConfig) -> jax.Array:
    return _pow(_lp_sum(x, cfg), 1.0 / cfg.p).astype(x.dtype)


def _lp_pool_fwd(x, cfg):
    s = materialized(_lp_sum(x, cfg))
    # residuals: x (for X^(p-1)) and the output-sized window sums S
    return _pow(s, 1.0 / cfg.p).astype(x.dtype), (x, s)


# Forward:  Y[o] = S[o]^(1/p),  S[o] = (K/D[o]) sum_a X[o*s + a]^p
# dL/dX:    dX[j] = X[j]^(p-1) * sum_{(o, a): o*s + a = j} G[o]   (0 where no window reads j),
#           G[o] = dY[o] (K/D[o]) S[o]^(1/p - 1)   (0 where S[o] = 0)
def _lp_pool_bwd(cfg, residuals, dy):
    x, s = residuals
    acc = s.dtype
    nonzero = s != 0
    s_safe = jnp.where(nonzero, s, jnp.ones((), acc))  # keeps both branches finite
    g = dy.astype(acc) * _lp_scale(cfg, dy.ndim, acc) * _pow(s_safe, 1.0 / cfg.p - 1.0)
    g = jnp.where(nonzero, g, jnp.zeros((), acc))
    dx = avg_pool_input_grad(g, cfg.geom) * _pow(x.astype(acc), cfg.p - 1.0)
    read = read_mask(cfg.geom, dx.ndim)
    if read is not None:  # no window reads these: 0, even where X^(p-1) is inf or NaN
        dx = jnp.where(read, dx, jnp.zeros((), acc))
    return (dx.astype(x.dtype),)


_lp_pool.defvjp(_lp_pool_fwd, _lp_pool_bwd)
