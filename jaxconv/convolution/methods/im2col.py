"""``method="im2col"``: a convolution as matrix products with the patch matrix.

im2col writes every window of the input as a row of a patch matrix, so the convolution is
one matrix product with the kernel. The forward multiplies that matrix one column block at
a time and never builds it: tap ``a`` (a kernel offset) reads the input window ``Xa``, a
strided slice of the zero-padded input, and contributes one channel matrix product over the
outputs whose cell is in bounds. The backward builds it, one batch chunk at a time, and
takes one product per pass and chunk (:func:`_patch_grads`), or, where the patch matrix
would be large, one product per tap and pass (:func:`_tap_grads`). Per group (``Cg``
input, ``Og`` output channels), with ``Xp`` the padded input, stride ``S``, dilation ``D``
and ``i`` the output pixels (one spatial axis shown; the others are alike)::

    Xa[n,i,c]    = Xp[n, S*i + D*a, c]                               (the tap's window)
    Forward:  Y[n,i,o]   = sum_a sum_c Xa[n,i,c] W[a,c,o]           (Y = sum_a Xa @ W[a])
    dL/dW:    dW[a,c,o]  = sum_{n,i} Xa[n,i,c] dY[n,i,o]            (dW[a] = Xa^T @ dY)
    dL/dX:    dXp[n, S*i + D*a, c] += sum_o dY[n,i,o] W[a,c,o]      (the window's adjoint:
              dY @ W[a]^T placed back on the tap's cells, zeros between strided cells),
              then the padding cropped

The products contract the channel axis (dW: the pixels), which XLA:CPU's matrix kernels
want innermost, so the method computes channels-last: a channels-first array moves to
channels-last on the way in and back on the way out (the moves fuse into the slices and
the tap sums). The forward's K products are summed in one fused loop, stored once
(:func:`materialized`), so the next layer's consumers read one array rather than re-adding
K partial products each. The backward re-slices ``x`` after ``dY`` exists
(``materialized(after=dY)``): otherwise XLA merges the backward's K windows of ``x`` with
the forward's and keeps them all alive from the forward to the backward (measured: 3-5x a
network's activation memory). Every step is a pad, a slice, a transpose, a reshape or an
``einsum``, which JAX differentiates in both modes.

It pays for its speed in passes: each tap's window is a copy of the input and each tap's
product a copy of the output, so for few input channels (a 3-channel stem) the copies
outweigh XLA's convolution; the cost model charges them. The traced program has ``O(K)``
operations: at most :data:`MAX_TAPS` kernel taps.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..._dtypes import accumulation_dtype
from ..._materialize import materialized
from ..grads import bias_grad, weight_grad
from .plan import (
    Geometry,
    MethodPlan,
    all_finite,
    pad_spatial,
    plain_conv_reason,
    spatial_window,
    tap_window,
)
from .registry import Cost, Method

__all__ = [
    "BACKWARD_CHUNKS",
    "CALIBRATION",
    "PATCH_BYTES",
    "MAX_TAPS",
    "METHOD",
    "im2col_unsupported_reason",
]

MAX_TAPS = 125
BACKWARD_CHUNKS = 4  # the fewest batch chunks of the patch-matrix backward (two per core)
PATCH_BYTES = 2**22  # the largest patch matrix of one chunk it builds (4 MiB)
MAX_CHUNKS = 16  # beyond this many chunks, the backward takes one product per tap


def im2col_unsupported_reason(g: Geometry) -> str | None:
    """Why ``method="im2col"`` refuses ``g`` (``None`` when it computes it)."""
    plain = plain_conv_reason(g)
    if plain is not None:
        return plain
    if g.taps == 1:
        return "it leaves one-tap (pointwise) kernels to method='matmul' (one product, no moves)"
    if g.taps > MAX_TAPS:
        return f"it handles kernels of at most {MAX_TAPS} taps, got {g.taps} ({g.kernel})"
    return None


@dataclasses.dataclass(frozen=True)
class TapRange:
    """Where one kernel tap meets the input, per spatial axis: outputs ``i0 <= i < i1`` read
    input cells ``q0 + S*(i - i0)``, all in bounds (the others read padding)."""

    i0: tuple[int, ...]
    i1: tuple[int, ...]
    q0: tuple[int, ...]

    @property
    def empty(self) -> bool:
        return any(b <= a for a, b in zip(self.i0, self.i1, strict=True))


def tap_range(g: Geometry, tap: tuple[int, ...]) -> TapRange:
    """The :class:`TapRange` of ``tap``: output ``i`` reads ``q = S*i + D*a - P`` and keeps
    ``0 <= q < L``."""
    i0, i1, q0 = [], [], []
    for n, o, s, d, (lo, _), a in zip(
        g.spatial, g.out, g.strides, g.dilations, g.padding, tap, strict=True
    ):
        first = max(0, -((d * a - lo) // s))  # ceil((P - D*a) / S), at least 0
        last = min(o, (n - 1 + lo - d * a) // s + 1)  # one past floor((L-1+P-D*a) / S)
        i0.append(first)
        i1.append(max(first, last))
        q0.append(s * first + d * a - lo)
    return TapRange(tuple(i0), tuple(i1), tuple(q0))


@dataclasses.dataclass(frozen=True)
class Im2colPlan(MethodPlan):
    """Everything static about one tap-by-tap product: resolved once. Internally every array
    is channels-last, ``(N, *S, C)``, and the kernel is ``(K, G, Cg, Og)``."""

    @property
    def axes(self) -> tuple[int, ...]:
        """Spatial axes of a channels-last array."""
        return tuple(range(1, 1 + self.geo.ndim))

    @property
    def in_bounds_taps(self) -> list[tuple[int, TapRange]]:
        """``(t, range)`` of every tap that reads at least one input cell."""
        ranges = (tap_range(self.geo, tap) for tap in self.geo.tap_offsets)
        return [(t, r) for t, r in enumerate(ranges) if not r.empty]

    def to_last(self, a: jax.Array) -> jax.Array:
        """The caller's ``(N, C, *S)`` as ``(N, *S, C)`` (identity when already channels-last)."""
        if self.cfg.channels_last:
            return a
        return lax.transpose(a, (0, *range(2, a.ndim), 1))

    def from_last(self, a: jax.Array) -> jax.Array:
        """Inverse of :meth:`to_last`."""
        if self.cfg.channels_last:
            return a
        return lax.transpose(a, (0, a.ndim - 1, *range(1, a.ndim - 1)))

    def grouped(self, a: jax.Array) -> jax.Array:
        """A channels-last array with its channel axis split into ``(G, C // G)`` (kept whole
        for one group: a group axis is a batch axis of the product, which XLA moves to the
        front, copying both operands and the result)."""
        if self.geo.groups == 1:
            return a
        return a.reshape((*a.shape[:-1], self.geo.groups, a.shape[-1] // self.geo.groups))

    def ungrouped(self, a: jax.Array) -> jax.Array:
        """Inverse of :meth:`grouped`."""
        return a if self.geo.groups == 1 else a.reshape((*a.shape[:-2], -1))

    def spec(self, spec: str) -> str:
        """An einsum spec over grouped arrays, without its group letter for one group."""
        return spec.replace("g", "") if self.geo.groups == 1 else spec

    @property
    def backward_chunks(self) -> int:
        """Batch chunks of the patch-matrix backward (:func:`_patch_grads`), or 0 for the
        one-product-per-tap backward (:func:`_tap_grads`).

        At least :data:`BACKWARD_CHUNKS` (two products per core), more while one chunk's
        patch matrix exceeds :data:`PATCH_BYTES`. Per tap when a single image's patch matrix
        is larger than that (measured: a 3-D 3x3x3 layer on 4x16x16^3 ran 1.3x slower through
        7 MB patch matrices), when that takes more than :data:`MAX_CHUNKS` chunks, and in a
        process with more than one device: cutting the batch into slices makes XLA's SPMD
        partitioner gather a batch-sharded input whole (measured: an all-gather of ``x``),
        and an input's sharding is not visible at trace time (``Method.partitioned``).
        """
        g = self.geo
        if jax.device_count() > 1 or g.n == 0:
            return 0
        item = np.dtype(self.compute).itemsize
        image = item * math.prod(g.out) * g.taps * g.c_in  # one image's patch matrix
        if image > PATCH_BYTES:
            return 0
        chunks = min(g.n, max(BACKWARD_CHUNKS, -(-g.n * image // PATCH_BYTES)))
        return chunks if chunks <= MAX_CHUNKS else 0

    def tap(self, k: jax.Array, t: int) -> jax.Array:
        """Tap ``t``'s ``(G, Cg, Og)`` matrices (``(Cg, Og)`` for one group)."""
        return k[t, 0] if self.geo.groups == 1 else k[t]


def _kernel(w: jax.Array, plan: Im2colPlan) -> jax.Array:
    """The caller's kernel as per-tap matrices ``(K, G, Cg, Og)``, flip applied."""
    g, nd = plan.geo, plan.geo.ndim
    if plan.cfg.channels_last:  # (*K, Cg, G*Og)
        k = w.reshape((g.taps, g.c_in_g, g.groups, g.c_out_g)).transpose(0, 2, 1, 3)
    else:  # (G*Og, Cg, *K)
        k = w.reshape((g.groups, g.c_out_g, g.c_in_g, g.taps)).transpose(3, 0, 2, 1)
    if plan.cfg.flip:  # tap a of the flipped kernel is tap K-1-a of w
        k = lax.rev(k.reshape(g.kernel + k.shape[1:]), tuple(range(nd))).reshape(k.shape)
    return k


def _kernel_back(dk: jax.Array, plan: Im2colPlan) -> jax.Array:
    """Inverse of :func:`_kernel`: ``(K, G, Cg, Og)`` -> the caller's kernel layout."""
    g, nd = plan.geo, plan.geo.ndim
    if plan.cfg.flip:
        dk = lax.rev(dk.reshape(g.kernel + dk.shape[1:]), tuple(range(nd))).reshape(dk.shape)
    if plan.cfg.channels_last:
        return dk.transpose(0, 2, 1, 3).reshape(g.kernel + (g.c_in_g, g.c_out))
    return dk.transpose(1, 3, 2, 0).reshape((g.c_out, g.c_in_g) + g.kernel)


def _input_window(x_l: jax.Array, plan: Im2colPlan, r: TapRange) -> jax.Array:
    """The input cells tap ``r`` reads, ``(N, *(i1 - i0), C)``: a strided slice of ``x``."""
    counts = [b - a for a, b in zip(r.i0, r.i1, strict=True)]
    return spatial_window(x_l, plan.axes, r.q0, counts, plan.geo.strides)


def _on_outputs(part: jax.Array, plan: Im2colPlan, r: TapRange) -> jax.Array:
    """``part``, tap ``r``'s products for outputs ``i0 <= i < i1``, on the whole output grid
    (zeros where the tap reads padding)."""
    pads = [(a, o - b, 0) for a, b, o in zip(r.i0, r.i1, plan.geo.out, strict=True)]
    return pad_spatial(part, plan.axes, pads)


def _padded_input(x_l: jax.Array, plan: Im2colPlan) -> jax.Array:
    """``Xp``: the channels-last input zero-padded."""
    return pad_spatial(x_l, plan.axes, [(lo, hi, 0) for lo, hi in plan.geo.padding])


def _on_padded_input(part: jax.Array, plan: Im2colPlan, tap: tuple[int, ...]) -> jax.Array:
    """Adjoint of :func:`tap_window`: ``part`` on the cells of ``Xp`` it came from."""
    g = plan.geo
    pads = [
        (d * a, n + lo + hi - d * a - (s * (o - 1) + 1), s - 1)
        for n, (lo, hi), d, a, s, o in zip(
            g.spatial, g.padding, g.dilations, tap, g.strides, g.out, strict=True
        )
    ]
    return pad_spatial(part, plan.axes, pads)


def _on_input(parts: list[jax.Array], plan: Im2colPlan) -> jax.Array:
    """dX (channels-last) from each tap's grouped ``dY @ W[a]^T``, in tap order: every part
    on the cells of ``Xp`` it came from, added up, the padding cropped."""
    g = plan.geo
    placed = [
        _on_padded_input(plan.ungrouped(part), plan, tap)
        for part, tap in zip(parts, g.tap_offsets, strict=True)
    ]
    return pad_spatial(_sum(placed), plan.axes, [(-lo, -hi, 0) for lo, hi in g.padding])


def _product(spec: str, a: jax.Array, b: jax.Array, plan: Im2colPlan) -> jax.Array:
    acc = accumulation_dtype(a.dtype)
    return jnp.einsum(spec, a, b, precision=plan.cfg.precision, preferred_element_type=acc)


def _sum(terms: list[jax.Array]) -> jax.Array:
    """The tap terms added up, in tap order (one fused loop)."""
    return functools.reduce(operator.add, terms)


def _forward(x, w, b, plan: Im2colPlan) -> jax.Array:
    """Each tap over the outputs whose window cell is in bounds: no padding is multiplied
    (a non-finite kernel meets only real cells, as in the loop reference)."""
    g = plan.geo
    x_l, k = plan.to_last(x), _kernel(w, plan)
    spec = plan.spec("n...gc,gco->n...go")
    terms = [
        _on_outputs(
            plan.ungrouped(
                _product(spec, plan.grouped(_input_window(x_l, plan, r)), plan.tap(k, t), plan)
            ),
            plan,
            r,
        )
        for t, r in plan.in_bounds_taps
    ]
    if terms:
        y = _sum(terms)
    else:  # every window lies in the padding
        acc = accumulation_dtype(x.dtype) or np.result_type(x.dtype, w.dtype)
        y = jnp.zeros((g.n, *g.out, g.c_out), acc)
    if b is not None:
        y = y + b.astype(y.dtype).reshape((1,) * (y.ndim - 1) + (-1,))
    return plan.from_last(y.astype(plan.out_dtype))


def _run(x: jax.Array, w: jax.Array, b: jax.Array | None, plan: MethodPlan) -> jax.Array:
    return _im2col_conv(x, w, b, Im2colPlan.of(plan))


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _im2col_conv(x: jax.Array, w: jax.Array, b: jax.Array | None, plan: Im2colPlan):
    return materialized(_forward(x, w, b, plan))


def _im2col_conv_fwd(x, w, b, plan):
    # Residuals: the two operands (dX needs w, dW needs x); the windows are rebuilt.
    return materialized(_forward(x, w, b, plan)), (x, w, b is not None)


def _im2col_conv_bwd(plan, res, dy):
    x, w, has_bias = res
    x, chunks = materialized(x, after=dy), plan.backward_chunks
    dx, dw = _patch_grads(plan, x, w, dy, chunks) if chunks else _tap_grads(plan, x, w, dy)
    db = bias_grad(dy, plan.cfg, x.dtype) if has_bias else None
    return materialized(dx), dw, db


def _batch_chunks(a: jax.Array, parts: int) -> list[jax.Array]:
    """``a`` cut along its batch axis into ``parts`` near-equal parts (``1 <= parts <= N``:
    :attr:`Im2colPlan.backward_chunks`)."""
    n = a.shape[0]
    bounds = [n * i // parts for i in range(parts + 1)]
    return [a[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]


def _patches(xp: jax.Array, plan: Im2colPlan) -> jax.Array:
    """The patch matrix of a padded channels-last input: per image, one row per output
    pixel, its K tap windows side by side, ``(n, P, G, K*Cg)`` (``(n, P, K*C)`` for one
    group). The batch stays an axis of its own: merged with the pixels, a batch-sharded
    input would be gathered."""
    g = plan.geo
    windows = [plan.grouped(tap_window(xp, plan.axes, g, tap)) for tap in g.tap_offsets]
    cols = jnp.stack(windows, axis=-2)  # (n, *out, [G,] K, Cg)
    return cols.reshape((xp.shape[0], math.prod(g.out), *cols.shape[1 + g.ndim : -2], -1))


def _patch_grads(plan: Im2colPlan, x, w, dy, chunks: int):
    """dL/dW and dL/dX (module doc) with the patch matrix built, one batch chunk at a time.

    Per chunk, dW takes one product of ``dY`` with the chunk's patch matrix (``dW^T = dY^T @
    patches``: K*Cg columns at once) and dX one product of ``dY`` with the kernel's K taps
    side by side, whose column blocks go back onto their taps' cells. The chunks
    (:attr:`Im2colPlan.backward_chunks`) keep each product small enough that XLA:CPU, which
    runs every product on one core, runs two side by side, and the patch matrix of one chunk
    is the largest buffer. Measured against one product per tap and pass (2-core CPU,
    one-process round-robin): the ResNet-style step's five im2col layers fwd+bwd 1.06-1.28x
    faster alone, the step channels-last 1-7% faster with a lower peak (33.8 against 36.4 MB),
    channels-first within 2% either way; one chunk instead of four was 5-13% slower.
    These products read the whole of ``dY``, with no window of it copied. dX needs nothing
    more: what lands on the padding is cropped. The forward keeps one product per tap over
    in-bounds cells only: a patch matrix there would multiply the padding by the kernel, and
    a non-finite weight would reach border outputs that never read it.
    """
    g = plan.geo
    k = _kernel(w, plan).transpose(1, 0, 2, 3)  # (G, K, Cg, Og): the taps side by side
    k_cols = k.reshape((g.groups, g.taps * g.c_in_g, g.c_out_g))
    k_cols = k_cols[0] if g.groups == 1 else k_cols
    dw_spec, dx_spec = plan.spec("npgo,npgk->gok"), plan.spec("npgo,gko->npgk")
    dks, dxs = [], []
    for xc, dyc in zip(
        _batch_chunks(plan.to_last(x), chunks), _batch_chunks(plan.to_last(dy), chunks), strict=True
    ):
        nb = xc.shape[0]
        dy_g = plan.grouped(dyc)
        dy2 = dy_g.reshape((nb, math.prod(g.out), *dy_g.shape[1 + g.ndim :]))
        dks.append(_product(dw_spec, dy2, _patches(_padded_input(xc, plan), plan), plan))
        dcols = _product(dx_spec, dy2, k_cols, plan)
        dcols = dcols.reshape((nb, *g.out, *dcols.shape[2:-1], g.taps, g.c_in_g))
        dxs.append(_on_input([dcols[..., t, :] for t in range(g.taps)], plan))
    dk = _sum(dks).reshape((g.groups, g.c_out_g, g.taps, g.c_in_g)).transpose(2, 0, 3, 1)
    dw = _kernel_back(dk, plan).astype(plan.in_dtype)
    dx_l = dxs[0] if len(dxs) == 1 else jnp.concatenate(dxs, axis=0)
    dx = plan.from_last(dx_l.astype(plan.in_dtype))
    return dx, _finite_padding_dw(plan, dw, x, w, dy)


def _tap_grads(plan: Im2colPlan, x, w, dy):
    """dL/dX and dL/dW (module doc), one product per tap and pass, on the padded grid.

    These sums read the whole of ``dY`` per tap, with no window of it copied (measured: the
    per-tap windows of ``dY`` made the ResNet train step 15-20% slower). dX needs nothing
    more: what lands on the padding is cropped.
    """
    g = plan.geo
    xp = _padded_input(plan.to_last(x), plan)
    dy_g, k = plan.grouped(plan.to_last(dy)), _kernel(w, plan)
    taps = g.tap_offsets
    # dW[a]^T = dY^T @ Xa: the product contracts the batch and pixels, the major axes of
    # both operands, and XLA:CPU copies one operand transposed first; with dY that side,
    # the copy is one per layer and not one per tap.
    dw_spec, dx_spec = plan.spec("n...go,n...gc->goc"), plan.spec("n...go,gco->n...gc")
    windows = (plan.grouped(tap_window(xp, plan.axes, g, tap)) for tap in taps)
    dk = jnp.stack([_product(dw_spec, dy_g, xa, plan) for xa in windows])
    dk = dk.reshape((g.taps, g.groups, g.c_out_g, g.c_in_g))
    dw = _kernel_back(dk.transpose(0, 1, 3, 2), plan).astype(plan.in_dtype)
    dx_l = _on_input([_product(dx_spec, dy_g, plan.tap(k, t), plan) for t in range(g.taps)], plan)
    dx = plan.from_last(dx_l.astype(plan.in_dtype))
    return dx, _finite_padding_dw(plan, dw, x, w, dy)


def _finite_padding_dw(plan: Im2colPlan, dw, x, w, dy):
    """``dw``, or the direct rule's dW when ``dY`` is not finite and there is padding.

    Both backwards multiply the zero padding by ``dY``, which a non-finite ``dY`` makes NaN
    where XLA's convolution multiplies nothing: then the direct rule's dW is taken (a
    select after the fact, so the common case runs outside any conditional).
    """
    if not any(lo or hi for lo, hi in plan.geo.padding):
        return dw
    return lax.cond(
        all_finite(dy),
        lambda dw, x, dy: dw,
        lambda dw, x, dy: weight_grad(x, dy, w.shape, plan.cfg),
        dw,
        x,
        dy,
    )


_im2col_conv.defvjp(_im2col_conv_fwd, _im2col_conv_bwd)


# ---------------------------------------------------------------------------------------
# The cost model's entry: ``3 * 2*N*O*Cg*P*K`` flops of matrix products at an effective rate
# that falls with the contraction length ``Cg`` below ``c0`` (a 3-channel stem multiplies
# 3-long rows), plus, per tap and pass, one copy of the tap's input window and one of its
# output-sized product -- at cache speed while one such array fits in ``cache`` bytes, at
# memory speed beyond -- and a fixed cost per tap and pass. Fitted on convolutions timed
# forward + backward on the 2-core CPU: the benchmark networks' dense 3x3 layers (32-128
# channels, 16x16 to 4x4, batch 32, arrays of 0.25-1 MB) run 1.1-1.4x faster than XLA's
# convolution, their 3-channel stems 1.6-2.6x slower, their 2x2/2 downsampling layers
# within 5% either way, and a 64-channel 3x3 layer at 32x32 (4 MB arrays) 1.3x slower.
# A channels-first caller pays for the moves to channels-last and back (``bw_move``); the
# input's moves fuse into the strided windows, so they are charged per window cell read,
# not per input cell. ``bw_move`` is fitted on the ResNet-style train step channels-first,
# where timing layers alone misleads (alone, im2col beat XLA's convolution on every dense
# layer, 1.05-1.4x): in the step its strided layers are 5% faster through im2col and its
# 16x16 stride-1 layers 8% slower (measured with the same picks elsewhere, round-robin).
# On a GPU cuDNN's convolution is the dense kernel to beat and K launches per pass are not:
# the rate and the fixed cost per tap keep ``auto`` on ``direct`` there.

CALIBRATION: dict[str, dict[str, float]] = {
    "cpu": {
        "rate": 60e9,
        "c0": 32.0,
        "bw": 20e9,
        "cache": 2.0**21,
        "bw_mem": 6e9,
        "bw_move": 7e9,
        "fixed": 30e-6,
        "tap_fixed": 40e-6,
    },
    "gpu": {
        "rate": 30e12,
        "c0": 64.0,
        "bw": 2e12,
        "cache": 2.0**40,
        "bw_mem": 2e12,
        "bw_move": 1e12,
        "fixed": 250e-6,
        "tap_fixed": 60e-6,
    },
}


def _cost(g: Geometry, item: int, backend: str) -> Cost:
    c = CALIBRATION[backend]
    p, k = math.prod(g.out), g.taps
    flops = 3 * 2 * g.n * g.c_out * g.c_in_g * p * k
    rate = c["rate"] * min(1.0, g.c_in_g / c["c0"])
    tap_array = item * g.n * max(g.c_in, g.c_out) * p
    bw = c["bw"] if tap_array <= c["cache"] else c["bw_mem"]
    bytes_ = 3 * k * item * (g.n * g.c_in * p + g.n * g.c_out * p)
    seconds = flops / rate + bytes_ / bw + c["fixed"] + 3 * k * c["tap_fixed"]
    note = f"{k} channel matrix products"
    if not g.channels_last:  # x and dY move to channels-last, y and dX back
        read = math.prod(g.spatial) // math.prod(g.strides)  # input cells the windows read
        moved = 2 * item * (g.n * g.c_in * read + g.n * g.c_out * p)
        bytes_ += moved
        seconds += moved / c["bw_move"]
        note += ", channels-last inside"
    return Cost(flops, bytes_, seconds, note)


METHOD = Method(name="im2col", supports=im2col_unsupported_reason, cost=_cost, run=_run, exact=True)
