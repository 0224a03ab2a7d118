"""Pure-int shape arithmetic, conv and pool: properties of its own (no arrays unless checking
against lax).

Convolution: the public ``conv_output_shape`` and ``padding_pairs``, and the private
``jaxconv._shapes`` (output sizes, VJP paddings, ``conv_transpose`` sizes), against lax and
the lecture's formula. Pooling: the private ``jaxconv.pool._geometry``, the int arithmetic
behind every pool's output size, divisors, stride phases and adaptive windows, against
brute-force enumeration of the windows.
"""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax import lax

from jaxconv import conv_output_shape, padding_pairs
from jaxconv._shapes import (
    conv_output_size,
    conv_transpose_output_size,
    dilate_dim,
    vjp_lhs_padding,
    vjp_rhs_padding,
)
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

dims = st.integers(1, 40)
small = st.integers(1, 6)

# --- conv


def test_lecture_formula():
    # W2 = (W1 - F + 2P) / S + 1
    assert conv_output_shape((32, 32), (5, 5)) == (28, 28)
    assert conv_output_shape((7,), (3,), stride=2, padding=1) == ((7 - 3 + 2) // 2 + 1,)
    # with dilation D, F becomes D(F-1)+1
    assert conv_output_shape((10,), (3,), dilation=2) == (10 - (2 * 2 + 1) + 1,)


@given(
    size=dims,
    kernel=small,
    stride=small,
    dilation=st.integers(1, 3),
    mode=st.sampled_from(["SAME", "VALID", "SAME_LOWER"]),
)
def test_string_padding_matches_lax(size, kernel, stride, dilation, mode):
    span = dilate_dim(kernel, dilation)
    assert padding_pairs(mode, (size,), (kernel,), stride, dilation) == tuple(
        tuple(p) for p in lax.padtype_to_pads((size,), (span,), (stride,), mode)
    )


@given(size=dims, kernel=small, stride=small, dilation=st.integers(1, 3))
def test_same_keeps_ceil_size_and_full_is_full(size, kernel, stride, dilation):
    ((lo, hi),) = padding_pairs("SAME", (size,), (kernel,), stride, dilation)
    assert hi - lo in (0, 1)
    assert conv_output_size(size, kernel, stride, (lo, hi), dilation) == -(-size // stride)
    ((llo, lhi),) = padding_pairs("SAME_LOWER", (size,), (kernel,), stride, dilation)
    assert (llo, lhi) == (hi, lo)
    span = dilate_dim(kernel, dilation)
    assert padding_pairs("FULL", (size,), (kernel,), stride, dilation) == ((span - 1, span - 1),)
    # stride 1 FULL: every (input, tap) pair meets once: size + span - 1 outputs
    assert conv_output_size(size, kernel, 1, (span - 1, span - 1), dilation) == size + span - 1


@given(
    size=dims,
    kernel=small,
    stride=small,
    dilation=st.integers(1, 3),
    lo=st.integers(0, 5),
    hi=st.integers(0, 5),
)
def test_output_size_matches_lax(size, kernel, stride, dilation, lo, hi):
    """About a private piece: ``_shapes.conv_output_size`` against lax's shape rule."""
    span = dilate_dim(kernel, dilation)
    if size + lo + hi < span:
        assert conv_output_size(size, kernel, stride, (lo, hi), dilation) == 0
        return
    out = jax.eval_shape(
        lambda x, w: lax.conv_general_dilated(
            x, w, (stride,), [(lo, hi)], rhs_dilation=(dilation,)
        ),
        jax.ShapeDtypeStruct((1, 1, size), jnp.float32),
        jax.ShapeDtypeStruct((1, 1, kernel), jnp.float32),
    )
    assert conv_output_size(size, kernel, stride, (lo, hi), dilation) == out.shape[-1]


@given(
    size=dims,
    kernel=small,
    stride=small,
    dilation=st.integers(1, 3),
    lo=st.integers(0, 5),
    hi=st.integers(0, 5),
    ld=st.integers(1, 3),
)
def test_vjp_paddings_restore_the_shapes(size, kernel, stride, dilation, lo, hi, ld):
    """About private pieces, ``_shapes.vjp_lhs_padding`` and ``vjp_rhs_padding``: the
    input-gradient conv returns exactly the input's length; the weight-gradient conv exactly
    the kernel's."""
    out = conv_output_size(size, kernel, stride, (lo, hi), dilation, ld)
    if out == 0:
        return
    ((blo, bhi),) = vjp_lhs_padding(
        (size,), (kernel,), (stride,), (out,), ((lo, hi),), (ld,), (dilation,)
    )
    # dY dilated by the stride, padded, correlated with the dilated kernel, stepping by ld
    assert conv_output_size(out, kernel, ld, (blo, bhi), dilation, stride) == size
    ((wlo, whi),) = vjp_rhs_padding(
        (size,), (kernel,), (stride,), (out,), ((lo, hi),), (ld,), (dilation,)
    )
    assert conv_output_size(size, out, dilation, (wlo, whi), stride, ld) == kernel


@given(size=dims, kernel=small, stride=small, dilation=st.integers(1, 3), pad=st.integers(0, 3))
def test_conv_transpose_size_inverts_conv_size(size, kernel, stride, dilation, pad):
    """About a private piece: ``_shapes.conv_transpose_output_size``."""
    out = conv_output_size(size, kernel, stride, (pad, pad), dilation)
    if out == 0:
        return
    op = (size + 2 * pad - dilate_dim(kernel, dilation)) % stride
    assert conv_transpose_output_size(out, kernel, stride, (pad, pad), dilation, op) == size


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        (("SAMEISH", (5,), (3,)), ValueError, "`padding` must be one of 'VALID', 'SAME'"),
        ((-1, (5,), (3,)), ValueError, "`padding` must be >= 0 in every dimension, got -1"),
        (
            ((1, 2), (5,), (3,)),
            ValueError,
            "`padding` must be an int, 1 ints, or 1 \\(low, high\\) pairs",
        ),
        ((0, (5, 5), (3,)), ValueError, "`input_shape` must have one size per kernel dimension"),
        ((0, (5,), (3,), 0), ValueError, "`stride` must be >= 1 in every dimension, got 0"),
        ((1.5, (5,), (3,)), TypeError, "`padding` must be an int or a sequence of ints, got 1.5"),
        (("SAME", (8,), (2.5,)), TypeError, r"`kernel_shape` must be a sequence of ints >= 1"),
        (("FULL", (8,), (-3,)), ValueError, r"`kernel_shape` must be a sequence of ints >= 1"),
        (("VALID", (8,), (0,)), ValueError, r"`kernel_shape` .* got \(0,\)"),
        (("SAME", (-8,), (3,)), ValueError, r"`input_shape` must be a sequence of non-negative"),
        (("SAME", 8, (3,)), TypeError, r"`input_shape` must be a sequence of non-negative .*got 8"),
        ((0, (8,), (3,), np.array(0)), ValueError, r"`stride` must be >= 1"),
    ],
)
def test_padding_pairs_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        padding_pairs(*args)


def test_conv_output_shape_refuses_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match="the dilated kernel must fit in the padded input"):
        conv_output_shape((4,), (3,), dilation=2)


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        (((8,), (0,)), ValueError, r"`kernel_shape` must be a sequence of ints >= 1, got \(0,\)"),
        (((8,), (-2,)), ValueError, r"`kernel_shape` must be a sequence of ints >= 1, got \(-2,\)"),
        (((8.5,), (3,)), TypeError, r"`input_shape` must be a sequence of non-negative ints"),
        ((8, 3), TypeError, r"`input_shape` must be a sequence of non-negative ints, got 8"),
        (((8,), 3), TypeError, r"`kernel_shape` must be a sequence of ints >= 1, got 3"),
        (
            (None, (3,)),
            TypeError,
            r"`input_shape` must be a sequence of non-negative ints, got None",
        ),
        (((8,), (True,)), TypeError, r"`kernel_shape` must be a sequence"),
    ],
)
def test_conv_output_shape_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        conv_output_shape(*args)


def test_numpy_integers_accepted():
    assert conv_output_shape(
        np.array([8, 9]),
        (np.int64(3), 3),
        stride=np.array([2, 1]),
        padding=np.array([[1, 0], [0, 2]]),
    ) == conv_output_shape((8, 9), (3, 3), stride=(2, 1), padding=((1, 0), (0, 2)))
    assert padding_pairs(np.array(1), np.array([5]), np.array([3]), np.int8(2)) == ((1, 1),)
    assert padding_pairs("SAME", np.array([5]), np.array([4]), np.array([2])) == ((1, 2),)


# --- pool: every test below is about the private ``jaxconv.pool._geometry``


@st.composite
def pool_dims(draw):
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


@given(pool_dims())
def test_output_size_counts_the_windows(dim):
    n, k, s, p, d, ceil_mode = dim
    assert pool_output_size(n, k, s, p, d, ceil_mode) == len(
        _brute_windows(n, k, s, p, d, ceil_mode)
    )


@given(pool_dims())
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


@given(pool_dims(), st.booleans())
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


@given(pool_dims())
def test_first_valid_offset_is_the_first_in_bounds_position(dim):
    n, k, s, p, d, ceil_mode = dim
    out = pool_output_size(n, k, s, p, d, ceil_mode)
    for o, a in enumerate(first_valid_offsets(n, out, k, s, p, d)):
        inside = [b for b in range(k) if 0 <= o * s + b * d - p < n]
        assert a == (inside[0] if inside else -1)


@given(pool_dims())
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
