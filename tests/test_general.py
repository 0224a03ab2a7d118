"""jaxconv.conv_general_dilated against jax.lax.conv_general_dilated: values and VJPs."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxconv
from jaxconv.testing import assert_allclose_rel, assert_vjp_matches, enable_x64, random_array

_LAYOUTS_2D = [
    ("NCHW", "OIHW", "NCHW"),
    ("NHWC", "HWIO", "NHWC"),
    ("NHWC", "OIHW", "NCHW"),
    ("CHWN", "IOHW", "HWNC"),
    ("HNWC", "WHOI", "CNHW"),
]


@st.composite
def general_cases(draw):
    nd = draw(st.integers(1, 2))
    kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
    rhs_dil = [draw(st.integers(1, 2)) for _ in range(nd)]
    lhs_dil = [draw(st.integers(1, 2)) for _ in range(nd)]
    strides = [draw(st.integers(1, 3)) for _ in range(nd)]
    use_string = draw(st.booleans()) and all(d == 1 for d in lhs_dil)
    spans = [1 + d * (k - 1) for k, d in zip(kernel, rhs_dil, strict=True)]
    if use_string:
        padding = draw(st.sampled_from(["SAME", "VALID", "SAME_LOWER"]))
        spatial = [draw(st.integers(s, s + 4)) for s in spans]
    else:  # explicit pairs, negative (cropping) ones included
        padding = [(draw(st.integers(-1, s)), draw(st.integers(-1, s))) for s in spans]
        spatial = [
            draw(st.integers(max(2, -(-(s - lo - hi + 2 * ld) // ld)), 6 + s))
            for s, (lo, hi), ld in zip(spans, padding, lhs_dil, strict=True)
        ]
    groups_kind = draw(st.sampled_from(["none", "feature", "batch"]))
    g = 1 if groups_kind == "none" else draw(st.integers(2, 3))
    fgc, bgc = (g, 1) if groups_kind == "feature" else (1, g) if groups_kind == "batch" else (1, 1)
    c_in_g, c_out_g = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    batch = draw(st.integers(1, 2)) * bgc
    c_in, c_out = c_in_g * fgc, c_out_g * fgc * bgc
    layout = draw(
        st.sampled_from(
            _LAYOUTS_2D if nd == 2 else [None, ("NWC", "WIO", "NWC"), ("NCW", "OIW", "NWC")]
        )
    )
    lhs_shape = {"N": batch, "C": c_in}
    rhs_shape = {"O": c_out, "I": c_in_g}
    letters = "HW" if nd == 2 else "W"
    for ch, size, k in zip(letters, spatial, kernel, strict=True):
        lhs_shape[ch], rhs_shape[ch] = size, k
    spec = layout or ("NC" + letters, "OI" + letters, "NC" + letters)
    kwargs = dict(
        window_strides=tuple(strides),
        padding=padding,
        lhs_dilation=tuple(lhs_dil),
        rhs_dilation=tuple(rhs_dil),
        dimension_numbers=layout,
        feature_group_count=fgc,
        batch_group_count=bgc,
    )
    return (
        tuple(lhs_shape[c] for c in spec[0]),
        tuple(rhs_shape[c] for c in spec[1]),
        kwargs,
        draw(st.integers(0, 2**31 - 1)),
    )


@given(general_cases())
def test_matches_lax(case):
    lhs_shape, rhs_shape, kwargs, seed = case
    try:
        expected = jax.eval_shape(
            lambda a, b: lax.conv_general_dilated(a, b, **kwargs),
            jax.ShapeDtypeStruct(lhs_shape, jnp.float32),
            jax.ShapeDtypeStruct(rhs_shape, jnp.float32),
        )
    except (TypeError, ValueError):  # lax itself refuses (e.g. the kernel does not fit)
        with pytest.raises(ValueError):
            jaxconv.conv_general_dilated(jnp.zeros(lhs_shape), jnp.zeros(rhs_shape), **kwargs)
        return
    with enable_x64():
        rng = np.random.default_rng(seed)
        lhs, rhs = random_array(rng, lhs_shape), random_array(rng, rhs_shape)
        assert jaxconv.conv_general_dilated(lhs, rhs, **kwargs).shape == expected.shape
        assert_vjp_matches(
            lambda a, b: jaxconv.conv_general_dilated(a, b, **kwargs),
            lambda a, b: lax.conv_general_dilated(a, b, **kwargs, precision="highest"),
            (lhs, rhs),
            seed=seed,
        )


def test_positional_call_and_dimension_numbers_object():
    rng = np.random.default_rng(0)
    x, k = random_array(rng, (2, 5, 6, 3), np.float32), random_array(rng, (3, 2, 3, 4), np.float32)
    dn = lax.conv_dimension_numbers(x.shape, k.shape, ("NHWC", "HWIO", "NHWC"))
    args = (x, k, (1, 2), [(1, 1), (0, 1)], (1, 1), (2, 1), dn, 1, 1, lax.Precision.HIGHEST, None)
    np.testing.assert_allclose(
        jaxconv.conv_general_dilated(*args), lax.conv_general_dilated(*args), rtol=1e-5, atol=1e-5
    )


def test_second_derivatives_match_lax():
    rng = np.random.default_rng(1)
    kw = dict(window_strides=(2,), padding=[(1, 0)], lhs_dilation=(2,), rhs_dilation=(1,))
    with enable_x64():
        x, w = random_array(rng, (2, 2, 5)), random_array(rng, (3, 2, 2))

        def f(conv_fn):
            return lambda x, w: jnp.sum(jnp.cos(conv_fn(x, w, **kw)))

        for argnum in (0, 1):
            h = jax.jit(jax.hessian(f(jaxconv.conv_general_dilated), argnums=argnum))(x, w)
            h_ref = jax.jit(jax.hessian(f(lax.conv_general_dilated), argnums=argnum))(x, w)
            np.testing.assert_allclose(h, h_ref, atol=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(padding="FULLISH"), ValueError, "`padding` must be 'SAME', 'SAME_LOWER', 'VALID'"),
        (
            dict(padding=[(0, 0)]),
            ValueError,
            "one \\(low, high\\) pair per spatial dimension \\(2\\)",
        ),
        (
            dict(padding="SAME", lhs_dilation=(2, 1)),
            ValueError,
            "`padding` strings are not implemented with `lhs_dilation`",
        ),
        (dict(window_strides=(0, 1)), ValueError, "`window_strides` must be >= 1"),
        (dict(feature_group_count=3), ValueError, "`feature_group_count` \\(3\\) must divide"),
        (dict(out_sharding="x"), TypeError, "`out_sharding` must be None, a jax.sharding"),
        (dict(out_sharding=P()), ValueError, "`out_sharding` given as a PartitionSpec needs a"),
        (dict(window_strides=np.array([1, 0])), ValueError, "`window_strides` must be >= 1"),
        (dict(preferred_element_type=jnp.float16), TypeError, "`preferred_element_type` must"),
        (dict(dimension_numbers=("NCHW", "OIHW")), ValueError, "`dimension_numbers` are not valid"),
    ],
)
def test_bad_input(kwargs, exc, match):
    base = dict(window_strides=(1, 1), padding="VALID")
    base.update(kwargs)
    with pytest.raises(exc, match=match):
        jaxconv.conv_general_dilated(jnp.zeros((1, 4, 5, 5)), jnp.zeros((2, 4, 3, 3)), **base)


def test_mixed_and_non_numeric_dtypes_refused():
    with pytest.raises(TypeError, match="`rhs` must have the same dtype as `lhs` \\(int32\\)"):
        jaxconv.conv_general_dilated(
            jnp.zeros((1, 1, 3), jnp.int32), jnp.zeros((1, 1, 2)), (1,), "VALID"
        )
    with pytest.raises(TypeError, match="`lhs` must have a bool, integer, floating or complex"):
        jaxconv.conv_general_dilated(np.array([["a"]]), np.array([["b"]]), (), "VALID")


def test_all_layout_permutations_1d():
    """Every order of N/C/W on lhs and of O/I/W on rhs (paired off) gives lax's gradients."""
    rng = np.random.default_rng(2)
    base_x, base_k = (
        random_array(rng, (2, 3, 7), np.float32),
        random_array(rng, (4, 3, 2), np.float32),
    )
    lhs_orders, rhs_orders = (
        list(itertools.permutations("NCW")),
        list(itertools.permutations("OIW")),
    )
    combos = [
        (lp, rhs_orders[(i + shift) % 6], op)
        for i, lp in enumerate(lhs_orders)
        for shift, op in ((0, "NCW"), (3, "WNC"))
    ]
    for lp, rp, op in combos:
        lhs_spec, rhs_spec, out_spec = "".join(lp), "".join(rp), "".join(op)
        x = jnp.transpose(base_x, ["NCW".index(c) for c in lhs_spec])
        k = jnp.transpose(base_k, ["OIW".index(c) for c in rhs_spec])
        kw = dict(
            window_strides=(1,), padding="SAME", dimension_numbers=(lhs_spec, rhs_spec, out_spec)
        )

        def loss(conv_fn, x, k, kw=kw):
            return jnp.sum(conv_fn(x, k, **kw) ** 2)

        g1 = jax.grad(functools.partial(loss, jaxconv.conv_general_dilated), (0, 1))(x, k)
        g2 = jax.grad(functools.partial(loss, lax.conv_general_dilated), (0, 1))(x, k)
        for a, b in zip(g1, g2, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------
# What lax accepts, the drop-in accepts (issue 8, item 4). Cases are ported from JAX's own
# tests/lax_test.py (testConvGeneralDilated, testConvGeneralDilated0D, testConv0DIsDot,
# testConvPreferredElement) and tests/lax_autodiff_test.py (testConvGeneralDilatedGrad,
# testGradConv0D, testConvPreferredElementType), a compact subset.

_RTOL = {"float32": 1e-5, "float64": 1e-12, "complex64": 1e-5, "complex128": 1e-12}


def _as_real(a):
    """Complex arrays as (real, imag) pairs, so relative errors are measured on both."""
    a = np.asarray(a)
    return np.stack([a.real, a.imag]) if np.iscomplexobj(a) else a


def _random(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        return jnp.asarray(rng.standard_normal(shape) + 1j * rng.standard_normal(shape), dtype)
    if dtype.kind in "iub":
        return jnp.asarray(rng.integers(0, 2 if dtype.kind == "b" else 4, shape), dtype)
    return jnp.asarray(rng.standard_normal(shape), dtype)


def _check_like_lax(lhs, rhs, kw, *, seed=0):
    """Values, dtype and shape equal lax's; for inexact dtypes so are both VJPs (for a random
    cotangent) and jax.grad of a real loss; for integers and bools the gradients are float0
    like lax's. Jitted on both sides."""
    ours = functools.partial(jaxconv.conv_general_dilated, **kw)
    ref = functools.partial(lax.conv_general_dilated, **kw, precision="highest")
    y, y_ref = jax.jit(ours)(lhs, rhs), jax.jit(ref)(lhs, rhs)
    assert (y.shape, y.dtype) == (y_ref.shape, y_ref.dtype)
    if not jnp.issubdtype(lhs.dtype, jnp.inexact):
        np.testing.assert_array_equal(y, y_ref)  # small integers: exact in any output dtype
        for fn in (ours, ref):
            grads = jax.grad(
                lambda a, b, fn=fn: jnp.sum(fn(a, b).astype(jnp.float32)), (0, 1), allow_int=True
            )(lhs, rhs)
            assert [(g.shape, g.dtype) for g in grads] == [
                (lhs.shape, jax.dtypes.float0),
                (rhs.shape, jax.dtypes.float0),
            ]
        return
    rtol = _RTOL[np.dtype(y.dtype).name]
    assert_allclose_rel(_as_real(y), _as_real(y_ref), rtol, "value")
    ct = _random(np.random.default_rng(seed), y.shape, y.dtype)

    def pullback(fn):
        return jax.jit(lambda a, b, c: jax.vjp(fn, a, b)[1](c))(lhs, rhs, ct)

    def real_loss_grad(fn):  # a real loss of a complex output: JAX's convention for jax.grad
        return jax.jit(jax.grad(lambda a, b: jnp.real(jnp.sum(fn(a, b) * ct)), (0, 1)))(lhs, rhs)

    for get in (pullback, real_loss_grad):
        for g, g_ref in zip(get(ours), get(ref), strict=True):
            assert (g.shape, g.dtype) == (g_ref.shape, g_ref.dtype)
            assert_allclose_rel(_as_real(g), _as_real(g_ref), rtol, get.__name__)
            if y.size == 0:  # an empty output: every gradient entry is exactly zero, as lax's
                assert not np.any(np.asarray(g))


_EMPTY_OUTPUTS = [
    # (lhs shape, rhs shape, keyword arguments): a kernel larger than the (padded) input
    ((1, 1, 3), (1, 1, 5), dict(window_strides=(1,), padding="VALID")),
    ((1, 2, 3, 3), (1, 2, 4, 2), dict(window_strides=(2, 1), padding="VALID", rhs_dilation=(1, 2))),
    # padding that crops the whole input (lax allows a padded size of exactly 0)
    ((1, 1, 5), (1, 1, 1), dict(window_strides=(1,), padding=[(-2, -3)])),
    ((2, 1, 5), (1, 1, 3), dict(window_strides=(1,), padding=[(-5, 0)])),
    ((1, 1, 3), (1, 1, 1), dict(window_strides=(1,), padding=[(-5, 0)], lhs_dilation=(2,))),
    # zero-size spatial axes
    ((1, 1, 0), (1, 1, 2), dict(window_strides=(1,), padding="VALID")),
    ((1, 1, 0), (1, 1, 2), dict(window_strides=(1,), padding="SAME")),
    # lax_autodiff_test testConvGeneralDilatedGrad: lhs (b, i, 0, 4), kernel (j, i, 1, 2)
    ((2, 2, 0, 4), (2, 2, 1, 2), dict(window_strides=(1, 2), padding=[(0, 0), (0, 1)])),
    ((4, 2, 0, 4), (2, 2, 1, 2), dict(window_strides=(2, 1), padding="VALID", batch_group_count=2)),
]


@pytest.mark.parametrize(("lhs_shape", "rhs_shape", "kw"), _EMPTY_OUTPUTS)
def test_empty_outputs_and_zero_gradients_like_lax(lhs_shape, rhs_shape, kw):
    rng = np.random.default_rng(3)
    lhs, rhs = _random(rng, lhs_shape, np.float32), _random(rng, rhs_shape, np.float32)
    assert jaxconv.conv_general_dilated(lhs, rhs, **kw).size == 0
    _check_like_lax(lhs, rhs, kw)


def test_empty_input_with_padding_gives_a_full_output_like_lax():
    """lax_test testConvGeneralDilated, w = 0 with padding ((10, 8), (7, 13)): an input of
    width 0 padded to 20 gives a full-size output of zeros, and gradients."""
    rng = np.random.default_rng(4)
    lhs, rhs = _random(rng, (2, 4, 9, 0), np.float32), _random(rng, (6, 2, 4, 5), np.float32)
    kw = dict(
        window_strides=(2, 1),
        padding=[(10, 8), (7, 13)],
        lhs_dilation=(1, 2),
        rhs_dilation=(1, 4),
        feature_group_count=2,
    )
    assert jaxconv.conv_general_dilated(lhs, rhs, **kw).shape == (2, 6, 12, 4)
    _check_like_lax(lhs, rhs, kw)


def test_conv_still_refuses_empty_outputs_and_says_where_to_go():
    with pytest.raises(ValueError, match="jaxconv.conv_general_dilated follows lax"):
        jaxconv.conv(jnp.zeros((1, 1, 3)), jnp.zeros((1, 1, 5)))


@pytest.mark.parametrize(
    ("lhs_shape", "rhs_shape", "kw"),
    [
        # lax_test testConvGeneralDilated0D: (b * bgc, i * fgc) and (j * fgc * bgc, i)
        ((2, 3), (3, 3), dict(dimension_numbers=("NC", "OI", "NC"))),
        ((3, 4), (6, 2), dict(dimension_numbers=("NC", "OI", "NC"), feature_group_count=2)),
        ((4, 3), (6, 3), dict(dimension_numbers=("NC", "OI", "NC"), batch_group_count=2)),
        ((2, 3), (4, 3), dict(dimension_numbers=None, padding="SAME")),
        # lax_autodiff_test testGradConv0D: lax.ConvDimensionNumbers((0, 1), (1, 0), (0, 1))
        ((2, 5), (5, 10), dict(dimension_numbers=lax.ConvDimensionNumbers((0, 1), (1, 0), (0, 1)))),
    ],
)
def test_0d_convolution_is_a_dot_product_like_lax(lhs_shape, rhs_shape, kw):
    kw = dict(window_strides=(), padding=(), lhs_dilation=(), rhs_dilation=()) | kw
    rng = np.random.default_rng(5)
    with enable_x64():
        lhs, rhs = _random(rng, lhs_shape, np.float64), _random(rng, rhs_shape, np.float64)
        _check_like_lax(lhs, rhs, kw)
        if kw.get("feature_group_count", 1) == kw.get("batch_group_count", 1) == 1:
            dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, kw["dimension_numbers"])
            w = rhs.T if dn.rhs_spec[0] == 0 else rhs  # as (I, O)
            np.testing.assert_allclose(jaxconv.conv_general_dilated(lhs, rhs, **kw), lhs @ w)


_GENERAL_KW = dict(
    window_strides=(2, 1),
    padding=[(1, 2), (2, 0)],
    lhs_dilation=(1, 2),
    rhs_dilation=(2, 1),
    feature_group_count=2,
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
)


@pytest.mark.parametrize(("dtype", "batch_groups"), [("complex64", False), ("complex128", True)])
def test_complex_values_vjps_and_real_loss_gradients_like_lax(dtype, batch_groups):
    """The hand-derived rules with transposes, not conjugates: JAX's VJP convention."""
    kw = dict(_GENERAL_KW)
    if batch_groups:
        kw.update(feature_group_count=1, batch_group_count=2)
    rng = np.random.default_rng(6)
    with enable_x64():
        lhs = _random(rng, (4, 7, 6, 4 if batch_groups else 4), dtype)
        rhs = _random(rng, (2, 3, 4 if batch_groups else 2, 6), dtype)
        _check_like_lax(lhs, rhs, kw)


def test_complex_second_derivative_like_lax():
    """Reverse-over-reverse through the complex rules: the Hessian of a real loss with
    respect to the real part of the input."""
    rng = np.random.default_rng(7)
    kw = dict(window_strides=(2,), padding=[(1, 0)], lhs_dilation=(2,))
    with enable_x64():
        re, im = rng.standard_normal((2, 1, 2, 5))
        w = _random(rng, (2, 2, 2), "complex128")

        def f(fn):
            return lambda t: jnp.real(jnp.sum(jnp.sin(fn(lax.complex(t, im), w, **kw))))

        h = jax.jit(jax.hessian(f(jaxconv.conv_general_dilated)))(re)
        h_ref = jax.jit(jax.hessian(f(lax.conv_general_dilated)))(re)
        np.testing.assert_allclose(h, h_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("dtype", "preferred"),
    [
        ("int8", None),
        ("int8", "int32"),
        ("int32", "float32"),
        ("uint8", "int32"),
        ("bool", None),
        ("bool", "float32"),
    ],
)
def test_integer_and_bool_inputs_like_lax(dtype, preferred):
    """Forward only, exactly lax's values; gradients are float0, as lax's."""
    rng = np.random.default_rng(8)
    lhs, rhs = _random(rng, (2, 7, 6, 4), dtype), _random(rng, (2, 3, 2, 6), dtype)
    _check_like_lax(lhs, rhs, _GENERAL_KW | dict(preferred_element_type=preferred))


# JAX's preferred_type_combinations (lax_test.py), those that run on CPU without x64 first.
_PREFERRED = [
    ("float16", "float32"),
    ("bfloat16", "float32"),
    ("float16", "bfloat16"),
    ("int8", "int16"),
    ("int8", "float16"),
    ("int16", "float32"),
    ("uint8", "int8"),
    ("bool", "complex64"),
    ("float32", "float64"),
    ("complex64", "complex128"),
    ("int32", "int64"),
]


@pytest.mark.parametrize(("dtype", "preferred"), _PREFERRED)
def test_preferred_element_type_like_lax(dtype, preferred):
    rng = np.random.default_rng(9)
    kw = dict(window_strides=(1, 2), padding="SAME", preferred_element_type=preferred)

    @jax.jit
    def run(lhs, rhs):
        ys, grads = [], []
        for fn in (jaxconv.conv_general_dilated, lax.conv_general_dilated):
            ys.append(fn(lhs, rhs, **kw))
            if jnp.issubdtype(lhs.dtype, jnp.inexact):
                loss = lambda a, b, fn=fn: jnp.real(jnp.sum(jnp.sin(fn(a, b, **kw))))  # noqa: E731
                grads.append(jax.grad(loss, (0, 1))(lhs, rhs))
        # as JAX's testConvPreferredElement: the conv of the inputs upcast to `preferred`
        up = lax.conv_general_dilated(
            lhs.astype(preferred), rhs.astype(preferred), (1, 2), "SAME", precision="highest"
        )
        return ys, grads, up

    with enable_x64():
        lhs, rhs = _random(rng, (2, 3, 7, 8), dtype), _random(rng, (2, 3, 3, 4), dtype)
        (y, y_ref), grads, up = run(lhs, rhs)
        assert y.dtype == y_ref.dtype == np.dtype(preferred)
        assert_allclose_rel(_as_real(y), _as_real(up), 1e-5)
        for g, g_ref in zip(*grads, strict=True):  # gradients keep the inputs' dtypes
            assert g.dtype == g_ref.dtype == lhs.dtype
            assert_allclose_rel(_as_real(g), _as_real(g_ref), 1e-1 if g.itemsize == 2 else 1e-5)


def test_preferred_element_type_gradient_regression_from_jax():
    """lax_autodiff_test testConvPreferredElementType (jax issue 31592), NLC/LIO layout."""
    x, w = jnp.ones((1, 8, 4), jnp.bfloat16), jnp.ones((3, 4, 8), jnp.bfloat16)
    kw = dict(
        window_strides=(1,),
        padding="VALID",
        rhs_dilation=(1,),
        dimension_numbers=("NLC", "LIO", "NLC"),
        preferred_element_type=jnp.float32,
    )
    g = jax.grad(lambda x, w: jaxconv.conv_general_dilated(x, w, **kw).sum(), (0, 1))(x, w)
    g_ref = jax.grad(lambda x, w: lax.conv_general_dilated(x, w, **kw).sum(), (0, 1))(x, w)
    for a, b in zip(g, g_ref, strict=True):
        assert a.dtype == b.dtype == jnp.bfloat16
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("dtype", "preferred"),
    [
        ("float32", "float16"),
        ("float32", "bfloat16"),
        ("float32", "int32"),
        ("int32", "int8"),
        ("int32", "float16"),
        ("int8", "uint8"),
        ("int32", "bool"),
        ("complex64", "float32"),
        ("float32", "complex64"),
        ("float64", "float32"),
        ("complex128", "complex64"),
    ],
)
def test_preferred_element_type_refused_where_lax_refuses(dtype, preferred):
    with enable_x64():
        lhs, rhs = jnp.zeros((1, 1, 3), dtype), jnp.zeros((1, 1, 2), dtype)
        with pytest.raises(TypeError):  # the table is lax's own rule
            lax.conv_general_dilated(lhs, rhs, (1,), "VALID", preferred_element_type=preferred)
        with pytest.raises(TypeError, match=f"`preferred_element_type` must .*, got {preferred}"):
            jaxconv.conv_general_dilated(lhs, rhs, (1,), "VALID", preferred_element_type=preferred)


def _mesh_context(mesh):
    """``jax.set_mesh`` (newer jax) or ``jax.sharding.use_mesh`` (older)."""
    set_mesh = getattr(jax, "set_mesh", None) or jax.sharding.use_mesh
    return set_mesh(mesh)


@pytest.mark.parametrize(
    ("x_spec", "w_spec", "out"),
    [
        (P(), P(), P()),
        (P("a"), P(), None),  # data parallel: the batch sharded, the kernel replicated
        (P("a"), P(), P()),
        (P("a"), P(), P(None, "a")),
        (P(), P("a"), P()),  # a sharded kernel needs out_sharding, in lax too
        (P(None, "a"), P(), "named"),
    ],
)
def test_out_sharding_and_gradient_shardings_like_lax(x_spec, w_spec, out):
    """On an explicit mesh over the available devices: lax's output sharding, and each
    gradient with its operand's sharding (lax's transpose rules), values equal."""
    n = jax.device_count()
    mesh = jax.make_mesh((n,), ("a",), axis_types=(jax.sharding.AxisType.Explicit,))
    out = NamedSharding(mesh, P()) if out == "named" else out
    kw = dict(window_strides=(1,), padding="SAME", out_sharding=out)
    rng = np.random.default_rng(10)
    with _mesh_context(mesh):
        x = jax.device_put(_random(rng, (2 * n, 2 * n, 6), np.float32), NamedSharding(mesh, x_spec))
        w = jax.device_put(_random(rng, (2 * n, 2 * n, 3), np.float32), NamedSharding(mesh, w_spec))
        results = []
        for fn in (jaxconv.conv_general_dilated, lax.conv_general_dilated):

            @jax.jit
            def run(x, w, fn=fn):
                y, vjp = jax.vjp(lambda a, b: fn(a, b, **kw), x, w)
                return (y, *vjp(jnp.cos(y)))

            results.append(run(x, w))
        for a, b in zip(*results, strict=True):
            assert jax.typeof(a).sharding.spec == jax.typeof(b).sharding.spec
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_out_sharding_refused_where_lax_refuses():
    x = jnp.zeros((1, 1, 3))
    for bad, exc in ((P(), ValueError), ("x", TypeError)):
        with pytest.raises(exc):
            lax.conv_general_dilated(x, x, (1,), "VALID", out_sharding=bad)
        with pytest.raises(exc, match="`out_sharding`"):
            jaxconv.conv_general_dilated(x, x, (1,), "VALID", out_sharding=bad)


def test_zero_size_kernel_refused_before_lowering():
    with pytest.raises(ValueError, match=r"`rhs` must have every spatial size >= 1"):
        jaxconv.conv_general_dilated(jnp.ones((1, 1, 4)), jnp.ones((1, 1, 0)), (1,), "VALID")


def test_jvp_of_the_op_itself_is_refused_but_jvp_of_grad_works():
    """A custom_vjp function: jax.jvp of it is refused by JAX (documented); forward-over-
    reverse works and equals lax's."""
    x, w = jnp.ones((1, 1, 4)), jnp.ones((1, 1, 2))
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(lambda x: jaxconv.conv_general_dilated(x, w, (1,), "VALID"), (x,), (x,))
    assert "jax.jvp" in jaxconv.conv_general_dilated.__doc__

    def hvp(fn):
        g = jax.grad(lambda x: jnp.sum(fn(x, w, (1,), "VALID") ** 3))
        return jax.jvp(g, (x,), (x,))[1]

    np.testing.assert_allclose(hvp(jaxconv.conv_general_dilated), hvp(lax.conv_general_dilated))
