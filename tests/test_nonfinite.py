"""NaN and inf stay local on every method, fft's overflow guard, and keeping ``auto`` exact.

A non-finite input may only touch the outputs (and gradient entries) whose window holds it,
exactly as the direct sum -- and ``lax`` -- do. The FFT spreads one NaN over the whole grid,
so ``method="fft"`` checks finiteness at run time and falls back to the direct rules; these
tests plant NaN/inf at random positions of ``x``, ``w`` and ``dY`` and compare the pattern of
NaN, +inf and -inf of every registered method with ``direct``'s.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import jaxconv
import jaxconv.reference as reference
from jaxconv.convolution.methods import registry
from jaxconv.testing import conv_cases, relative_error

METHODS = [m for m in registry.names() if m != "direct"]


def pattern(a) -> np.ndarray:
    """0 finite, 1 NaN, 2 +inf, 3 -inf, per entry."""
    a = np.asarray(a, dtype=np.float64)
    return np.select([np.isnan(a), np.isposinf(a), np.isneginf(a)], [1, 2, 3], 0)


def _plant(a: jax.Array, rng: np.random.Generator, count: int) -> jax.Array:
    flat = np.asarray(a).copy().reshape(-1)
    where = rng.choice(flat.size, size=min(count, flat.size), replace=False)
    flat[where] = rng.choice([np.nan, np.inf, -np.inf], size=where.size)
    return jnp.asarray(flat.reshape(a.shape), a.dtype)


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
@settings(max_examples=max(4, settings.default.max_examples // 2))  # 3 methods x 4 VJPs each
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
