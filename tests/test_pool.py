"""Pooling: hand-computed cases, properties against ``jax.vjp`` of ``lax.reduce_window`` and
the loop references, and identities (adjoint, determinism, composition with jit/vmap/hessian).

The pools, loop references, strategies, lax references and tolerances come from the public
API. One private import: ``jaxconv._verify.pool_cases``'s ``POOL_OPS``/``run_pool_case``,
because one test is about that harness.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax import lax
from jax.ad_checkpoint import print_saved_residuals

from jaxconv import (
    adaptive_avg_pool,
    adaptive_max_pool,
    avg_pool,
    lp_pool,
    max_pool,
    max_unpool,
)
from jaxconv import reference as ref
from jaxconv._verify.pool_cases import POOL_OPS, run_pool_case
from jaxconv.testing import (
    adaptive_pool_cases,
    enable_x64,
    lax_avg_pool,
    lax_max_pool,
    pool_array,
    pool_cases,
    relative_error,
    tolerance,
)

# ------------------------------------------------------------------------------ helpers


def _spatial(x_shape, channels_last):
    return x_shape[1:-1] if channels_last else x_shape[2:]


def _vjp(f, x, dy):
    """``(f(x), dL/dx)`` for cotangent ``dy``, as one jitted computation (one compile:
    op-by-op eager execution of a pool compiles every window offset's ops separately)."""

    def both(a, d):
        y, pullback = jax.vjp(f, a)
        return y, pullback(d)[0]

    return jax.jit(both)(x, dy)


def _out_shape(f, x):
    return jax.eval_shape(f, x).shape


def _assert_close(actual, expected, dtype, what=""):
    with np.errstate(invalid="ignore"):  # inf - inf where both sides agree on an inf
        err = relative_error(actual, expected)
    assert err <= tolerance(dtype), f"{what}: relative error {err:.3g} > {tolerance(dtype)}"


# ------------------------------------------------------------------- layer 1: by hand

LECTURE_X = np.array(
    [[1.0, 1.0, 2.0, 4.0], [5.0, 6.0, 7.0, 8.0], [3.0, 2.0, 1.0, 0.0], [1.0, 2.0, 3.0, 4.0]]
)


def test_lecture_4x4_max_pool_values_and_routing():
    x = jnp.asarray(LECTURE_X[None, None], jnp.float32)
    y, dx = _vjp(lambda a: max_pool(a, 2), x, jnp.ones((1, 1, 2, 2), jnp.float32))
    np.testing.assert_array_equal(y[0, 0], [[6.0, 8.0], [3.0, 4.0]])
    expected = np.zeros((4, 4))
    expected[1, 1] = expected[1, 3] = expected[2, 0] = expected[3, 3] = 1.0  # 6, 8, 3, 4
    np.testing.assert_array_equal(dx[0, 0], expected)
    # upstream gradients arrive at the winners unchanged
    dy = jnp.asarray([[[[10.0, 20.0], [30.0, 40.0]]]], jnp.float32)
    _, dx = _vjp(lambda a: max_pool(a, 2), x, dy)
    np.testing.assert_array_equal(
        dx[0, 0], expected * np.array([[0, 10, 0, 20]] * 2 + [[30, 0, 0, 40]] * 2)
    )


def test_lecture_4x4_avg_pool_gives_each_input_a_quarter():
    x = jnp.asarray(LECTURE_X[None, None], jnp.float32)
    y, dx = _vjp(lambda a: avg_pool(a, 2), x, jnp.ones((1, 1, 2, 2), jnp.float32))
    np.testing.assert_array_equal(y[0, 0], [[13 / 4, 21 / 4], [8 / 4, 8 / 4]])
    np.testing.assert_array_equal(dx, np.full((1, 1, 4, 4), 0.25))


def test_lecture_4x4_indices_are_flat_plane_positions():
    x = jnp.asarray(LECTURE_X[None, None], jnp.float32)
    _, idx = max_pool(x, 2, return_indices=True)
    np.testing.assert_array_equal(idx[0, 0], [[5, 7], [8, 15]])
    np.testing.assert_array_equal(
        max_unpool(max_pool(x, 2), idx, (4, 4))[0, 0],
        np.where(np.isin(np.arange(16), [5, 7, 8, 15]).reshape(4, 4), LECTURE_X, 0.0),
    )


def test_hand_ties_first_wins_and_nan_last_wins():
    x = jnp.asarray([[[2.0, 2.0, 1.0, 2.0, jnp.nan, 3.0, jnp.nan, 0.0]]], jnp.float32)
    y, dx = _vjp(lambda a: max_pool(a, 4), x, jnp.asarray([[[1.0, 1.0]]], jnp.float32))
    assert y[0, 0, 0] == 2.0 and np.isnan(y[0, 0, 1])
    np.testing.assert_array_equal(dx[0, 0], [1, 0, 0, 0, 0, 0, 1, 0])


def test_hand_all_minus_inf_window_routes_to_first_inbounds_position():
    x = jnp.full((1, 1, 3), -jnp.inf, jnp.float32)
    y, dx = _vjp(lambda a: max_pool(a, 3, 2, 1), x, jnp.ones((1, 1, 2), jnp.float32))
    assert np.all(np.isneginf(y))
    np.testing.assert_array_equal(dx[0, 0], [1.0, 1.0, 0.0])  # windows {pad,0,1} and {1,2,pad}


def test_hand_lp_pool_and_adaptive():
    x = jnp.asarray([[[3.0, 4.0, 1.0, 0.0]]], jnp.float32)
    y, dx = _vjp(lambda a: lp_pool(a, 2, 2), x, jnp.ones((1, 1, 2), jnp.float32))
    np.testing.assert_allclose(y[0, 0], [5.0, 1.0])
    np.testing.assert_allclose(dx[0, 0], [3 / 5, 4 / 5, 1.0, 0.0])
    z = jnp.arange(5.0, dtype=jnp.float32).reshape(1, 1, 5)
    # windows [0, 3) and [2, 5): the middle entry is shared
    y, dx = _vjp(lambda a: adaptive_avg_pool(a, 2), z, jnp.ones((1, 1, 2), jnp.float32))
    np.testing.assert_allclose(y[0, 0], [1.0, 3.0])
    np.testing.assert_allclose(dx[0, 0], [1 / 3, 1 / 3, 2 / 3, 1 / 3, 1 / 3])
    y, dx = _vjp(lambda a: adaptive_max_pool(a, 2), z, jnp.ones((1, 1, 2), jnp.float32))
    np.testing.assert_array_equal(y[0, 0], [2.0, 4.0])
    np.testing.assert_array_equal(dx[0, 0], [0, 0, 1, 0, 1])


# ----------------------------------------------------- layer 2: properties against lax


def _check_against_lax(case, dtype, ours, theirs):
    x = case.array(dtype)
    dy = case.cotangent(_out_shape(partial(theirs, **case.kwargs), x), dtype)
    y_ref, dx_ref = _vjp(partial(theirs, **case.kwargs), x, dy)
    y, dx = _vjp(partial(ours, **case.kwargs), x, dy)
    assert y.shape == y_ref.shape and y.dtype == x.dtype and dx.dtype == x.dtype
    _assert_close(y, y_ref, dtype, "value")
    _assert_close(dx, dx_ref, dtype, "gradient")


DTYPES = st.sampled_from([np.float64, np.float32])


@given(pool_cases(op="max", max_dilation=1, values=("normal", "ties")), DTYPES)
def test_max_pool_matches_lax(case, dtype):
    # "ties": XLA's select_and_scatter keeps the first of equal maxima, as we do
    with enable_x64(dtype == np.float64):
        _check_against_lax(case, dtype, max_pool, lax_max_pool)


@given(pool_cases(op="avg"), DTYPES)
def test_avg_pool_matches_lax(case, dtype):
    with enable_x64(dtype == np.float64):
        _check_against_lax(case, dtype, avg_pool, lax_avg_pool)


# ---------------------------------------- layer 2: properties against the loop references


@given(pool_cases(op="max", values=("normal", "ties", "special")))
def test_max_pool_matches_loop_reference_with_dilation_ties_and_nan(case):
    with enable_x64():
        x = case.array(np.float64)
        y, idx = jax.jit(partial(max_pool, **case.kwargs, return_indices=True))(x)
        dy = case.cotangent(y.shape)
        _, dx = _vjp(partial(max_pool, **case.kwargs), x, dy)
        y_ref, idx_ref = ref.max_pool(x, **case.kwargs)
        np.testing.assert_array_equal(np.asarray(y), y_ref)  # NaN == NaN here
        np.testing.assert_array_equal(np.asarray(idx), idx_ref)
        dx_ref = ref.max_pool_grad(x, dy, **case.kwargs)
        _assert_close(dx, dx_ref, np.float64, "gradient")


@given(pool_cases(op="avg", values=("normal", "special")))
def test_avg_pool_matches_loop_reference(case):
    with enable_x64():
        x = case.array(np.float64)
        dy = case.cotangent(_out_shape(partial(avg_pool, **case.kwargs), x))
        y, dx = _vjp(partial(avg_pool, **case.kwargs), x, dy)
        _assert_close(y, ref.avg_pool(x, **case.kwargs), np.float64, "value")
        _assert_close(dx, ref.avg_pool_grad(x, dy, **case.kwargs), np.float64, "grad")


@given(pool_cases(op="lp", ranks=(1, 2)), st.sampled_from([1.0, 2.0, 3.0, 1.5, math.inf]))
def test_lp_pool_matches_loop_reference(case, p):
    with enable_x64():
        x = jnp.abs(case.array(np.float64)) + 0.1  # positive: pow is real for every p
        f = partial(lp_pool, p=p, **case.kwargs)
        dy = case.cotangent(_out_shape(f, x))
        y, dx = _vjp(f, x, dy)
        _assert_close(y, ref.lp_pool(x, p, **case.kwargs), np.float64, "value")
        _assert_close(dx, ref.lp_pool_grad(x, dy, p, **case.kwargs), np.float64, "gradient")


@given(adaptive_pool_cases(values=("normal", "ties", "special")))
def test_adaptive_pools_match_loop_reference(case):
    kw = {"channels_last": case.channels_last}
    with enable_x64():
        x = case.array(np.float64)
        y, idx = jax.jit(
            partial(adaptive_max_pool, output_size=case.output_size, return_indices=True, **kw)
        )(x)
        dy = case.cotangent(y.shape)
        _, dx = _vjp(lambda a: adaptive_max_pool(a, case.output_size, **kw), x, dy)
        y_ref, idx_ref = ref.adaptive_max_pool(x, case.output_size, **kw)
        np.testing.assert_array_equal(np.asarray(y), y_ref)
        np.testing.assert_array_equal(np.asarray(idx), idx_ref)
        _assert_close(
            dx,
            ref.adaptive_max_pool_grad(x, dy, case.output_size, **kw),
            np.float64,
            "adaptive max gradient",
        )
        y, dx = _vjp(lambda a: adaptive_avg_pool(a, case.output_size, **kw), x, dy)
        _assert_close(
            y,
            ref.adaptive_avg_pool(x, case.output_size, **kw),
            np.float64,
            "adaptive avg value",
        )
        _assert_close(
            dx,
            ref.adaptive_avg_pool_grad(x, dy, case.output_size, **kw),
            np.float64,
            "adaptive avg gradient",
        )


@given(pool_cases(op="max", values=("ties", "normal")))
def test_max_unpool_matches_loop_reference(case):
    with enable_x64():
        x = case.array(np.float64)
        y, idx = jax.jit(partial(max_pool, **case.kwargs, return_indices=True))(x)
        size = _spatial(case.x_shape, case.kwargs["channels_last"])
        cl = case.kwargs["channels_last"]
        d_out = case.cotangent(x.shape)
        out, dy = _vjp(lambda v: max_unpool(v, idx, size, channels_last=cl), y, d_out)
        np.testing.assert_array_equal(
            np.asarray(out), ref.max_unpool(y, idx, size, channels_last=cl)
        )
        np.testing.assert_array_equal(
            np.asarray(dy), ref.max_unpool_grad(y, idx, d_out, size, channels_last=cl)
        )


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_low_precision_matches_lax_in_float64(dtype, rank):
    rng = np.random.default_rng(rank)
    shape = (2, 3) + (6,) * rank
    x = jnp.asarray(rng.permutation(np.prod(shape)).reshape(shape) / 64.0, dtype)  # exact, unique
    dy = jnp.asarray(rng.standard_normal((2, 3) + (3,) * rank), dtype)
    for ours, theirs in [(max_pool, lax_max_pool), (avg_pool, lax_avg_pool)]:
        y, dx = _vjp(lambda a, f=ours: f(a, 3, 2, 1), x, dy)
        assert y.dtype == dtype and dx.dtype == dtype
        with enable_x64():
            y64, dx64 = _vjp(
                lambda a, f=theirs: f(a, 3, 2, 1),
                jnp.asarray(x, np.float64),
                jnp.asarray(dy, np.float64),
            )
        _assert_close(y, y64, dtype, ours.__name__)
        _assert_close(dx, dx64, dtype, ours.__name__)


# ------------------------------------------------------------- layer 3: identities


@given(pool_cases(op="avg", ranks=(1, 2)))
def test_avg_pool_adjoint_identity(case):
    # <avg_pool(x), dy> == <x, avg_pool^T(dy)>: the backward is the forward's transpose
    with enable_x64():
        x = case.array(np.float64)
        dy = case.cotangent(_out_shape(partial(avg_pool, **case.kwargs), x))
        y, dx = _vjp(partial(avg_pool, **case.kwargs), x, dy)
        lhs, rhs = float(jnp.vdot(y, dy)), float(jnp.vdot(x, dx))
        assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


def test_adaptive_output_size_one_is_global_pooling():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 5, 7)), jnp.float32)
    np.testing.assert_allclose(
        adaptive_avg_pool(x, 1), x.mean(axis=(2, 3), keepdims=True), rtol=1e-6
    )
    np.testing.assert_array_equal(adaptive_max_pool(x, 1), x.max(axis=(2, 3), keepdims=True))
    np.testing.assert_array_equal(adaptive_max_pool(x, (None, None)), x)


def test_channels_last_equals_transposed_channels_first():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 3, 7, 6)), jnp.float32)
    xl = jnp.moveaxis(x, 1, -1)
    pairs = [
        (lambda a, **k: max_pool(a, 3, 2, 1, 2, True, **k)),
        (lambda a, **k: avg_pool(a, 3, 2, 1, True, False, **k)),
        (lambda a, **k: lp_pool(a, 2.0, 2, **k)),
        (lambda a, **k: adaptive_avg_pool(a, (4, 4), **k)),
        (lambda a, **k: adaptive_max_pool(a, (4, 5), **k)),
    ]
    for f in pairs:
        y, dx = _vjp(f, x, jnp.ones(_out_shape(f, x), x.dtype))
        yl, dxl = _vjp(partial(f, channels_last=True), xl, jnp.moveaxis(jnp.ones_like(y), 1, -1))
        np.testing.assert_array_equal(np.moveaxis(np.asarray(yl), -1, 1), y)
        np.testing.assert_array_equal(np.moveaxis(np.asarray(dxl), -1, 1), dx)


def _saved_bytes(f, x):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_saved_residuals(f, x)
    total = 0
    for line in buf.getvalue().splitlines():
        if "from the argument" in line:
            continue
        m = re.match(r"\s*([a-z]+)(\d+)\[([\d,]*)\]", line)
        assert m, line
        dims = [int(v) for v in m.group(3).split(",") if v]
        total += math.prod(dims) * int(m.group(2)) // 8
    return total, buf.getvalue()


def test_max_pool_residual_is_a_compact_winner_code():
    x = jnp.ones((2, 8, 16, 16), jnp.float32)
    saved, text = _saved_bytes(lambda a: jnp.sum(max_pool(a, 2)), x)
    assert "u8[2,8,8,8]" in text
    assert saved <= 0.3 * x.nbytes, text
    assert saved == x.size // 4  # one byte per output: 1/16 of the input's bytes


def test_backward_never_scatters():
    # each pullback routes gradients by phase interleave, one-hot selects and static gathers
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 3, 9, 8)), jnp.float32)
    ops = [
        lambda a: max_pool(a, 3, 2, 1, 2),
        lambda a: max_pool(a, (9, 8)),  # 72 offsets: the vectorised block path
        lambda a: avg_pool(a, 3, 1, 1),
        lambda a: avg_pool(a, 2),
        lambda a: lp_pool(a, 3.0, 2, 1),
        lambda a: adaptive_avg_pool(a, (4, 3)),
        lambda a: adaptive_max_pool(a, (4, 3)),
        lambda a: max_unpool(a, jnp.zeros(a.shape, jnp.int32) + 5, (10, 9)),
    ]
    for op in ops:
        y, pullback = jax.vjp(jax.jit(op), x)  # jitted: one compile, not one per primitive
        assert "scatter" not in str(jax.make_jaxpr(pullback)(y))
    # what the check catches: lax's own max-pool gradient
    y, pullback = jax.vjp(jax.jit(lambda a: lax_max_pool(a, 3, 2, 1)), x)
    assert "select_and_scatter_add" in str(jax.make_jaxpr(pullback)(y))


def test_backward_is_bitwise_deterministic():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.integers(-2, 3, (4, 8, 15, 15)), jnp.float32)  # many ties
    for f in [
        lambda a: max_pool(a, 3, 2, 1),
        lambda a: avg_pool(a, 3, 1, 1),
        lambda a: adaptive_max_pool(a, 4),
        lambda a: adaptive_avg_pool(a, 6),
    ]:
        dy = jnp.asarray(rng.standard_normal(f(x).shape), jnp.float32)
        grad = jax.jit(lambda a, f=f, dy=dy: jax.vjp(f, a)[1](dy)[0])
        first = np.asarray(grad(x)).tobytes()
        for _ in range(3):
            assert np.asarray(grad(x)).tobytes() == first


def test_jit_vmap_and_grad_compose():
    rng = np.random.default_rng(4)
    xs = jnp.asarray(rng.standard_normal((3, 2, 2, 7, 7)), jnp.float32)

    def loss(x):
        return jnp.sum(max_pool(x, 3, 2, 1) ** 2) + jnp.sum(avg_pool(x, 2, 1) ** 2)

    batched = jax.jit(jax.vmap(jax.grad(loss)))(xs)
    for i in range(3):
        np.testing.assert_allclose(batched[i], jax.grad(loss)(xs[i]), rtol=1e-6)


# On GPUs lax's second derivative of reduce-window max warns that it packs value pairs
# into reduced precision; its result is then only float32-accurate.
@pytest.mark.filterwarnings("ignore:Using reduced precision for gradient of reduce-window")
def test_second_order_matches_lax():
    rng = np.random.default_rng(5)
    with enable_x64():
        x = jnp.asarray(rng.standard_normal((1, 1, 5, 5)), jnp.float64)
        v = jnp.asarray(rng.standard_normal(x.shape), jnp.float64)
        tol = 1e-12 if jax.default_backend() == "cpu" else 1e-5
        for ours, theirs in [
            (lambda a: max_pool(a, 3, 2, 1), lambda a: lax_max_pool(a, 3, 2, 1)),
            (lambda a: avg_pool(a, 3, 1, 1), lambda a: lax_avg_pool(a, 3, 1, 1)),
        ]:
            f = lambda a, g=ours: jnp.sum(jnp.sin(g(a)) * g(a) ** 2)  # noqa: E731
            h = lambda a, g=theirs: jnp.sum(jnp.sin(g(a)) * g(a) ** 2)  # noqa: E731
            expected = jax.jit(jax.hessian(h))(x)
            assert np.any(np.asarray(expected) != 0)
            np.testing.assert_allclose(jax.jit(jax.hessian(f))(x), expected, atol=tol)
            np.testing.assert_allclose(jax.jit(jax.jacrev(jax.jacrev(f)))(x), expected, atol=tol)
            jvp_of_grad = jax.jit(lambda a, t, f=f: jax.jvp(jax.grad(f), (a,), (t,))[1])
            hvp = (expected.reshape(25, 25) @ v.reshape(25)).reshape(x.shape)
            np.testing.assert_allclose(jvp_of_grad(x, v), hvp, atol=tol)


def test_lp_pool_second_order_matches_autodiff_of_its_formula():
    rng = np.random.default_rng(6)
    with enable_x64():
        x = jnp.asarray(np.abs(rng.standard_normal((1, 2, 6, 5))) + 0.1, jnp.float64)

        def formula(a):  # PyTorch's definition, differentiated by JAX
            s = lax.reduce_window(a**3, 0.0, lax.add, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
            return s ** (1 / 3)

        f = lambda a: jnp.sum(jnp.cos(lp_pool(a, 3.0, 2)))  # noqa: E731
        g = lambda a: jnp.sum(jnp.cos(formula(a)))  # noqa: E731
        np.testing.assert_allclose(jax.hessian(f)(x), jax.hessian(g)(x), rtol=1e-9, atol=1e-12)


def test_dilated_max_pool_is_differentiable_where_lax_is_not():
    x = jnp.asarray(np.random.default_rng(7).standard_normal((1, 2, 9, 9)), jnp.float32)
    with pytest.raises(NotImplementedError):
        jax.grad(lambda a: jnp.sum(lax_max_pool(a, 3, 1, 1, 2)))(x)
    dx = jax.grad(lambda a: jnp.sum(max_pool(a, 3, 1, 1, 2)))(x)
    dy = np.ones(max_pool(x, 3, 1, 1, 2).shape)
    np.testing.assert_allclose(dx, ref.max_pool_grad(x, dy, 3, 1, 1, 2), rtol=1e-6)


def test_lp_pool_zero_window_gradient_is_zero_and_finite():
    x = jnp.zeros((1, 1, 4), jnp.float32)
    for p in (1.0, 2.0, 3.0):
        g = jax.grad(lambda a, p=p: jnp.sum(lp_pool(a, p, 2)))(x)
        np.testing.assert_array_equal(g, np.zeros((1, 1, 4)))


def test_eager_and_jitted_agree():
    x = jnp.asarray(np.random.default_rng(8).standard_normal((1, 2, 6)), jnp.float32)
    ops = [
        partial(max_pool, window=2, padding=1, ceil_mode=True),
        partial(avg_pool, window=3, stride=2, padding=1),
        partial(lp_pool, p=2.0, window=2),
        partial(adaptive_avg_pool, output_size=4),
        partial(adaptive_max_pool, output_size=4),
    ]
    for op in ops:  # to rounding: XLA may fuse a jitted sum differently
        grad = jax.grad(lambda a, op=op: jnp.sum(op(a) ** 2))
        np.testing.assert_allclose(jax.jit(op)(x), op(x), rtol=1e-6)
        np.testing.assert_allclose(jax.jit(grad)(x), grad(x), rtol=1e-6)


def test_verify_pool_cases_pass_for_every_op():
    rng = np.random.default_rng(0)
    for op in POOL_OPS:
        for _ in range(3):
            result = run_pool_case(op, rng)
            assert result["op"] == op and result["dtype"] in ("float32", "float64")
            assert result["passed"], result
            assert result["rel_err"] <= result["tol"] and result["fd_rel_err"] <= 1e-6
    with pytest.raises(ValueError, match="`op` must be one of max_pool"):
        run_pool_case("min_pool", rng)


@pytest.mark.parametrize("values", ["normal", "ties", "special"])
def test_large_tiling_windows_are_one_vectorised_reduction(values):
    # global pooling: 56 x 56 = 3136 offsets must not unroll into 3136 slices
    rng = np.random.default_rng(9)
    with enable_x64():
        x = pool_array(rng, (2, 3, 18, 20), np.float64, values)
        dy = jnp.asarray(rng.standard_normal((2, 3, 2, 3)), np.float64)
        for f, args in [  # more than MAX_UNROLLED_OFFSETS (64) offsets per window
            (max_pool, dict(window=(9, 10))),
            (max_pool, dict(window=(12, 8), padding=(3, 2))),
            (adaptive_max_pool, dict(output_size=1)),
        ]:
            g = partial(f, **args)
            y_shape = _out_shape(g, x)
            d = dy[..., : y_shape[2], : y_shape[3]]
            y, dx = _vjp(g, x, d)
            if f is max_pool:
                y_ref, _ = ref.max_pool(x, **args)
                dx_ref = ref.max_pool_grad(x, d, **args)
            else:
                y_ref, _ = ref.adaptive_max_pool(x, 1)
                dx_ref = ref.adaptive_max_pool_grad(x, d, 1)
            np.testing.assert_array_equal(np.asarray(y), y_ref)
            np.testing.assert_array_equal(np.asarray(dx), dx_ref)
    jaxpr = jax.make_jaxpr(jax.grad(lambda a: jnp.sum(max_pool(a, 56))))(jnp.ones((1, 1, 56, 56)))
    assert len(jaxpr.eqns) < 60


def _primitives(f, x) -> set[str]:
    """Every primitive in ``f``'s jaxpr, nested ones (the custom_vjp's body) included."""
    return set(re.findall(r"= ([a-z_]+)\[", str(jax.make_jaxpr(f)(x))))


@pytest.mark.parametrize("op", [max_pool, avg_pool])
def test_small_tiling_windows_take_slices_and_large_ones_one_reduction(op):
    """One policy (``as_blocks``) for both pools: 2x2 windows are four strided slices (XLA's
    CPU reduction over 2x2 blocks ran 7x slower), a 16x16 window one reduction."""
    x = jnp.ones((2, 3, 16, 16))
    assert not _primitives(lambda a: op(a, 2), x) & {"reduce_sum", "reduce_max"}
    assert _primitives(lambda a: op(a, 2), x) >= {"slice"}
    assert _primitives(lambda a: op(a, 16), x) & {"reduce_sum", "reduce_max", "argmax"}


@pytest.mark.parametrize("op", [adaptive_max_pool, adaptive_avg_pool])
def test_adaptive_backward_takes_slices_not_a_gather(op):
    """Windows that do not tile (32 -> 7): the backward reads the per-window values through
    slices, never a gather (XLA:CPU's gather made the avg pool's backward 17-20 ms on
    32x64x32x32, against 0.7 ms for a copy); the forward may gather its windows."""
    x = jnp.ones((2, 3, 32, 9))
    _, vjp = jax.vjp(lambda b: op(b, (7, 4)), x)
    backward = str(jax.make_jaxpr(vjp)(jnp.ones((2, 3, 7, 4))))
    assert "gather" not in backward
    assert "concatenate" in backward


def test_empty_batch_flows_through_every_op():
    x = jnp.zeros((0, 3, 6, 6), jnp.float32)
    ops = [
        partial(max_pool, window=2),
        partial(avg_pool, window=3, stride=2, padding=1),
        partial(lp_pool, p=2.0, window=2),
        partial(adaptive_max_pool, output_size=4),
        partial(adaptive_avg_pool, output_size=4),
        lambda a: max_unpool(a, jnp.zeros(a.shape, jnp.int32), (12, 12)),
    ]
    for op in ops:
        assert jax.jit(jax.grad(lambda a, op=op: jnp.sum(op(a))))(x).shape == x.shape
