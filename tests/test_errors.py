"""Bad input gets a clear TypeError/ValueError naming the argument, before any tracing.

Convolution: ``conv``, ``conv_transpose`` and the gradient functions. Pooling: every pool
and ``max_unpool``, including each static argument passed as a traced value. Every message is
pinned; public API only.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv import (
    adaptive_avg_pool,
    adaptive_max_pool,
    avg_pool,
    lp_pool,
    max_pool,
    max_unpool,
)

X = jnp.zeros((2, 4, 8, 8))
W = jnp.zeros((6, 2, 3, 3))
POOL_X = jnp.zeros((1, 2, 6, 6), jnp.float32)
POOL_Y = jnp.zeros((1, 2, 3, 3), jnp.float32)  # max_unpool's pooled values and indices
POOL_IDX = jnp.zeros((1, 2, 3, 3), jnp.int32)

# --- conv


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
        (
            dict(preferred_element_type="float16"),
            TypeError,
            r"`preferred_element_type` must be None or a floating dtype at least as wide as "
            r"the inputs' float32 \(lax's rule\), got float16",
        ),
        (
            dict(preferred_element_type="no-such-dtype"),
            TypeError,
            r"`preferred_element_type` must be None or a dtype, got 'no-such-dtype'",
        ),
        (dict(padding=np.array([1.5, 1])), TypeError, r"`padding` must be an int .*, got 1.5"),
        (
            dict(padding=np.array([[1, 2, 3], [0, 0, 0]])),
            ValueError,
            r"`padding` pairs must be \(low, high\)",
        ),
        (dict(stride=np.array([True, True])), TypeError, r"`stride` must be an int .*, got True"),
        (
            dict(padding=(1, 0), dilation=(1, 5)),
            ValueError,
            r"conv refuses an empty output, as PyTorch does; "
            r"jaxconv.conv_general_dilated follows lax",
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
    with pytest.raises(ValueError, match=r"`stride` must be >= 1"):
        jax.jit(lambda x, w: jaxconv.conv(x, w, stride=0, groups=2))(X, W)


def test_numpy_inputs_accepted():
    y = jaxconv.conv(np.ones((1, 1, 4), np.float32), np.ones((1, 1, 2), np.float32))
    assert y.tolist() == [[[2.0, 2.0, 2.0]]]


@pytest.mark.parametrize("method", ["direct", "fft", "shift"])
def test_one_preferred_element_type_policy_for_every_method(method):
    """Refused before tracing (even under jit) by every method; where allowed, every method
    returns it, and the gradients keep the inputs' dtype."""
    x, w = jnp.ones((1, 4, 6, 6)), jnp.ones((4, 1, 3, 3))
    with pytest.raises(TypeError, match=r"`preferred_element_type` must .*got float16"):
        jax.jit(
            lambda x, w: jaxconv.conv(
                x, w, groups=4, method=method, preferred_element_type="float16"
            )
        )(x, w)

    @jax.jit
    def run(x, w):
        def f(x, w, pref):
            return jaxconv.conv(x, w, groups=4, method=method, preferred_element_type=pref)

        ys = [f(x, w, pref) for pref in ("float32", "bfloat16")]
        return ys, jax.grad(lambda x, w: f(x, w, "float32").sum(), (0, 1))(x, w)

    ys, (dx, dw) = run(x.astype(jnp.float16), w.astype(jnp.float16))
    assert [y.dtype for y in ys] == [jnp.float32, jnp.bfloat16]
    for y in ys:
        np.testing.assert_array_equal(y.astype(np.float32), 9.0)
    assert dx.dtype == dw.dtype == jnp.float16
    assert float(dw[0, 0, 0, 0]) == 4 * 4


def test_torch_tensors_named():
    torch = pytest.importorskip("torch")
    with pytest.raises(
        TypeError,
        match=r"`x` must be a JAX or NumPy array, got torch.Tensor with dtype torch.float32",
    ):
        jaxconv.conv(torch.ones(1, 1, 4), jnp.ones((1, 1, 2)))
    with pytest.raises(TypeError, match=r"`w` must be a JAX or NumPy array, got torch.Tensor"):
        jaxconv.conv(jnp.ones((1, 1, 4)), torch.ones(1, 1, 2))


def test_input_shape_none_named():
    with pytest.raises(
        TypeError, match=r"`input_shape` must be a sequence of non-negative ints, got None"
    ):
        jaxconv.conv_input_grad(jnp.zeros((2, 6, 6, 6)), W, None, groups=2)
    with pytest.raises(TypeError, match=r"`weight_shape` must be a sequence of non-negative ints"):
        jaxconv.conv_weight_grad(X, jnp.zeros((2, 6, 6, 6)), 3, groups=2)


def test_conv_transpose_zero_size_axes():
    with pytest.raises(ValueError, match=r"`w` must have every spatial size >= 1, got shape"):
        jaxconv.conv_transpose(jnp.ones((1, 1, 3)), jnp.ones((1, 1, 0)))
    with pytest.raises(
        ValueError, match=r"`x` must have every spatial size >= 1 \(PyTorch refuses"
    ):
        jaxconv.conv_transpose(jnp.ones((1, 1, 0, 3)), jnp.ones((1, 1, 2, 2)))
    assert jaxconv.conv_transpose(jnp.ones((0, 1, 3)), jnp.ones((1, 1, 2))).shape == (0, 1, 4)


def test_traced_static_arguments_named():
    with pytest.raises(TypeError, match=r"`padding` must be static .*static_argnums"):
        jax.jit(lambda x, p: jaxconv.conv(x, W, padding=p, groups=2))(X, 1)
    with pytest.raises(TypeError, match=r"`stride` must be static"):
        jax.jit(lambda x, s: jaxconv.conv(x, W, stride=s, groups=2))(X, jnp.array([1, 2]))


def test_numpy_integer_arrays_accepted_wherever_ints_are():
    """`padding=np.array([1, 1])` as `[1, 1]`: 1-D, 2-D (low, high) pairs, 0-D and scalars,
    for every argument that takes ints, in conv, conv_transpose and the gradient functions."""
    x, w = (
        jnp.asarray(np.random.default_rng(0).standard_normal((1, 2, 7, 6)), jnp.float32),
        W[:, :2],
    )
    expected = jaxconv.conv(x, w, stride=(2, 1), padding=((1, 0), (2, 2)), dilation=(1, 2))
    for padding in (np.array([[1, 0], [2, 2]]), [np.array([1, 0]), (np.int64(2), 2)]):
        y = jaxconv.conv(
            x,
            w,
            stride=np.array([2, 1]),
            padding=padding,
            dilation=np.array([1, 2]),
            groups=np.int32(1),
        )
        np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(
        jaxconv.conv(x, w, padding=np.array([1, 1])), jaxconv.conv(x, w, padding=[1, 1])
    )
    np.testing.assert_array_equal(
        jaxconv.conv(x, w, padding=np.array(1), stride=np.int16(2)),
        jaxconv.conv(x, w, padding=1, stride=2),
    )
    wt = jnp.ones((2, 3, 3, 3))
    np.testing.assert_array_equal(
        jaxconv.conv_transpose(
            x,
            wt,
            stride=np.array([2, 2]),
            padding=np.array([1, 0]),
            output_padding=np.array([1, 0]),
        ),
        jaxconv.conv_transpose(x, wt, stride=2, padding=[1, 0], output_padding=[1, 0]),
    )
    dy = jnp.ones(expected.shape)
    np.testing.assert_array_equal(
        jaxconv.conv_input_grad(
            dy,
            w,
            np.array(x.shape),
            stride=np.array([2, 1]),
            padding=np.array([[1, 0], [2, 2]]),
            dilation=(1, 2),
        ),
        jaxconv.conv_input_grad(
            dy, w, x.shape, stride=(2, 1), padding=((1, 0), (2, 2)), dilation=(1, 2)
        ),
    )


# --- pool


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: max_pool(POOL_X, 0),
            ValueError,
            "`window` must be >= 1 in every dimension, got 0",
        ),
        (
            lambda: max_pool(POOL_X, (2, 0)),
            ValueError,
            "`window` must be >= 1 in every dimension, got (2, 0)",
        ),
        (
            lambda: max_pool(POOL_X, 2, 0),
            ValueError,
            "`stride` must be >= 1 in every dimension, got 0",
        ),
        (
            lambda: avg_pool(POOL_X, 2, (1, 0)),
            ValueError,
            "`stride` must be >= 1 in every dimension, got (1, 0)",
        ),
        (
            lambda: max_pool(POOL_X, 3, padding=2),
            ValueError,
            "`padding` must be at most half of `window` (padding <= window // 2, as PyTorch "
            "requires) in every dimension, got padding=2 for window=3",
        ),
        (
            lambda: avg_pool(POOL_X, 2, padding=-1),
            ValueError,
            "`padding` must be >= 0 in every dimension, got -1",
        ),
        (
            lambda: max_pool(POOL_X, 2, dilation=0),
            ValueError,
            "`dilation` must be >= 1 in every dimension, got 0",
        ),
        (
            lambda: max_pool(POOL_X, (2, 2, 2)),
            ValueError,
            "`x` must be (N, C, *spatial) with ndim 5 to match `window` (3 spatial dims), "
            "got shape (1, 2, 6, 6)",
        ),
        (
            lambda: max_pool(POOL_X, (2, 2, 2, 2)),
            ValueError,
            "`window` must have 1, 2 or 3 entries (one per spatial dimension), got (2, 2, 2, 2)",
        ),
        (
            lambda: max_pool(POOL_X, 2, stride=(1, 1, 1)),
            ValueError,
            "`stride` must be an int or a sequence of 2 ints (one per spatial dimension), "
            "got (1, 1, 1)",
        ),
        (
            lambda: max_pool(jnp.zeros((6, 6)), 2),
            ValueError,
            "`x` must be (N, C, *spatial) with ndim 3 or 4 or 5, got shape (6, 6)",
        ),
        (
            lambda: max_pool(jnp.zeros((6, 6)), 2, channels_last=True),
            ValueError,
            "`x` must be (N, *spatial, C) with ndim 3 or 4 or 5, got shape (6, 6)",
        ),
        (
            lambda: max_pool(POOL_X, 7),
            ValueError,
            "`x` must be large enough for one window in every spatial dimension with window=7, "
            "stride=None, padding=0, dilation=1 (its output would have spatial size (0, 0)), "
            "got shape (1, 2, 6, 6)",
        ),
        (
            lambda: max_pool(POOL_X, (2, 7), 1, ceil_mode=True),
            ValueError,
            "with window=(2, 7), stride=1, padding=0, dilation=1, ceil_mode=True (its output "
            "would have spatial size (5, 0)), got shape (1, 2, 6, 6)",
        ),
        (  # a pool without padding or dilation arguments is not told about them
            lambda: avg_pool(POOL_X, 9, padding=1),
            ValueError,
            "with window=9, stride=None, padding=1 (its output would have spatial size (0, 0))",
        ),
        (
            lambda: lp_pool(POOL_X, 2, (7, 2)),
            ValueError,
            "with window=(7, 2), stride=None (its output would have spatial size (0, 3)), got "
            "shape (1, 2, 6, 6)",
        ),
        (
            lambda: max_pool(jnp.zeros((1, 1, 1)), 2, 1, 1, 2),
            ValueError,
            "`x` must be large enough that no window with window=2, stride=1, padding=1, "
            "dilation=2 lies entirely in the padding (a window would lie entirely in the padding "
            "of a dimension of length 1), got shape (1, 1, 1)",
        ),
        (
            lambda: max_pool(POOL_X, 2.0),
            TypeError,
            "`window` must be an int or a sequence of ints, got 2.0",
        ),
        (lambda: max_pool(POOL_X, 2, ceil_mode=1), TypeError, "`ceil_mode` must be a bool, got 1"),
        (
            lambda: max_pool(POOL_X, 2, channels_last="yes"),
            TypeError,
            "`channels_last` must be a bool, got 'yes'",
        ),
        (
            lambda: max_pool(POOL_X, 2, return_indices=None),
            TypeError,
            "`return_indices` must be a bool, got None",
        ),
        (
            lambda: max_pool(jnp.zeros((1, 2, 6, 6), jnp.int32), 2),
            TypeError,
            "`x` must have a floating dtype (bfloat16, float16, float32 or float64), got int32",
        ),
        (
            lambda: avg_pool(np.zeros((1, 2, 6, 6), np.uint8), 2),
            TypeError,
            "`x` must have a floating dtype (bfloat16, float16, float32 or float64), got uint8",
        ),
        (lambda: avg_pool([[[1.0, 2.0]]], 2), TypeError, "`x` must be an array, got list"),
        (
            lambda: avg_pool(POOL_X, 2, divisor_override=0),
            ValueError,
            "`divisor_override` must be >= 1, got 0",
        ),
        (
            lambda: avg_pool(POOL_X, 2, count_include_pad="no"),
            TypeError,
            "`count_include_pad` must be a bool, got 'no'",
        ),
        (lambda: lp_pool(POOL_X, 0, 2), ValueError, "`p` must be > 0, inf or -inf, got 0.0"),
        (
            lambda: lp_pool(POOL_X, float("nan"), 2),
            ValueError,
            "`p` must be > 0, inf or -inf, got nan",
        ),
        (
            lambda: lp_pool(POOL_X, "2", 2),
            TypeError,
            "`p` must be a real number (int or float), got '2'",
        ),
        (
            lambda: lp_pool(jnp.zeros((1, 2, 6), jnp.int8), 2, 2),
            TypeError,
            "`x` must have a floating dtype",
        ),
        (
            lambda: adaptive_avg_pool(POOL_X, 0),
            ValueError,
            "`output_size` must be >= 1 in every dimension, got 0",
        ),
        (
            lambda: adaptive_max_pool(POOL_X, (3, -1)),
            ValueError,
            "`output_size` must be >= 1 in every dimension, got (3, -1)",
        ),
        (
            lambda: adaptive_avg_pool(POOL_X, 1.5),
            TypeError,
            "`output_size` must be an int, None, or a sequence of ints/None, got 1.5",
        ),
        (
            lambda: adaptive_max_pool(POOL_X, (2, 2, 2)),
            ValueError,
            "`x` must be (N, C, *spatial) with ndim 5 to match `output_size` (3 spatial dims)",
        ),
        (
            lambda: adaptive_avg_pool(jnp.zeros((1, 2, 6), jnp.int32), 2),
            TypeError,
            "`x` must have a floating dtype",
        ),
        (
            lambda: max_unpool(POOL_X, POOL_X, (12, 12)),
            TypeError,
            "`indices` must be an integer array, got a float32 array",
        ),
        (
            lambda: max_unpool(jnp.ones((1, 1, 2)), [[[0, 1]]], 4),
            TypeError,
            "`indices` must be an integer array (JAX or NumPy), got list",
        ),
        (
            lambda: max_unpool(POOL_X, jnp.zeros((1, 2, 6, 5), jnp.int32), (12, 12)),
            ValueError,
            "`indices` must have the shape of `y` (1, 2, 6, 6), got (1, 2, 6, 5)",
        ),
        (
            lambda: max_unpool(POOL_X, jnp.full((1, 2, 6, 6), 200, jnp.int32), (12, 12)),
            ValueError,
            "`indices` must lie in [0, 144) for output_size=(12, 12), got values in [200, 200]",
        ),
        (
            lambda: max_unpool(POOL_X, jnp.zeros((1, 2, 6, 6), jnp.int32), (12, 0)),
            ValueError,
            "`output_size` must be >= 1 in every dimension, got (12, 0)",
        ),
        (
            lambda: max_unpool(POOL_X, jnp.zeros((1, 2, 6, 6), jnp.int32), (12, 12, 12)),
            ValueError,
            "`y` must be (N, C, *spatial) with ndim 5 to match `output_size`",
        ),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_errors_are_raised_before_tracing_under_jit():
    with pytest.raises(ValueError, match=re.escape("`window` must be >= 1")):
        jax.jit(lambda a: max_pool(a, 0))(POOL_X)
    with pytest.raises(ValueError, match=re.escape("`padding` must be at most half")):
        jax.jit(lambda a: avg_pool(a, 2, padding=2))(POOL_X)


def test_out_of_range_indices_are_dropped_under_jit():
    # traced indices cannot be checked: out-of-range entries are ignored, as documented
    idx = jnp.asarray([[[0, 99]]], jnp.int32)
    out = jax.jit(lambda y, i: max_unpool(y, i, 4))(jnp.asarray([[[1.0, 2.0]]]), idx)
    np.testing.assert_array_equal(out, [[[1.0, 0.0, 0.0, 0.0]]])


# Every static argument of every pool, passed as a traced value: (name, what, call with v).
STATIC = "must be static ({}, not a traced array: under jax.jit mark it with static_argnums"
TRACED = [
    ("window", "Python ints", lambda v: max_pool(POOL_X, v)),
    ("window", "Python ints", lambda v: max_pool(POOL_X, (v, 2))),
    ("stride", "Python ints", lambda v: max_pool(POOL_X, 2, v)),
    ("padding", "Python ints", lambda v: max_pool(POOL_X, 3, 1, v)),
    ("dilation", "Python ints", lambda v: max_pool(POOL_X, 2, 1, 0, v)),
    ("ceil_mode", "a Python bool", lambda v: max_pool(POOL_X, 2, ceil_mode=v > 0)),
    ("channels_last", "a Python bool", lambda v: max_pool(POOL_X, 2, channels_last=v > 0)),
    ("return_indices", "a Python bool", lambda v: max_pool(POOL_X, 2, return_indices=v > 0)),
    ("window", "Python ints", lambda v: avg_pool(POOL_X, v)),
    ("stride", "Python ints", lambda v: avg_pool(POOL_X, 2, (1, v))),
    ("padding", "Python ints", lambda v: avg_pool(POOL_X, 3, 1, v)),
    ("ceil_mode", "a Python bool", lambda v: avg_pool(POOL_X, 2, ceil_mode=v > 0)),
    ("count_include_pad", "a Python bool", lambda v: avg_pool(POOL_X, 2, count_include_pad=v > 0)),
    ("divisor_override", "Python ints", lambda v: avg_pool(POOL_X, 2, divisor_override=v)),
    ("channels_last", "a Python bool", lambda v: avg_pool(POOL_X, 2, channels_last=v > 0)),
    ("p", "a Python number", lambda v: lp_pool(POOL_X, v, 2)),
    ("window", "Python ints", lambda v: lp_pool(POOL_X, 2.0, v)),
    ("stride", "Python ints", lambda v: lp_pool(POOL_X, 2.0, 2, v)),
    ("ceil_mode", "a Python bool", lambda v: lp_pool(POOL_X, 2.0, 2, ceil_mode=v > 0)),
    ("channels_last", "a Python bool", lambda v: lp_pool(POOL_X, 2.0, 2, channels_last=v > 0)),
    ("output_size", "Python ints or None", lambda v: adaptive_avg_pool(POOL_X, v)),
    ("output_size", "Python ints or None", lambda v: adaptive_avg_pool(POOL_X, (v, None))),
    ("channels_last", "a Python bool", lambda v: adaptive_avg_pool(POOL_X, 2, channels_last=v > 0)),
    ("output_size", "Python ints or None", lambda v: adaptive_max_pool(POOL_X, (2, v))),
    ("return_indices", "a Python bool", lambda v: adaptive_max_pool(POOL_X, 2, v > 0)),
    ("channels_last", "a Python bool", lambda v: adaptive_max_pool(POOL_X, 2, channels_last=v > 0)),
    ("output_size", "Python ints", lambda v: max_unpool(POOL_Y, POOL_IDX, v)),
    ("output_size", "Python ints", lambda v: max_unpool(POOL_Y, POOL_IDX, (6, v))),
    (
        "channels_last",
        "a Python bool",
        lambda v: max_unpool(POOL_Y, POOL_IDX, 6, channels_last=v > 0),
    ),
]


@pytest.mark.parametrize("name, what, call", TRACED)
def test_a_traced_static_argument_says_it_must_be_static(name, what, call):
    """``jax.jit(max_pool)(x, 2)`` traces the window: the message names the argument and
    says how to keep it static, instead of failing inside the geometry arithmetic."""
    message = f"`{name}` " + STATIC.format(what)
    with pytest.raises(TypeError, match=re.escape(message)):
        jax.jit(call)(2)


def test_jit_of_the_pool_itself_names_the_traced_window():
    with pytest.raises(TypeError, match=re.escape("`window` " + STATIC.format("Python ints"))):
        jax.jit(max_pool)(POOL_X, 2)
    y = jax.jit(max_pool, static_argnums=1)(POOL_X, 2)  # what the message asks for
    assert y.shape == (1, 2, 3, 3)


def test_numpy_integers_are_accepted_wherever_ints_are():
    """NumPy integer arrays and scalars (and concrete JAX ones) work like the ints and
    sequences of ints they hold, in every static argument."""
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 2, 6, 6)), jnp.float32)
    i64 = np.int64
    cases = [
        (
            max_pool(x, np.array([3, 3]), i64(2), np.array([1, 1]), np.array([1, 1])),
            max_pool(x, 3, 2, 1, 1),
        ),
        (max_pool(x, jnp.asarray(2), (i64(2), 2)), max_pool(x, 2)),
        (
            avg_pool(x, np.array([3, 2]), np.array(1), i64(1), divisor_override=i64(3)),
            avg_pool(x, (3, 2), 1, 1, divisor_override=3),
        ),
        (lp_pool(x, np.float32(2.0), np.array([2, 2]), i64(2)), lp_pool(x, 2.0, 2, 2)),
        (lp_pool(x, i64(3), 2), lp_pool(x, 3, 2)),
        (adaptive_avg_pool(x, np.array([4, 3])), adaptive_avg_pool(x, (4, 3))),
        (adaptive_avg_pool(x, (i64(4), None)), adaptive_avg_pool(x, (4, None))),
        (adaptive_max_pool(x, np.int32(4)), adaptive_max_pool(x, 4)),
        (max_pool(x, 2, ceil_mode=np.bool_(True)), max_pool(x, 2, ceil_mode=True)),
    ]
    for got, want in cases:
        np.testing.assert_array_equal(got, want)
    y, idx = max_pool(x, 2, return_indices=True)
    np.testing.assert_array_equal(
        max_unpool(y, np.asarray(idx), np.array([6, 6])), max_unpool(y, idx, (6, 6))
    )
    with pytest.raises(TypeError, match=re.escape("`window` must be an int or a sequence of")):
        max_pool(x, np.array([2.0, 2.0]))  # float arrays stay refused
    with pytest.raises(
        ValueError, match=re.escape("`x` must be (N, C, *spatial) with ndim 5 to match `window`")
    ):
        max_pool(x, np.array([2, 2, 2]))  # an array is a sequence: its length is the rank
