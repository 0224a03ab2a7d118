"""``jaxconv.conv``: the validating public wrapper. It builds the static configuration once
and hands the arrays to :func:`~jaxconv.convolution.methods.dispatch`, which runs a method
(each with its own hand-derived VJP)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .._compat import explicit_mesh, replicated_on
from ._config import check_conv_arrays, conv_config
from .methods import check_method, dispatch, resolve_method
from .methods.plan import geometry
from .padding_modes import pad

__all__ = ["conv"]


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
        large kernels; any configuration), ``"shift"`` (a sum of shifted slices, for
        depthwise and small grouped convolutions) or ``"matmul"`` (channel matrix products,
        for pointwise one-tap kernels, in the caller's layout). Every method has its own
        hand-derived VJP and keeps NaN/inf local: a non-finite entry of ``x``, ``w`` or the
        upstream gradient touches only the outputs whose window holds it, as in ``lax``
        (the fast methods check at run time and then take the direct rules). Accuracy:
        ``"direct"``, ``"shift"`` and ``"matmul"`` round
        each output's own sum, like ``lax``; ``"fft"``'s error is bounded *relative to the
        largest output* (``4 eps (log2 F + 1)`` for an FFT grid of ``F`` cells), so on a
        high-dynamic-range input the small outputs carry the large ones' absolute error.
        Under an explicit mesh (an input sharded along ``jax.sharding.AxisType.Explicit``
        axes, where shardings are part of the types) ``"direct"`` and ``"matmul"`` run and
        ``"auto"`` keeps to them; the others are refused.
      precision: ``None`` or a ``jax.lax.Precision`` (or its name, or a pair), forwarded to
        XLA. ``jax.lax.Precision.HIGHEST`` (``"highest"``) also keeps ``method="auto"`` to the
        exactly-summing methods (never ``"fft"``); ``"fft"`` and ``"shift"`` always compute in
        full float32/float64.
      preferred_element_type: output/accumulation dtype of the forward, as in ``lax``: a
        floating dtype at least as wide as ``x``'s (checked before tracing); every method
        returns it (gradients keep the inputs' dtypes).

    Returns:
      ``(N, C_out, *spatial_out)`` (``(N, *spatial_out, C_out)`` if ``channels_last``) where
      ``spatial_out`` is :func:`jaxconv.conv_output_shape`.

    Raises:
      TypeError: integer, boolean, complex or mismatched dtypes, or arrays that are not JAX or
        NumPy arrays; a non-bool ``flip``/``channels_last``; a ``preferred_element_type``
        narrower than ``x``'s dtype or not floating.
      ValueError: bad stride, dilation, padding, groups or shapes, or a kernel that does not
        fit in the padded input (an empty output: ``conv`` refuses it as PyTorch does, while
        :func:`jaxconv.conv_general_dilated` follows ``lax`` and returns it); a ``method``
        that cannot compute this configuration, or cannot run under an explicit mesh.

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
    nd = check_conv_arrays(x, w, bias)
    method = check_method(method)
    x, w = jnp.asarray(x), jnp.asarray(w)
    bias = None if bias is None else jnp.asarray(bias)
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
        dtype=x.dtype,
        bias_shape=None if bias is None else bias.shape,
        padding_mode=padding_mode,
    )
    mesh = explicit_mesh(x, w, bias)
    if mesh is not None:
        # Decided before a padding mode pads x, so an unsuitable method= is the ValueError
        # whatever the pad does with the sharding; the sharding is in the inputs' types.
        geo = geometry(x.shape, w.shape, cfg)
        method = resolve_method(geo, x.dtype, cfg, explicit_sharding=True)
        cfg = dataclasses.replace(cfg, method=method)
    if padding_mode != "zeros":
        # The padding was resolved against the unpadded input; pad with the mode (its own
        # VJP folds the copies back), then convolve with no further padding.
        if any(lo or hi for lo, hi in pairs):
            x = pad(x, padding_mode, tuple(cfg.dimension_numbers.lhs_spec[2:]), pairs)
        cfg = dataclasses.replace(cfg, padding=((0, 0),) * nd)
    if mesh is not None:
        x, w = replicated_on(x, mesh), replicated_on(w, mesh)
        bias = None if bias is None else replicated_on(bias, mesh)
    return dispatch(x, w, bias, cfg)
