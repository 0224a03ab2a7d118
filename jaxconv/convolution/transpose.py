"""``jaxconv.conv_transpose``: PyTorch's transposed convolution, ``conv_input_grad`` as a layer.

A transposed convolution *is* the input-gradient map of the convolution it transposes, so
its forward is ``input_grad`` and its VJP is the forward convolution (for ``x``) plus the
weight gradient with the roles of input and upstream gradient exchanged (for ``w``)::

    Forward:  Z[q]   = sum over (i, a) with S*i + D*a - lo = q of X[i] W[a]
    dL/dX:    dX[i]  = sum_a dZ[S*i + D*a - lo] W[a]            (the forward convolution)
    dL/dW:    dW[a]  = sum_i X[i] dZ[S*i + D*a - lo]            (conv weight-gradient, dZ as input)

``output_padding`` only lengthens ``Z`` at the high end; written as the convolution it
transposes, that convolution has high padding ``hi - output_padding`` (possibly negative,
a crop) so that it maps ``Z`` back to exactly ``X``'s length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from .._checks import check_bool, check_int, normalize_pairs, normalize_tuple
from .._shapes import channel_shape, conv_transpose_output_size
from ._config import ConvConfig, canonical_precision, check_bias, check_conv_arrays, layout_numbers
from .grads import bias_grad, input_grad, weight_grad
from .methods.direct import conv_forward

__all__ = ["conv_transpose"]


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _conv_transpose(
    x: jax.Array, w: jax.Array, b: jax.Array | None, out_shape: tuple[int, ...], cfg: ConvConfig
) -> jax.Array:
    return _conv_transpose_forward(x, w, b, out_shape, cfg)


def _conv_transpose_forward(x, w, b, out_shape, cfg):
    z = input_grad(x, w, out_shape, cfg)
    if b is not None:
        z = z + b.reshape(channel_shape(z.ndim, cfg.dimension_numbers.lhs_spec[1], b.shape[0]))
    return z


def _conv_transpose_fwd(x, w, b, out_shape, cfg):
    return _conv_transpose_forward(x, w, b, out_shape, cfg), (x, w, b is not None)


def _conv_transpose_bwd(out_shape, cfg, res, dz):
    x, w, has_bias = res
    dx = conv_forward(dz, w, None, cfg)  # the convolution being transposed
    dw = weight_grad(dz, x, w.shape, cfg)  # dZ plays the input, X the upstream gradient
    if has_bias:  # the bias sits on Z's channel axis, which is the conv's *input* axis
        db = bias_grad(dz, dataclasses.replace(cfg, dimension_numbers=_as_out(cfg)), x.dtype)
    else:
        db = None
    return dx, dw, db


_conv_transpose.defvjp(_conv_transpose_fwd, _conv_transpose_bwd)


def _as_out(cfg: ConvConfig):
    lhs, rhs, _ = cfg.dimension_numbers
    return type(cfg.dimension_numbers)(lhs, rhs, lhs)


def conv_transpose(
    x: ArrayLike,
    w: ArrayLike,
    bias: ArrayLike | None = None,
    stride: int | Sequence[int] = 1,
    padding: Any = 0,
    output_padding: int | Sequence[int] = 0,
    groups: int = 1,
    dilation: int | Sequence[int] = 1,
    *,
    channels_last: bool = False,
    precision: Any = None,
) -> jax.Array:
    """Transposed convolution with PyTorch's ``conv_transpose{1,2,3}d`` semantics.

    Equals the VJP with respect to ``x`` of ``conv(x', w, stride=stride, padding=padding,
    dilation=dilation, groups=groups)`` for an ``x'`` of the output's shape, evaluated at
    the cotangent ``x`` (plus ``bias``): the property that settles what ``padding`` means.

    Args:
      x: ``(N, C_in, *spatial)``; ``(N, *spatial, C_in)`` if ``channels_last``.
      w: ``(C_in, C_out // groups, *kernel)`` (PyTorch's layout); ``(*kernel, C_out // groups,
        C_in)`` if ``channels_last`` (the kernel of the convolution being transposed, in
        Flax's layout, as ``flax.linen.ConvTranspose(transpose_kernel=True)`` stores it).
      bias: ``(C_out,)`` or ``None``.
      stride: int or one int per spatial dim, each >= 1.
      padding: int >= 0, one int per spatial dim, or one ``(low, high)`` pair per dim:
        the padding of the convolution being transposed (it *removes* cells here).
      output_padding: int or one per dim, each ``0 <= output_padding < max(stride,
        dilation)``: extra cells at the high end of the output.
      groups: channel groups; must divide ``C_in`` and ``C_out``.
      dilation: int or one int per spatial dim, each >= 1.
      channels_last: use the channels-last layouts above.
      precision: ``None`` or a ``jax.lax.Precision``.

    Returns:
      ``(N, C_out, *spatial_out)`` with ``spatial_out = (L - 1)S - lo - hi + D(K - 1) +
      output_padding + 1`` (``(N, *spatial_out, C_out)`` if ``channels_last``).

    Raises:
      TypeError, ValueError: bad dtypes, shapes, or arguments (named in the message),
        including a zero-size kernel or input spatial axis (PyTorch refuses both).

    >>> import jax.numpy as jnp
    >>> conv_transpose(jnp.ones((1, 1, 3)), jnp.array([[[1.0, 2.0, 3.0]]]))
    Array([[[1., 3., 6., 5., 3.]]], dtype=float32)
    """

    nd = check_conv_arrays(x, w, bias)
    x, w = jnp.asarray(x), jnp.asarray(w)
    bias = None if bias is None else jnp.asarray(bias)
    channels_last = check_bool(channels_last, "channels_last")
    if isinstance(padding, str):
        raise ValueError(
            "`padding` of conv_transpose must be an int, one int per spatial dimension or "
            f"(low, high) pairs (PyTorch's semantics; no padding strings), got {padding!r}"
        )
    if channels_last:
        n, *spatial, c_in = x.shape
        *kernel, c_out_g, w_in = w.shape
    else:
        n, c_in, *spatial = x.shape
        w_in, c_out_g, *kernel = w.shape
    if any(k < 1 for k in kernel):
        raise ValueError(f"`w` must have every spatial size >= 1, got shape {tuple(w.shape)}")
    if any(i < 1 for i in spatial):
        raise ValueError(
            "`x` must have every spatial size >= 1 (PyTorch refuses empty spatial axes; the "
            f"batch may be empty), got shape {tuple(x.shape)}"
        )
    groups = check_int(groups, "groups", minimum=1)
    if w_in != c_in:
        raise ValueError(
            f"`w` must have C_in = {c_in} channels on its input-channel axis to match `x`, "
            f"got shape {tuple(w.shape)}"
        )
    if c_in % groups:
        raise ValueError(f"`groups` must divide the input channels of `x` ({c_in}), got {groups}")
    c_out = c_out_g * groups
    strides = normalize_tuple(stride, nd, "stride", minimum=1)
    dilations = normalize_tuple(dilation, nd, "dilation", minimum=1)
    pairs = normalize_pairs(padding, nd, "padding")
    out_pad = normalize_tuple(output_padding, nd, "output_padding", minimum=0)
    for op, s, d in zip(out_pad, strides, dilations, strict=True):
        if op >= max(s, d):
            raise ValueError(
                "`output_padding` must be smaller than max(stride, dilation) in every "
                f"dimension, got output_padding={out_pad}, stride={strides}, dilation={dilations}"
            )
    out_spatial = tuple(
        conv_transpose_output_size(i, k, s, p, d, op)
        for i, k, s, p, d, op in zip(
            spatial, kernel, strides, pairs, dilations, out_pad, strict=True
        )
    )
    if any(o < 1 for o in out_spatial):
        raise ValueError(
            f"`padding` {pairs} removes every output cell: the output's spatial shape would "
            f"be {out_spatial} for input spatial shape {tuple(spatial)}"
        )
    check_bias(None if bias is None else np.shape(bias), c_out)
    cfg = ConvConfig(
        window_strides=strides,
        padding=tuple((lo, hi - op) for (lo, hi), op in zip(pairs, out_pad, strict=True)),
        lhs_dilation=(1,) * nd,
        rhs_dilation=dilations,
        dimension_numbers=layout_numbers(nd, channels_last),
        feature_group_count=groups,
        precision=canonical_precision(precision),
    )
    out_shape = (n, *out_spatial, c_out) if channels_last else (n, c_out, *out_spatial)
    return _conv_transpose(x, w, bias, out_shape, cfg)
