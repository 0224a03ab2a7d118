"""The ``lax`` references for every op, differentiated by JAX's own rules.

Shared by :mod:`jaxconv.testing` (which needs Hypothesis) and ``jaxconv verify`` (which must
not): the convolution (``jnp.pad`` for non-zero padding modes, ``lax.rev`` for ``flip``) and
the max and average pools (``lax.reduce_window`` with PyTorch's output sizes).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._shapes import padding_pairs
from ..convolution._config import layout_numbers
from ..convolution.padding_modes import JNP_PAD_MODE
from ..pool._geometry import pool_output_size, spatial_axes

__all__ = ["lax_avg_pool", "lax_conv", "lax_max_pool"]


def lax_conv(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None = None,
    *,
    precision: Any = lax.Precision.HIGHEST,
    **kwargs: Any,
) -> jax.Array:
    """The ``lax`` reference for :func:`jaxconv.conv` (``jnp.pad`` for non-zero padding modes,
    ``lax.rev`` for ``flip``), differentiated by JAX's own rules.

    In 64-bit dtypes the zero padding is a ``jnp.pad`` too (the same function): XLA:CPU's
    algebraic simplifier aborts the process compiling ``jax.grad`` of some float64 padded
    convolutions (measured: x (2, 6, 2, 6) channels-last, a 2x2 kernel, 3 groups, stride
    (2, 3), padding 1), and compiles them with the padding written out."""
    stride = kwargs.get("stride", 1)
    padding = kwargs.get("padding", 0)
    dilation = kwargs.get("dilation", 1)
    groups = kwargs.get("groups", 1)
    flip = kwargs.get("flip", False)
    channels_last = kwargs.get("channels_last", False)
    mode = kwargs.get("padding_mode", "zeros")
    nd = w.ndim - 2
    dn = layout_numbers(nd, channels_last)
    spatial = [x.shape[d] for d in dn.lhs_spec[2:]]
    kernel = [w.shape[d] for d in dn.rhs_spec[2:]]
    stride = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    dilation = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    pairs = padding_pairs(padding, spatial, kernel, stride, dilation)
    if mode != "zeros" or np.dtype(x.dtype).itemsize >= 8:
        full = [(0, 0)] * x.ndim
        for d, pr in zip(dn.lhs_spec[2:], pairs, strict=True):
            full[d] = pr
        x = jnp.pad(x, full, mode=JNP_PAD_MODE.get(mode, "constant"))
        pairs = ((0, 0),) * nd
    if flip:
        w = lax.rev(w, dn.rhs_spec[2:])
    y = lax.conv_general_dilated(
        x,
        w,
        stride,
        pairs,
        rhs_dilation=dilation,
        dimension_numbers=dn,
        feature_group_count=groups,
        precision=precision,
    )
    if b is not None:
        shape = [1] * y.ndim
        shape[dn.out_spec[1]] = b.shape[0]
        y = y + b.reshape(shape)
    return y


def _pool_dims(x, window, stride, padding, dilation, ceil_mode, channels_last):
    r = x.ndim - 2

    def tup(v, default=None):
        if v is None:
            return default
        return (v,) * r if isinstance(v, int) else tuple(v)

    k = tup(window)
    s, p, d = tup(stride, k), tup(padding), tup(dilation)
    axes = spatial_axes(r, channels_last)
    sizes = [x.shape[a] for a in axes]
    out = [pool_output_size(*a, ceil_mode) for a in zip(sizes, k, s, p, d, strict=True)]
    hi = [
        (o - 1) * si + di * (ki - 1) + 1 - n - pi
        for o, si, di, ki, n, pi in zip(out, s, d, k, sizes, p, strict=True)
    ]
    cfg = [(0, 0, 0)] * x.ndim
    dims, strides, dil = [1] * x.ndim, [1] * x.ndim, [1] * x.ndim
    for i, a in enumerate(axes):
        cfg[a] = (p[i], hi[i], 0)
        dims[a], strides[a], dil[a] = k[i], s[i], d[i]
    return axes, sizes, p, hi, cfg, dims, strides, dil


def lax_max_pool(
    x, window, stride=None, padding=0, dilation=1, ceil_mode=False, *, channels_last=False
):
    """``lax.reduce_window`` max with PyTorch's output size (``-inf`` padding).

    ``jax.grad`` of it raises ``NotImplementedError`` when ``dilation > 1``.
    """
    _, _, _, _, cfg, dims, strides, dil = _pool_dims(
        x, window, stride, padding, dilation, ceil_mode, channels_last
    )
    xp = lax.pad(x, jnp.asarray(-jnp.inf, x.dtype), cfg)
    if all(v == 1 for v in dil):  # the max-specific (differentiable) lax path
        return lax.reduce_window(xp, -jnp.inf, lax.max, dims, strides, "VALID")
    return lax.reduce_window(xp, -jnp.inf, lax.max, dims, strides, "VALID", window_dilation=dil)


def lax_avg_pool(
    x,
    window,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
    *,
    channels_last=False,
):
    """Window sums by ``lax.reduce_window`` over divisors counted by ``lax.reduce_window``
    over a ones array marking what PyTorch counts."""
    axes, sizes, p, hi, cfg, dims, strides, _ = _pool_dims(
        x, window, stride, padding, 1, ceil_mode, channels_last
    )
    zero = jnp.zeros((), x.dtype)
    # a Python 0.0 init lets lax recognise the add monoid (its differentiable path)
    total = lax.reduce_window(lax.pad(x, zero, cfg), 0.0, lax.add, dims, strides, "VALID")
    if divisor_override is not None:
        return total / jnp.asarray(divisor_override, x.dtype)
    shape, count_cfg = [1] * x.ndim, list(cfg)
    for i, a in enumerate(axes):
        shape[a] = sizes[i] + (2 * p[i] if count_include_pad else 0)
        if count_include_pad:  # padding counts, the ceil-mode overhang past it does not
            count_cfg[a] = (0, hi[i] - p[i], 0)
    ones = jnp.ones(shape, x.dtype)
    counts = lax.reduce_window(lax.pad(ones, zero, count_cfg), 0.0, lax.add, dims, strides, "VALID")
    return total / counts
