"""jaxconv.conv: hand cases, properties against lax, identities, composition, bad input."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import jaxconv
from jaxconv import reference
from jaxconv.testing import (
    ConvCase,
    assert_allclose_rel,
    assert_vjp_matches,
    conv_cases,
    enable_x64,
    lax_conv,
    random_array,
    relative_error,
    tolerance,
)

# ---------------------------------------------------------------- layer 1: by hand


def test_lecture_example_shape():
    """32x32x3 image, six 5x5x3 filters, stride 1, no padding -> 28x28x6."""
    x = jnp.zeros((1, 3, 32, 32))
    w = jnp.zeros((6, 3, 5, 5))
    assert jaxconv.conv(x, w).shape == (1, 6, 28, 28)
    assert jaxconv.conv_output_shape((32, 32), (5, 5)) == (28, 28)
    xl, wl = jnp.zeros((1, 32, 32, 3)), jnp.zeros((5, 5, 3, 6))
    assert jaxconv.conv(xl, wl, channels_last=True).shape == (1, 28, 28, 6)


def test_tiny_correlation_by_hand():
    x = jnp.arange(5.0).reshape(1, 1, 5)
    w = jnp.array([[[1.0, 2.0, 3.0]]])
    y = jaxconv.conv(x, w)
    assert y.tolist() == [[[0 * 1 + 1 * 2 + 2 * 3, 1 * 1 + 2 * 2 + 3 * 3, 2 * 1 + 3 * 2 + 4 * 3]]]
    # true convolution: the kernel is flipped
    yf = jaxconv.conv(x, w, flip=True)
    assert yf.tolist() == [[[0 * 3 + 1 * 2 + 2 * 1, 1 * 3 + 2 * 2 + 3 * 1, 2 * 3 + 3 * 2 + 4 * 1]]]


def test_gradients_by_hand():
    """dL/dW sums x over every output pixel; dL/dX only over the windows that covered it."""
    x = jnp.arange(5.0).reshape(1, 1, 5)
    w = jnp.array([[[1.0, 2.0, 3.0]]])
    dx, dw = jax.grad(lambda x, w: jaxconv.conv(x, w).sum(), argnums=(0, 1))(x, w)
    assert dw.tolist() == [[[0 + 1 + 2, 1 + 2 + 3, 2 + 3 + 4]]]
    assert dx.tolist() == [[[1, 1 + 2, 1 + 2 + 3, 2 + 3, 3]]]


def test_true_convolution_matches_scipy():
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(0)
    a, k = rng.standard_normal((7, 5)), rng.standard_normal((3, 4))
    with enable_x64():
        y = jaxconv.conv(
            jnp.asarray(a)[None, None], jnp.asarray(k)[None, None], padding="FULL", flip=True
        )
        np.testing.assert_allclose(
            np.asarray(y)[0, 0], signal.convolve(a, k, mode="full"), atol=1e-12
        )


def test_input_grad_is_full_correlation_with_flipped_kernel():
    """Stride 1: dL/dX = conv(dY, W flipped 180 degrees, channel axes swapped, FULL padding)."""
    rng = np.random.default_rng(1)
    with enable_x64():
        w = random_array(rng, (4, 3, 3, 2))
        dy = random_array(rng, (2, 4, 5, 6))
        dx = jaxconv.conv_input_grad(dy, w, (2, 3, 7, 7))
        w_t = jnp.swapaxes(w, 0, 1)
        expected = jaxconv.conv(dy, w_t, padding="FULL", flip=True)
        np.testing.assert_allclose(dx, expected, atol=1e-12)


# ---------------------------------------------------------------- layer 2: vs lax


@given(conv_cases(padding_modes=("zeros", "reflect", "replicate", "circular")))
def test_conv_matches_lax_float64(case: ConvCase):
    with enable_x64():
        x, w, b = case.arrays(np.float64)
        assert_vjp_matches(
            lambda x, w, b: jaxconv.conv(x, w, b, **case.kwargs),
            lambda x, w, b: lax_conv(x, w, b, **case.kwargs),
            (x, w, b),
            seed=case.seed,
        )


@given(conv_cases(ranks=(1, 2)), st.sampled_from([np.float32, jnp.bfloat16, np.float16]))
def test_conv_matches_lax_low_precision(case: ConvCase, dtype):
    x, w, b = case.arrays(dtype)
    f = jax.jit(lambda x, w, b: jaxconv.conv(x, w, b, **case.kwargs, precision="highest"))
    assert_vjp_matches(
        f, lambda x, w, b: lax_conv(x, w, b, **case.kwargs), (x, w, b), seed=case.seed
    )


@given(
    conv_cases(
        max_batch=2,
        max_group_channels=2,
        max_groups=2,
        ranks=(1, 2),
        max_kernel=2,
        allow_channels_last=False,  # the loops are channels-first
    )
)
def test_conv_matches_loop_reference(case: ConvCase):
    kw = {k: v for k, v in case.kwargs.items() if k not in ("channels_last", "padding_mode")}
    with enable_x64():
        x, w, b = case.arrays(np.float64)
        y, vjp = jax.vjp(lambda x, w: jaxconv.conv(x, w, b, **kw), x, w)
        dy = random_array(np.random.default_rng(case.seed), y.shape)
        dx, dw = vjp(dy)
        np.testing.assert_allclose(y, reference.conv(x, w, b, **kw), atol=1e-10)
        np.testing.assert_allclose(dx, reference.conv_input_grad(dy, w, x.shape, **kw), atol=1e-10)
        np.testing.assert_allclose(dw, reference.conv_weight_grad(x, dy, w.shape, **kw), atol=1e-10)


@given(conv_cases(max_batch=2, max_group_channels=2, max_groups=2))
def test_public_gradient_functions_match_lax(case: ConvCase):
    kw = {k: v for k, v in case.kwargs.items() if k != "padding_mode"}
    with enable_x64():
        x, w, _ = case.arrays(np.float64)
        y, vjp = jax.vjp(lambda x, w: lax_conv(x, w, **kw), x, w)
        dy = random_array(np.random.default_rng(case.seed), y.shape)
        dx_ref, dw_ref = vjp(dy)
        assert_allclose_rel(jaxconv.conv_input_grad(dy, w, x.shape, **kw), dx_ref, 1e-10, "dx")
        assert_allclose_rel(jaxconv.conv_weight_grad(x, dy, w.shape, **kw), dw_ref, 1e-10, "dw")


# ---------------------------------------------------------------- layer 3: identities


@given(conv_cases(padding_modes=("zeros", "reflect", "circular", "replicate")))
def test_adjoint_identities(case: ConvCase):
    """<conv(x), dy> == <x, dL/dX(dy)> and <conv_w(x), dy> == <w, dL/dW(dy)> (conv is bilinear)."""
    with enable_x64():
        x, w, _ = case.arrays(np.float64)
        f = lambda x, w: jaxconv.conv(x, w, **case.kwargs)  # noqa: E731
        dy = random_array(np.random.default_rng(case.seed + 1), jax.eval_shape(f, x, w).shape)

        @jax.jit  # one program per example, not one per op
        def forward_and_vjp(x, w, dy):
            y, vjp = jax.vjp(f, x, w)
            return (y, *vjp(dy))

        y, dx, dw = forward_and_vjp(x, w, dy)
        lhs = float(jnp.vdot(y, dy))
        scale = float(jnp.linalg.norm(y) * jnp.linalg.norm(dy)) + 1e-30
        assert abs(lhs - float(jnp.vdot(x, dx))) <= 1e-10 * scale
        assert abs(lhs - float(jnp.vdot(w, dw))) <= 1e-10 * scale


def _output_padding_for(x, w, y, kw):
    """The output_padding that makes conv_transpose(y) as long as x (what conv dropped)."""
    from jaxconv._shapes import conv_transpose_output_size, padding_pairs

    n = w.ndim - 2
    cl = kw["channels_last"]
    sp = lambda a: a.shape[1 : n + 1] if cl else a.shape[2:]  # noqa: E731
    kernel = w.shape[:n] if cl else w.shape[2:]
    stride = kw["stride"] if not isinstance(kw["stride"], int) else (kw["stride"],) * n
    pairs = padding_pairs(kw["padding"], sp(x), kernel, stride, kw["dilation"])
    return tuple(
        xi - conv_transpose_output_size(yi, k, s, p, d, 0)
        for xi, yi, k, s, p, d in zip(
            sp(x), sp(y), kernel, stride, pairs, kw["dilation"], strict=True
        )
    )


@given(
    conv_cases(
        ranks=(1, 2), max_groups=2, max_group_channels=2, allow_flip=False, allow_strings=False
    )
)
def test_conv_transpose_is_vjp_of_conv(case: ConvCase):
    kw = {k: case.kwargs[k] for k in ("stride", "padding", "dilation", "groups", "channels_last")}
    with enable_x64():
        x, w, _ = case.arrays(np.float64)
        y, vjp = jax.vjp(lambda x: jaxconv.conv(x, w, **kw), x)
        dy = random_array(np.random.default_rng(case.seed), y.shape)
        (dx,) = vjp(dy)
        # output_padding picks the one input length (of up to `stride`) that matches x
        z = jaxconv.conv_transpose(dy, w, **kw, output_padding=_output_padding_for(x, w, y, kw))
        np.testing.assert_allclose(z, dx, atol=1e-10)


@given(
    conv_cases(
        ranks=(1, 2), max_groups=2, max_group_channels=2, allow_flip=False, allow_strings=False
    )
)
def test_conv_transpose_vjp_matches_autodiff_of_lax(case: ConvCase):
    kw = {k: case.kwargs[k] for k in ("stride", "padding", "dilation", "groups", "channels_last")}
    with enable_x64():
        x, w, _ = case.arrays(np.float64)
        y = jaxconv.conv(x, w, **kw)

        # lax reference of conv_transpose: the linear transpose of the lax convolution
        def ref(dy, w):
            return jax.vjp(lambda x: lax_conv(x, w, **kw), x)[1](dy)[0]

        rng = np.random.default_rng(case.seed)
        dy = random_array(rng, y.shape)
        b = random_array(rng, (x.shape[-1] if case.channels_last else x.shape[1],))
        n = w.ndim - 2
        op = _output_padding_for(x, w, y, kw)
        b_shape = (1,) * (n + 1) + (-1,) if case.channels_last else (1, -1) + (1,) * n
        assert_vjp_matches(
            lambda dy, w, b: jaxconv.conv_transpose(dy, w, b, **kw, output_padding=op),
            lambda dy, w, b: ref(dy, w) + b.reshape(b_shape),
            (dy, w, b),
            seed=case.seed,
        )


# ---------------------------------------------------------------- second order


@settings(max_examples=max(4, settings.default.max_examples // 3))  # each example is heavy
@given(
    conv_cases(
        ranks=(1, 2),
        max_batch=1,
        max_group_channels=2,
        max_groups=2,
        max_kernel=2,
        padding_modes=("zeros", "reflect", "replicate", "circular"),
    )
)
def test_second_derivatives_match_lax(case: ConvCase):
    with enable_x64():
        x, w, b = case.arrays(np.float64)
        v = random_array(np.random.default_rng(case.seed), x.shape)

        def second_order(x, w, b, v, use_lax):
            conv_fn = lax_conv if use_lax else jaxconv.conv

            def f(x, w):
                return jnp.sum(jnp.sin(conv_fn(x, w, b, **case.kwargs)))

            h_xx = jax.hessian(f, argnums=0)(x, w)  # forward-over-reverse
            h_ww = jax.hessian(f, argnums=1)(x, w)
            # reverse-over-reverse, mixed: d/dw <grad_x f, v>
            rr = jax.grad(lambda w: jnp.vdot(jax.grad(f, argnums=0)(x, w), v))(w)
            # jvp-of-grad Hessian-vector product
            fr = jax.jvp(lambda x: jax.grad(f, argnums=0)(x, w), (x,), (v,))[1]
            return h_xx, h_ww, rr, fr

        ours = jax.jit(second_order, static_argnums=4)(x, w, b, v, False)
        ref = jax.jit(second_order, static_argnums=4)(x, w, b, v, True)
        for name, a, r in zip(
            ("hessian x", "hessian w", "rev-over-rev", "jvp-of-grad"), ours, ref, strict=True
        ):
            assert relative_error(a, r) <= 1e-10, name


def test_check_grads_order_two():
    from jax.test_util import check_grads

    rng = np.random.default_rng(3)
    with enable_x64():
        x, w, b = (
            random_array(rng, (2, 4, 6, 5)),
            random_array(rng, (6, 2, 3, 2)),
            random_array(rng, (6,)),
        )
        for kw in (
            dict(stride=2, padding="SAME", dilation=(1, 2), groups=2),
            dict(padding=1, padding_mode="reflect", flip=True, groups=2),
        ):
            check_grads(functools.partial(jaxconv.conv, **kw), (x, w, b), order=2, modes=["rev"])


def test_jvp_of_conv_itself_is_refused_by_jax():
    """Documented: custom_vjp functions have no forward mode of their own."""
    x, w = jnp.ones((1, 1, 4)), jnp.ones((1, 1, 2))
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda x: jaxconv.conv(x, w), (x,), (x,))


# ---------------------------------------------------------------- composition


@pytest.mark.parametrize("jit", [False, True])
def test_vmap_jit_checkpoint_compose(jit):
    rng = np.random.default_rng(4)
    with enable_x64():
        xs = random_array(rng, (3, 2, 2, 7, 6))  # an extra leading axis to vmap over
        w = random_array(rng, (4, 2, 3, 3))
        kw = dict(stride=(2, 1), padding="SAME_LOWER", dilation=(1, 2))

        def loss(f):
            def inner(x, w):
                return jnp.sum(jnp.tanh(f(x, w, **kw)))

            return inner

        def batched(f):
            g = jax.vmap(jax.grad(jax.checkpoint(loss(f)), argnums=(0, 1)), in_axes=(0, None))
            return jax.jit(g) if jit else g

        dx, dw = batched(jaxconv.conv)(xs, w)
        dx_ref, dw_ref = batched(lax_conv)(xs, w)
        assert relative_error(dx, dx_ref) <= 1e-10
        assert relative_error(dw, dw_ref) <= 1e-10


# ---------------------------------------------------------------- low precision


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_weight_grad_no_worse_than_lax(dtype):
    """Half-precision gradients accumulate in float32: the weight gradient's error against a
    float64 reference is no worse than lax's own (which accumulates as XLA chooses)."""
    rng = np.random.default_rng(5)
    x64, w64 = rng.standard_normal((8, 16, 24, 24)), rng.standard_normal((16, 16, 3, 3))
    dy64 = rng.standard_normal((8, 16, 24, 24))
    x, w, dy = (jnp.asarray(a, dtype) for a in (x64, w64, dy64))
    with enable_x64():
        exact = reference_weight_grad_lax(
            *(jnp.asarray(np.asarray(a, np.float32), jnp.float64) for a in (x, w, dy))
        )
    ours = jax.vjp(lambda w: jaxconv.conv(x, w, padding=1), w)[1](dy)[0]
    theirs = jax.vjp(lambda w: lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1))), w)[1](dy)[
        0
    ]
    assert ours.dtype == dtype
    err_ours = relative_error(ours, exact)
    err_lax = relative_error(theirs, exact)
    assert err_ours <= err_lax * 1.01 + 1e-6, (err_ours, err_lax)
    assert err_ours <= tolerance(dtype)


def reference_weight_grad_lax(x, w, dy):
    return jax.vjp(
        lambda w: lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), precision="highest"), w
    )[1](dy)[0]


@pytest.mark.parametrize("method", ["direct", "fft", "im2col"])
def test_float64_input_gradient_xla_cpu_used_to_abort_on(method):
    """XLA:CPU's algebraic simplifier aborted the process compiling this float64 dL/dX (and
    ``jax.grad`` of lax's): the rule now writes the padding out. Checked against the loops."""
    with enable_x64():
        rng = np.random.default_rng(11)
        x = random_array(rng, (2, 6, 2, 6))
        w = random_array(rng, (2, 2, 2, 6))
        kw = dict(stride=(2, 3), padding="FULL", groups=3, channels_last=True)
        y, vjp = jax.vjp(lambda x, w: jaxconv.conv(x, w, method=method, **kw), x, w)
        dy = random_array(rng, y.shape)
        dx, dw = jax.jit(vjp)(dy)
        ref_kw = {k: v for k, v in kw.items() if k != "channels_last"}
        to_cf = (0, 3, 1, 2)
        want_dx = reference.conv_input_grad(
            np.transpose(dy, to_cf), np.transpose(w, (3, 2, 0, 1)), (2, 6, 6, 2), **ref_kw
        )
        np.testing.assert_allclose(np.transpose(dx, to_cf), want_dx, rtol=1e-10, atol=1e-12)
        assert dw.shape == w.shape
