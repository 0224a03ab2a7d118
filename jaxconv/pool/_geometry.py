"""Pooling window arithmetic and the frozen geometries: plain ints in, plain ints out.

One spatial dimension at a time, with PyTorch's conventions. For an input of length ``L``,
window ``k``, stride ``s``, symmetric padding ``p`` and dilation ``d``, output ``o`` reads the
input positions ``o*s + a*d - p`` for window offsets ``a = 0 .. k-1`` (positions outside
``[0, L)`` are implicit padding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "AdaptiveGeometry",
    "PoolGeometry",
    "adaptive_bounds",
    "adaptive_inverse",
    "adaptive_sizes",
    "adaptive_window",
    "avg_divisors",
    "ceil_div",
    "first_valid_offsets",
    "read_positions",
    "offset_phase",
    "phase_length",
    "pool_extent",
    "pool_output_size",
    "regular_geometry",
    "spatial_axes",
]


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for ints (``b > 0``), without going through floats."""
    return -(-a // b)


def pool_output_size(
    length: int, window: int, stride: int, padding: int, dilation: int, ceil_mode: bool
) -> int:
    """Number of windows along one dimension (PyTorch's ``pooling_output_shape``).

    ``floor`` (or ``ceil``) of ``(L + 2p - d*(k-1) - 1) / s`` plus one; in ``ceil_mode`` a last
    window that would start inside the right padding is dropped. May return ``<= 0`` when the
    input is too small; callers turn that into an error.
    """
    numerator = length + 2 * padding - dilation * (window - 1) - 1
    if ceil_mode:
        numerator += stride - 1
    out = numerator // stride + 1  # Python floor division, as PyTorch's div_rtn
    if ceil_mode and (out - 1) * stride >= length + padding:
        out -= 1
    return out


def pool_extent(out: int, window: int, stride: int, dilation: int) -> int:
    """Length of padded input the ``out`` windows read: ``(out-1)*s + (k-1)*d + 1``."""
    return (out - 1) * stride + (window - 1) * dilation + 1


def offset_phase(offset: int, stride: int, dilation: int, padding: int = 0) -> tuple[int, int]:
    """``(r, u)`` with ``offset*d - p = u*s + r`` and ``0 <= r < s`` (``u`` may be negative).

    Window offset ``a`` of output ``o`` lands on input position ``(o + u)*s + r``: stride
    phase ``r``, at phase index ``o + u`` (``u < 0``: the first outputs' offset ``a`` lies in
    the padding). The backward works per phase at output resolution.
    """
    u, r = divmod(offset * dilation - padding, stride)
    return r, u


def phase_length(length: int, stride: int) -> int:
    """Entries per stride phase covering ``length`` positions: ``ceil(length / s)``."""
    return ceil_div(length, stride)


def avg_divisors(
    length: int,
    out: int,
    window: int,
    stride: int,
    padding: int,
    count_include_pad: bool,
) -> tuple[int, ...]:
    """Per-output window size along one dimension, as PyTorch's ``avg_pool`` counts it.

    ``start = o*s - p``, ``end = min(start + k, L + p)``: padding counts when
    ``count_include_pad``, but the part of a ``ceil_mode`` window beyond the right padding
    never does; otherwise only the positions inside ``[0, L)`` count. The divisor of an
    N-d window is the product over dimensions.
    """
    sizes = []
    for o in range(out):
        start = o * stride - padding
        end = min(start + window, length + padding)
        if count_include_pad:
            sizes.append(end - start)
        else:
            sizes.append(min(end, length) - max(start, 0))
    return tuple(sizes)


def first_valid_offsets(
    length: int, out: int, window: int, stride: int, padding: int, dilation: int
) -> tuple[int, ...]:
    """Per output, the first window offset ``a`` whose position lies inside ``[0, L)`` (or -1).

    PyTorch's max pool starts each window's argmax there, so a window whose real entries are
    all ``-inf`` routes its gradient to this position, never into the padding.
    """
    firsts = []
    for o in range(out):
        first = -1
        for a in range(window):
            if 0 <= o * stride + a * dilation - padding < length:
                first = a
                break
        firsts.append(first)
    return tuple(firsts)


def read_positions(
    length: int, out: int, window: int, stride: int, padding: int, dilation: int
) -> tuple[bool, ...]:
    """Per input position ``l``, whether some window reads it: ``l = o*s + a*d - p`` for an
    output ``o < out`` and an offset ``a < k``.

    Positions read by no window (past the last window in floor mode, or between windows
    when ``s > d*(k-1) + 1``) have a zero gradient, whatever their value.
    """
    read = [False] * length
    for o in range(out):
        for a in range(window):
            q = o * stride + a * dilation - padding
            if 0 <= q < length:
                read[q] = True
    return tuple(read)


def adaptive_bounds(length: int, out: int) -> tuple[tuple[int, int], ...]:
    """PyTorch's adaptive windows: ``[floor(i*L/out), ceil((i+1)*L/out))`` for each output."""
    return tuple(((i * length) // out, ceil_div((i + 1) * length, out)) for i in range(out))


def adaptive_sizes(length: int, out: int) -> tuple[int, ...]:
    """Length of each adaptive window (they differ by at most one, and may overlap)."""
    return tuple(end - start for start, end in adaptive_bounds(length, out))


def adaptive_inverse(length: int, out: int) -> tuple[tuple[int, ...], ...]:
    """For each input position, the flat ``o*kmax + a`` indices of the adaptive windows reading it.

    ``kmax`` is the widest window; rows are padded with the sentinel ``out*kmax`` (one past
    the end) to a common length, so the backward gathers instead of scattering.
    """
    bounds = adaptive_bounds(length, out)
    kmax = adaptive_window(length, out)
    readers: list[list[int]] = [[] for _ in range(length)]
    for o, (start, end) in enumerate(bounds):
        for a in range(end - start):
            readers[start + a].append(o * kmax + a)
    width = max(len(r) for r in readers)
    sentinel = out * kmax
    return tuple(tuple(r + [sentinel] * (width - len(r))) for r in readers)


def adaptive_window(length: int, out: int) -> int:
    """Widest adaptive window along one dimension."""
    return max(adaptive_sizes(length, out))


@dataclass(frozen=True)
class PoolGeometry:
    """Static geometry of a windowed pool, one entry per spatial dimension (hashable).

    Attributes:
      in_size: input spatial lengths ``L``.
      window, stride, padding, dilation: per-dimension ``k``, ``s``, ``p``, ``d``.
      ceil_mode: PyTorch's ``ceil_mode``.
      channels_last: layout of the array, ``(N, *spatial, C)`` if true else ``(N, C, *spatial)``.
      out_size: number of windows per dimension (derived, stored so it is computed once).
    """

    in_size: tuple[int, ...]
    window: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    ceil_mode: bool
    channels_last: bool
    out_size: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.in_size)

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        return spatial_axes(self.rank, self.channels_last)

    @property
    def extent(self) -> tuple[int, ...]:
        """Padded length the windows read, per dimension (low padding included)."""
        return tuple(
            pool_extent(o, k, s, d)
            for o, k, s, d in zip(
                self.out_size, self.window, self.stride, self.dilation, strict=True
            )
        )

    @property
    def high_padding(self) -> tuple[int, ...]:
        """Right padding that makes the input exactly ``extent`` long (negative: crop)."""
        return tuple(
            e - n - p for e, n, p in zip(self.extent, self.in_size, self.padding, strict=True)
        )

    @property
    def num_offsets(self) -> int:
        return math.prod(self.window)

    @property
    def per_dim(self) -> tuple[tuple[int, int, int, int, int, int], ...]:
        """``(L, out, k, s, p, d)`` per spatial dimension: the arguments of the per-axis
        functions above (:func:`read_positions`, :func:`first_valid_offsets`)."""
        return tuple(
            zip(
                self.in_size,
                self.out_size,
                self.window,
                self.stride,
                self.padding,
                self.dilation,
                strict=True,
            )
        )

    @property
    def non_overlapping(self) -> bool:
        """Windows tile the padded input exactly once: ``s == k`` and ``d == 1`` everywhere."""
        return all(s == k for s, k in zip(self.stride, self.window, strict=True)) and all(
            d == 1 for d in self.dilation
        )


@dataclass(frozen=True)
class AdaptiveGeometry:
    """Static geometry of an adaptive pool: input and output spatial lengths, and layout."""

    in_size: tuple[int, ...]
    out_size: tuple[int, ...]
    channels_last: bool

    @property
    def rank(self) -> int:
        return len(self.in_size)

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        return spatial_axes(self.rank, self.channels_last)

    @property
    def window(self) -> tuple[int, ...]:
        """Widest window per dimension."""
        return tuple(
            adaptive_window(n, o) for n, o in zip(self.in_size, self.out_size, strict=True)
        )


def regular_geometry(geom: AdaptiveGeometry) -> PoolGeometry | None:
    """The regular pool ``k = s = L / out`` (no padding) equal to ``geom``, if ``out`` divides
    every ``L``; then ``adaptive_bounds`` are exactly its windows. Else ``None``."""
    if any(n % o for n, o in zip(geom.in_size, geom.out_size, strict=True)):
        return None
    window = tuple(n // o for n, o in zip(geom.in_size, geom.out_size, strict=True))
    return PoolGeometry(
        in_size=geom.in_size,
        window=window,
        stride=window,
        padding=(0,) * geom.rank,
        dilation=(1,) * geom.rank,
        ceil_mode=False,
        channels_last=geom.channels_last,
        out_size=geom.out_size,
    )


def spatial_axes(rank: int, channels_last: bool) -> tuple[int, ...]:
    """Axes of the spatial dimensions in ``(N, C, *spatial)`` or ``(N, *spatial, C)``."""
    first = 1 if channels_last else 2
    return tuple(range(first, first + rank))
