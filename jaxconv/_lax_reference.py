"""The ``lax`` reference for :func:`jaxconv.conv`, differentiated by JAX's own rules.

Shared by :mod:`jaxconv.testing` (which needs Hypothesis) and ``jaxconv verify`` (which must
not), so it lives in neither.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ._shapes import padding_pairs
from .convolution._config import layout_numbers
from .convolution.padding_modes import JNP_PAD_MODE

__all__ = ["lax_conv"]


def lax_conv(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None = None,
    *,
    precision: Any = lax.Precision.HIGHEST,
    **kwargs: Any,
) -> jax.Array:
    """The ``lax`` reference for :func:`jaxconv.conv` (``jnp.pad`` for non-zero padding modes,
    ``lax.rev`` for ``flip``), differentiated by JAX's own rules."""
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
    if mode != "zeros":
        full = [(0, 0)] * x.ndim
        for d, pr in zip(dn.lhs_spec[2:], pairs, strict=True):
            full[d] = pr
        x = jnp.pad(x, full, mode=JNP_PAD_MODE[mode])
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
