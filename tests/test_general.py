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

import jaxconv
from jaxconv._compat import enable_x64
from jaxconv.testing import assert_vjp_matches, random_array

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
        (dict(out_sharding="x"), NotImplementedError, "`out_sharding` is not supported"),
        (dict(dimension_numbers=("NCHW", "OIHW")), ValueError, "`dimension_numbers` are not valid"),
    ],
)
def test_bad_input(kwargs, exc, match):
    base = dict(window_strides=(1, 1), padding="VALID")
    base.update(kwargs)
    with pytest.raises(exc, match=match):
        jaxconv.conv_general_dilated(jnp.zeros((1, 4, 5, 5)), jnp.zeros((2, 4, 3, 3)), **base)


def test_integer_arrays_refused():
    with pytest.raises(TypeError, match="`lhs` must have a floating dtype"):
        jaxconv.conv_general_dilated(
            jnp.zeros((1, 1, 3), jnp.int32), jnp.zeros((1, 1, 2)), (1,), "VALID"
        )


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
