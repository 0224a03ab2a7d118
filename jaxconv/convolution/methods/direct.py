"""``method="direct"``: one XLA convolution forward, the two hand-derived rules backward.

This is the lecture's algorithm as XLA runs it, and the method every other one is checked
against; it computes every configuration (``conv_general_dilated``'s input dilation and
batch groups included), so it is always available to ``auto``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import jax
from jax import lax

from ..._compat import sharding_of
from ..._shapes import channel_shape
from .._config import ConvConfig
from ..grads import bias_grad, input_grad, weight_grad
from .plan import Geometry, MethodPlan, all_finite
from .registry import Cost, Method

__all__ = [
    "CALIBRATION",
    "METHOD",
    "conv_forward",
    "direct_conv",
    "guarded_forward",
    "guarded_grads",
]


def conv_forward(x: jax.Array, w: jax.Array, b: jax.Array | None, cfg: ConvConfig) -> jax.Array:
    """The forward convolution ``cfg`` describes (cross-correlation unless ``cfg.flip``)."""
    k = lax.rev(w, cfg.dimension_numbers.rhs_spec[2:]) if cfg.flip else w
    y = lax.conv_general_dilated(
        x,
        k,
        window_strides=cfg.window_strides,
        padding=cfg.padding,
        lhs_dilation=cfg.lhs_dilation,
        rhs_dilation=cfg.rhs_dilation,
        dimension_numbers=cfg.dimension_numbers,
        feature_group_count=cfg.feature_group_count,
        batch_group_count=cfg.batch_group_count,
        precision=cfg.precision,
        preferred_element_type=cfg.preferred_element_type,
        **({} if cfg.out_sharding is None else {"out_sharding": cfg.out_sharding}),
    )
    if b is not None:
        y = y + b.astype(y.dtype).reshape(
            channel_shape(y.ndim, cfg.dimension_numbers.out_spec[1], b.shape[0])
        )
    return y


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def direct_conv(x: jax.Array, w: jax.Array, b: jax.Array | None, cfg: ConvConfig) -> jax.Array:
    """The convolution ``cfg`` describes as one XLA convolution, with the hand-derived VJP."""
    return conv_forward(x, w, b, cfg)


def _direct_conv_fwd(x, w, b, cfg):
    # Residuals: the two operands. dW needs x and dX needs w; the output is never needed.
    return conv_forward(x, w, b, cfg), (x, w, b is not None)


# Forward:  Y[i]   = sum_a X[S*i + D*a - P] W[a]            (per channel pair, summed over c)
# dL/dW:    dW[a]  = sum_i dY[i] X[S*i + D*a - P]           (correlate X with stride-dilated dY)
# dL/dX:    dX[q]  = sum_{S*i + D*a - P = q} dY[i] W[a]      (stride-dilated dY * flipped W)
# dL/db:    db[o]  = sum over batch and space of dY[o]
# Complex operands: the same sums with no conjugate (JAX's VJP is the transpose). Under a
# mesh each gradient gets its primal's sharding, as lax's transpose rules give it; a primal
# whose type carries none (a kernel never placed on the mesh) gets the one grads derives.
def _direct_conv_bwd(cfg, res, dy):
    x, w, has_bias = res
    dx = input_grad(dy, w, x.shape, cfg, out_sharding=sharding_of(x))
    dw = weight_grad(x, dy, w.shape, cfg, out_sharding=sharding_of(w))
    db = bias_grad(dy, cfg, x.dtype) if has_bias else None
    return dx, dw, db


direct_conv.defvjp(_direct_conv_fwd, _direct_conv_bwd)


# ---------------------------------------------------------------------------------------
# The guard the exactly-summing fast methods share. Their sums hold only each window's
# terms, like XLA's convolution -- except that they multiply padded zeros (and zeros
# inserted between strided cells) by kernel taps and upstream gradients, where ``0 * inf``
# is NaN and XLA's convolution multiplies nothing. With a non-finite kernel or upstream
# gradient they take these direct rules at run time (one reduction decides), so every
# method has lax's NaN/inf pattern. A non-finite ``x`` needs no guard.


def guarded_forward(fast: Callable, x, w, b, plan: MethodPlan) -> jax.Array:
    """``fast(x, w, b)`` when ``w`` is finite, else the direct forward."""
    return lax.cond(all_finite(w), fast, lambda x, w, b: conv_forward(x, w, b, plan.cfg), x, w, b)


def guarded_grads(fast: Callable, x, w, dy, plan: MethodPlan) -> tuple[jax.Array, jax.Array]:
    """``fast(dy) -> (dx, dw)`` when ``w`` and ``dy`` are finite, else the direct rules."""

    def direct(dy):
        return input_grad(dy, w, x.shape, plan.cfg), weight_grad(x, dy, w.shape, plan.cfg)

    return lax.cond(all_finite(w, dy), fast, direct, dy)


# ---------------------------------------------------------------------------------------
# The cost model's entry. Rates in flop/s, bandwidth in byte/s, fixed costs in seconds;
# "cpu" measured on the development machine's 2-core x86 CPU, "gpu" on one H100 (there
# every method is launch-bound at the benchmark's sizes, and cuDNN runs grouped
# convolutions near its dense rate).

CALIBRATION: dict[str, dict[str, float]] = {
    "cpu": {
        "rate": 40e9,  # dense XLA convolution, 1-D and 2-D
        "c0": 256.0,  # Cg*Og at which the grouped rate reaches the dense rate
        "min_rate": 0.5e9,  # depthwise: XLA CPU's grouped convolution
        "rank3": 0.1,  # 3-D convolutions run at a tenth of the 2-D rate
        # Few-channel convolutions (a network's 3-channel stem) are where the bytes term
        # matters; fitted there: 3 -> 16/32 channels, 3x3 on 32x32x32, fwd+bwd 11-13 ms.
        "bw": 10e9,
        "fixed": 50e-6,
        "group_cost": 5.6e-6,  # per group and output position, non-depthwise groups
    },
    "gpu": {
        "rate": 60e12,
        "c0": 16.0,
        "min_rate": 1e12,
        "rank3": 0.5,
        "bw": 1e12,
        "fixed": 300e-6,
        "group_cost": 0.0,
    },
}


def _cost(g: Geometry, item: int, backend: str) -> Cost:
    """Three convolutions of the same size (forward, dL/dX, dL/dW). XLA's rate falls with the
    work per group, and its CPU backend pays a fixed cost per group and output position for
    grouped convolutions that are not plain depthwise (measured: 5.6 us * G * N * P)."""
    c = CALIBRATION[backend]
    cg, og = g.c_in_g, g.c_out_g
    p, s = math.prod(g.out), math.prod(g.spatial)
    rate = max(c["rate"] * min(1.0, cg * og / c["c0"]), c["min_rate"])
    if g.ndim >= 3:
        rate *= c["rank3"]
    flops = 3 * 2 * g.n * g.c_out * cg * p * g.taps
    bytes_ = 3 * item * (g.n * g.c_in * s + g.n * g.c_out * p + g.c_out * cg * g.taps)
    seconds = flops / rate + bytes_ / c["bw"] + c["fixed"]
    if g.groups > 1 and cg * og > 1:
        seconds += c["group_cost"] * g.groups * g.n * p
    note = "XLA convolution"
    if rate < c["rate"]:
        note += f" at a grouped rate of {rate / 1e9:.2g} GFLOP/s"
    return Cost(flops, bytes_, seconds, note)


def _run(x: jax.Array, w: jax.Array, b: jax.Array | None, plan: MethodPlan) -> jax.Array:
    return direct_conv(x, w, b, plan.cfg)


METHOD = Method(
    name="direct",
    supports=lambda g: None,
    cost=_cost,
    run=_run,
    exact=True,
    explicit_sharding=True,
)
