"""NaN and inf stay local in every conv method and every pool: forward and gradient.

A non-finite input may only touch the outputs (and gradient entries) whose window holds it,
exactly as the direct sum -- and ``lax`` -- do; the tests plant NaN/inf at random positions
(array contents and planted values from drawn seeds) and compare the pattern of NaN, +inf,
-inf and finite entries with references.

Convolution: the FFT spreads one NaN over the whole grid, so ``method="fft"`` checks
finiteness at run time and falls back to the direct rules; NaN/inf planted in ``x``, ``w``
and ``dY`` give every registered method ``direct``'s pattern. Also fft's overflow guard, and
keeping ``auto`` exact under ``precision=HIGHEST``.

Pooling, under jit, vmap and grad: a NaN or +-inf planted in ``x`` (``y`` for
``max_unpool``) or in the upstream gradient ``dY`` gives the pattern of

- ``jax.vjp`` of ``lax.reduce_window`` (``jaxconv.testing.lax_max_pool``/``lax_avg_pool``) for
  the max and average pools. Two documented conventions of ``max_pool`` (PyTorch's) differ
  from lax's select-and-scatter, which gives a window holding a NaN's gradient to a number
  after the NaN and an all ``-inf`` window's to its first position even in the padding; the
  gradient is compared with lax's only where ``x`` holds neither.
- The loop references of ``jaxconv.reference`` for every pool: they hold exactly the terms a
  window holds, with PyTorch's conventions (the last NaN of a window wins).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import jaxconv
from jaxconv import reference
from jaxconv.convolution.methods import registry
from jaxconv.testing import (
    adaptive_pool_cases,
    conv_cases,
    lax_avg_pool,
    lax_max_pool,
    pool_cases,
    relative_error,
)

METHODS = [m for m in registry.names() if m != "direct"]
# The pools' draws: where NaN/inf are planted, the transform around the VJP, the seed.
WHERE = st.sampled_from(["x", "dy", "x and dy"])
TRANSFORMS = st.sampled_from(["jit", "vmap", "grad"])
SEEDS = st.integers(0, 2**16)


def pattern(a) -> np.ndarray:
    """0 finite, 1 NaN, 2 +inf, 3 -inf, per entry."""
    a = np.asarray(a, dtype=np.float64)
    return np.select([np.isnan(a), np.isposinf(a), np.isneginf(a)], [1, 2, 3], 0)


def _plant(a: jax.Array, rng: np.random.Generator, count: int = 2) -> jax.Array:
    """``a`` with ``count`` random entries set to NaN, +inf or -inf."""
    flat = np.array(a).reshape(-1)
    where = rng.choice(flat.size, size=min(count, flat.size), replace=False)
    flat[where] = rng.choice([np.nan, np.inf, -np.inf], size=where.size)
    return jnp.asarray(flat.reshape(a.shape), a.dtype)


# --- conv


def _outputs(method, x, w, b, dy, kwargs):
    def f(x, w, b):
        return jaxconv.conv(x, w, b, method=method, **kwargs)

    y, vjp = jax.vjp(f, x, w, b)
    return (y, *vjp(dy))


def _loops(x, w, b, dy, kwargs):
    """The lecture's sums in float64 NumPy: only the terms a window really holds."""
    x64, w64, dy64 = (np.asarray(a, np.float64) for a in (x, w, dy))
    b64 = None if b is None else np.asarray(b, np.float64)
    with np.errstate(all="ignore"):
        return (
            reference.conv(x64, w64, b64, **kwargs),
            reference.conv_input_grad(dy64, w64, x.shape, **kwargs),
            reference.conv_weight_grad(x64, dy64, w.shape, **kwargs),
            None if b is None else dy64.sum(axis=tuple(d for d in range(dy.ndim) if d != 1)),
        )


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=max(4, settings.default.max_examples * 3 // 8))  # 4 methods x 4 VJPs
@given(
    data=st.data(),
    where=st.sampled_from(["x", "w", "dy", "x and dy"]),
    seed=st.integers(0, 2**16),
)
def test_nonfinite_pattern_matches_direct(method, data, where, seed):
    """Each entry's NaN/+inf/-inf/finite state is direct's (lax's) -- or, where lax evaluates
    a 0 * inf that the lecture's sum does not hold (a padded zero or an inserted stride hole
    against an inf weight), the lecture's."""
    kernel = 1 if method == "matmul" else 4  # the method's own domain
    cases = conv_cases(
        ranks=(1, 2), max_kernel=kernel, max_group_channels=2, allow_channels_last=False
    )
    case = data.draw(cases)
    kwargs = {k: v for k, v in case.kwargs.items() if k not in ("padding_mode", "channels_last")}
    x, w, b = case.arrays(np.float32)
    y_shape = jax.eval_shape(lambda x, w: jaxconv.conv(x, w, **kwargs), x, w).shape
    rng = np.random.default_rng(seed)
    dy = jnp.asarray(rng.standard_normal(y_shape), jnp.float32)
    if "x" in where:
        x = _plant(x, rng, 2)
    if where == "w":
        w = _plant(w, rng, 1)
    if "dy" in where:
        dy = _plant(dy, rng, 2)
    shape_kwargs = {k: v for k, v in kwargs.items() if k != "flip"}
    if jaxconv.explain_method(x.shape, w.shape, **shape_kwargs).costs[method] is None:
        return  # the method refuses this configuration; auto never picks it
    want = _outputs("direct", x, w, b, dy, kwargs)
    loops = _loops(x, w, b, dy, kwargs)
    got = _outputs(method, x, w, b, dy, kwargs)
    for name, a, e, r in zip(("y", "dx", "dw", "db"), got, want, loops, strict=True):
        if e is None:
            continue
        pa, pe, pr = pattern(a), pattern(e), pattern(r)
        bad = (pa != pe) & (pa != pr)
        assert not bad.any(), (
            f"{method}: {name} at {np.argwhere(bad)[:3].tolist()}: {pa[bad][:3]} vs direct "
            f"{pe[bad][:3]} / loops {pr[bad][:3]}"
        )
        finite = (pa == 0) & (pe == 0)
        err = relative_error(np.where(finite, a, 0), np.where(finite, e, 0))
        assert err < 1e-3, f"{method}: {name} finite entries differ by {err:.2e}"


def test_one_nan_stays_in_its_windows_under_fft_and_auto():
    """The issue's reproducer: one NaN pixel, a 3x3 kernel (fft), and a 15x15 one with inf."""
    x = jnp.zeros((1, 1, 32, 32)).at[0, 0, 0, 0].set(jnp.nan)
    y = jaxconv.conv(x, jnp.ones((1, 1, 3, 3)), method="fft")
    assert int(jnp.isnan(y).sum()) == 1
    x = jnp.zeros((1, 1, 64, 64)).at[0, 0, 40, 40].set(jnp.inf)
    w = jnp.ones((1, 1, 15, 15))
    assert jaxconv.explain_method(x.shape, w.shape).method == "fft"
    y = jaxconv.conv(x, w)
    want = lax.conv_general_dilated(x, w, (1, 1), "VALID")
    np.testing.assert_array_equal(pattern(y), pattern(want))
    assert int(jnp.isinf(y).sum()) == 15 * 15 and int(jnp.isnan(y).sum()) == 0


@pytest.mark.parametrize("method", METHODS)
def test_one_nan_in_a_large_input_is_caught(method):
    """XLA's CPU max reduction drops NaNs from large arrays; the finiteness check must not
    rely on it (an (8, 3, 64, 64) input with one NaN gave 32768 NaN outputs under fft)."""
    x = jnp.zeros((8, 3, 64, 64)).at[5, 1, 30, 40].set(jnp.nan)
    kernel = (1, 1) if method == "matmul" else (3, 3)
    groups = 3 if method == "shift" else 1
    w = jnp.ones((3, 3 // groups, *kernel))
    got = jax.jit(lambda x, w: jaxconv.conv(x, w, padding=1, groups=groups, method=method))(x, w)
    want = jaxconv.conv(x, w, padding=1, groups=groups, method="direct")
    np.testing.assert_array_equal(pattern(got), pattern(want))
    dy = jnp.ones_like(want).at[2, 0, 10, 10].set(jnp.nan)
    _, vjp = jax.vjp(
        lambda x, w: jaxconv.conv(x, w, padding=1, groups=groups, method=method), x * 0, w
    )
    _, vjp_d = jax.vjp(
        lambda x, w: jaxconv.conv(x, w, padding=1, groups=groups, method="direct"), x * 0, w
    )
    np.testing.assert_array_equal(pattern(vjp(dy)[0]), pattern(vjp_d(dy)[0]))


def test_weight_gradient_stays_finite_when_the_loss_reads_windows_away_from_the_nan():
    """Under fft the weight gradient used to be NaN everywhere; now it is direct's."""
    x = jax.random.normal(jax.random.key(0), (1, 1, 48, 48)).at[0, 0, 2, 2].set(jnp.nan)
    w = jax.random.normal(jax.random.key(1), (1, 1, 13, 13))

    def loss(w, method):
        return jaxconv.conv(x, w, method=method)[..., 20:, 20:].sum()

    got, want = jax.grad(loss)(w, "fft"), jax.grad(loss)(w, "direct")
    np.testing.assert_array_equal(pattern(got), pattern(want))


def test_under_jit_vmap_and_grad():
    x = jnp.zeros((3, 1, 1, 24, 24)).at[1, 0, 0, 5, 5].set(jnp.nan)
    w = jnp.ones((2, 1, 9, 9))

    def per_example(x, w, method):
        return jaxconv.conv(x, w, padding=4, method=method)

    got = jax.jit(jax.vmap(lambda x: per_example(x, w, "fft")))(x)
    want = jax.vmap(lambda x: per_example(x, w, "direct"))(x)
    np.testing.assert_array_equal(pattern(got), pattern(want))
    assert int(jnp.isnan(got[0]).sum()) == 0 and int(jnp.isnan(got[2]).sum()) == 0

    def loss(w, method):
        return jax.vmap(lambda x: per_example(x, w, method))(x)[0].sum()

    gw = jax.jit(jax.grad(loss), static_argnums=1)(w, "fft")
    np.testing.assert_array_equal(pattern(gw), pattern(jax.grad(loss)(w, "direct")))


def test_fft_does_not_overflow_where_direct_does_not():
    x = jnp.full((1, 1, 16, 16), 3e37, jnp.float32)
    w = jnp.ones((1, 1, 3, 3), jnp.float32)
    got = jaxconv.conv(x, w, method="fft")
    want = jaxconv.conv(x, w, method="direct")
    assert bool(jnp.isfinite(got).all()), "fft overflowed inside the transform"
    assert relative_error(got, want) < 1e-5
    dx, dw = jax.grad(lambda x, w: jaxconv.conv(x, w, method="fft").sum() * 1e-30, (0, 1))(x, w)
    ex, ew = jax.grad(lambda x, w: jaxconv.conv(x, w, method="direct").sum() * 1e-30, (0, 1))(x, w)
    assert relative_error(dx, ex) < 1e-5 and relative_error(dw, ew) < 1e-5


def test_fft_scaling_loses_nothing_on_tiny_inputs():
    """Scaling by a power of two is exact: inputs near the bottom of float32's range come
    out as accurate (against float64 loops) as the same inputs at unit scale. (XLA's own CPU
    convolution loses three digits there: 5e-5.)"""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 20, 20))
    w = rng.standard_normal((3, 2, 7, 7))

    def error(x, w):
        got = jaxconv.conv(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), method="fft")
        return relative_error(got, reference.conv(x, w))

    unit, tiny = error(x, w), error(x * 2.0**-100, w * 2.0**-17)  # products near 1e-35
    assert tiny <= 1.01 * unit + 1e-9, (tiny, unit)


@pytest.mark.parametrize("precision", [lax.Precision.HIGHEST, "highest", ("highest",) * 2])
def test_precision_highest_keeps_auto_to_exact_methods(precision):
    x_shape, w_shape = (1, 1, 256, 256), (1, 1, 31, 31)
    assert jaxconv.explain_method(x_shape, w_shape).method == "fft"
    choice = jaxconv.explain_method(x_shape, w_shape, precision=precision)
    assert choice.method == "direct"
    assert choice.costs["fft"] is None and "precision=HIGHEST" in str(choice)
    # ... and conv itself follows: the dark region keeps lax's accuracy.
    x = jnp.zeros(x_shape).at[..., 100:110, :].set(1e4) + jax.random.uniform(
        jax.random.key(0), x_shape
    )
    w = jax.random.normal(jax.random.key(1), w_shape)
    want = lax.conv_general_dilated(x, w, (1, 1), "VALID", precision=lax.Precision.HIGHEST)
    dark = (slice(None), slice(None), slice(150, None))
    exact = jaxconv.conv(x, w, precision=precision)
    fast = jaxconv.conv(x, w)
    assert relative_error(exact[dark], want[dark]) < 1e-5
    assert relative_error(fast[dark], want[dark]) > 1e-4  # what the default trades away


# --- pool


def _value_and_grad(f: Callable, x: jax.Array, dy: jax.Array, transform: str):
    """``(f(x), dL/dx)`` for cotangent ``dy``: the VJP jitted, jitted under ``vmap`` beside a
    finite copy (which must stay finite), or ``jax.grad`` of ``sum(f(x) * dy)``."""

    def both(a, d):
        y, pullback = jax.vjp(f, a)
        return y, pullback(d)[0]

    if transform == "jit":
        return jax.jit(both)(x, dy)
    if transform == "vmap":
        clean_x = jnp.where(jnp.isfinite(x), x, jnp.ones((), x.dtype))
        clean_dy = jnp.where(jnp.isfinite(dy), dy, jnp.ones((), dy.dtype))
        ys, dxs = jax.jit(jax.vmap(both))(jnp.stack([x, clean_x]), jnp.stack([dy, clean_dy]))
        assert bool(jnp.isfinite(ys[1]).all() & jnp.isfinite(dxs[1]).all()), "vmap leaked"
        return ys[0], dxs[0]
    grad = jax.jit(jax.grad(lambda a, d: jnp.sum(f(a) * d)))
    return jax.jit(f)(x), grad(x, dy)


def _assert_same_pattern(name: str, got, want, what: str) -> None:
    pg, pw = pattern(got), pattern(want)
    bad = pg != pw
    assert not bad.any(), (
        f"{name} vs {what}: at {np.argwhere(bad)[:3].tolist()} got {pg[bad][:3]} (0 finite, "
        f"1 NaN, 2 +inf, 3 -inf), want {pw[bad][:3]}"
    )
    finite = (pg == 0) & (pw == 0)
    err = relative_error(np.where(finite, got, 0), np.where(finite, want, 0))
    assert err < 1e-4, f"{name} vs {what}: finite entries differ by {err:.2e}"


def _planted(case, where: str, seed: int, f: Callable, x: jax.Array):
    """``(x, dy)`` with NaN/inf planted as ``where`` says; ``dy`` is standard normal."""
    rng = np.random.default_rng(seed)
    dy = jnp.asarray(rng.standard_normal(jax.eval_shape(f, x).shape), x.dtype)
    if "x" in where:
        x = _plant(x, rng)
    if "dy" in where:
        dy = _plant(dy, rng)
    return x, dy


# --- pool: properties


@given(case=pool_cases(op="max", ranks=(1, 2, 3)), where=WHERE, transform=TRANSFORMS, seed=SEEDS)
def test_max_pool_nonfinite_pattern(case, where, transform, seed):
    f = partial(jaxconv.max_pool, **case.kwargs)
    x, dy = _planted(case, where, seed, f, case.array(np.float32))
    y, dx = _value_and_grad(f, x, dy, transform)
    y_ref, _ = reference.max_pool(x, **case.kwargs)
    _assert_same_pattern("y", y, y_ref, "loops")
    _assert_same_pattern("dx", dx, reference.max_pool_grad(x, dy, **case.kwargs), "loops")
    if all(d == 1 for d in case.kwargs["dilation"]):  # lax's max-pool gradient is undilated
        lax_y, pullback = jax.vjp(partial(lax_max_pool, **case.kwargs), x)
        _assert_same_pattern("y", y, lax_y, "lax")
        if not (jnp.isnan(x).any() or jnp.isneginf(y).any()):  # the conventions that differ
            _assert_same_pattern("dx", dx, pullback(dy)[0], "lax")


@given(case=pool_cases(op="avg", ranks=(1, 2, 3)), where=WHERE, transform=TRANSFORMS, seed=SEEDS)
def test_avg_pool_nonfinite_pattern(case, where, transform, seed):
    f = partial(jaxconv.avg_pool, **case.kwargs)
    x, dy = _planted(case, where, seed, f, case.array(np.float32))
    y, dx = _value_and_grad(f, x, dy, transform)
    lax_y, pullback = jax.vjp(partial(lax_avg_pool, **case.kwargs), x)
    _assert_same_pattern("y", y, lax_y, "lax")
    _assert_same_pattern("dx", dx, pullback(dy)[0], "lax")
    _assert_same_pattern("y", y, reference.avg_pool(x, **case.kwargs), "loops")
    _assert_same_pattern("dx", dx, reference.avg_pool_grad(x, dy, **case.kwargs), "loops")


def _read_by_a_window(x_shape, kwargs) -> np.ndarray:
    """Which entries of ``x`` some window of the pool reads (the loops' avg gradient of ones
    is positive exactly there)."""
    geometry = {k: kwargs[k] for k in ("window", "stride", "ceil_mode", "channels_last")}
    out_shape = reference.avg_pool(np.zeros(x_shape), **geometry).shape
    return reference.avg_pool_grad(np.zeros(x_shape), np.ones(out_shape), **geometry) > 0


@given(
    case=pool_cases(op="lp", ranks=(1, 2)),
    p=st.sampled_from([1.0, 2.0, 3.0, 1.5, 0.5, math.inf, -math.inf]),
    where=WHERE,
    transform=TRANSFORMS,
    seed=SEEDS,
)
def test_lp_pool_nonfinite_pattern(case, p, where, transform, seed):
    """Against the loops; an entry that no window reads has a zero gradient (the loops for
    ``p = +-inf`` multiply every entry by ``sign(x)``, NaN there, so they are masked)."""
    f = partial(jaxconv.lp_pool, p=p, **case.kwargs)
    x = jnp.abs(case.array(np.float32)) + 0.5  # pow is real for every p before planting
    x, dy = _planted(case, where, seed, f, x)
    y, dx = _value_and_grad(f, x, dy, transform)
    _assert_same_pattern("y", y, reference.lp_pool(x, p, **case.kwargs), "loops")
    dx_ref = reference.lp_pool_grad(x, dy, p, **case.kwargs)
    dx_ref = np.where(_read_by_a_window(x.shape, case.kwargs), dx_ref, 0.0)
    _assert_same_pattern("dx", dx, dx_ref, "loops")


@given(
    case=adaptive_pool_cases(ranks=(1, 2, 3)),
    op=st.sampled_from(["avg", "max"]),
    where=WHERE,
    transform=TRANSFORMS,
    seed=SEEDS,
)
def test_adaptive_pools_nonfinite_pattern(case, op, where, transform, seed):
    kw = {"channels_last": case.channels_last}
    size = case.output_size
    if op == "avg":
        f = partial(jaxconv.adaptive_avg_pool, output_size=size, **kw)
        y_ref, grad_ref = reference.adaptive_avg_pool, reference.adaptive_avg_pool_grad
    else:
        f = partial(jaxconv.adaptive_max_pool, output_size=size, **kw)
        grad_ref = reference.adaptive_max_pool_grad

        def y_ref(*args, **kwargs):
            return reference.adaptive_max_pool(*args, **kwargs)[0]  # (values, indices)

    x, dy = _planted(case, where, seed, f, case.array(np.float32))
    y, dx = _value_and_grad(f, x, dy, transform)
    _assert_same_pattern("y", y, y_ref(x, size, **kw), "loops")
    _assert_same_pattern("dx", dx, grad_ref(x, dy, size, **kw), "loops")


@given(case=pool_cases(op="max", ranks=(1, 2)), where=WHERE, transform=TRANSFORMS, seed=SEEDS)
def test_max_unpool_nonfinite_pattern(case, where, transform, seed):
    """NaN/inf in the pooled values land where their index says; in the output's cotangent,
    only on the values gathered from there."""
    cl = case.kwargs["channels_last"]
    size = case.x_shape[1:-1] if cl else case.x_shape[2:]
    y, idx = jax.jit(partial(jaxconv.max_pool, **case.kwargs, return_indices=True))(
        case.array(np.float32)
    )
    f = partial(jaxconv.max_unpool, indices=idx, output_size=size, channels_last=cl)
    y, d_out = _planted(case, where, seed, f, y)
    out, dy = _value_and_grad(f, y, d_out, transform)
    _assert_same_pattern("out", out, reference.max_unpool(y, idx, size, channels_last=cl), "loops")
    want = reference.max_unpool_grad(y, idx, d_out, size, channels_last=cl)
    _assert_same_pattern("dy", dy, want, "loops")


# --- pool: by hand


def test_nan_upstream_gradient_reaches_only_its_winner():
    """``dY * onehot`` would put ``NaN * 0 = NaN`` on the whole window; lax's
    select-and-scatter, and ours, put it on the winner only. Eagerly too: under jit XLA's
    simplifier turns such a product into a select, which would hide it."""
    x = jnp.arange(16.0).reshape(1, 1, 4, 4)
    for f in (partial(jaxconv.max_pool, window=2), partial(jaxconv.max_pool, window=3, stride=1)):
        dy = jnp.ones(jax.eval_shape(f, x).shape).at[0, 0, 0, 1].set(jnp.nan)
        _, dx = _value_and_grad(f, x, dy, "jit")
        assert int(jnp.isnan(dx).sum()) == 1
        assert int(jnp.isnan(jax.vjp(f, x)[1](dy)[0]).sum()) == 1
    dy = jnp.ones((1, 1, 2, 2)).at[0, 0, 0, 1].set(jnp.nan)
    _, dx = _value_and_grad(partial(jaxconv.max_pool, window=2), x, dy, "jit")
    _, want = _value_and_grad(partial(lax_max_pool, window=2), x, dy, "jit")
    np.testing.assert_array_equal(pattern(dx), pattern(want))
    assert bool(jnp.isnan(dx[0, 0, 1, 3]))  # the winner of window (0, 1): 7


def test_a_nan_survives_large_window_reductions():
    """Tiling windows of many offsets (global pooling) and adaptive windows reduce as blocks.
    XLA's CPU max reduction can drop a NaN from a reduction this large (lax's own
    ``reduce_window`` max pool does, with jax 0.10): the window's NaN must still be the
    output, and the window's gradient must reach the NaN, and nothing else."""
    rng = np.random.default_rng(1)
    nan_at = (1, 2, 10, 20)
    x = jnp.asarray(rng.standard_normal((2, 3, 64, 64)), jnp.float32).at[nan_at].set(jnp.nan)
    ops = [  # (op, the output whose window holds the NaN)
        (partial(jaxconv.max_pool, window=8), (1, 2, 1, 2)),
        (partial(jaxconv.max_pool, window=64), (1, 2, 0, 0)),
        (partial(jaxconv.adaptive_max_pool, output_size=1), (1, 2, 0, 0)),
        (partial(jaxconv.adaptive_max_pool, output_size=(3, 5)), (1, 2, 0, 1)),
        (partial(jaxconv.lp_pool, p=math.inf, window=16), (1, 2, 0, 1)),
    ]
    for op, out_at in ops:
        dy = jnp.asarray(rng.standard_normal(jax.eval_shape(op, x).shape), jnp.float32)
        y, dx = _value_and_grad(op, x, dy, "jit")
        want = np.zeros(y.shape, bool)
        want[out_at] = True
        np.testing.assert_array_equal(np.isnan(np.asarray(y)), want)
        want = np.zeros(x.shape, bool)
        if op.func is jaxconv.lp_pool:  # sign(NaN) * dY
            want[nan_at] = True
        else:  # max pools route dY to the NaN, which wins its window
            assert float(dx[nan_at]) == float(dy[out_at])
        np.testing.assert_array_equal(np.isnan(np.asarray(dx)), want)


def test_lp_pool_entries_no_window_reads_get_zero_gradient():
    """Length 5, window 2: the last entry is read by no window. Its gradient is 0 even when
    it is NaN or inf, where ``X^(p-1)`` times a zero spread would give NaN."""
    grad = jax.jit(jax.grad(lambda a, p: jnp.sum(jaxconv.lp_pool(a, p, 2))), static_argnums=1)
    for bad in (jnp.nan, jnp.inf):
        x = jnp.asarray([[[1.0, 2.0, 3.0, 4.0, bad]]])
        for p in (1.0, 2.0, 1.5, 0.5, math.inf, -math.inf):
            dx = grad(x, p)
            assert bool(jnp.isfinite(dx).all()), (p, bad, dx)
            assert float(dx[0, 0, 4]) == 0.0
    # stride > window: the entries between windows are read by none either
    x = jnp.asarray([[[1.0, 2.0, jnp.nan, 4.0, 5.0, jnp.inf]]])
    dx = jax.jit(jax.grad(lambda a: jnp.sum(jaxconv.lp_pool(a, 2.0, 2, 3))))(x)
    np.testing.assert_array_equal(pattern(dx), np.zeros((1, 1, 6)))
    assert float(dx[0, 0, 2]) == 0.0 and float(dx[0, 0, 5]) == 0.0


def test_lp_pool_infinite_p_differentiates_abs_by_its_sign():
    """``p = +-inf`` pools ``|x|``; d|x|/dx is ``sign(x)`` as in PyTorch: 0 at 0 and NaN at
    a NaN (``jnp.abs``'s rule gives +1 and -1 there)."""
    x = jnp.asarray([[[0.0, 0.0, -3.0, 2.0, jnp.nan, 1.0]]])
    dx = jax.grad(lambda a: jnp.sum(jaxconv.lp_pool(a, math.inf, 2)))(x)
    np.testing.assert_array_equal(pattern(dx), [[[0, 0, 0, 0, 1, 0]]])  # NaN: its winner
    np.testing.assert_array_equal(dx[0, 0, :4], [0.0, 0.0, -1.0, 0.0])  # |0| wins: 0
    x = jnp.asarray([[[0.0, -1.0, -3.0, 2.0]]])
    dx = jax.grad(lambda a: jnp.sum(jaxconv.lp_pool(a, -math.inf, 2)))(x)
    np.testing.assert_array_equal(dx, [[[0.0, 0.0, 0.0, 1.0]]])  # the minima |0| and |2|


def test_eager_agrees_with_jit_on_nonfinite_inputs():
    rng = np.random.default_rng(0)
    x = _plant(jnp.asarray(rng.standard_normal((1, 2, 6, 6)), jnp.float32), rng, 4)
    ops = [  # one per backward path: stride phases, the read mask, the adaptive gather
        partial(jaxconv.max_pool, window=3, stride=2, padding=1),
        partial(jaxconv.lp_pool, p=2.0, window=4, stride=4),
        partial(jaxconv.adaptive_max_pool, output_size=4),
    ]
    for op in ops:
        dy = _plant(jnp.ones(jax.eval_shape(op, x).shape), rng, 1)
        y, pullback = jax.vjp(op, x)
        y_jit, dx_jit = _value_and_grad(op, x, dy, "jit")
        np.testing.assert_array_equal(pattern(y), pattern(y_jit))
        np.testing.assert_array_equal(pattern(pullback(dy)[0]), pattern(dx_jit))
