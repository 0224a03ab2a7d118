"""``method="fft"``: convolution by real FFTs, with its VJP derived in the frequency domain.

Per spatial axis, with stride ``S``, dilation ``D``, low padding ``P``, ``Kd = D(K-1)+1`` and
an FFT length ``F`` (see :func:`fft_shape`), the input ``x`` is zero-extended to ``F`` cells and
the kernel is dilated, zero-extended and rotated left by ``P`` (``k[u] = Wd[(u + P) mod F]``),
so that the padding costs no copy of ``x`` and output ``i`` sits at cell ``S*i``::

    Forward:  C[n,o,j]  = sum_{c,u} x[n,c,(j+u) mod F] k[o,c,u]    (circular correlation)
              Y[n,o,i]  = C[n,o,S*i]                              (= the padded correlation:
                                                                   F is long enough that no
                                                                   window wraps onto data)
    Spectra:  C^[n,o,f] = sum_c X^[n,c,f] conj(K^[o,c,f])
    dL/dC:    dC        = dY zero-inserted by S onto the F grid    (adjoint of subsampling)
    dL/dX:    dX^[n,c,f] = sum_o dC^[n,o,f] K^[o,c,f]               (circular convolution),
              dx = irfft(dX^)[:L]                                 (adjoint of zero-extension)
    dL/dW:    dK^[o,c,f] = sum_n conj(dC^[n,o,f]) X^[n,c,f],        dW = the taps of
              irfft(dK^) rotated back right by P, every D-th cell  (adjoint of dilation)

The forward spectra ``X^`` and ``K^`` are the residuals, so the backward pays one forward FFT
(of ``dY``) and two inverse ones. The issue's phrasing -- "the upstream spectrum times the
conjugate kernel (input) spectrum" -- is this with the correlation's conjugate moved onto
the other factor: the same adjoint. Every step is an FFT, a contraction, a pad or a slice,
all of which JAX differentiates in both modes, so second derivatives compose.

Error: a float32 FFT convolution's error is a rounding of the whole spectrum, so it grows
with the FFT length rather than with the kernel; :func:`fft_error_bound` states the bound
the tests check. Half precision computes in float32 (``jnp.fft`` has no half types).

No overlap-add tiling: the FFT spans the whole padded input, which is what large-kernel
convolutions (where this method pays off) want; for small kernels on large inputs the cost
model keeps ``auto`` on ``"direct"``.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpy.typing import DTypeLike

from ..._dtypes import compute_dtype
from ..grads import bias_grad, input_grad, weight_grad
from .direct import conv_forward
from .plan import (
    Geometry,
    MethodPlan,
    finite_max_abs,
    plain_conv_reason,
    w_from_cf,
    w_to_cf,
    x_from_cf,
    x_to_cf,
)
from .registry import Cost, Method

__all__ = ["CALIBRATION", "METHOD", "fft_error_bound", "fft_shape", "next_fast_len"]


def next_fast_len(n: int) -> int:
    """Smallest ``m >= n`` whose prime factors are all in (2, 3, 5, 7) (fast for every FFT)."""
    m = max(int(n), 1)
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def fft_shape(g: Geometry) -> tuple[int, ...]:
    """FFT length per spatial axis: ``F >= L + max(P_lo, P_hi)`` (no window wraps onto data),
    ``F >= Kd`` (the dilated kernel fits) and ``F >= S(out-1)+1`` (outputs stay distinct)."""
    return tuple(
        next_fast_len(max(size + max(lo, hi), span, s * (o - 1) + 1))
        for size, (lo, hi), span, s, o in zip(
            g.spatial, g.padding, g.spans, g.strides, g.out, strict=True
        )
    )


def fft_error_bound(dtype: DTypeLike, fft_shape: tuple[int, ...]) -> float:
    """Bound on ``relative_error`` (max-abs error over max-abs value) of ``method="fft"``.

    An FFT of ``F`` cells rounds with a normwise relative error of about ``eps * log2(F)``
    (each of the ``log2(F)`` butterfly stages adds one rounding); the pointwise product,
    the channel sum and the inverse FFT each add as much again, and the inverse transform
    spreads the error evenly over the grid. So, relative to the largest output::

        error <= 4 * eps * (log2(prod F) + 1)      (+ eps of a half input type)

    with ``eps`` of the compute dtype (float32 for half inputs, whose final rounding adds
    their own ``eps``). The bound grows with the FFT grid, not with the kernel: measured on
    random data it holds with a margin of about 10 (float32: 1.3e-7 at F=16, 3e-7 at
    F=128x128, against bounds of 2.4e-6 and 7.1e-6); ``tests/test_methods.py`` checks it
    for values and both gradients from F=16 to F=16384.
    """
    cdt = compute_dtype(dtype)
    bound = 4 * float(np.finfo(cdt).eps) * (math.log2(max(math.prod(fft_shape), 1)) + 1)
    if np.dtype(dtype) != cdt:  # rounding the float32 result to the input's half type
        bound += 2.0**-7 if np.dtype(dtype).name == "bfloat16" else float(np.finfo(dtype).eps)
    return bound


@dataclasses.dataclass(frozen=True)
class FftPlan(MethodPlan):
    """Everything static about one FFT convolution: resolved once, in :func:`fft_conv`."""

    @property
    def fft(self) -> tuple[int, ...]:
        """The FFT grid (derived from the geometry, so not a field of its own)."""
        return fft_shape(self.geo)

    @property
    def axes(self) -> tuple[int, ...]:
        return tuple(range(2, 2 + self.geo.ndim))


def _run(x: jax.Array, w: jax.Array, b: jax.Array | None, plan: MethodPlan) -> jax.Array:
    """The convolution ``plan`` describes, computed with real FFTs (see the module doc)."""
    return _fft_conv(x, w, b, FftPlan.of(plan))


# --- the steps, each a pad, a slice, an FFT or a contraction --------------------------


def _rotate(a: jax.Array, shifts: tuple[int, ...], axes: tuple[int, ...]) -> jax.Array:
    """``out[u] = a[(u - shift) mod F]`` on each axis (``jnp.roll``), skipping zero shifts."""
    for ax, sh in zip(axes, shifts, strict=True):
        if sh % a.shape[ax]:
            a = jnp.roll(a, sh, axis=ax)
    return a


def _kernel_grid(w_cf: jax.Array, plan: FftPlan) -> jax.Array:
    """``(O, I, *K)`` -> ``(O, I, *F)``: flipped if asked, dilated, zero-extended, rotated."""
    g = plan.geo
    k = lax.rev(w_cf, plan.axes) if plan.cfg.flip else w_cf
    pads = [(0, 0, 0), (0, 0, 0)] + [
        (0, f - span, d - 1) for f, span, d in zip(plan.fft, g.spans, g.dilations, strict=True)
    ]
    k = lax.pad(k.astype(plan.compute), np.array(0, plan.compute), pads)
    return _rotate(k, tuple(-lo for lo, _ in g.padding), plan.axes)


def _kernel_from_grid(dk: jax.Array, plan: FftPlan) -> jax.Array:
    """Adjoint of :func:`_kernel_grid`: rotate back, keep every D-th of the first Kd cells."""
    g = plan.geo
    dk = _rotate(dk, tuple(lo for lo, _ in g.padding), plan.axes)
    limit = (dk.shape[0], dk.shape[1]) + g.spans
    dk = lax.slice(dk, (0,) * dk.ndim, limit, (1, 1) + g.dilations)
    return lax.rev(dk, plan.axes) if plan.cfg.flip else dk


def _spectrum(a: jax.Array, plan: FftPlan) -> jax.Array:
    """Real FFT over the spatial axes, zero-extending each to its FFT length."""
    return jnp.fft.rfftn(a, s=plan.fft, axes=plan.axes)


def _inverse(a: jax.Array, plan: FftPlan) -> jax.Array:
    return jnp.fft.irfftn(a, s=plan.fft, axes=plan.axes)


def _mix(a: jax.Array, b: jax.Array, spec: str, plan: FftPlan) -> jax.Array:
    """Per-frequency channel contraction in group blocks: ``spec`` over (block axes, freq).

    XLA's CPU batched complex dot, with thousands of frequencies as the batch and small
    channel blocks as the matrices, runs 2-4x slower than the same contraction written as a
    broadcast multiply and a sum (one fused loop, vectorised along the frequencies). The
    fused form loses once the blocks are large (the reduction then strides badly), so it is
    used for blocks up to 32x32 channels (and, for the weight gradient's sum over the batch,
    up to a batch of 32), where it measured faster on both the CPU and an H100.
    """
    g = plan.geo
    if spec == "ngc...,goc...->ngo..." and g.c_in_g * g.c_out_g <= _FUSED_BLOCK:
        return jnp.sum(a[:, :, None] * b[None], axis=3)
    if spec == "ngo...,goc...->ngc..." and g.c_in_g * g.c_out_g <= _FUSED_BLOCK:
        return jnp.sum(a[:, :, :, None] * b[None], axis=2)
    if spec == "ngo...,ngc...->goc..." and g.n <= _FUSED_BATCH:
        return jnp.sum(a[:, :, :, None] * b[:, :, None], axis=0)
    return jnp.einsum(spec, a, b, precision=lax.Precision.HIGHEST)


_FUSED_BLOCK = 32 * 32
_FUSED_BATCH = 32


def _grouped(a: jax.Array, groups: int) -> jax.Array:
    """``(A, G*B, *F)`` -> ``(A, G, B, *F)``."""
    return a.reshape(a.shape[:1] + (groups, a.shape[1] // groups) + a.shape[2:])


def _ungrouped(a: jax.Array) -> jax.Array:
    return a.reshape(a.shape[:1] + (a.shape[1] * a.shape[2],) + a.shape[3:])


def _magnitude(a: jax.Array, dtype: str) -> tuple[jax.Array, jax.Array]:
    """``(finite, scale)`` of ``a``: whether every entry is finite, and the power of two at or
    above ``max|a|`` (1 for an all-zero or non-finite ``a``); one pass over ``a``.

    Dividing by a power of two is exact, so transforming ``a / scale`` (entries at most 1)
    and multiplying the result back rounds exactly as the unscaled transform would -- except
    that sums of large entries can no longer overflow inside the FFT where the direct sum
    would not. The scale is a constant of the function (it cancels), hence no gradient.
    """
    finite, peak = finite_max_abs(a)
    m = peak.astype(dtype)
    _, exponent = jnp.frexp(m)
    scale = jnp.where(finite & (m > 0), jnp.ldexp(jnp.ones((), m.dtype), exponent), 1)
    return finite, scale


def _forward(x, w, b, plan: FftPlan, sx, sw):
    """The FFT forward of ``x / sx`` and ``w / sw``, rescaled; returns ``y`` and the spectra."""
    g, cfg = plan.geo, plan.cfg
    x_cf = x_to_cf(x, cfg).astype(plan.compute) / sx
    x_hat = _grouped(_spectrum(x_cf, plan), g.groups)  # (N, G, Cg, *Fr)
    k_hat = _spectrum(_kernel_grid(w_to_cf(w, cfg).astype(plan.compute) / sw, plan), plan)
    # k_hat: (O, Cg, *Fr) viewed as (G, Og, Cg, *Fr): output channels are group-major.
    k_hat = k_hat.reshape((g.groups, g.c_out_g, g.c_in_g) + k_hat.shape[2:])
    c_hat = _mix(x_hat, jnp.conj(k_hat), "ngc...,goc...->ngo...", plan)
    c = _inverse(_ungrouped(c_hat), plan)  # (N, O, *F)
    limit = c.shape[:2] + tuple(s * (o - 1) + 1 for s, o in zip(g.strides, g.out, strict=True))
    y = lax.slice(c, (0,) * c.ndim, limit, (1, 1) + g.strides) * sx * sw
    if b is not None:
        y = y + b.astype(plan.compute).reshape((1, -1) + (1,) * g.ndim)
    return x_from_cf(y.astype(plan.out_dtype), cfg), x_hat, k_hat


def _checked_forward(x, w, b, plan: FftPlan):
    """The FFT forward when ``x`` and ``w`` are finite; the direct one otherwise.

    An FFT spreads one NaN or inf over every output; the direct sum keeps it in the outputs
    whose window holds it. The branch is taken at run time (``lax.cond``: one reduction over
    ``x`` and ``w`` decides; under ``vmap`` both branches run and are selected per example),
    so a finite batch pays only for that reduction. Returns ``y``, the spectra (zeros after
    the direct branch) and the two scales.
    """
    x_ok, sx = _magnitude(x, plan.compute)
    w_ok, sw = _magnitude(w, plan.compute)

    def fft_branch(x, w, b):
        return _forward(x, w, b, plan, sx, sw)

    spectra = jax.eval_shape(fft_branch, x, w, b)[1:]

    def direct_branch(x, w, b):
        y = conv_forward(x, w, b, plan.cfg)
        return (y,) + tuple(jnp.zeros(s.shape, s.dtype) for s in spectra)

    y, x_hat, k_hat = lax.cond(x_ok & w_ok, fft_branch, direct_branch, x, w, b)
    return y, x_hat, k_hat, sx, sw, x_ok & w_ok


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _fft_conv(x: jax.Array, w: jax.Array, b: jax.Array | None, plan: FftPlan) -> jax.Array:
    return _checked_forward(x, w, b, plan)[0]


def _fft_conv_fwd(x, w, b, plan):
    y, x_hat, k_hat, sx, sw, finite = _checked_forward(x, w, b, plan)
    # Residuals: the two forward spectra, (N, G, Cg, *Fr) and (G, Og, Cg, *Fr), with their
    # scales: with them the backward transforms only dY forward and dX, dW back. ``x`` and
    # ``w`` are the caller's own buffers (no copy), for the direct rules when something is
    # not finite.
    return y, (x_hat, k_hat, sx, sw, finite, x, w, b is not None)


def _fft_grads(plan: FftPlan, x_hat, k_hat, sx, sw, dy, sdy):
    """dL/dX and dL/dW in the frequency domain (module doc), from the scaled spectra."""
    g, cfg = plan.geo, plan.cfg
    dy_cf = x_to_cf(dy, cfg).astype(plan.compute) / sdy
    # Adjoint of "keep every S-th cell of the F grid": zero-insert dY onto the grid.
    pads = [(0, 0, 0), (0, 0, 0)] + [
        (0, f - (s * (o - 1) + 1), s - 1)
        for f, s, o in zip(plan.fft, g.strides, g.out, strict=True)
    ]
    dc = lax.pad(dy_cf, np.array(0, plan.compute), pads)
    dc_hat = _grouped(_spectrum(dc, plan), g.groups)  # (N, G, Og, *Fr)
    dx_hat = _mix(dc_hat, k_hat, "ngo...,goc...->ngc...", plan)
    dx = _inverse(_ungrouped(dx_hat), plan)
    dx = lax.slice(dx, (0,) * dx.ndim, dx.shape[:2] + g.spatial) * sdy * sw  # undo zero-extension
    dk_hat = _mix(jnp.conj(dc_hat), x_hat, "ngo...,ngc...->goc...", plan)
    dk_hat = dk_hat.reshape((g.c_out, g.c_in_g) + dk_hat.shape[3:])
    dw = _kernel_from_grid(_inverse(dk_hat, plan), plan) * sdy * sx
    dx = x_from_cf(dx.astype(plan.in_dtype), cfg)
    dw = w_from_cf(dw.astype(plan.in_dtype), cfg)
    return dx, dw


def _fft_conv_bwd(plan, res, dy):
    x_hat, k_hat, sx, sw, finite, x, w, has_bias = res
    cfg = plan.cfg

    dy_ok, sdy = _magnitude(dy, plan.compute)

    def fft_branch(dy):
        return _fft_grads(plan, x_hat, k_hat, sx, sw, dy, sdy)

    def direct_branch(dy):  # a NaN/inf in x, w or dY stays where the direct rules put it
        return input_grad(dy, w, x.shape, cfg), weight_grad(x, dy, w.shape, cfg)

    dx, dw = lax.cond(finite & dy_ok, fft_branch, direct_branch, dy)
    db = bias_grad(dy, cfg, x.dtype) if has_bias else None
    return dx, dw, db


_fft_conv.defvjp(_fft_conv_fwd, _fft_conv_bwd)


# ---------------------------------------------------------------------------------------
# The cost model's entry: ``2 * (N*C + O*Cg + N*O)`` real FFTs of ``2.5 * F * log2(F)`` flops
# (x, W, Y forward; dY, dX, dW backward) plus three per-frequency contractions of
# ``8 * N*G*Og*Cg*Fr`` flops, each at its own rate; bytes: the complex spectra.

CALIBRATION: dict[str, dict[str, float]] = {
    "cpu": {"rate": 8e9, "mix_rate": 4e9, "bw": 10e9, "fixed": 400e-6},  # ducc FFTs
    "gpu": {"rate": 10e12, "mix_rate": 30e12, "bw": 2e12, "fixed": 450e-6},  # cuFFT, H100
}


def fft_grid_cells(g: Geometry) -> tuple[int, int]:
    """Cells of the FFT grid and of its real (half) spectrum."""
    f = fft_shape(g)
    full = math.prod(f)
    return full, full // f[-1] * (f[-1] // 2 + 1)


def _cost(g: Geometry, item: int, backend: str) -> Cost:
    c = CALIBRATION[backend]
    full, half = fft_grid_cells(g)
    transforms = 2 * (g.n * g.c_in + g.c_out * g.c_in_g + g.n * g.c_out)
    fft_flops = transforms * 2.5 * full * math.log2(max(full, 2))
    mix_flops = 3 * 8 * g.n * g.groups * g.c_out_g * g.c_in_g * half
    spectra = 3 * (g.n * g.c_in + g.c_out * g.c_in_g + g.n * g.c_out)
    bytes_ = 2 * item * half * spectra + item * full * transforms
    seconds = fft_flops / c["rate"] + mix_flops / c["mix_rate"] + bytes_ / c["bw"] + c["fixed"]
    return Cost(fft_flops + mix_flops, bytes_, seconds, f"FFT grid {full} cells")


# XLA's SPMD partitioner replicates every FFT operand, even one sharded only along an axis
# the transform does not touch (openxla/xla#24), and an FFT of an H-sharded array has
# crashed XLA's CPU runtime: not partitioned.
METHOD = Method(
    name="fft",
    supports=plain_conv_reason,
    cost=_cost,
    run=_run,
    exact=False,
    partitioned=False,
)
