"""``jaxconv verify``: a seeded sweep comparing every hand-derived VJP with ``jax.grad`` of
``lax`` (float64 and float32) and with central finite differences (float64).

Configurations come from NumPy's seeded generator (no Hypothesis at run time), drawn in the
same dependent order as :mod:`jaxconv.testing`'s strategies.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._compat import enable_x64
from .._shapes import conv_output_shape, conv_transpose_output_size, dilate_dim, padding_pairs
from .lax_reference import lax_conv
from .tolerances import relative_error, tolerance

__all__ = ["CONV_OPS", "CaseResult", "run_case"]

# The conv ops besides ``conv`` itself, which the sweep runs once per registered method.
CONV_OPS = ("conv_transpose", "conv_input_grad", "conv_weight_grad", "conv_general_dilated")

# Central differences in float64 with step 1e-4 on O(1) inputs: truncation ~1e-8 relative.
FD_TOLERANCE = 1e-5
FD_STEP = 1e-4
_FAST_COMPILE: dict[str, Any] = {"xla_backend_optimization_level": 0}


@dataclasses.dataclass
class CaseResult:
    op: str
    config: str
    rel_err: dict[str, float]  # dtype name -> worst relative error vs the lax reference
    fd_rel_err: float | None
    passed: bool
    seconds: float = 0.0


def _sample_conv(
    rng: np.random.Generator, *, modes: tuple[str, ...] = ("zeros",)
) -> dict[str, Any]:
    nd = int(rng.integers(1, 4))
    kernel = [int(rng.integers(1, 4 if nd < 3 else 3)) for _ in range(nd)]
    dilation = [int(rng.integers(1, 3)) for _ in range(nd)]
    stride = [int(rng.integers(1, 4)) for _ in range(nd)]
    spans = [dilate_dim(k, d) for k, d in zip(kernel, dilation, strict=True)]
    form = str(rng.choice(["int", "pairs", "VALID", "SAME", "SAME_LOWER", "FULL"]))
    if form == "int":
        padding: Any = int(rng.integers(0, max(spans)))
    elif form == "pairs":
        padding = tuple((int(rng.integers(0, s + 1)), int(rng.integers(0, s + 1))) for s in spans)
    else:
        padding = form
    spatial = [int(rng.integers(s, s + (5 if nd < 3 else 3))) for s in spans]
    mode = str(rng.choice(modes))
    if mode in ("reflect", "circular"):
        pairs = padding_pairs(padding, spatial, kernel, stride, dilation)
        spatial = [max(s, max(p) + 1) for s, p in zip(spatial, pairs, strict=True)]
    groups = int(rng.integers(1, 4))
    c_in_g, c_out_g, batch = (int(v) for v in rng.integers(1, 3, size=3))
    return dict(
        nd=nd,
        kernel=kernel,
        spatial=spatial,
        groups=groups,
        c_in=c_in_g * groups,
        c_out=c_out_g * groups,
        c_in_g=c_in_g,
        batch=batch,
        kwargs=dict(
            stride=tuple(stride),
            padding=padding,
            dilation=tuple(dilation),
            groups=groups,
            flip=bool(rng.integers(0, 2)),
            channels_last=bool(rng.integers(0, 2)),
        ),
        mode=mode,
    )


def _shapes_of(c: dict[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if c["kwargs"]["channels_last"]:
        return (c["batch"], *c["spatial"], c["c_in"]), (*c["kernel"], c["c_in_g"], c["c_out"])
    return (c["batch"], c["c_in"], *c["spatial"]), (c["c_out"], c["c_in_g"], *c["kernel"])


def _describe(kwargs: dict[str, Any], shapes: tuple[tuple[int, ...], ...]) -> str:
    parts = ["x".join(map(str, s)) for s in shapes]
    opts = ",".join(f"{k}={v}" for k, v in kwargs.items() if v not in (False, 1, "zeros", "auto"))
    return " ".join(parts) + (" " + opts if opts else "")


def _supported(method: str, c: dict[str, Any]) -> bool:
    import jaxconv

    if method == "auto":
        return True
    shapes = _shapes_of(c)
    kw = {k: v for k, v in c["kwargs"].items() if k != "flip"}
    return jaxconv.explain_method(*shapes, **kw).costs[method] is not None


def _case(op: str, rng: np.random.Generator, method: str = "auto"):
    import jaxconv

    if op == "conv":
        modes = ("zeros", "zeros", "reflect", "replicate", "circular")
        c = _sample_conv(rng, modes=modes)
        if not _supported(method, c):  # e.g. "shift": depthwise and small grouped convs
            c["c_in_g"], c["c_in"] = 1, c["groups"]
        while not _supported(method, c):
            c = _sample_conv(rng, modes=modes)
        kw = dict(c["kwargs"], padding_mode=c["mode"], method=method)
        xs, ws = _shapes_of(c)
        return (
            lambda x, w, b: jaxconv.conv(x, w, b, **kw),
            lambda x, w, b: lax_conv(x, w, b, **kw),
            [xs, ws, (c["c_out"],)],
            _describe(kw, (xs, ws)),
        )
    if op in ("conv_input_grad", "conv_weight_grad"):
        c = _sample_conv(rng)
        kw = c["kwargs"]
        xs, ws = _shapes_of(c)
        ys = jax.eval_shape(
            lambda x, w: lax_conv(x, w, **kw),
            jax.ShapeDtypeStruct(xs, jnp.float32),
            jax.ShapeDtypeStruct(ws, jnp.float32),
        ).shape

        def lax_vjp(x, w, dy):
            return jax.vjp(lambda x, w: lax_conv(x, w, **kw), x, w)[1](dy)

        if op == "conv_input_grad":
            return (
                lambda dy, w: jaxconv.conv_input_grad(dy, w, xs, **kw),
                lambda dy, w: lax_vjp(jnp.zeros(xs, dy.dtype), w, dy)[0],
                [ys, ws],
                _describe(kw, (ys, ws)),
            )
        return (
            lambda x, dy: jaxconv.conv_weight_grad(x, dy, ws, **kw),
            lambda x, dy: lax_vjp(x, jnp.zeros(ws, x.dtype), dy)[1],
            [xs, ys],
            _describe(kw, (xs, ys)),
        )
    if op == "conv_transpose":
        c = _sample_conv(rng)
        kw = {k: c["kwargs"][k] for k in ("stride", "dilation", "groups", "channels_last")}
        pairs = padding_pairs(
            c["kwargs"]["padding"], c["spatial"], c["kernel"], kw["stride"], kw["dilation"]
        )
        kw["padding"] = pairs
        xs, ws = _shapes_of(c)
        spatial_out = conv_output_shape(
            c["spatial"], c["kernel"], kw["stride"], pairs, kw["dilation"]
        )
        op_pad = tuple(
            i - conv_transpose_output_size(o, k, s, p, d, 0)
            for i, o, k, s, p, d in zip(
                c["spatial"],
                spatial_out,
                c["kernel"],
                kw["stride"],
                pairs,
                kw["dilation"],
                strict=True,
            )
        )
        ys = jax.eval_shape(
            lambda x, w: lax_conv(x, w, **kw),
            jax.ShapeDtypeStruct(xs, jnp.float32),
            jax.ShapeDtypeStruct(ws, jnp.float32),
        ).shape

        def ref(dy, w, b):
            z = jax.vjp(lambda x: lax_conv(x, w, **kw), jnp.zeros(xs, dy.dtype))[1](dy)[0]
            shape = [1] * z.ndim
            shape[-1 if kw["channels_last"] else 1] = b.shape[0]
            return z + b.reshape(shape)

        return (
            lambda dy, w, b: jaxconv.conv_transpose(dy, w, b, **kw, output_padding=op_pad),
            ref,
            [ys, ws, (c["c_in"],)],
            _describe(dict(kw, output_padding=op_pad), (ys, ws)),
        )
    if op == "conv_general_dilated":
        c = _sample_conv(rng)
        nd = c["nd"]
        lhs_dil = tuple(int(v) for v in rng.integers(1, 3, size=nd))
        spans = [
            dilate_dim(k, d) for k, d in zip(c["kernel"], c["kwargs"]["dilation"], strict=True)
        ]
        pads = [(int(rng.integers(-1, s + 1)), int(rng.integers(-1, s + 1))) for s in spans]
        spatial = [
            max(2, -(-(s - lo - hi + 2 * ld) // ld)) + int(rng.integers(0, 3))
            for s, (lo, hi), ld in zip(spans, pads, lhs_dil, strict=True)
        ]
        letters = "DHW"[-nd:]
        layout = (
            ("N" + letters + "C", letters + "IO", "N" + letters + "C")
            if c["kwargs"]["channels_last"]
            else ("NC" + letters, "OI" + letters, "NC" + letters)
        )
        c["spatial"] = spatial
        xs, ws = _shapes_of(c)
        kw = dict(
            window_strides=c["kwargs"]["stride"],
            padding=pads,
            lhs_dilation=lhs_dil,
            rhs_dilation=c["kwargs"]["dilation"],
            dimension_numbers=layout,
            feature_group_count=c["groups"],
        )
        return (
            lambda a, b: jaxconv.conv_general_dilated(a, b, **kw),
            lambda a, b: lax.conv_general_dilated(a, b, **kw, precision=lax.Precision.HIGHEST),
            [xs, ws],
            _describe(kw, (xs, ws)),
        )
    raise ValueError(f"unknown op {op!r}")


def _compiled_value_and_vjp(fn: Callable) -> Callable:
    """``(ct, *args) -> (fn(*args), vjp(ct))`` as one jitted function."""

    def value_and_vjp(ct, *args):
        y, vjp = jax.vjp(fn, *args)
        return y, vjp(ct)

    jitted = jax.jit(value_and_vjp)
    compiled: dict[Any, Callable] = {}

    def run(ct, *args):
        # Tiny shapes: XLA's backend optimisations cost more than they save here.
        key = tuple((a.shape, a.dtype) for a in (ct, *args))
        if key not in compiled:
            lowered = jitted.lower(ct, *args)
            try:
                compiled[key] = lowered.compile(compiler_options=_FAST_COMPILE)
            except Exception:  # an XLA without the option: compile as usual
                compiled[key] = lowered.compile()
        return compiled[key](ct, *args)

    return run


def run_case(
    op: str, rng: np.random.Generator, *, float32: bool = True, method: str = "auto"
) -> CaseResult:
    """One random configuration of a convolution op: value and VJP vs lax in float64 (and
    float32 when asked), and the VJP vs central finite differences along a random direction.

    The finite differences reuse the compiled value-and-VJP function (same shapes), so they
    cost no compilation of their own.
    """
    t0 = time.perf_counter()
    ours, ref, shapes, desc = _case(op, rng, method)
    seed = int(rng.integers(0, 2**31 - 1))
    errs: dict[str, float] = {}
    fd_err = None
    passed = True
    for dtype in ("float64", "float32") if float32 else ("float64",):
        with enable_x64(dtype == "float64"):
            # Everything outside the two compiled functions is NumPy: an eager jnp op on a
            # new shape would cost a compilation of its own.
            r = np.random.default_rng(seed)
            host = [r.standard_normal(s).astype(dtype) for s in shapes]
            out = jax.eval_shape(ours, *host)
            ct = r.standard_normal(out.shape).astype(dtype)
            run, run_ref = _compiled_value_and_vjp(ours), _compiled_value_and_vjp(ref)
            y, grads = jax.device_get(run(ct, *host))
            y_ref, grads_ref = jax.device_get(run_ref(ct, *host))
            err = max(
                [relative_error(y, y_ref)]
                + [relative_error(g, gr) for g, gr in zip(grads, grads_ref, strict=True)]
            )
            errs[dtype] = err
            passed &= err <= tolerance(dtype)
            if dtype == "float64":
                # <grad, u> against (L(a + eps u) - L(a - eps u)) / 2 eps with L = <f(a), ct>;
                # the compiled function is reused (same shapes), so this compiles nothing.
                dirs = [r.standard_normal(s) for s in shapes]
                y_plus = jax.device_get(
                    run(ct, *[a + FD_STEP * u for a, u in zip(host, dirs, strict=True)])[0]
                )
                y_minus = jax.device_get(
                    run(ct, *[a - FD_STEP * u for a, u in zip(host, dirs, strict=True)])[0]
                )
                fd = float(np.vdot(y_plus - y_minus, ct)) / (2 * FD_STEP)
                exact = sum(float(np.vdot(g, u)) for g, u in zip(grads, dirs, strict=True))
                scale = sum(
                    float(np.linalg.norm(g) * np.linalg.norm(u))
                    for g, u in zip(grads, dirs, strict=True)
                )
                fd_err = abs(fd - exact) / max(scale, 1e-30)
                passed &= fd_err <= FD_TOLERANCE
    label = op if method == "auto" else f"{op}[{method}]"
    return CaseResult(label, desc, errs, fd_err, bool(passed), time.perf_counter() - t0)
