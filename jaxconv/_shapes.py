"""Pure-int shape and padding arithmetic: plain ints in, plain ints out, no arrays.

The lecture's output size ``W2 = (W1 - F + 2P) / S + 1`` generalised to asymmetric padding
``(lo, hi)``, kernel dilation ``D`` (the kernel spans ``D(F-1)+1`` cells) and input
dilation (``lhs_dilation``, which spreads the input to ``L(W1-1)+1`` cells)::

    W2 = floor((L(W1-1)+1 + lo + hi - (D(F-1)+1)) / S) + 1

Also here: what ``"SAME"``/``"SAME_LOWER"``/``"FULL"`` resolve to, and the paddings of the two
gradient convolutions (JAX keeps the same arithmetic in ``_conv_general_vjp_*_padding``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._checks import check_choice, check_shape, normalize_pairs, normalize_tuple

__all__ = [
    "PADDING_STRINGS",
    "channel_shape",
    "conv_output_shape",
    "conv_output_size",
    "conv_transpose_output_size",
    "dilate_dim",
    "padding_pairs",
    "resolve_padding",
    "same_padding",
    "vjp_lhs_padding",
    "vjp_rhs_padding",
]

PADDING_STRINGS = ("VALID", "SAME", "SAME_LOWER", "FULL")

Pairs = tuple[tuple[int, int], ...]


def dilate_dim(size: int, dilation: int) -> int:
    """Cells spanned by ``size`` taps spread ``dilation`` apart: ``D(size-1)+1`` (0 stays 0)."""
    return 0 if size == 0 else 1 + dilation * (size - 1)


def channel_shape(ndim: int, axis: int, channels: int) -> tuple[int, ...]:
    """The shape that broadcasts a ``(channels,)`` vector along ``axis`` of an ``ndim`` array."""
    return tuple(channels if d == axis else 1 for d in range(ndim))


def conv_output_size(
    size: int, kernel: int, stride: int, pad: tuple[int, int], dilation: int, lhs_dilation: int = 1
) -> int:
    """Output length of one spatial dimension (0 when the kernel does not fit)."""
    span = dilate_dim(size, lhs_dilation) + pad[0] + pad[1] - dilate_dim(kernel, dilation)
    return 0 if span < 0 else span // stride + 1


def same_padding(
    size: int, kernel_span: int, stride: int, *, lower: bool = False
) -> tuple[int, int]:
    """XLA/TensorFlow ``SAME``: output ``ceil(size / stride)``; the odd cell goes high
    (``lower=False``) or low (``lower=True``, ONNX's ``SAME_LOWER``)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel_span - size, 0)
    small, big = total // 2, total - total // 2
    return (big, small) if lower else (small, big)


def resolve_padding(
    padding: Any,
    input_shape: Sequence[int],
    kernel_shape: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    name: str = "padding",
) -> Pairs:
    """:func:`padding_pairs` for already-normalised ``stride`` and ``dilation`` tuples."""
    n = len(kernel_shape)
    if isinstance(padding, str):
        mode = padding.upper()
        check_choice(mode, name, PADDING_STRINGS + tuple(p.lower() for p in PADDING_STRINGS))
        spans = [dilate_dim(k, d) for k, d in zip(kernel_shape, dilation, strict=True)]
        if mode == "VALID":
            return ((0, 0),) * n
        if mode == "FULL":
            return tuple((s - 1, s - 1) for s in spans)
        lower = mode == "SAME_LOWER"
        return tuple(
            same_padding(i, s, st, lower=lower)
            for i, s, st in zip(input_shape, spans, stride, strict=True)
        )
    return normalize_pairs(padding, n, name)


def padding_pairs(
    padding: Any,
    input_shape: Sequence[int],
    kernel_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
) -> tuple[tuple[int, int], ...]:
    """The explicit ``(low, high)`` zero-padding pairs any ``padding`` form resolves to.

    Args:
      padding: an int, one int per spatial dim, one ``(low, high)`` pair per spatial dim,
        or one of ``"VALID"``, ``"SAME"`` (output ``ceil(input / stride)``, odd extra cell at
        the high end, as XLA and TensorFlow), ``"SAME_LOWER"`` (odd extra cell at the low
        end) and ``"FULL"`` (``D(K-1)`` on both sides: the lecture's full convolution).
      input_shape: spatial input sizes ``(*spatial,)`` (no batch or channel axes).
      kernel_shape: spatial kernel sizes ``(*kernel,)``.
      stride: int or one int per spatial dim, each >= 1.
      dilation: int or one int per spatial dim, each >= 1.

    Returns:
      One ``(low, high)`` pair per spatial dimension.

    Raises:
      TypeError: a shape that is not a sequence of ints, a non-integer pad, stride or dilation.
      ValueError: an unknown padding string, a negative pad or size, a kernel size below 1,
        a sequence of the wrong length.

    >>> padding_pairs("SAME", (5,), (4,), stride=2)   # PyTorch's padding="same" refuses stride 2
    ((1, 2),)
    >>> padding_pairs("SAME", (4,), (2,)), padding_pairs("SAME_LOWER", (4,), (2,))
    (((0, 1),), ((1, 0),))
    """
    input_shape, kernel_shape, strides, dilations = _checked_geometry(
        input_shape, kernel_shape, stride, dilation
    )
    return resolve_padding(padding, input_shape, kernel_shape, strides, dilations)


def _checked_geometry(
    input_shape: Any, kernel_shape: Any, stride: Any, dilation: Any
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The public shape functions' arguments, checked: sizes >= 0, kernel sizes >= 1."""
    input_shape = check_shape(input_shape, "input_shape")
    kernel_shape = check_shape(kernel_shape, "kernel_shape", minimum=1)
    n = len(kernel_shape)
    if len(input_shape) != n:
        raise ValueError(
            f"`input_shape` must have one size per kernel dimension ({n}), got {input_shape}"
        )
    strides = normalize_tuple(stride, n, "stride", minimum=1)
    dilations = normalize_tuple(dilation, n, "dilation", minimum=1)
    return input_shape, kernel_shape, strides, dilations


def conv_output_shape(
    input_shape: Sequence[int],
    kernel_shape: Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: Any = 0,
    dilation: int | Sequence[int] = 1,
) -> tuple[int, ...]:
    """Spatial output sizes of a convolution: ``W2 = (W1 - D(F-1) - 1 + lo + hi) // S + 1``.

    Args:
      input_shape: spatial input sizes ``(*spatial,)``.
      kernel_shape: spatial kernel sizes ``(*kernel,)``.
      stride, padding, dilation: as in :func:`jaxconv.conv`.

    Returns:
      The spatial output sizes ``(*spatial_out,)``.

    Raises:
      TypeError: a shape that is not a sequence of ints, a non-integer pad, stride or dilation.
      ValueError: a negative size or pad, a kernel size below 1, or a (dilated) kernel
        larger than the padded input (:func:`jaxconv.conv` refuses an empty output).

    The lecture's example: a 32x32 image and 5x5 filters, stride 1, no padding.

    >>> conv_output_shape((32, 32), (5, 5))
    (28, 28)
    """
    input_shape, kernel_shape, strides, dilations = _checked_geometry(
        input_shape, kernel_shape, stride, dilation
    )
    pairs = resolve_padding(padding, input_shape, kernel_shape, strides, dilations)
    check_kernel_fits(input_shape, kernel_shape, pairs, dilations, kernel_name="kernel_shape")
    return tuple(
        conv_output_size(i, k, s, p, d)
        for i, k, s, p, d in zip(input_shape, kernel_shape, strides, pairs, dilations, strict=True)
    )


def check_kernel_fits(
    input_shape: Sequence[int],
    kernel_shape: Sequence[int],
    pairs: Pairs,
    dilation: Sequence[int],
    lhs_dilation: Sequence[int] | None = None,
    *,
    kernel_name: str = "w",
    dilation_name: str = "dilation",
) -> None:
    """Raise ``ValueError`` when a dilated kernel is larger than the padded input: ``conv``'s
    PyTorch rule (the message names the kernel and dilation arguments as the caller spelled
    them, and points to ``conv_general_dilated``, which returns lax's empty output)."""
    lhs_dilation = lhs_dilation or (1,) * len(kernel_shape)
    for i, k, (lo, hi), d, ld in zip(
        input_shape, kernel_shape, pairs, dilation, lhs_dilation, strict=True
    ):
        padded = dilate_dim(i, ld) + lo + hi
        if dilate_dim(k, d) > padded:
            spans = tuple(map(dilate_dim, kernel_shape, dilation))
            padded_shape = tuple(
                dilate_dim(ii, ll) + p + q
                for ii, ll, (p, q) in zip(input_shape, lhs_dilation, pairs, strict=True)
            )
            raise ValueError(
                "the dilated kernel must fit in the padded input in every spatial dimension: "
                f"`{kernel_name}` spatial shape {tuple(kernel_shape)} with `{dilation_name}` "
                f"{tuple(dilation)} spans {spans}, but the padded input is {padded_shape} "
                "(conv refuses an empty output, as PyTorch does; "
                "jaxconv.conv_general_dilated follows lax and returns one)"
            )


def conv_transpose_output_size(
    size: int, kernel: int, stride: int, pad: tuple[int, int], dilation: int, output_padding: int
) -> int:
    """PyTorch's transposed-convolution length ``(L-1)S - lo - hi + D(K-1) + out_pad + 1``."""
    return (size - 1) * stride - pad[0] - pad[1] + dilate_dim(kernel, dilation) + output_padding


def vjp_lhs_padding(
    in_shape: Sequence[int],
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    out_shape: Sequence[int],
    padding: Pairs,
    lhs_dilation: Sequence[int],
    rhs_dilation: Sequence[int],
) -> Pairs:
    """Padding of the input-gradient convolution (``dY`` dilated by the stride, flipped kernel).

    A pixel at padded position ``q`` is touched by output ``i`` through tap ``a`` when
    ``q = S*i + D*a``; correlating the stride-dilated ``dY`` with the flipped kernel needs
    ``D(K-1) - lo`` cells before it and whatever makes the result exactly as long as the input.
    """
    pairs = []
    for i, k, s, o, (lo, _), ld, d in zip(
        in_shape, kernel_shape, strides, out_shape, padding, lhs_dilation, rhs_dilation, strict=True
    ):
        before = dilate_dim(k, d) - lo - 1
        after = dilate_dim(i, ld) + dilate_dim(k, d) - 1 - dilate_dim(o, s) - before
        pairs.append((before, after))
    return tuple(pairs)


def vjp_rhs_padding(
    in_shape: Sequence[int],
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    out_shape: Sequence[int],
    padding: Pairs,
    lhs_dilation: Sequence[int],
    rhs_dilation: Sequence[int],
) -> Pairs:
    """Padding of the weight-gradient convolution (``X`` correlated with stride-dilated ``dY``).

    Keeps the forward's low pad; the high pad (possibly negative: a crop) drops the input
    cells no window reached, so the result is exactly as long as the kernel.
    """
    pairs = []
    for i, k, s, o, (lo, _), ld, d in zip(
        in_shape, kernel_shape, strides, out_shape, padding, lhs_dilation, rhs_dilation, strict=True
    ):
        hi = dilate_dim(o, s) - dilate_dim(i, ld) + dilate_dim(k, d) - lo - 1
        pairs.append((lo, hi))
    return tuple(pairs)
