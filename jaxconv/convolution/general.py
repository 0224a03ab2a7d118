"""``jaxconv.conv_general_dilated``: a drop-in for ``jax.lax.conv_general_dilated`` with the
hand-derived VJP, so Flax's ``Conv(..., conv_general_dilated=...)`` trains through it."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from .._checks import check_float_array, check_int, check_same_dtype, normalize_tuple
from .._shapes import check_kernel_fits, dilate_dim, resolve_padding
from ._config import ConvConfig, canonical_precision, canonical_preferred
from .methods.direct import direct_conv

__all__ = ["conv_general_dilated"]


def _pairs(padding: Any, n: int) -> tuple[tuple[int, int], ...]:
    try:
        pairs = tuple((operator.index(lo), operator.index(hi)) for lo, hi in padding)
    except (TypeError, ValueError):
        raise TypeError(
            "`padding` must be 'SAME', 'SAME_LOWER', 'VALID' or a sequence of (low, high) "
            f"int pairs, got {padding!r}"
        ) from None
    if len(pairs) != n:
        raise ValueError(
            f"`padding` must have one (low, high) pair per spatial dimension ({n}), got {padding!r}"
        )
    return pairs


def conv_general_dilated(
    lhs: ArrayLike,
    rhs: ArrayLike,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision: Any = None,
    preferred_element_type: Any = None,
    out_sharding: Any = None,
) -> jax.Array:
    """``jax.lax.conv_general_dilated`` with jaxconv's hand-derived VJP.

    Same signature, same results (values and gradients) as the ``lax`` function: string
    padding (``'SAME'``, ``'SAME_LOWER'``, ``'VALID'``, resolved as ``lax`` does, i.e. on the
    undilated input), explicit (possibly negative) ``(low, high)`` pairs, ``lhs_dilation``
    (transposed convolutions), ``rhs_dilation``, string-tuple or ``ConvDimensionNumbers``
    dimension numbers, feature and batch groups.

    Args:
      lhs: input, laid out as ``dimension_numbers[0]`` says (default ``NCHW``-style).
      rhs: kernel, laid out as ``dimension_numbers[1]`` says (default ``OIHW``-style).
      window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type: as in
        ``jax.lax.conv_general_dilated``.
      out_sharding: must be ``None`` (Flax passes ``None``).

    Returns:
      The convolution, laid out as ``dimension_numbers[2]`` says.

    Raises:
      TypeError, ValueError: bad arguments, before anything is traced.
      NotImplementedError: ``out_sharding`` other than ``None``.

    >>> import jax.numpy as jnp
    >>> x, k = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 5))
    >>> conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")).shape
    (1, 4, 4, 5)
    """
    if out_sharding is not None:
        raise NotImplementedError(
            "`out_sharding` is not supported by jaxconv.conv_general_dilated (only None), "
            f"got {out_sharding!r}"
        )
    check_float_array(lhs, "lhs")
    check_float_array(rhs, "rhs")
    check_same_dtype([("lhs", lhs), ("rhs", rhs)])
    lhs, rhs = jnp.asarray(lhs), jnp.asarray(rhs)
    if lhs.ndim != rhs.ndim or lhs.ndim < 3:
        raise ValueError(
            "`lhs` and `rhs` must have the same ndim (>= 3: batch, feature and spatial axes), "
            f"got shapes {lhs.shape} and {rhs.shape}"
        )
    n = lhs.ndim - 2
    try:
        dnums = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    except (TypeError, ValueError) as e:
        raise ValueError(f"`dimension_numbers` are not valid for these shapes: {e}") from None
    strides = normalize_tuple(window_strides, n, "window_strides", minimum=1)
    lhs_dil = normalize_tuple(lhs_dilation or 1, n, "lhs_dilation", minimum=1)
    rhs_dil = normalize_tuple(rhs_dilation or 1, n, "rhs_dilation", minimum=1)
    fgc = check_int(feature_group_count, "feature_group_count", minimum=1)
    bgc = check_int(batch_group_count, "batch_group_count", minimum=1)
    lhs_spec, rhs_spec, out_spec = dnums
    spatial = tuple(lhs.shape[d] for d in lhs_spec[2:])
    kernel = tuple(rhs.shape[d] for d in rhs_spec[2:])
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in ("SAME", "SAME_LOWER", "VALID"):
            raise ValueError(
                "`padding` must be 'SAME', 'SAME_LOWER', 'VALID' or (low, high) pairs, got "
                f"{padding!r}"
            )
        if any(d != 1 for d in lhs_dil):
            raise ValueError(
                "`padding` strings are not implemented with `lhs_dilation` (as in lax): pass "
                f"explicit (low, high) pairs, got padding={padding!r}, lhs_dilation={lhs_dil}"
            )
        pairs = resolve_padding(mode, spatial, kernel, strides, rhs_dil)
    else:
        pairs = _pairs(padding, n)
    c_in, c_out, k_in = lhs.shape[lhs_spec[1]], rhs.shape[rhs_spec[0]], rhs.shape[rhs_spec[1]]
    if fgc > 1 and bgc > 1:
        raise ValueError(
            "at most one of `feature_group_count` and `batch_group_count` may exceed 1, got "
            f"{fgc} and {bgc}"
        )
    if c_in % fgc or k_in * fgc != c_in:
        raise ValueError(
            f"`feature_group_count` ({fgc}) must divide the input features of `lhs` ({c_in}) "
            f"and `rhs` must have {c_in} // {fgc} input features, got {k_in}"
        )
    if c_out % fgc or c_out % bgc:
        raise ValueError(
            f"`rhs` output features ({c_out}) must be divisible by `feature_group_count` "
            f"({fgc}) and `batch_group_count` ({bgc})"
        )
    if lhs.shape[lhs_spec[0]] % bgc:
        raise ValueError(
            f"`batch_group_count` ({bgc}) must divide the batch size of `lhs` "
            f"({lhs.shape[lhs_spec[0]]})"
        )
    padded = [
        dilate_dim(i, ld) + lo + hi for i, ld, (lo, hi) in zip(spatial, lhs_dil, pairs, strict=True)
    ]
    if any(p < 0 for p in padded):
        raise ValueError(f"`padding` {pairs} crops more than the whole input {spatial}")
    check_kernel_fits(
        spatial, kernel, pairs, rhs_dil, lhs_dil, kernel_name="rhs", dilation_name="rhs_dilation"
    )
    cfg = ConvConfig(
        window_strides=strides,
        padding=pairs,
        lhs_dilation=lhs_dil,
        rhs_dilation=rhs_dil,
        dimension_numbers=dnums,
        feature_group_count=fgc,
        batch_group_count=bgc,
        precision=canonical_precision(precision),
        preferred_element_type=canonical_preferred(preferred_element_type),
    )
    return direct_conv(lhs, rhs, None, cfg)
