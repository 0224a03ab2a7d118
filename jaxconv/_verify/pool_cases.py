"""Pooling cases for ``jaxconv verify``: one random configuration per call, checked against
``jax.vjp`` of ``lax.reduce_window`` (where lax can differentiate) or the loop references,
and against central finite differences in float64.

Configurations come from a small menu per op (NumPy RNG only, no Hypothesis) so compiled
functions are reused across calls: after warm-up a case costs a few milliseconds. The
inputs, cotangent, dtype and finite-difference direction are fresh random draws each call.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from .._compat import enable_x64
from ..pool import adaptive_avg_pool, adaptive_max_pool, avg_pool, lp_pool, max_pool, max_unpool
from . import pool_loops as ref
from .lax_reference import lax_avg_pool, lax_max_pool
from .tolerances import relative_error, tolerance

__all__ = ["FD_STEP", "FD_TOLERANCE", "POOL_OPS", "run_pool_case"]

POOL_OPS: tuple[str, ...] = (
    "max_pool",
    "avg_pool",
    "lp_pool",
    "adaptive_avg_pool",
    "adaptive_max_pool",
    "max_unpool",
)

# Central differences in float64. Max pools are piecewise linear: no truncation error unless
# a winner changes within the step, so the step is tiny (near-ties are then improbable);
# lp_pool is smooth (truncation ~ step^2). Round-off ~ 1e-16 |L| / step stays ~1e-8.
FD_STEP = 1e-7
FD_TOLERANCE = 1e-6
_FAST_COMPILE: dict[str, Any] = {"xla_backend_optimization_level": 0}


# ------------------------------------------------------------------------ the menu

# (input shape, keyword arguments) per op; shapes tiny, every option represented.
_MENU: dict[str, list[tuple[tuple[int, ...], dict[str, Any]]]] = {
    "max_pool": [
        ((2, 3, 8, 8), dict(window=2)),
        ((2, 3, 9, 9), dict(window=3, stride=2, padding=1, ceil_mode=True, channels_last=True)),
        ((2, 2, 11), dict(window=3, stride=1, padding=1, dilation=2)),
        ((1, 2, 5, 5, 5), dict(window=2, stride=1, padding=1, ceil_mode=True)),
    ],
    "avg_pool": [
        ((2, 3, 8, 8), dict(window=2)),
        (
            (2, 3, 9, 9),
            dict(window=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        ),
        (
            (2, 11, 2),
            dict(
                window=4,
                stride=3,
                padding=2,
                ceil_mode=True,
                divisor_override=3,
                channels_last=True,
            ),
        ),
        ((1, 2, 5, 5, 5), dict(window=3, stride=2, padding=1)),
    ],
    "lp_pool": [
        ((2, 3, 8, 8), dict(p=2.0, window=2)),
        ((2, 2, 11), dict(p=3.0, window=3, stride=2, ceil_mode=True)),
        ((1, 5, 5, 5, 2), dict(p=1.5, window=2, stride=1, channels_last=True)),
    ],
    "adaptive_avg_pool": [
        ((2, 3, 9, 7), dict(output_size=(4, 3))),
        ((2, 2, 10), dict(output_size=4)),
        ((1, 5, 6, 7, 2), dict(output_size=(2, 3, None), channels_last=True)),
    ],
    "adaptive_max_pool": [
        ((2, 3, 9, 7), dict(output_size=(4, 3))),
        ((2, 10, 2), dict(output_size=4, channels_last=True)),
        ((1, 2, 5, 6, 7), dict(output_size=(2, 3, None))),
    ],
    "max_unpool": [
        ((2, 3, 8, 8), dict(window=2)),
        ((2, 2, 11), dict(window=3, stride=2)),  # overlapping: duplicate indices possible
        ((1, 4, 4, 4, 2), dict(window=2, channels_last=True)),
    ],
}

_OURS: dict[str, Callable[..., Any]] = {
    "max_pool": max_pool,
    "avg_pool": avg_pool,
    "lp_pool": lp_pool,
    "adaptive_avg_pool": adaptive_avg_pool,
    "adaptive_max_pool": adaptive_max_pool,
}
_LOCK = threading.Lock()


def _compile(fn: Callable, *args: Any) -> Callable:
    lowered = jax.jit(fn).lower(*args)
    try:
        return lowered.compile(compiler_options=_FAST_COMPILE)
    except Exception:  # an XLA without the option: compile as usual
        return lowered.compile()


@functools.cache
def _compiled(op: str, index: int, dtype: str, which: str, shapes: tuple) -> Callable:
    """Compiled ``(x, ct) -> (f(x), vjp(ct))`` for ``which`` in {ours, lax}, cached."""
    _, kwargs = _MENU[op][index]
    if op == "max_unpool":
        kw = {"channels_last": kwargs.get("channels_last", False)}
        size = _unpool_size(_MENU[op][index][0], kw["channels_last"])  # the pool's input

        def f(y, idx):
            return max_unpool(y, idx, size, **kw)

        def unpool_both(y, idx, ct):
            out, pullback = jax.vjp(lambda v: f(v, idx), y)
            return out, pullback(ct)[0]

        specs = [
            jax.ShapeDtypeStruct(s, d) for s, d in zip(shapes[:2], (dtype, "int32"), strict=True)
        ]
        out = jax.eval_shape(f, *specs)
        return _compile(unpool_both, *specs, jax.ShapeDtypeStruct(out.shape, dtype))
    lax_refs: dict[str, Callable[..., Any]] = {"max_pool": lax_max_pool, "avg_pool": lax_avg_pool}
    fn = _OURS[op] if which == "ours" else lax_refs[op]

    def g(x):
        return fn(x, **kwargs)

    def both(x, ct):
        y, pullback = jax.vjp(g, x)
        return y, pullback(ct)[0]

    spec = jax.ShapeDtypeStruct(shapes[0], dtype)
    out = jax.eval_shape(g, spec)
    return _compile(both, spec, jax.ShapeDtypeStruct(out.shape, dtype))


def _unpool_size(x_shape: tuple[int, ...], channels_last: bool) -> tuple[int, ...]:
    return tuple(x_shape[1:-1] if channels_last else x_shape[2:])


def _describe(shape: tuple[int, ...], kwargs: dict[str, Any]) -> str:
    opts = ",".join(f"{k}={v}" for k, v in kwargs.items() if v not in (False, None))
    return "x".join(map(str, shape)) + " " + opts


def _loop_reference(op: str, x: np.ndarray, ct: np.ndarray, kwargs: dict[str, Any]):
    if op == "max_pool":
        return ref.max_pool_reference(x, **kwargs)[0], ref.max_pool_grad_reference(x, ct, **kwargs)
    if op == "lp_pool":
        kw = dict(kwargs)
        p = kw.pop("p")
        return ref.lp_pool_reference(x, p, **kw), ref.lp_pool_grad_reference(x, ct, p, **kw)
    if op == "adaptive_avg_pool":
        kw = dict(kwargs)
        size = kw.pop("output_size")
        return (
            ref.adaptive_avg_pool_reference(x, size, **kw),
            ref.adaptive_avg_pool_grad_reference(x, ct, size, **kw),
        )
    if op == "adaptive_max_pool":
        kw = dict(kwargs)
        size = kw.pop("output_size")
        return (
            ref.adaptive_max_pool_reference(x, size, **kw)[0],
            ref.adaptive_max_pool_grad_reference(x, ct, size, **kw),
        )
    raise ValueError(f"no loop reference for {op!r}")


def run_pool_case(op: str, rng: np.random.Generator) -> dict[str, Any]:
    """Draw one configuration of ``op`` and check its value and VJP.

    Args:
      op: one of ``POOL_OPS``.
      rng: NumPy generator; it picks the configuration, dtype, inputs and directions.

    Returns:
      ``{"op", "dtype", "config", "rel_err", "fd_rel_err", "tol", "passed"}``: the worst
      relative error of value and gradient against the reference (``jax.vjp`` of
      ``lax.reduce_window`` where lax differentiates, else the loop reference), the
      finite-difference error (float64) and whether both are within tolerance.
    """
    if op not in POOL_OPS:
        raise ValueError(f"`op` must be one of {', '.join(POOL_OPS)}, got {op!r}")
    index = int(rng.integers(len(_MENU[op])))
    shape, kwargs = _MENU[op][index]
    dtype = str(rng.choice(["float64", "float32"]))
    seed = int(rng.integers(2**31 - 1))
    r = np.random.default_rng(seed)
    x64 = r.standard_normal(shape)
    if op == "lp_pool":
        x64 = np.abs(x64) + 0.5  # real powers, smooth
    with enable_x64(True):
        if op == "max_unpool":
            return _run_unpool(op, index, shape, kwargs, dtype, x64, r)
        uses_lax = op in ("max_pool", "avg_pool") and kwargs.get("dilation", 1) == 1
        results = {}
        for d in {dtype, "float64"}:
            x = x64.astype(d)
            with _LOCK:
                run = _compiled(op, index, d, "ours", (shape,))
            out_shape = jax.eval_shape(
                lambda a: _OURS[op](a, **kwargs), jax.ShapeDtypeStruct(shape, d)
            ).shape
            if d == dtype:
                ct = r.standard_normal(out_shape)
            results[d] = (run, x)
        run, x = results[dtype]
        y, dx = jax.device_get(run(x, ct.astype(dtype)))
        if uses_lax:
            with _LOCK:
                run_ref = _compiled(op, index, dtype, "lax", (shape,))
            y_ref, dx_ref = jax.device_get(run_ref(x, ct.astype(dtype)))
        else:
            y_ref, dx_ref = _loop_reference(op, x.astype(np.float64), ct, kwargs)
        err = max(relative_error(y, y_ref), relative_error(dx, dx_ref))
        # finite differences of L(x) = <f(x), ct> along a random direction, in float64
        run64, _ = results["float64"]
        u = r.standard_normal(shape)
        _, g64 = jax.device_get(run64(x64, ct))
        fd_err = _fd_error(lambda a: jax.device_get(run64(a, ct)[0]), x64, u, ct, g64)
    tol = tolerance(dtype)
    return {
        "op": op,
        "dtype": dtype,
        "config": _describe(shape, kwargs),
        "rel_err": float(err),
        "fd_rel_err": float(fd_err),
        "tol": tol,
        "passed": bool(err <= tol and fd_err <= FD_TOLERANCE),
    }


def _fd_error(f, x, u, ct, grad) -> float:
    plus, minus = f(x + FD_STEP * u), f(x - FD_STEP * u)
    fd = float(np.vdot(plus - minus, ct)) / (2 * FD_STEP)
    exact = float(np.vdot(grad, u))
    scale = float(np.linalg.norm(grad) * np.linalg.norm(u))
    return abs(fd - exact) / max(scale, 1e-30)


def _run_unpool(op, index, shape, kwargs, dtype, x64, r) -> dict[str, Any]:
    channels_last = kwargs.get("channels_last", False)
    y64, idx = ref.max_pool_reference(x64, **kwargs)
    idx = idx.astype(np.int32)
    size = _unpool_size(shape, channels_last)
    shapes = (y64.shape, idx.shape)
    ct = r.standard_normal(shape)
    with _LOCK:
        run = _compiled(op, index, dtype, "ours", shapes)
        run64 = _compiled(op, index, "float64", "ours", shapes)
    out, dy = jax.device_get(run(y64.astype(dtype), idx, ct.astype(dtype)))
    out_ref = ref.max_unpool_reference(y64.astype(dtype), idx, size, channels_last=channels_last)
    dy_ref = ref.max_unpool_grad_reference(
        y64, idx, ct.astype(dtype), size, channels_last=channels_last
    )
    err = max(relative_error(out, out_ref), relative_error(dy, dy_ref))
    _, g64 = jax.device_get(run64(y64, idx, ct))
    u = r.standard_normal(y64.shape)
    fd_err = _fd_error(lambda a: jax.device_get(run64(a, idx, ct)[0]), y64, u, ct, g64)
    tol = tolerance(dtype)
    return {
        "op": op,
        "dtype": dtype,
        "config": _describe(shape, kwargs),
        "rel_err": float(err),
        "fd_rel_err": float(fd_err),
        "tol": tol,
        "passed": bool(err <= tol and fd_err <= FD_TOLERANCE),
    }
