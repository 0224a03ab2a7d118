"""Bad pooling arguments fail early with a ValueError/TypeError naming the argument."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxconv import (
    adaptive_avg_pool,
    adaptive_max_pool,
    avg_pool,
    lp_pool,
    max_pool,
    max_unpool,
)

X = jnp.zeros((1, 2, 6, 6), jnp.float32)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: max_pool(X, 0), ValueError, "`window` must be >= 1 in every dimension, got 0"),
        (
            lambda: max_pool(X, (2, 0)),
            ValueError,
            "`window` must be >= 1 in every dimension, got (2, 0)",
        ),
        (lambda: max_pool(X, 2, 0), ValueError, "`stride` must be >= 1 in every dimension, got 0"),
        (
            lambda: avg_pool(X, 2, (1, 0)),
            ValueError,
            "`stride` must be >= 1 in every dimension, got (1, 0)",
        ),
        (
            lambda: max_pool(X, 3, padding=2),
            ValueError,
            "`padding` must be at most half of `window` (padding <= window // 2, as PyTorch "
            "requires) in every dimension, got padding=2 for window=3",
        ),
        (
            lambda: avg_pool(X, 2, padding=-1),
            ValueError,
            "`padding` must be >= 0 in every dimension, got -1",
        ),
        (
            lambda: max_pool(X, 2, dilation=0),
            ValueError,
            "`dilation` must be >= 1 in every dimension, got 0",
        ),
        (
            lambda: max_pool(X, (2, 2, 2)),
            ValueError,
            "`x` must be (N, C, *spatial) with ndim 5 to match `window` (3 spatial dims), "
            "got shape (1, 2, 6, 6)",
        ),
        (
            lambda: max_pool(X, (2, 2, 2, 2)),
            ValueError,
            "`window` must have 1, 2 or 3 entries (one per spatial dimension), got (2, 2, 2, 2)",
        ),
        (
            lambda: max_pool(X, 2, stride=(1, 1, 1)),
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
            lambda: max_pool(X, 7),
            ValueError,
            "`x` must be large enough for one window in every spatial dimension with window=7, "
            "stride=None, padding=0, dilation=1 (its output would have spatial size (0, 0)), "
            "got shape (1, 2, 6, 6)",
        ),
        (
            lambda: max_pool(X, (2, 7), 1, ceil_mode=True),
            ValueError,
            "with window=(2, 7), stride=1, padding=0, dilation=1, ceil_mode=True (its output "
            "would have spatial size (5, 0)), got shape (1, 2, 6, 6)",
        ),
        (  # a pool without padding or dilation arguments is not told about them
            lambda: avg_pool(X, 9, padding=1),
            ValueError,
            "with window=9, stride=None, padding=1 (its output would have spatial size (0, 0))",
        ),
        (
            lambda: lp_pool(X, 2, (7, 2)),
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
            lambda: max_pool(X, 2.0),
            TypeError,
            "`window` must be an int or a sequence of ints, got 2.0",
        ),
        (lambda: max_pool(X, 2, ceil_mode=1), TypeError, "`ceil_mode` must be a bool, got 1"),
        (
            lambda: max_pool(X, 2, channels_last="yes"),
            TypeError,
            "`channels_last` must be a bool, got 'yes'",
        ),
        (
            lambda: max_pool(X, 2, return_indices=None),
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
            lambda: avg_pool(X, 2, divisor_override=0),
            ValueError,
            "`divisor_override` must be >= 1, got 0",
        ),
        (
            lambda: avg_pool(X, 2, count_include_pad="no"),
            TypeError,
            "`count_include_pad` must be a bool, got 'no'",
        ),
        (lambda: lp_pool(X, 0, 2), ValueError, "`p` must be > 0, inf or -inf, got 0.0"),
        (lambda: lp_pool(X, float("nan"), 2), ValueError, "`p` must be > 0, inf or -inf, got nan"),
        (
            lambda: lp_pool(X, "2", 2),
            TypeError,
            "`p` must be a real number (int or float), got '2'",
        ),
        (
            lambda: lp_pool(jnp.zeros((1, 2, 6), jnp.int8), 2, 2),
            TypeError,
            "`x` must have a floating dtype",
        ),
        (
            lambda: adaptive_avg_pool(X, 0),
            ValueError,
            "`output_size` must be >= 1 in every dimension, got 0",
        ),
        (
            lambda: adaptive_max_pool(X, (3, -1)),
            ValueError,
            "`output_size` must be >= 1 in every dimension, got (3, -1)",
        ),
        (
            lambda: adaptive_avg_pool(X, 1.5),
            TypeError,
            "`output_size` must be an int, None, or a sequence of ints/None, got 1.5",
        ),
        (
            lambda: adaptive_max_pool(X, (2, 2, 2)),
            ValueError,
            "`x` must be (N, C, *spatial) with ndim 5 to match `output_size` (3 spatial dims)",
        ),
        (
            lambda: adaptive_avg_pool(jnp.zeros((1, 2, 6), jnp.int32), 2),
            TypeError,
            "`x` must have a floating dtype",
        ),
        (
            lambda: max_unpool(X, X, (12, 12)),
            TypeError,
            "`indices` must be an integer array, got a float32 array",
        ),
        (
            lambda: max_unpool(jnp.ones((1, 1, 2)), [[[0, 1]]], 4),
            TypeError,
            "`indices` must be an integer array (JAX or NumPy), got list",
        ),
        (
            lambda: max_unpool(X, jnp.zeros((1, 2, 6, 5), jnp.int32), (12, 12)),
            ValueError,
            "`indices` must have the shape of `y` (1, 2, 6, 6), got (1, 2, 6, 5)",
        ),
        (
            lambda: max_unpool(X, jnp.full((1, 2, 6, 6), 200, jnp.int32), (12, 12)),
            ValueError,
            "`indices` must lie in [0, 144) for output_size=(12, 12), got values in [200, 200]",
        ),
        (
            lambda: max_unpool(X, jnp.zeros((1, 2, 6, 6), jnp.int32), (12, 0)),
            ValueError,
            "`output_size` must be >= 1 in every dimension, got (12, 0)",
        ),
        (
            lambda: max_unpool(X, jnp.zeros((1, 2, 6, 6), jnp.int32), (12, 12, 12)),
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
        jax.jit(lambda a: max_pool(a, 0))(X)
    with pytest.raises(ValueError, match=re.escape("`padding` must be at most half")):
        jax.jit(lambda a: avg_pool(a, 2, padding=2))(X)


def test_out_of_range_indices_are_dropped_under_jit():
    # traced indices cannot be checked: out-of-range entries are ignored, as documented
    idx = jnp.asarray([[[0, 99]]], jnp.int32)
    out = jax.jit(lambda y, i: max_unpool(y, i, 4))(jnp.asarray([[[1.0, 2.0]]]), idx)
    np.testing.assert_array_equal(out, [[[1.0, 0.0, 0.0, 0.0]]])


# Every static argument of every pool, passed as a traced value: (name, what, call with v).
Y = jnp.zeros((1, 2, 3, 3), jnp.float32)
IDX = jnp.zeros((1, 2, 3, 3), jnp.int32)
STATIC = "must be static ({}, not a traced array: under jax.jit mark it with static_argnums"
TRACED = [
    ("window", "Python ints", lambda v: max_pool(X, v)),
    ("window", "Python ints", lambda v: max_pool(X, (v, 2))),
    ("stride", "Python ints", lambda v: max_pool(X, 2, v)),
    ("padding", "Python ints", lambda v: max_pool(X, 3, 1, v)),
    ("dilation", "Python ints", lambda v: max_pool(X, 2, 1, 0, v)),
    ("ceil_mode", "a Python bool", lambda v: max_pool(X, 2, ceil_mode=v > 0)),
    ("channels_last", "a Python bool", lambda v: max_pool(X, 2, channels_last=v > 0)),
    ("return_indices", "a Python bool", lambda v: max_pool(X, 2, return_indices=v > 0)),
    ("window", "Python ints", lambda v: avg_pool(X, v)),
    ("stride", "Python ints", lambda v: avg_pool(X, 2, (1, v))),
    ("padding", "Python ints", lambda v: avg_pool(X, 3, 1, v)),
    ("ceil_mode", "a Python bool", lambda v: avg_pool(X, 2, ceil_mode=v > 0)),
    ("count_include_pad", "a Python bool", lambda v: avg_pool(X, 2, count_include_pad=v > 0)),
    ("divisor_override", "Python ints", lambda v: avg_pool(X, 2, divisor_override=v)),
    ("channels_last", "a Python bool", lambda v: avg_pool(X, 2, channels_last=v > 0)),
    ("p", "a Python number", lambda v: lp_pool(X, v, 2)),
    ("window", "Python ints", lambda v: lp_pool(X, 2.0, v)),
    ("stride", "Python ints", lambda v: lp_pool(X, 2.0, 2, v)),
    ("ceil_mode", "a Python bool", lambda v: lp_pool(X, 2.0, 2, ceil_mode=v > 0)),
    ("channels_last", "a Python bool", lambda v: lp_pool(X, 2.0, 2, channels_last=v > 0)),
    ("output_size", "Python ints or None", lambda v: adaptive_avg_pool(X, v)),
    ("output_size", "Python ints or None", lambda v: adaptive_avg_pool(X, (v, None))),
    ("channels_last", "a Python bool", lambda v: adaptive_avg_pool(X, 2, channels_last=v > 0)),
    ("output_size", "Python ints or None", lambda v: adaptive_max_pool(X, (2, v))),
    ("return_indices", "a Python bool", lambda v: adaptive_max_pool(X, 2, v > 0)),
    ("channels_last", "a Python bool", lambda v: adaptive_max_pool(X, 2, channels_last=v > 0)),
    ("output_size", "Python ints", lambda v: max_unpool(Y, IDX, v)),
    ("output_size", "Python ints", lambda v: max_unpool(Y, IDX, (6, v))),
    ("channels_last", "a Python bool", lambda v: max_unpool(Y, IDX, 6, channels_last=v > 0)),
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
        jax.jit(max_pool)(X, 2)
    y = jax.jit(max_pool, static_argnums=1)(X, 2)  # what the message asks for
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
