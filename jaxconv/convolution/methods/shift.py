"""``method="shift"``: depthwise and small grouped convolutions as sums of shifted slices.

XLA's CPU backend runs grouped convolutions with few channels per group far below its
dense speed; written as ``K`` (kernel taps) shifted, per-channel-scaled slices of the padded
input, the same convolution is one fused elementwise loop. Per group ``g``, with ``Cg`` input
and ``Og`` output channels, stride ``S``, dilation ``D``, low padding ``P`` and ``xp`` the
zero-padded input (one spatial axis shown; the others are alike)::

    Forward:  Y[n,g,o,i]  = sum_a sum_c xp[n,g,c, S*i + D*a] W[g,o,c,a]
    dL/dX:    dX[n,g,c,q] = sum_a sum_o u[n,g,o, q + D*a] W[g,o,c, K-1-a]
              where u is dY zero-inserted by S and padded by D(K-1) - P low
              (the same sum of shifted slices, with the flipped kernel)
    dL/dW:    dW[g,o,c,a] = sum_{n,i} xp[n,g,c, S*i + D*a] dY[n,g,o,i]
              (K per-channel reductions of x_shift * dY, done as one variadic reduce)

Every step is a pad, a slice, a product or a sum, which JAX differentiates in both modes.
Half precision computes in float32 and casts back.

The work is ``K * Cg`` products per output element and the traced program has ``O(K)``
operations, so the method is limited to ``C_in // groups <= MAX_GROUP_CHANNELS`` and
``K <= MAX_TAPS``; :func:`shift_unsupported_reason` says so for anything beyond.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..grads import bias_grad
from .direct import guarded_forward, guarded_grads
from .plan import (
    Geometry,
    MethodPlan,
    plain_conv_reason,
    w_from_cf,
    w_to_cf,
    x_from_cf,
    x_to_cf,
)
from .registry import Cost, Method

__all__ = ["CALIBRATION", "MAX_GROUP_CHANNELS", "MAX_TAPS", "METHOD", "shift_unsupported_reason"]

MAX_GROUP_CHANNELS = 8
MAX_TAPS = 125


def shift_unsupported_reason(g: Geometry) -> str | None:
    """Why ``method="shift"`` refuses ``g`` (``None`` when it computes it)."""
    plain = plain_conv_reason(g)
    if plain is not None:
        return plain
    if g.c_in_g > MAX_GROUP_CHANNELS or g.taps > MAX_TAPS:
        return (
            "it handles depthwise and small grouped convolutions (C_in // groups <= "
            f"{MAX_GROUP_CHANNELS} and at most {MAX_TAPS} kernel taps), got C_in // groups = "
            f"{g.c_in_g} and {g.taps} taps"
        )
    return None


@dataclasses.dataclass(frozen=True)
class ShiftPlan(MethodPlan):
    """Everything static about one shifted-sum convolution: resolved once."""

    @property
    def axes(self) -> tuple[int, ...]:
        """Spatial axes of the grouped arrays ``(N, G, C, *S)``."""
        return tuple(range(3, 3 + self.geo.ndim))


def _run(x: jax.Array, w: jax.Array, b: jax.Array | None, plan: MethodPlan) -> jax.Array:
    """The convolution ``plan`` describes as a sum of shifted slices (see the module doc)."""
    return _shift_conv(x, w, b, ShiftPlan.of(plan))


def _taps(g: Geometry):
    return itertools.product(*(range(k) for k in g.kernel))


def _window(a: jax.Array, start: tuple[int, ...], size: tuple[int, ...], step: tuple[int, ...]):
    """``a[..., start + step*i]`` for ``i < size`` on the trailing spatial axes."""
    lead = a.ndim - len(start)
    begin = (0,) * lead + start
    limit = a.shape[:lead] + tuple(
        s + t * (n - 1) + 1 for s, t, n in zip(start, step, size, strict=True)
    )
    return lax.slice(a, begin, limit, (1,) * lead + step)


def _channel_sum(terms: jax.Array, axis: int, keep: bool) -> jax.Array:
    """Sum the per-group channel axis of a product (a squeeze when it has one entry)."""
    if terms.shape[axis] == 1:
        return lax.squeeze(terms, (axis,)) if not keep else terms
    return jnp.sum(terms, axis=axis, keepdims=keep)


def _grouped_operands(x: jax.Array, w: jax.Array, plan: ShiftPlan):
    """``x`` as zero-padded ``(N, G, Cg, *Sp)``; ``w`` as ``(G, Og, Cg, *K)`` (flip applied)."""
    g, cfg = plan.geo, plan.cfg
    x_cf = x_to_cf(x, cfg).astype(plan.compute)
    x_g = x_cf.reshape((g.n, g.groups, g.c_in_g) + g.spatial)
    pads = [(0, 0, 0)] * 3 + [(lo, hi, 0) for lo, hi in g.padding]
    xp = lax.pad(x_g, np.array(0, plan.compute), pads)
    k = w_to_cf(w, cfg).astype(plan.compute)
    if cfg.flip:
        k = lax.rev(k, tuple(range(2, 2 + g.ndim)))
    k = k.reshape((g.groups, g.c_out_g, g.c_in_g) + g.kernel)
    return xp, k


def _scale(k: jax.Array, tap: tuple[int, ...], ndim: int) -> jax.Array:
    """One tap of the kernel, ``(G, Og, Cg)``, shaped to broadcast over ``(N, G, Og, Cg, *S)``."""
    return k[(slice(None),) * 3 + tap].reshape((1,) + k.shape[:3] + (1,) * ndim)


def _forward(x: jax.Array, w: jax.Array, b: jax.Array | None, plan: ShiftPlan) -> jax.Array:
    g = plan.geo
    xp, k = _grouped_operands(x, w, plan)
    y = None
    for tap in _taps(g):
        start = tuple(d * a for d, a in zip(g.dilations, tap, strict=True))
        xs = _window(xp, start, g.out, g.strides)[:, :, None]  # (N, G, 1, Cg, *out)
        term = _channel_sum(xs * _scale(k, tap, g.ndim), axis=3, keep=False)
        y = term if y is None else y + term
    assert y is not None  # the kernel has at least one tap
    y = y.reshape((g.n, g.c_out) + g.out)
    if b is not None:
        y = y + b.astype(plan.compute).reshape((1, -1) + (1,) * g.ndim)
    return x_from_cf(y.astype(plan.out_dtype), plan.cfg)


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _sums(terms: tuple[jax.Array, ...], axes: tuple[int, ...]) -> tuple[jax.Array, ...]:
    """``tuple(jnp.sum(t, axes) for t in terms)`` as ONE variadic reduction.

    XLA's CPU backend runs ``K`` separate reductions of slices of the same operands as ``K``
    passes that fall out of cache (3-6x slower on the depthwise benchmark); one reduction
    with ``K`` outputs reads each operand once. The sums are linear, so the JVP below is
    the plain sum of each tangent (JAX cannot transpose a generic variadic reduction, but
    it can transpose ``jnp.sum``): higher derivatives stay exact.
    """
    zeros = tuple(np.array(0, t.dtype) for t in terms)
    return tuple(lax.reduce(terms, zeros, _add_pairs, axes))


def _add_pairs(a, b):
    return tuple(p + q for p, q in zip(a, b, strict=True))


@_sums.defjvp
def _sums_jvp(axes, primals, tangents):
    (terms,), (dterms,) = primals, tangents
    return _sums(terms, axes), tuple(jnp.sum(t, axis=axes) for t in dterms)


def _weight_taps(xp: jax.Array, dy_g: jax.Array, g: Geometry) -> jax.Array:
    """``(G, Og, Cg, K)``: per tap, ``sum_{n,i} xp[n,g,c,S*i + D*a] dy[n,g,o,i]``."""
    dy_b = dy_g[:, :, :, None]  # (N, G, Og, 1, *out)
    terms = []
    for tap in _taps(g):
        start = tuple(d * a for d, a in zip(g.dilations, tap, strict=True))
        xs = _window(xp, start, g.out, g.strides)[:, :, None]  # (N, G, 1, Cg, *out)
        terms.append(xs * dy_b)
    axes = (0,) + tuple(range(4, 4 + g.ndim))
    if jax.device_count() > 1:
        # A variadic reduction has no all-reduce form: XLA's SPMD partitioner gathers the
        # devices' partial sums instead. Plain sums of the stacked taps all-reduce.
        return jnp.sum(jnp.stack(terms, axis=-1), axis=axes)
    return jnp.stack(_sums(tuple(terms), axes), axis=-1)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _shift_conv(x: jax.Array, w: jax.Array, b: jax.Array | None, plan: ShiftPlan) -> jax.Array:
    return guarded_forward(lambda x, w, b: _forward(x, w, b, plan), x, w, b, plan)


def _shift_conv_fwd(x, w, b, plan):
    # Residuals: the two operands (dX needs w, dW needs x); the padded copy is rebuilt.
    y = guarded_forward(lambda x, w, b: _forward(x, w, b, plan), x, w, b, plan)
    return y, (x, w, b is not None)


def _shift_conv_bwd(plan, res, dy):
    x, w, has_bias = res
    dx, dw = guarded_grads(lambda dy: _shift_grads(plan, x, w, dy), x, w, dy, plan)
    db = bias_grad(dy, plan.cfg, x.dtype) if has_bias else None
    return dx, dw, db


def _shift_grads(plan: ShiftPlan, x, w, dy):
    g, cfg = plan.geo, plan.cfg
    xp, k = _grouped_operands(x, w, plan)
    dy_cf = x_to_cf(dy, cfg).astype(plan.compute)
    dy_g = dy_cf.reshape((g.n, g.groups, g.c_out_g) + g.out)
    zero = np.array(0, plan.compute)

    # dL/dX: zero-insert dY by S, pad D(K-1) - P low, correlate with the flipped kernel.
    u_pads = [(0, 0, 0)] * 3
    geo = zip(g.spatial, g.spans, g.strides, g.out, g.padding, strict=True)
    for size, span, s, o, (lo, _) in geo:
        low = span - 1 - lo
        u_pads.append((low, size + span - 1 - low - (s * (o - 1) + 1), s - 1))
    u = lax.pad(dy_g, zero, u_pads)[:, :, :, None]  # (N, G, Og, 1, *(L + Kd - 1))
    dx = None
    ones = (1,) * g.ndim
    for tap in _taps(g):
        start = tuple(d * a for d, a in zip(g.dilations, tap, strict=True))
        flipped = tuple(kk - 1 - a for kk, a in zip(g.kernel, tap, strict=True))
        us = _window(u, start, g.spatial, ones)
        term = _channel_sum(us * _scale(k, flipped, g.ndim), axis=2, keep=False)
        dx = term if dx is None else dx + term  # (N, G, Cg, *L)
    assert dx is not None  # the kernel has at least one tap
    dx = x_from_cf(dx.reshape((g.n, g.c_in) + g.spatial).astype(plan.in_dtype), cfg)

    # dL/dW: one reduction of x_shift * dY per tap, over the batch and the output positions.
    dk = _weight_taps(xp, dy_g, g).reshape((g.c_out, g.c_in_g) + g.kernel)
    if cfg.flip:
        dk = lax.rev(dk, tuple(range(2, 2 + g.ndim)))
    dw = w_from_cf(dk.astype(plan.in_dtype), cfg)

    return dx, dw


_shift_conv.defvjp(_shift_conv_fwd, _shift_conv_bwd)


# ---------------------------------------------------------------------------------------
# The cost model's entry: ``3 * 2*N*O*Cg*P*K`` flops of fused multiply-adds, bytes of one
# pass over ``x``, ``y``, ``dY``, ``dX``; times ``1 + K/16`` (K-term sums and a K-output
# reduction spill registers and cache as K grows: 3x3 -> 7x7 depthwise measured 17x, not
# 5.4x). Beyond plain depthwise (``Cg*Og > 1``) XLA materialises the (N, G, Og, Cg, P) product
# of every tap in all three passes and runs several times slower per flop (measured 8x).

CALIBRATION: dict[str, dict[str, float]] = {
    "cpu": {"rate": 50e9, "bw": 20e9, "fixed": 100e-6, "grouped_factor": 8.0, "taps0": 16.0},
    "gpu": {"rate": 20e12, "bw": 2e12, "fixed": 200e-6, "grouped_factor": 8.0, "taps0": 16.0},
}


def _cost(g: Geometry, item: int, backend: str) -> Cost:
    c = CALIBRATION[backend]
    cg, og, k = g.c_in_g, g.c_out_g, g.taps
    p, s = math.prod(g.out), math.prod(g.spatial)
    flops = 3 * 2 * g.n * g.c_out * cg * p * k
    product = 3 * k * g.n * g.groups * og * cg * p if cg * og > 1 else 0
    bytes_ = item * (2 * g.n * g.c_in * s + 3 * g.n * g.c_out * p + product)
    seconds = flops / c["rate"] + bytes_ / c["bw"] + c["fixed"]
    if cg * og > 1:
        seconds *= c["grouped_factor"]
    seconds *= 1 + k / c["taps0"]
    return Cost(flops, bytes_, seconds, f"{k} shifted slices")


METHOD = Method(name="shift", supports=shift_unsupported_reason, cost=_cost, run=_run, exact=True)
