"""Validate and normalise convolution arguments into frozen, hashable configurations.

Everything a ``custom_vjp`` rule needs besides the arrays is resolved here, once, in the
public wrapper, before anything is traced: ``nondiff_argnums`` only ever holds a
:class:`ConvConfig`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax import lax

from .._checks import (
    check_bool,
    check_float_array,
    check_int,
    check_same_dtype,
    normalize_tuple,
)
from .._shapes import Pairs, check_kernel_fits, conv_output_size, resolve_padding
from .padding_modes import check_mode_padding

__all__ = ["ConvConfig", "conv_config", "layout_numbers", "output_shape", "split_shapes"]


@dataclasses.dataclass(frozen=True)
class ConvConfig:
    """Static description of one convolution, in ``lax.conv_general_dilated`` terms.

    ``padding`` is explicit zero padding (a non-zero ``padding_mode`` has already been
    applied to the input by the time a config is built for the convolution proper).
    ``flip=True`` convolves with the kernel reversed along every spatial axis (the lecture's
    true convolution); the stored ``w`` is never reversed in place.
    """

    window_strides: tuple[int, ...]
    padding: Pairs
    lhs_dilation: tuple[int, ...]
    rhs_dilation: tuple[int, ...]
    dimension_numbers: lax.ConvDimensionNumbers
    feature_group_count: int = 1
    batch_group_count: int = 1
    flip: bool = False
    precision: Any = None
    preferred_element_type: np.dtype | None = None
    method: str = "direct"
    out_sharding: Any = None  # conv_general_dilated's, passed on to lax as it is

    @property
    def ndim(self) -> int:
        return len(self.window_strides)

    @property
    def channels_last(self) -> bool:
        return self.dimension_numbers.lhs_spec[1] == self.ndim + 1

    @property
    def exact_only(self) -> bool:
        """``precision=HIGHEST`` (on both operands): ``auto`` keeps to exactly-summing methods."""
        p = self.precision
        return p is not None and all(q == lax.Precision.HIGHEST for q in p)


def layout_numbers(ndim: int, channels_last: bool) -> lax.ConvDimensionNumbers:
    """Dimension numbers for channels-first ``(N, C, *S)``/``(O, I, *K)`` or channels-last
    ``(N, *S, C)``/``(*K, I, O)`` (Flax's layout)."""
    spatial = tuple(range(2, ndim + 2))
    if not channels_last:
        return lax.ConvDimensionNumbers((0, 1) + spatial, (0, 1) + spatial, (0, 1) + spatial)
    lhs = (0, ndim + 1) + tuple(range(1, ndim + 1))
    rhs = (ndim + 1, ndim) + tuple(range(ndim))
    return lax.ConvDimensionNumbers(lhs, rhs, lhs)


def _precision_value(p: Any) -> Any:
    if isinstance(p, lax.Precision) or isinstance(p, getattr(lax, "DotAlgorithmPreset", ())):
        return p
    if isinstance(p, str):
        return lax.Precision(p)  # 'default', 'high', 'highest', 'float32', ... (lax's names)
    raise ValueError(p)


def canonical_precision(precision: Any) -> tuple[Any, Any] | None:
    """``precision`` as lax's hashable ``(lhs, rhs)`` pair, validated now, not at trace time."""
    if precision is None:
        return None
    try:
        if isinstance(precision, tuple | list) and len(precision) == 2:
            return (_precision_value(precision[0]), _precision_value(precision[1]))
        p = _precision_value(precision)
        return (p, p)
    except ValueError:
        raise ValueError(
            "`precision` must be None, a jax.lax.Precision, a name lax accepts ('default', "
            f"'high', 'highest', 'fastest', 'float32', ...) or a pair of them, got {precision!r}"
        ) from None


_DTYPE_KINDS = (
    ("bool", np.bool_),
    ("integer", np.integer),
    ("floating", np.floating),
    ("complex", np.complexfloating),
)


def _kind(dtype: np.dtype) -> str | None:
    return next((k for k, t in _DTYPE_KINDS if jax.dtypes.issubdtype(dtype, t)), None)


def canonical_preferred(preferred_element_type: Any, dtype: Any) -> np.dtype | None:
    """``preferred_element_type`` for inputs of ``dtype``, checked by lax's own rule, now.

    As ``lax.conv_general_dilated``: floating inputs take a floating dtype, complex inputs a
    complex one, integer inputs an integer (signed, for signed inputs) or floating one, bool
    inputs any; never narrower than the inputs. A 64-bit request without x64 is truncated
    to 32 bits with lax's warning.

    Raises:
      TypeError: ``preferred_element_type`` is not a dtype, or not one of the above.
    """
    if preferred_element_type is None:
        return None
    try:
        pref = np.dtype(preferred_element_type)
    except TypeError:
        raise TypeError(
            f"`preferred_element_type` must be None or a dtype, got {preferred_element_type!r}"
        ) from None
    canonical = np.dtype(jax.dtypes.canonicalize_dtype(pref))
    if canonical != pref:
        warnings.warn(
            f"Explicitly requested dtype {pref.name} requested in preferred_element_type is "
            f"not available, and will be truncated to dtype {canonical.name} (jax_enable_x64 "
            "is off)",
            UserWarning,
            stacklevel=4,
        )
        pref = canonical
    inp = np.dtype(dtype)
    kind, pkind = _kind(inp), _kind(pref)
    allowed = {
        "bool": ("bool", "integer", "floating", "complex"),
        "integer": ("integer", "floating"),
        "floating": ("floating",),
        "complex": ("complex",),
    }[kind or "floating"]
    signed = jax.dtypes.issubdtype(inp, np.signedinteger)
    unsigned_for_signed = pkind == "integer" and signed and pref.kind == "u"
    if pkind not in allowed or unsigned_for_signed or pref.itemsize < inp.itemsize:
        words = " or ".join(("signed integer" if k == "integer" and signed else k) for k in allowed)
        raise TypeError(
            f"`preferred_element_type` must be None or a {words} dtype at least as wide as the "
            f"inputs' {inp.name} (lax's rule), got {pref.name}"
        )
    return pref


def check_conv_arrays(x: Any, w: Any, bias: Any, *, x_name: str = "x", w_name: str = "w") -> int:
    """Dtype and rank checks shared by conv and conv_transpose; returns the spatial rank."""
    check_float_array(x, x_name)
    check_float_array(w, w_name)
    check_same_dtype([(x_name, x), (w_name, w)])
    if bias is not None:
        check_float_array(bias, "bias")
        check_same_dtype([(x_name, x), ("bias", bias)])
    wnd = len(np.shape(w))
    if wnd < 3:
        raise ValueError(
            f"`{w_name}` must have ndim >= 3 (two channel axes and at least one spatial "
            f"axis), got shape {tuple(np.shape(w))}"
        )
    if len(np.shape(x)) != wnd:
        raise ValueError(
            f"`{x_name}` must have ndim {wnd} to match `{w_name}` (batch, channel and "
            f"{wnd - 2} spatial axes), got shape {tuple(np.shape(x))}"
        )
    return wnd - 2


def check_bias(bias_shape: Sequence[int] | None, c_out: int) -> None:
    """``bias`` is ``None`` or has shape ``(C_out,)``."""
    if bias_shape is not None and tuple(bias_shape) != (c_out,):
        raise ValueError(
            f"`bias` must have shape (C_out,) = ({c_out},) or be None, got shape "
            f"{tuple(bias_shape)}"
        )


def split_shapes(
    x_shape: Sequence[int], w_shape: Sequence[int], channels_last: bool
) -> tuple[int, int, tuple[int, ...], int, int, tuple[int, ...]]:
    """``(N, C_in, spatial, C_out, C_in_per_group, kernel)`` from the user's layout."""
    if channels_last:
        n, *spatial, c_in = x_shape
        *kernel, c_in_g, c_out = w_shape
    else:
        n, c_in, *spatial = x_shape
        c_out, c_in_g, *kernel = w_shape
    return n, c_in, tuple(spatial), c_out, c_in_g, tuple(kernel)


def check_groups(
    groups: Any, c_in: int, c_in_g: int, c_out: int, *, x_name: str = "x", w_name: str = "w"
) -> int:
    groups = check_int(groups, "groups", minimum=1)
    if c_in % groups:
        raise ValueError(
            f"`groups` must divide the input channels of `{x_name}` ({c_in}), got {groups}"
        )
    if c_out % groups:
        raise ValueError(
            f"`groups` must divide the output channels of `{w_name}` ({c_out}), got {groups}"
        )
    if c_in_g * groups != c_in:
        raise ValueError(
            f"`{w_name}` must have C_in // groups = {c_in} // {groups} = {c_in // groups} input "
            f"channels to match `{x_name}`, got {c_in_g}"
        )
    return groups


def conv_config(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    *,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: Any,
    flip: Any,
    channels_last: Any,
    method: str = "direct",
    precision: Any = None,
    preferred_element_type: Any = None,
    dtype: Any = None,
    bias_shape: Sequence[int] | None = None,
    padding_mode: str = "zeros",
    x_name: str = "x",
    w_name: str = "w",
) -> tuple[ConvConfig, Pairs]:
    """Validate ``conv``-style arguments; returns the config and the resolved padding pairs.

    ``method`` must already be checked (the method registry does it); every other argument
    is checked here, once, with the caller's own argument names in the messages.
    ``dtype`` (the inputs' dtype) is needed only with a ``preferred_element_type``.
    """
    nd = len(w_shape) - 2
    flip = check_bool(flip, "flip")
    channels_last = check_bool(channels_last, "channels_last")
    n, c_in, spatial, c_out, c_in_g, kernel = split_shapes(x_shape, w_shape, channels_last)
    strides = normalize_tuple(stride, nd, "stride", minimum=1)
    dilations = normalize_tuple(dilation, nd, "dilation", minimum=1)
    groups = check_groups(groups, c_in, c_in_g, c_out, x_name=x_name, w_name=w_name)
    if any(k < 1 for k in kernel):
        raise ValueError(
            f"`{w_name}` must have every spatial size >= 1, got shape {tuple(w_shape)}"
        )
    check_bias(bias_shape, c_out)
    pairs = resolve_padding(padding, spatial, kernel, strides, dilations)
    check_mode_padding(padding_mode, pairs, spatial)
    check_kernel_fits(spatial, kernel, pairs, dilations, kernel_name=w_name)
    cfg = ConvConfig(
        window_strides=strides,
        padding=pairs,
        lhs_dilation=(1,) * nd,
        rhs_dilation=dilations,
        dimension_numbers=layout_numbers(nd, bool(channels_last)),
        feature_group_count=groups,
        flip=bool(flip),
        precision=canonical_precision(precision),
        preferred_element_type=canonical_preferred(preferred_element_type, dtype),
        method=method,
    )
    return cfg, pairs


def output_shape(
    x_shape: Sequence[int], w_shape: Sequence[int], cfg: ConvConfig
) -> tuple[int, ...]:
    """Full output shape (in the config's layout) of the convolution ``cfg`` describes."""
    lhs_spec, rhs_spec, out_spec = cfg.dimension_numbers
    spatial = [x_shape[d] for d in lhs_spec[2:]]
    kernel = [w_shape[d] for d in rhs_spec[2:]]
    out_sp = [
        conv_output_size(i, k, s, p, d, ld)
        for i, k, s, p, d, ld in zip(
            spatial,
            kernel,
            cfg.window_strides,
            cfg.padding,
            cfg.rhs_dilation,
            cfg.lhs_dilation,
            strict=True,
        )
    ]
    out = [0] * len(x_shape)
    out[out_spec[0]] = x_shape[lhs_spec[0]] // cfg.batch_group_count
    out[out_spec[1]] = w_shape[rhs_spec[0]]
    for d, size in zip(out_spec[2:], out_sp, strict=True):
        out[d] = size
    return tuple(out)
