"""Bad input gets a clear TypeError/ValueError naming the argument, before any tracing."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv

X = jnp.zeros((2, 4, 8, 8))
W = jnp.zeros((6, 2, 3, 3))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(stride=0), ValueError, r"`stride` must be >= 1 in every dimension, got 0"),
        (
            dict(stride=(1, -2)),
            ValueError,
            r"`stride` must be >= 1 in every dimension, got \(1, -2\)",
        ),
        (
            dict(dilation=(1, 0)),
            ValueError,
            r"`dilation` must be >= 1 in every dimension, got \(1, 0\)",
        ),
        (dict(padding=-1), ValueError, r"`padding` must be >= 0 in every dimension, got -1"),
        (dict(padding=((0, -1), (0, 0))), ValueError, r"`padding` must be >= 0 in every dimension"),
        (
            dict(padding="HALF"),
            ValueError,
            r"`padding` must be one of 'VALID', 'SAME', 'SAME_LOWER', 'FULL'.*got 'HALF'",
        ),
        (
            dict(padding=(1, 1, 1)),
            ValueError,
            r"`padding` must be an int, 2 ints, or 2 \(low, high\) pairs",
        ),
        (dict(stride=(1, 1, 1)), ValueError, r"`stride` must be an int or a sequence of 2 ints"),
        (dict(dilation=(1,)), ValueError, r"`dilation` must be an int or a sequence of 2 ints"),
        (dict(stride=1.5), TypeError, r"`stride` must be an int or a sequence of ints, got 1.5"),
        (
            dict(groups=3),
            ValueError,
            r"`groups` must divide the input channels of `x` \(4\), got 3",
        ),
        (dict(groups=0), ValueError, r"`groups` must be >= 1, got 0"),
        (dict(dilation=4), ValueError, r"the dilated kernel must fit in the padded input"),
        (
            dict(padding_mode="mirror"),
            ValueError,
            r"`padding_mode` must be one of 'zeros', 'reflect', 'replicate', "
            r"'circular', got 'mirror'",
        ),
        (
            dict(padding_mode="reflect", padding=8),
            ValueError,
            r"`padding` must be smaller than the input size",
        ),
        (
            dict(padding_mode="circular", padding=9),
            ValueError,
            r"`padding` must be at most the input size",
        ),
        (
            dict(method="winograd"),
            ValueError,
            r"`method` must be one of 'auto', 'direct'.*got 'winograd'",
        ),
        (dict(flip=1), TypeError, r"`flip` must be a bool, got 1"),
        (dict(channels_last="yes"), TypeError, r"`channels_last` must be a bool, got 'yes'"),
        (dict(precision="fast"), ValueError, r"`precision` must be None, a jax.lax.Precision"),
        (
            dict(preferred_element_type=jnp.int32),
            TypeError,
            r"`preferred_element_type` must be None or a floating dtype",
        ),
    ],
)
def test_conv_argument_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        jaxconv.conv(X, W, groups=kwargs.pop("groups", 2), **kwargs)


def test_channel_mismatch():
    with pytest.raises(
        ValueError,
        match=r"`w` must have C_in // groups = 4 // 1 = 4 input channels to match `x`, got 2",
    ):
        jaxconv.conv(X, W)


def test_output_channels_not_divisible_by_groups():
    with pytest.raises(
        ValueError, match=r"`groups` must divide the output channels of `w` \(6\), got 4"
    ):
        jaxconv.conv(X, jnp.zeros((6, 1, 3, 3)), groups=4)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_, jnp.complex64])
def test_non_float_arrays(dtype):
    with pytest.raises(
        TypeError, match=r"`x` must have a floating dtype \(bfloat16, float16, float32 or float64\)"
    ):
        jaxconv.conv(X.astype(dtype), W, groups=2)
    with pytest.raises(TypeError, match=r"`w` must have a floating dtype"):
        jaxconv.conv(X, W.astype(dtype), groups=2)


def test_mixed_dtypes():
    with pytest.raises(
        TypeError, match=r"`w` must have the same dtype as `x` \(float32\), got float16"
    ):
        jaxconv.conv(X, W.astype(jnp.float16), groups=2)


def test_python_lists_refused_with_a_clear_message():
    with pytest.raises(TypeError, match=r"`x` must be an array, got list"):
        jaxconv.conv([[[1.0]]], W)


def test_rank_mismatch():
    with pytest.raises(
        ValueError, match=r"`x` must have ndim 4 to match `w`.*got shape \(4, 8, 8\)"
    ):
        jaxconv.conv(X[0], W, groups=2)
    with pytest.raises(ValueError, match=r"`w` must have ndim >= 3"):
        jaxconv.conv(X[0, 0], W[0, 0])


@pytest.mark.parametrize("shape", [(5,), (6, 1), ()])
def test_bias_shape(shape):
    with pytest.raises(ValueError, match=r"`bias` must have shape \(C_out,\) = \(6,\) or be None"):
        jaxconv.conv(X, W, jnp.zeros(shape), groups=2)


def test_gradient_function_errors():
    dy = jnp.zeros((2, 6, 6, 6))
    with pytest.raises(
        ValueError, match=r"`dy` must have the convolution's output shape \(2, 6, 6, 6\)"
    ):
        jaxconv.conv_input_grad(dy[:, :, :5], W, X.shape, groups=2)
    with pytest.raises(ValueError, match=r"`dy` must have the convolution's output shape"):
        jaxconv.conv_weight_grad(X, dy, W.shape, stride=2, groups=2)
    with pytest.raises(TypeError, match=r"`input_shape` must be a sequence of non-negative ints"):
        jaxconv.conv_input_grad(dy, W, (2, 4, 8.0, 8), groups=2)
    with pytest.raises(TypeError, match=r"`dy` must have a floating dtype"):
        jaxconv.conv_weight_grad(X, dy.astype(jnp.int8), W.shape, groups=2)


def test_conv_transpose_errors():
    x, w = jnp.zeros((1, 4, 5, 5)), jnp.zeros((4, 3, 3, 3))
    with pytest.raises(
        ValueError, match=r"`output_padding` must be smaller than max\(stride, dilation\)"
    ):
        jaxconv.conv_transpose(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"`padding` of conv_transpose must be an int"):
        jaxconv.conv_transpose(x, w, padding="SAME")
    with pytest.raises(
        ValueError, match=r"`w` must have C_in = 4 channels on its input-channel axis"
    ):
        jaxconv.conv_transpose(x, jnp.zeros((3, 3, 3, 3)))
    with pytest.raises(
        ValueError, match=r"`groups` must divide the input channels of `x` \(4\), got 3"
    ):
        jaxconv.conv_transpose(x, w, groups=3)
    with pytest.raises(ValueError, match=r"`padding` .* removes every output cell"):
        jaxconv.conv_transpose(x, w, padding=5)
    with pytest.raises(ValueError, match=r"`bias` must have shape \(C_out,\) = \(3,\)"):
        jaxconv.conv_transpose(x, w, jnp.zeros(4))


def test_errors_raise_before_tracing_under_jit():
    """The same ValueError (not an XLA error) under jit: shapes are static."""
    import jax

    with pytest.raises(ValueError, match=r"`stride` must be >= 1"):
        jax.jit(lambda x, w: jaxconv.conv(x, w, stride=0, groups=2))(X, W)


def test_numpy_inputs_accepted():
    y = jaxconv.conv(np.ones((1, 1, 4), np.float32), np.ones((1, 1, 2), np.float32))
    assert y.tolist() == [[[2.0, 2.0, 2.0]]]
