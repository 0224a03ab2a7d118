"""Pure-int shape arithmetic: properties of its own (no arrays unless checking against lax)."""

from __future__ import annotations

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

dims = st.integers(1, 40)
small = st.integers(1, 6)


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
    """The input-gradient conv returns exactly the input's length; the weight-gradient conv
    exactly the kernel's."""
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
