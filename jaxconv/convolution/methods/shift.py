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

The sums run in the caller's layout: channels-last arrays are sliced along the spatial axes
with the channels contiguous, so a channels-last network moves no activation to
channels-first and back (only the small kernel is transposed). Every step is a pad, a
slice, a product or a sum, which JAX differentiates in both modes. Half precision computes
in float32 and casts back.

The work is ``K * Cg`` products per output element and the traced program has ``O(K)``
operations, so the method is limited to ``C_in // groups <= MAX_GROUP_CHANNELS`` and
``K <= MAX_TAPS``; :func:`shift_unsupported_reason` says so for anything beyond.
"""

from __future__ import annotations

import dataclasses
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
    pad_spatial,
    plain_conv_reason,
    spatial_window,
    tap_window,
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
    """Everything static about one shifted-sum convolution: resolved once.

    The sums run in the caller's layout. A grouped array is ``(N, G, C, *S)`` channels-first
    and ``(N, *S, G, C)`` channels-last (a reshape of the caller's array, no transpose), and
    a tap's product spans the channel pairs ``(G, Og, Cg)`` where the channels are:
    ``(N, G, Og, Cg, *S)`` or ``(N, *S, G, Og, Cg)``.
    """

    @property
    def last(self) -> bool:
        return self.cfg.channels_last

    @property
    def axes(self) -> tuple[int, ...]:
        """Spatial axes of the grouped arrays."""
        nd = self.geo.ndim
        return tuple(range(1, 1 + nd)) if self.last else tuple(range(3, 3 + nd))

    def grouped(self, a: jax.Array, channels: int, spatial: tuple[int, ...]) -> jax.Array:
        """The caller's ``a`` with ``channels`` per group, as a grouped array."""
        g = self.geo
        if self.last:
            return a.reshape((g.n, *spatial, g.groups, channels))
        return a.reshape((g.n, g.groups, channels, *spatial))

    def ungrouped(self, a: jax.Array, channels: int, spatial: tuple[int, ...]) -> jax.Array:
        """Inverse of :meth:`grouped`: the caller's layout with ``channels`` in all."""
        n = self.geo.n
        return a.reshape((n, *spatial, channels) if self.last else (n, channels, *spatial))

    def spread_in(self, a: jax.Array) -> jax.Array:
        """A grouped input-side array ``(.., G, Cg)`` as a product's ``(.., G, 1, Cg)``."""
        return lax.expand_dims(a, (a.ndim - 1,) if self.last else (2,))

    def spread_out(self, a: jax.Array) -> jax.Array:
        """A grouped output-side array ``(.., G, Og)`` as a product's ``(.., G, Og, 1)``."""
        return lax.expand_dims(a, (a.ndim,) if self.last else (3,))

    def in_axis(self, ndim: int) -> int:
        """The ``Cg`` axis of a product of rank ``ndim``."""
        return ndim - 1 if self.last else 3

    def out_axis(self, ndim: int) -> int:
        """The ``Og`` axis of a product of rank ``ndim``."""
        return ndim - 2 if self.last else 2

    def tap(self, k: jax.Array, tap: tuple[int, ...]) -> jax.Array:
        """One tap of the ``(G, Og, Cg, *K)`` kernel, shaped to broadcast over a product."""
        t = k[(slice(None),) * 3 + tap]
        lead = (1,) * (1 + self.geo.ndim) if self.last else (1,)
        trail = () if self.last else (1,) * self.geo.ndim
        return t.reshape(lead + t.shape + trail)


def _run(x: jax.Array, w: jax.Array, b: jax.Array | None, plan: MethodPlan) -> jax.Array:
    """The convolution ``plan`` describes as a sum of shifted slices (see the module doc)."""
    return _shift_conv(x, w, b, ShiftPlan.of(plan))


def _channel_sum(terms: jax.Array, axis: int) -> jax.Array:
    """Sum a product's per-group channel axis (a squeeze when it has one entry)."""
    if terms.shape[axis] == 1:
        return lax.squeeze(terms, (axis,))
    return jnp.sum(terms, axis=axis)


def _kernel(w: jax.Array, plan: ShiftPlan) -> jax.Array:
    """``w`` as ``(G, Og, Cg, *K)`` in the compute dtype, flip applied (only the kernel, which
    is small, is ever transposed)."""
    g, nd = plan.geo, plan.geo.ndim
    k = w.astype(plan.compute)
    if plan.last:  # (*K, Cg, G*Og)
        k = k.reshape(g.kernel + (g.c_in_g, g.groups, g.c_out_g))
        k = lax.transpose(k, (nd + 1, nd + 2, nd, *range(nd)))
    else:  # (G*Og, Cg, *K)
        k = k.reshape((g.groups, g.c_out_g, g.c_in_g) + g.kernel)
    if plan.cfg.flip:
        k = lax.rev(k, tuple(range(3, 3 + nd)))
    return k


def _kernel_back(dk: jax.Array, plan: ShiftPlan) -> jax.Array:
    """Inverse of :func:`_kernel`: ``(G, Og, Cg, *K)`` -> the caller's kernel layout."""
    g, nd = plan.geo, plan.geo.ndim
    if plan.cfg.flip:
        dk = lax.rev(dk, tuple(range(3, 3 + nd)))
    if plan.last:
        dk = lax.transpose(dk, (*range(3, 3 + nd), 2, 0, 1))
        return dk.reshape(g.kernel + (g.c_in_g, g.c_out))
    return dk.reshape((g.c_out, g.c_in_g) + g.kernel)


def _input_windows(x_g: jax.Array, plan: ShiftPlan):
    """Per tap ``a``, ``xp[.., S*i + D*a, ..]`` for ``i < out`` (``xp``: ``x_g`` zero-padded).

    The padded copy is written once and every tap slices it. Padding each tap's window
    inside its consumer instead (a negative low pad crops, no copy) measured 1.2-3x slower
    forward+backward on the benchmark networks' depthwise layers, in both layouts: the
    fused bounds checks on every read cost more than one pass over the input.
    """
    g, axes = plan.geo, plan.axes
    xp = pad_spatial(x_g, axes, [(lo, hi, 0) for lo, hi in g.padding])
    for tap in g.tap_offsets:
        yield tap, tap_window(xp, axes, g, tap)


def _forward(x: jax.Array, w: jax.Array, b: jax.Array | None, plan: ShiftPlan) -> jax.Array:
    g = plan.geo
    x_g = plan.grouped(x.astype(plan.compute), g.c_in_g, g.spatial)
    k = _kernel(w, plan)
    y = None
    for tap, xs in _input_windows(x_g, plan):
        prod = plan.spread_in(xs) * plan.tap(k, tap)
        term = _channel_sum(prod, plan.in_axis(prod.ndim))
        y = term if y is None else y + term
    assert y is not None  # the kernel has at least one tap
    y = plan.ungrouped(y, g.c_out, g.out)
    if b is not None:
        bias = b.astype(plan.compute)
        shape = (1,) * (1 + g.ndim) + (-1,) if plan.last else (1, -1) + (1,) * g.ndim
        y = y + bias.reshape(shape)
    return y.astype(plan.out_dtype)


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


_PER_IMAGE_TAPS = 9  # channels-last dW: kernels up to 3x3 sum per image first (below)


def _weight_taps(x_g: jax.Array, dy_g: jax.Array, plan: ShiftPlan) -> jax.Array:
    """``(G, Og, Cg, K)``: per tap, ``sum_{n,i} xp[n,g,c,S*i + D*a] dy[n,g,o,i]``."""
    nd = plan.geo.ndim
    dy_b = plan.spread_out(dy_g)  # (.., G, Og, 1)
    terms = [plan.spread_in(xs) * dy_b for _, xs in _input_windows(x_g, plan)]
    axes = tuple(range(1 + nd)) if plan.last else (0, *range(4, 4 + nd))
    if jax.device_count() > 1:
        # A variadic reduction has no all-reduce form: XLA's SPMD partitioner gathers the
        # devices' partial sums instead. Plain sums of the stacked taps all-reduce.
        return jnp.sum(jnp.stack(terms, axis=-1), axis=axes)
    if plan.last and len(terms) <= _PER_IMAGE_TAPS:
        # Channels-last, XLA's CPU reduction over (N, *out) with C innermost is slow; each
        # image's output positions first, then the batch: dW of the 3x3 depthwise layers of
        # the benchmark networks 1.3-2.2x faster (MobileNet NHWC step -9%). With 49 taps
        # (ConvNeXt's 7x7) the K per-image partial sums cost more than they save (+15%).
        per_image = _sums(tuple(terms), tuple(range(1, 1 + nd)))
        return jnp.sum(jnp.stack(per_image, axis=-1), axis=0)
    return jnp.stack(_sums(tuple(terms), axes), axis=-1)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _shift_conv(x: jax.Array, w: jax.Array, b: jax.Array | None, plan: ShiftPlan) -> jax.Array:
    return guarded_forward(lambda x, w, b: _forward(x, w, b, plan), x, w, b, plan)


def _shift_conv_fwd(x, w, b, plan):
    # Residuals: the two operands (dX needs w, dW needs x); the padded copy is rebuilt.
    # ``y`` leaves the guard's conditional, so XLA stores it once: its consumers (a layer
    # norm's several fusions) read it instead of re-fusing the K taps (measured on ConvNeXt:
    # each 7x7 sum appears once per pass, forward, dX and dW).
    y = guarded_forward(lambda x, w, b: _forward(x, w, b, plan), x, w, b, plan)
    return y, (x, w, b is not None)


def _shift_conv_bwd(plan, res, dy):
    x, w, has_bias = res
    dx, dw = guarded_grads(lambda dy: _shift_grads(plan, x, w, dy), x, w, dy, plan)
    db = bias_grad(dy, plan.cfg, x.dtype) if has_bias else None
    return dx, dw, db


def _dy_windows(dy_g: jax.Array, plan: ShiftPlan):
    """Per tap ``a``, ``u[.., q + D*a, ..]`` for ``q < L`` as a product's ``(.., G, Og, 1)``,
    where ``u`` is ``dY`` zero-inserted by ``S`` and padded ``D(K-1) - P`` low and up to
    ``L + D(K-1)`` high (one padded copy, as in :func:`_input_windows`)."""
    g = plan.geo
    pads = []
    for size, span, s, o, (lo, _) in zip(
        g.spatial, g.spans, g.strides, g.out, g.padding, strict=True
    ):
        low = span - 1 - lo
        pads.append((low, size + span - 1 - low - (s * (o - 1) + 1), s - 1))
    # Channels-first, the new Og-side axis comes before the spatial ones and moves them.
    axes = plan.axes if plan.last else tuple(a + 1 for a in plan.axes)
    u = pad_spatial(plan.spread_out(dy_g), axes, pads)
    for tap in g.tap_offsets:
        start = tuple(d * a for d, a in zip(g.dilations, tap, strict=True))
        yield tap, spatial_window(u, axes, start, g.spatial, (1,) * g.ndim)


def _shift_grads(plan: ShiftPlan, x, w, dy):
    g = plan.geo
    x_g = plan.grouped(x.astype(plan.compute), g.c_in_g, g.spatial)
    dy_g = plan.grouped(dy.astype(plan.compute), g.c_out_g, g.out)
    k = _kernel(w, plan)

    # dL/dX: zero-insert dY by S, pad D(K-1) - P low, correlate with the flipped kernel.
    dx = None
    for tap, us in _dy_windows(dy_g, plan):
        flipped = tuple(kk - 1 - a for kk, a in zip(g.kernel, tap, strict=True))
        prod = us * plan.tap(k, flipped)
        term = _channel_sum(prod, plan.out_axis(prod.ndim))
        dx = term if dx is None else dx + term
    assert dx is not None  # the kernel has at least one tap
    dx = plan.ungrouped(dx, g.c_in, g.spatial).astype(plan.in_dtype)

    # dL/dW: one reduction of x_shift * dY per tap, over the batch and the output positions.
    dk = _weight_taps(x_g, dy_g, plan).reshape((g.groups, g.c_out_g, g.c_in_g) + g.kernel)
    dw = _kernel_back(dk, plan).astype(plan.in_dtype)
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
