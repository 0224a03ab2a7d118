"""``jaxconv.conv_general_dilated``: a drop-in for ``jax.lax.conv_general_dilated`` with the
hand-derived VJP, so Flax's ``Conv(..., conv_general_dilated=...)`` trains through it.

A drop-in accepts what ``lax`` accepts: empty outputs (with zero gradients), 0-D
convolutions (no spatial axes: a dot product), complex dtypes (the same two rules, with
transposes and no conjugates: JAX's VJP convention), integer and bool inputs (forward only:
``lax``'s own op, whose gradients are ``float0``) and ``out_sharding``.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from .._checks import check_int, check_numeric_array, check_same_dtype, normalize_tuple
from .._shapes import dilate_dim, resolve_padding
from ._config import ConvConfig, canonical_precision, canonical_preferred
from .methods.direct import conv_forward, direct_conv

__all__ = ["conv_general_dilated"]


def _check_out_sharding(out_sharding: Any) -> Any:
    """``out_sharding`` as lax takes it: ``None``, a ``NamedSharding``, or a
    ``PartitionSpec`` under a mesh context (``jax.set_mesh``)."""
    from jax.sharding import NamedSharding, PartitionSpec

    if out_sharding is None:
        return None
    if isinstance(out_sharding, NamedSharding):
        return None if out_sharding.mesh.empty else out_sharding  # lax: an empty mesh is None
    if isinstance(out_sharding, PartitionSpec):
        get_mesh = getattr(jax.sharding, "get_abstract_mesh", None)
        if get_mesh is not None and get_mesh().empty:
            raise ValueError(
                "`out_sharding` given as a PartitionSpec needs a mesh context (`jax.set_mesh`), "
                f"as in lax; pass a NamedSharding otherwise, got {out_sharding!r}"
            )
        return out_sharding
    raise TypeError(
        "`out_sharding` must be None, a jax.sharding.NamedSharding or a PartitionSpec (under "
        f"`jax.set_mesh`), as in lax, got {out_sharding!r}"
    )


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
    dimension numbers, feature and batch groups, any number of spatial axes (none: a dot
    product), empty outputs (a kernel larger than the padded input, padding that crops the
    whole input, zero-size axes: an empty array and zero gradients, as ``lax``), floating and
    complex dtypes (complex gradients follow JAX's convention: transposes, no conjugates),
    and integer and bool inputs, which are ``lax``'s own op (no gradient to derive: JAX
    gives ``float0``).

    Args:
      lhs: input, laid out as ``dimension_numbers[0]`` says (default ``NCHW``-style).
      rhs: kernel, laid out as ``dimension_numbers[1]`` says (default ``OIHW``-style).
      window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision: as in
        ``jax.lax.conv_general_dilated``.
      preferred_element_type: ``None`` or the output dtype, checked with lax's rule
        (floating inputs: floating; complex: complex; integer: integer of the same
        signedness, or floating; bool: any; never narrower than the inputs).
      out_sharding: ``None``, a ``NamedSharding``, or a ``PartitionSpec`` under a mesh
        context: the output's sharding, passed to ``lax`` as is; under a mesh the two
        gradients get their operands' shardings, as ``lax``'s transpose rules give them.

    Returns:
      The convolution, laid out as ``dimension_numbers[2]`` says.

    Raises:
      TypeError, ValueError: bad arguments, before anything is traced; also a zero-size
        kernel spatial axis, which ``lax`` only rejects while lowering.

    ``jax.jvp`` of this function itself is refused by JAX (it is a ``custom_vjp``), as for
    :func:`jaxconv.conv`; ``jax.hessian`` and ``jax.jvp`` of ``jax.grad`` work.

    >>> import jax.numpy as jnp
    >>> x, k = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 5))
    >>> dn = ("NHWC", "HWIO", "NHWC")
    >>> conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dn).shape
    (1, 4, 4, 5)
    >>> conv_general_dilated(x, k, (1, 1), [(-2, -2), (0, 0)], dimension_numbers=dn).shape  # empty
    (1, 0, 2, 5)
    """
    out_sharding = _check_out_sharding(out_sharding)
    dtype = check_numeric_array(lhs, "lhs")
    check_numeric_array(rhs, "rhs")
    check_same_dtype([("lhs", lhs), ("rhs", rhs)])
    lhs, rhs = jnp.asarray(lhs), jnp.asarray(rhs)
    if lhs.ndim != rhs.ndim or lhs.ndim < 2:
        raise ValueError(
            "`lhs` and `rhs` must have the same ndim (>= 2: batch and feature axes, then any "
            f"number of spatial axes), got shapes {lhs.shape} and {rhs.shape}"
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
    if any(k == 0 for k in kernel):
        raise ValueError(
            "`rhs` must have every spatial size >= 1 (lax fails on a zero-size window while "
            f"lowering), got spatial shape {kernel} of shape {rhs.shape}"
        )
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
    if any(p < 0 for p in padded):  # lax's rule; a padded size of 0 gives an empty output
        raise ValueError(f"`padding` {pairs} crops more than the whole input {spatial}")
    cfg = ConvConfig(
        window_strides=strides,
        padding=pairs,
        lhs_dilation=lhs_dil,
        rhs_dilation=rhs_dil,
        dimension_numbers=dnums,
        feature_group_count=fgc,
        batch_group_count=bgc,
        precision=canonical_precision(precision),
        preferred_element_type=canonical_preferred(preferred_element_type, dtype),
    )
    cfg = dataclasses.replace(cfg, out_sharding=out_sharding)
    if jnp.issubdtype(dtype, jnp.inexact):
        return direct_conv(lhs, rhs, None, cfg)
    # Integers and bools: lax's op itself (JAX differentiates it to float0).
    return conv_forward(lhs, rhs, None, cfg)
