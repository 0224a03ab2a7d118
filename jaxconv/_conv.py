"""``jaxconv.conv``: N-d convolution whose VJP is the lecture's derivation, by hand."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from ._config import ConvConfig, check_bias, check_conv_arrays, conv_config, split_shapes
from ._conv_vjp import bias_grad, input_grad, weight_grad
from ._pad import check_mode_padding, pad

__all__ = ["conv", "conv_forward"]


def conv_forward(x: jax.Array, w: jax.Array, b: jax.Array | None, cfg: ConvConfig) -> jax.Array:
    """The forward convolution ``cfg`` describes (cross-correlation unless ``cfg.flip``)."""
    k = lax.rev(w, cfg.dimension_numbers.rhs_spec[2:]) if cfg.flip else w
    y = lax.conv_general_dilated(
        x,
        k,
        window_strides=cfg.window_strides,
        padding=cfg.padding,
        lhs_dilation=cfg.lhs_dilation,
        rhs_dilation=cfg.rhs_dilation,
        dimension_numbers=cfg.dimension_numbers,
        feature_group_count=cfg.feature_group_count,
        batch_group_count=cfg.batch_group_count,
        precision=cfg.precision,
        preferred_element_type=cfg.preferred_element_type,
    )
    if b is not None:
        shape = [1] * y.ndim
        shape[cfg.dimension_numbers.out_spec[1]] = b.shape[0]
        y = y + b.astype(y.dtype).reshape(shape)
    return y


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv(x: jax.Array, w: jax.Array, b: jax.Array | None, cfg: ConvConfig) -> jax.Array:
    return conv_forward(x, w, b, cfg)


def _conv_fwd(x, w, b, cfg):
    # Residuals: the two operands. dW needs x and dX needs w; the output is never needed.
    return conv_forward(x, w, b, cfg), (x, w, b is not None)


# Forward:  Y[i]   = sum_a X[S*i + D*a - P] W[a]            (per channel pair, summed over c)
# dL/dW:    dW[a]  = sum_i dY[i] X[S*i + D*a - P]           (correlate X with stride-dilated dY)
# dL/dX:    dX[q]  = sum_{S*i + D*a - P = q} dY[i] W[a]      (stride-dilated dY * flipped W)
# dL/db:    db[o]  = sum over batch and space of dY[o]
def _conv_bwd(cfg, res, dy):
    x, w, has_bias = res
    dx = input_grad(dy, w, x.shape, cfg)
    dw = weight_grad(x, dy, w.shape, cfg)
    db = bias_grad(dy, cfg, x.dtype) if has_bias else None
    return dx, dw, db


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv(
    x: ArrayLike,
    w: ArrayLike,
    bias: ArrayLike | None = None,
    stride: int | Sequence[int] = 1,
    padding: Any = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    flip: bool = False,
    channels_last: bool = False,
    method: str = "auto",
    precision: Any = None,
    preferred_element_type: Any = None,
) -> jax.Array:
    """N-dimensional convolution with a hand-derived VJP (cross-correlation by default).

    ``Y[n, o, i] = b[o] + sum_{c, a} X[n, g*C_in/G + c, S*i + D*a - P] W[o, c, a]`` for output
    channel ``o`` in group ``g``, with ``a`` running over the kernel's spatial taps.

    Args:
      x: input, ``(N, C_in, *spatial)``; ``(N, *spatial, C_in)`` if ``channels_last``.
      w: kernel, ``(C_out, C_in // groups, *kernel)``; ``(*kernel, C_in // groups, C_out)``
        (Flax's layout) if ``channels_last``. Spatial rank is ``w.ndim - 2`` (any >= 1).
      bias: ``(C_out,)`` or ``None``.
      stride: int or one int per spatial dim, each >= 1.
      padding: int >= 0, one int per spatial dim, one ``(low, high)`` pair per spatial dim,
        ``"VALID"``, ``"SAME"`` (output ``ceil(input/stride)``, odd extra cell high, as XLA),
        ``"SAME_LOWER"`` (odd extra cell low) or ``"FULL"`` (``D(K-1)`` both sides).
        :func:`jaxconv.padding_pairs` shows what any form resolves to.
      dilation: int or one int per spatial dim, each >= 1.
      groups: number of channel groups; must divide ``C_in`` and ``C_out``
        (``groups == C_in`` is a depthwise convolution).
      padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"`` (PyTorch's
        semantics; the non-zero modes pad with their own hand-derived VJP).
      flip: ``True`` convolves with the kernel reversed on every spatial axis: the lecture's
        true convolution ``Y[i] = sum_a X[i - a] W[a]`` (with ``padding="FULL"`` this is
        ``scipy.signal.convolve(..., mode="full")``).
      channels_last: use the channels-last layouts above.
      method: ``"auto"`` (default: the cheapest supported method under a documented cost
        model, resolved at trace time from static shapes; :func:`jaxconv.explain_method`
        says which and why), ``"direct"`` (one XLA convolution), ``"fft"`` (real FFTs, for
        large kernels; any configuration) or ``"shift"`` (a sum of shifted slices, for
        depthwise and small grouped convolutions). Every method has its own hand-derived VJP.
      precision: ``None`` or a ``jax.lax.Precision`` (forwarded to XLA; ``"fft"`` and
        ``"shift"`` always compute in full float32/float64).
      preferred_element_type: output/accumulation dtype of the forward, as in ``lax``.

    Returns:
      ``(N, C_out, *spatial_out)`` (``(N, *spatial_out, C_out)`` if ``channels_last``) where
      ``spatial_out`` is :func:`jaxconv.conv_output_shape`.

    Raises:
      TypeError: integer, boolean or mismatched dtypes; a non-bool ``flip``/``channels_last``.
      ValueError: bad stride, dilation, padding, groups or shapes, or a kernel that does not
        fit in the padded input.

    The backward pass is :func:`jaxconv.conv_input_grad`, :func:`jaxconv.conv_weight_grad`
    and a sum for the bias; half-precision gradients accumulate in float32. ``jax.grad``,
    ``jax.vmap``, ``jax.jit``, ``jax.checkpoint``, ``jax.hessian`` (forward-over-reverse) and
    reverse-over-reverse all compose. ``jax.jvp`` applied to ``conv`` itself is refused by
    JAX, as for every ``jax.custom_vjp`` function; use ``jax.linearize`` of ``jax.grad`` or
    ``jax.jvp`` of ``jax.grad`` (Hessian-vector products) instead.

    >>> import jax.numpy as jnp
    >>> x = jnp.arange(5.0).reshape(1, 1, 5)
    >>> conv(x, jnp.array([[[1.0, 2.0, 3.0]]]))          # 0*1 + 1*2 + 2*3, ...
    Array([[[ 8., 14., 20.]]], dtype=float32)
    >>> conv(x, jnp.array([[[1.0, 2.0, 3.0]]]), flip=True)  # 0*3 + 1*2 + 2*1, ...
    Array([[[ 4., 10., 16.]]], dtype=float32)
    """
    from ._methods import dispatch

    nd = check_conv_arrays(x, w, bias)
    x, w = jnp.asarray(x), jnp.asarray(w)
    bias = None if bias is None else jnp.asarray(bias)
    _, _, spatial, c_out, _, _ = split_shapes(x.shape, w.shape, bool(channels_last))
    check_bias(bias, c_out)
    cfg, pairs = conv_config(
        x.shape,
        w.shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        flip=flip,
        channels_last=channels_last,
        method=method,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
    check_mode_padding(padding_mode, pairs, spatial)
    if padding_mode != "zeros":
        # The padding was resolved against the unpadded input; pad with the mode (its own
        # VJP folds the copies back), then convolve with no further padding.
        if any(lo or hi for lo, hi in pairs):
            x = pad(x, padding_mode, tuple(cfg.dimension_numbers.lhs_spec[2:]), pairs)
        cfg = dataclasses.replace(cfg, padding=((0, 0),) * nd)
    return dispatch(x, w, bias, cfg)


def direct(x: jax.Array, w: jax.Array, b: jax.Array | None, cfg: ConvConfig) -> jax.Array:
    """``method="direct"``: one XLA convolution forward, two (hand-chosen) backward."""
    return _conv(x, w, b, cfg)
