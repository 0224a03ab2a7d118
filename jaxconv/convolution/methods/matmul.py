"""``method="matmul"``: pointwise (1x1) convolutions as matrix products, in the caller's layout.

A kernel of one tap mixes channels at each output pixel and nothing else, so per group ``g``
(``Cg`` input, ``Og`` output channels), with ``Xs`` the zero-padded input subsampled by the
stride (``Xs[n,c,i] = Xp[n,c,S*i]``, ``Xp`` padded by ``P`` low) and ``i`` the output pixels::

    Forward:  Y[n,g,o,i]  = sum_c W[g,o,c] Xs[n,g,c,i]           (Y = W @ Xs, per group)
    dL/dW:    dW[g,o,c]   = sum_{n,i} dY[n,g,o,i] Xs[n,g,c,i]    (dW = dY @ Xs^T)
    dL/dXs:   dXs[n,g,c,i] = sum_o W[g,o,c] dY[n,g,o,i]          (dXs = W^T @ dY)
    dL/dX:    dXs zero-inserted by S back onto Xp's grid, the padding cropped  (the adjoint)

Every array contracts over its channel axis in place (``(N, C, *S)`` channels-first,
``(N, *S, C)`` channels-last), so no activation moves to the other layout: a network keeps
its layout from end to end. The only reshapes split the channel axis into groups, which
under an explicit mesh (``AxisType.Explicit``) keeps a batch- or spatially-sharded operand's
sharding inferable at every step. One exception, for speed: an unstrided channels-first
product in a one-device process moves the batch axis behind the channels, whole pixel rows
at a time, and multiplies ``(O, C) @ (C, N*P)`` (:func:`_merged`). Every step is a slice,
a pad, a reshape, a transpose or an ``einsum``, which JAX differentiates in both modes.
"""

from __future__ import annotations

import math
import string
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

from ..._dtypes import accumulation_dtype
from ..._shapes import channel_shape
from ..grads import weight_grad_sharding
from .direct import guarded_forward, guarded_grads
from .plan import Geometry, MethodPlan, plain_conv_reason
from .registry import Cost, Method

__all__ = ["CALIBRATION", "METHOD", "matmul_unsupported_reason"]


def matmul_unsupported_reason(g: Geometry) -> str | None:
    """Why ``method="matmul"`` refuses ``g`` (``None`` when it computes it)."""
    plain = plain_conv_reason(g)
    if plain is not None:
        return plain
    if g.taps != 1:
        return f"it handles pointwise convolutions (a kernel of one tap), got kernel {g.kernel}"
    return None


def _spatial_axes(plan: MethodPlan) -> tuple[int, ...]:
    nd = plan.geo.ndim
    return tuple(range(1, nd + 1)) if plan.cfg.channels_last else tuple(range(2, nd + 2))


def _subsample(x: jax.Array, plan: MethodPlan) -> jax.Array:
    """``Xs``: every S-th pixel of the zero-padded ``x``, as one ``lax.pad`` (a negative high
    pad crops what no output reads) and one strided slice."""
    g = plan.geo
    pads = [(0, 0, 0)] * x.ndim
    steps, limit = [1] * x.ndim, list(x.shape)
    for ax, size, (lo, _), s, o in zip(
        _spatial_axes(plan), g.spatial, g.padding, g.strides, g.out, strict=True
    ):
        pads[ax] = (lo, s * (o - 1) + 1 - size - lo, 0)  # exactly the cells outputs read
        steps[ax], limit[ax] = s, s * (o - 1) + 1
    if any(p != (0, 0, 0) for p in pads):
        x = lax.pad(x, np.array(0, x.dtype), pads)
    if any(s != 1 for s in steps):
        x = lax.slice(x, (0,) * x.ndim, tuple(limit), tuple(steps))
    return x


def _upsample(dxs: jax.Array, plan: MethodPlan) -> jax.Array:
    """Adjoint of :func:`_subsample`: zeros between the S-th pixels, the padding cropped
    (one ``lax.pad`` with interior zeros and negative edges)."""
    g = plan.geo
    pads = [(0, 0, 0)] * dxs.ndim
    for ax, size, (lo, _), s, o in zip(
        _spatial_axes(plan), g.spatial, g.padding, g.strides, g.out, strict=True
    ):
        pads[ax] = (-lo, size + lo - (s * (o - 1) + 1), s - 1)
    if all(p == (0, 0, 0) for p in pads):
        return dxs
    return lax.pad(dxs, np.array(0, dxs.dtype), pads)


def _specs(plan: MethodPlan, pixel_axes: int) -> tuple[str, str, str]:
    """Einsum specs (forward, dX, dW) over grouped views that split the channel axis:
    channels-first x (N, G, Cg, *S), y (N, G, Og, *S), w (G, Og, Cg); channels-last
    x (N, *S, G, Cg), y (N, *S, G, Og), w (G, Cg, Og); ``S`` the ``pixel_axes`` spatial axes,
    named after ``n`` and ``o`` in the alphabet: with ``...`` or letters before them XLA moves
    x's channel axis twice, once for the forward's product and once for dW's (measured: a
    whole channels-first pass 10-15% slower)."""
    p = ("pqrstuvwxyz" + string.ascii_uppercase)[:pixel_axes]
    if plan.cfg.channels_last:
        return f"gco,n{p}gc->n{p}go", f"gco,n{p}go->n{p}gc", f"n{p}go,n{p}gc->gco"
    return f"goc,ngc{p}->ngo{p}", f"goc,ngo{p}->ngc{p}", f"ngo{p},ngc{p}->goc"


def _grouped(a: jax.Array, plan: MethodPlan, per_group: int) -> jax.Array:
    """``a``'s channel axis split into ``(G, per_group)``, group-major. Only split: under an
    explicit mesh JAX infers a batch- or spatially-sharded operand's sharding through a
    reshape that splits one axis, not through one that also merges the pixels."""
    axis = a.ndim - 1 if plan.cfg.channels_last else 1
    return a.reshape((*a.shape[:axis], plan.geo.groups, per_group, *a.shape[axis + 1 :]))


def _kernel(w: jax.Array, plan: MethodPlan) -> jax.Array:
    """``W`` as the per-group matrices of :func:`_specs`."""
    g = plan.geo
    if plan.cfg.channels_last:  # w: (1, ..., 1, Cg, O) with O group-major
        return w.reshape((g.c_in_g, g.groups, g.c_out_g)).transpose(1, 0, 2)
    return w.reshape((g.groups, g.c_out_g, g.c_in_g))  # w: (O, Cg, 1, ..., 1)


def _product(
    spec: str, a: jax.Array, b: jax.Array, plan: MethodPlan, out: str, out_sharding: Any = None
) -> jax.Array:
    acc = accumulation_dtype(a.dtype)
    kwargs = {} if out_sharding is None else {"out_sharding": out_sharding}
    r = jnp.einsum(spec, a, b, precision=plan.cfg.precision, preferred_element_type=acc, **kwargs)
    return r.astype(out)


def _merged(plan: MethodPlan) -> bool:
    """Channels-first, unstrided, on one device: the products run over ``(G, C, N*P)`` views.

    XLA:CPU computes a channels-first product ``W @ x[n]`` as a transpose of ``x`` to
    channels-last (element by element) and one matrix product; moving the batch axis behind
    the channels instead moves whole ``P``-long pixel rows, and the product is one
    ``(O, C) @ (C, N*P)``: measured on the train steps, MobileNet-style 7-8% and
    ConvNeXt-style 1-2% faster, no more memory. A strided 1x1 (ResNet's shortcuts) measured
    4% slower so: its subsampled copy is a pass of its own there. The views merge the batch
    into the pixels, which an input split along a spatial axis cannot follow without
    gathering: with more than one device (where the sharding is not visible at trace time)
    the products stay in the caller's layout.
    """
    return (
        not plan.cfg.channels_last
        and all(s == 1 for s in plan.geo.strides)
        and jax.device_count() == 1
    )


def _to_merged(a: jax.Array, plan: MethodPlan, per_group: int) -> jax.Array:
    """``(N, C, *S)`` -> ``(G, C // G, N*P)`` (pixel rows moved whole)."""
    n = a.shape[0]
    a = a.reshape((n, plan.geo.groups, per_group, -1)).transpose(1, 2, 0, 3)
    return a.reshape((plan.geo.groups, per_group, -1))


def _from_merged(a: jax.Array, plan: MethodPlan, spatial: tuple[int, ...]) -> jax.Array:
    """Inverse of :func:`_to_merged`: ``(G, C // G, N*P)`` -> ``(N, C, *spatial)``."""
    g, n = plan.geo, plan.geo.n
    a = a.reshape((g.groups, a.shape[1], n, -1)).transpose(2, 0, 1, 3)
    return a.reshape((n, g.groups * a.shape[2], *spatial))


def _merged_product(spec: str, a: jax.Array, b: jax.Array, plan: MethodPlan, out) -> jax.Array:
    """A product over grouped ``(G, ., .)`` operands; one group as plain matrices (a
    batch axis of one would still be a batched product to XLA)."""
    if plan.geo.groups == 1:
        spec = spec.replace("g", "")
        return _product(spec, a[0], b[0], plan, out)[None]
    return _product(spec, a, b, plan, out)


def _forward(x, w, b, plan: MethodPlan) -> jax.Array:
    g, cl = plan.geo, plan.cfg.channels_last
    if _merged(plan):
        xm = _to_merged(_subsample(x, plan), plan, g.c_in_g)
        ym = _merged_product("goc,gcm->gom", _kernel(w, plan), xm, plan, plan.out_dtype)
        y = _from_merged(ym, plan, g.out)
    else:
        xm, wm = _grouped(_subsample(x, plan), plan, g.c_in_g), _kernel(w, plan)
        spec = _specs(plan, g.ndim)[0]
        y = _product(spec, wm, xm, plan, plan.out_dtype)
        y = y.reshape((g.n, *g.out, g.c_out) if cl else (g.n, g.c_out, *g.out))
    if b is not None:
        axis = y.ndim - 1 if cl else 1
        y = y + b.astype(y.dtype).reshape(channel_shape(y.ndim, axis, g.c_out))
    return y


def _padded(plan: MethodPlan) -> bool:
    return any(lo or hi for lo, hi in plan.geo.padding)


def _checked_forward(x, w, b, plan: MethodPlan) -> jax.Array:
    if not _padded(plan):  # every product is one of the window's own terms
        return _forward(x, w, b, plan)
    return guarded_forward(lambda x, w, b: _forward(x, w, b, plan), x, w, b, plan)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _matmul_conv(x: jax.Array, w: jax.Array, b: jax.Array | None, plan: MethodPlan):
    return _checked_forward(x, w, b, plan)


def _matmul_conv_fwd(x, w, b, plan):
    # Residuals: the kernel, and the input -- subsampled (what dW reads, 1/S^d of x) when
    # nothing is padded, else whole, for the direct rules behind the padding's NaN guard.
    xs = x if _padded(plan) else _subsample(x, plan)
    return _checked_forward(x, w, b, plan), (xs, w, b is not None)


def _matmul_conv_bwd(plan, res, dy):
    x, w, has_bias = res
    if _padded(plan):
        dx, dw = guarded_grads(lambda dy: _grads(plan, _subsample(x, plan), w, dy), x, w, dy, plan)
    else:
        dx, dw = _grads(plan, x, w, dy)
    db = None
    if has_bias:
        cl = plan.cfg.channels_last
        axes = tuple(d for d in range(dy.ndim) if d != (dy.ndim - 1 if cl else 1))
        db = jnp.sum(dy, axis=axes, dtype=accumulation_dtype(dy.dtype)).astype(plan.in_dtype)
    return dx, dw, db


def _grads(plan: MethodPlan, xs, w, dy):
    """dL/dX and dL/dW from the subsampled input (module doc)."""
    g = plan.geo
    if _merged(plan):
        xm, dym, wm = (
            _to_merged(xs, plan, g.c_in_g),
            _to_merged(dy, plan, g.c_out_g),
            _kernel(w, plan),
        )
        dxm = _merged_product("goc,gom->gcm", wm, dym, plan, plan.in_dtype)
        dwm = _merged_product("gom,gcm->goc", dym, xm, plan, plan.in_dtype)
        return _upsample(_from_merged(dxm, plan, g.out), plan), dwm.reshape(w.shape)
    xm, wm, dym = _grouped(xs, plan, g.c_in_g), _kernel(w, plan), _grouped(dy, plan, g.c_out_g)
    _, dx_spec, dw_spec = _specs(plan, g.ndim)
    dxm = _product(dx_spec, wm, dym, plan, plan.in_dtype)
    # dW sums over the batch and every pixel: under an explicit mesh that splits them, the
    # product needs its output sharding (the same as the direct rule's). The product's
    # (G, ., .) matrices have none of the kernel's axes, so it is replicated, and a kernel
    # sharded in its type gets its own sharding back after the reshape (jax 0.12 types
    # even a replicated kernel with a spec of the kernel's rank, which no product output
    # of another rank accepts).
    own = weight_grad_sharding(xs, dy, w)
    flat = None if own is None else NamedSharding(own.mesh, PartitionSpec())
    dwm = _product(dw_spec, dym, xm, plan, plan.in_dtype, flat)
    dw = dwm.transpose(1, 0, 2) if plan.cfg.channels_last else dwm  # (G, Cg, Og) / (G, Og, Cg)
    dw = dw.reshape(w.shape)
    if own is not None and any(p is not None for p in own.spec):
        dw = jax.sharding.reshard(dw, own)
    return _upsample(dxm.reshape(xs.shape), plan), dw


_matmul_conv.defvjp(_matmul_conv_fwd, _matmul_conv_bwd)


def _run(x: jax.Array, w: jax.Array, b: jax.Array | None, plan: MethodPlan) -> jax.Array:
    return _matmul_conv(x, w, b, plan)


# ---------------------------------------------------------------------------------------
# The cost model's entry: three products of ``2*N*O*Cg*P`` flops (forward, dX, dW) at the
# CPU's matrix-product rate, and one pass over x, y, dY, dX at the same memory bandwidth as
# the direct method's model (so the two compare like with like: measured, matmul wins every
# pointwise layer of the benchmark networks, by 1.3-2.5x).

CALIBRATION: dict[str, dict[str, float]] = {
    "cpu": {"rate": 60e9, "bw": 10e9, "fixed": 30e-6},
    "gpu": {"rate": 200e12, "bw": 2e12, "fixed": 250e-6},
}


def _cost(g: Geometry, item: int, backend: str) -> Cost:
    c = CALIBRATION[backend]
    p = math.prod(g.out)
    flops = 3 * 2 * g.n * g.c_out * g.c_in_g * p
    bytes_ = item * (2 * g.n * g.c_in * math.prod(g.spatial) + 2 * g.n * g.c_out * p)
    seconds = flops / c["rate"] + bytes_ / c["bw"] + c["fixed"]
    return Cost(flops, bytes_, seconds, "channel matrix products")


METHOD = Method(
    name="matmul",
    supports=matmul_unsupported_reason,
    cost=_cost,
    run=_run,
    exact=True,
    explicit_sharding=True,
)
