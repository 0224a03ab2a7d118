"""Pooling window arithmetic (pure ints) against brute-force enumeration of the windows.

About a private piece: ``jaxconv.pool._geometry``, the int arithmetic behind every pool's
output size, divisors, stride phases and adaptive windows.
"""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from jaxconv.pool._geometry import (
    AdaptiveGeometry,
    adaptive_bounds,
    adaptive_inverse,
    adaptive_sizes,
    avg_divisors,
    ceil_div,
    first_valid_offsets,
    offset_phase,
    phase_length,
    pool_extent,
    pool_output_size,
    read_positions,
    regular_geometry,
)


@st.composite
def dims(draw):
    """One spatial dim: window, dilation, stride, padding <= window // 2, length."""
    k = draw(st.integers(1, 5))
    d = draw(st.integers(1, 3))
    s = draw(st.integers(1, 4))
    p = draw(st.integers(0, k // 2))
    n = draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), 20))
    return n, k, s, p, d, draw(st.booleans())


def _brute_windows(n, k, s, p, d, ceil_mode):
    """Window starts (padded coordinates) PyTorch keeps: floor mode keeps windows that fit in
    the padded input; ceil mode also keeps a partial last window starting before ``L + p``."""
    eff = d * (k - 1) + 1
    starts = []
    o = 0
    while True:
        q = o * s
        fits = q + eff <= n + 2 * p
        # o <= ceil((L + 2p - eff) / s), and the window must start before the right padding
        partial = q < n + 2 * p - eff + s and q < n + p
        if fits or (ceil_mode and partial):
            starts.append(q)
            o += 1
        else:
            return starts


@given(dims())
def test_output_size_counts_the_windows(dim):
    n, k, s, p, d, ceil_mode = dim
    assert pool_output_size(n, k, s, p, d, ceil_mode) == len(
        _brute_windows(n, k, s, p, d, ceil_mode)
    )


@given(dims())
def test_extent_and_phases_cover_every_window(dim):
    n, k, s, p, d, ceil_mode = dim
    out = pool_output_size(n, k, s, p, d, ceil_mode)
    extent = pool_extent(out, k, s, d)
    last = (out - 1) * s + (k - 1) * d  # last padded position read
    assert extent == last + 1
    assert extent <= n + 2 * p + s - 1  # ceil mode overhangs by less than one stride
    t = phase_length(n, s)
    assert (t - 1) * s < n <= t * s
    for a in range(k):
        r, u = offset_phase(a, s, d, p)
        assert 0 <= r < s and u * s + r == a * d - p
        # output o's offset a lands on input position (o + u)*s + r: phase r, index o + u
        for o in range(out):
            assert (o + u) * s + r == o * s + a * d - p
        assert u >= -(p // s + 1)  # the first outputs reach at most p back into the padding


@given(dims(), st.booleans())
def test_avg_divisors_count_window_positions(dim, count_include_pad):
    n, k, s, p, _, ceil_mode = dim
    out = pool_output_size(n, k, s, p, 1, ceil_mode)
    divisors = avg_divisors(n, out, k, s, p, count_include_pad)
    for o, div in enumerate(divisors):
        positions = [o * s - p + a for a in range(k)]
        if count_include_pad:
            expected = sum(-p <= q < n + p for q in positions)
        else:
            expected = sum(0 <= q < n for q in positions)
        assert div == expected >= 1


@given(dims())
def test_first_valid_offset_is_the_first_in_bounds_position(dim):
    n, k, s, p, d, ceil_mode = dim
    out = pool_output_size(n, k, s, p, d, ceil_mode)
    for o, a in enumerate(first_valid_offsets(n, out, k, s, p, d)):
        inside = [b for b in range(k) if 0 <= o * s + b * d - p < n]
        assert a == (inside[0] if inside else -1)


@given(dims())
def test_read_positions_are_those_some_window_reads(dim):
    """Read by the brute-force windows; in floor mode with ``s <= d(k-1) + 1`` and no
    dilation gaps, only a tail shorter than a stride goes unread."""
    n, k, s, p, d, ceil_mode = dim
    out = pool_output_size(n, k, s, p, d, ceil_mode)
    read = read_positions(n, out, k, s, p, d)
    expected = {
        q - p for q0 in _brute_windows(n, k, s, p, d, ceil_mode) for q in range(q0, q0 + d * k, d)
    }
    assert len(read) == n
    assert {j for j, r in enumerate(read) if r} == expected & set(range(n))
    if d == 1 and s <= k:
        unread = [j for j, r in enumerate(read) if not r]
        assert unread == list(range(n - len(unread), n)) and len(unread) < s


@given(st.integers(1, 30), st.integers(1, 30))
def test_adaptive_windows_cover_the_input_in_order(n, out):
    bounds = adaptive_bounds(n, out)
    assert len(bounds) == out
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    for (s0, e0), (s1, e1) in zip(bounds, bounds[1:], strict=False):
        assert s0 <= s1 and e0 <= e1 and s1 <= e0  # non-decreasing, no gaps
    assert all(e > s for s, e in bounds)
    inverse = adaptive_inverse(n, out)
    kmax = max(e - s for s, e in bounds)
    for pos, readers in enumerate(inverse):
        expected = sorted(o * kmax + (pos - s) for o, (s, e) in enumerate(bounds) if s <= pos < e)
        assert sorted(r for r in readers if r != out * kmax) == expected


@given(st.integers(-50, 50), st.integers(1, 12))
def test_ceil_div_is_the_ceiling_of_the_exact_quotient(a, b):
    assert ceil_div(a, b) == math.ceil(Fraction(a, b))


@given(st.lists(st.tuples(st.integers(1, 24), st.integers(1, 6)), min_size=1, max_size=3))
def test_regular_geometry_exactly_when_out_divides_the_input(dims_):
    in_size = tuple(n for n, _ in dims_)
    out_size = tuple(min(o, n) for n, o in dims_)
    geom = AdaptiveGeometry(in_size, out_size, channels_last=False)
    regular = regular_geometry(geom)
    assert (regular is not None) == all(n % o == 0 for n, o in zip(in_size, out_size, strict=True))
    if regular is not None:  # the same windows: [o*k, o*k + k) == adaptive_bounds
        assert regular.out_size == out_size and regular.window == regular.stride
        for n, o, k in zip(in_size, out_size, regular.window, strict=True):
            assert pool_output_size(n, k, k, 0, 1, False) == o
            assert adaptive_bounds(n, o) == tuple((i * k, i * k + k) for i in range(o))
            assert adaptive_sizes(n, o) == (k,) * o
