"""``method="auto"``: a FLOP-and-byte cost model that picks the method, and ``explain_method``.

For the forward+backward pass of one convolution (``N`` batch, ``C`` input and ``O`` output
channels, ``G`` groups, ``Cg = C/G``, ``Og = O/G``, ``P`` output positions, ``S`` input
positions, ``K`` kernel taps, ``F`` cells of the FFT grid, ``Fr ~ F/2`` of its real spectrum)
each method is charged ``seconds = flops / rate + bytes / bandwidth + fixed``:

- ``direct``: ``flops = 3 * 2*N*O*Cg*P*K`` (forward, dL/dX, dL/dW: three convolutions of
  the same size) at the XLA convolution's ``rate``, which collapses for small ``Cg * Og``
  (``rate = dense * min(1, Cg*Og / c0)``, floored at the depthwise rate) and for 3-D on CPU;
  grouped, not depthwise, convolutions also pay ``5.6 us * G * N * P`` on CPU (XLA runs
  each group separately); bytes: ``x``, ``y`` and ``W`` three times;
- ``fft``: ``2 * (N*C + O*Cg + N*O)`` real FFTs of ``2.5 * F * log2(F)`` flops (x, W, Y
  forward; dY, dX, dW backward) plus three per-frequency contractions of
  ``8 * N*G*Og*Cg*Fr`` flops, each at its own rate; bytes: the complex spectra;
- ``shift``: ``3 * 2*N*O*Cg*P*K`` flops of fused multiply-adds, bytes of one pass over ``x``,
  ``y``, ``dY``, ``dX``; times ``1 + K/16`` (long sums spill), and beyond plain depthwise
  (``Cg*Og > 1``) plus the materialised per-tap products and times 8.

The constants in :data:`CALIBRATION` were measured with ``benchmarks/bench_methods.py``:
``"cpu"`` on the development machine's 2-core x86 CPU (XLA's grouped convolution at
~0.4 GFLOP/s, 3-D convolutions at a tenth of the 2-D rate, FFTs at a few GFLOP/s), ``"gpu"``
on one H100. What changes on a GPU: at these sizes every method is bound by kernel
launches, so the fixed costs decide; cuDNN runs grouped convolutions near its dense rate
(the shifted sum still wins on depthwise, narrowly); the FFT wins only once the direct
FLOPs outweigh its ~0.5 ms of launches (the 31x31 and 13x13 cases, by 1.3-1.9x, not 8x).
The backend is read at trace time, from ``jax.default_backend()``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from .._config import conv_config
from . import Geometry, geometry, unsupported_reason

__all__ = [
    "CALIBRATION",
    "MethodChoice",
    "MethodCost",
    "choose_method",
    "estimate",
    "explain_method",
]

METHODS = ("direct", "fft", "shift")

# Rates in flop/s, bandwidth in byte/s, fixed costs in seconds.
CALIBRATION: dict[str, dict[str, float]] = {
    "cpu": {
        "direct_rate": 40e9,  # dense XLA convolution, 1-D and 2-D
        "direct_c0": 256.0,  # Cg*Og at which the grouped rate reaches the dense rate
        "direct_min_rate": 0.5e9,  # depthwise: XLA CPU's grouped convolution
        "direct_rank3": 0.1,  # 3-D convolutions run at a tenth of the 2-D rate
        "direct_bw": 1e9,
        "direct_fixed": 50e-6,
        "direct_group_cost": 5.6e-6,  # per group and output position, non-depthwise groups
        "fft_rate": 8e9,  # real FFTs (ducc)
        "mix_rate": 4e9,  # per-frequency complex contractions (small batched matmuls)
        "fft_bw": 10e9,
        "fft_fixed": 400e-6,
        "shift_rate": 50e9,  # fused multiply-adds of slices
        "shift_bw": 20e9,
        "shift_fixed": 100e-6,
        "shift_grouped_factor": 8.0,
        "shift_taps0": 16.0,
    },
    "gpu": {
        # Measured on one H100 (jax 0.11, cuDNN): at the benchmark's sizes every method is
        # bound by kernel launches, so the fixed costs decide; cuDNN runs grouped
        # convolutions near its dense rate, and the shifted sum wins only on depthwise.
        "direct_rate": 60e12,
        "direct_c0": 16.0,
        "direct_min_rate": 1e12,
        "direct_rank3": 0.5,
        "direct_bw": 1e12,
        "direct_fixed": 300e-6,
        "direct_group_cost": 0.0,
        "fft_rate": 10e12,
        "mix_rate": 30e12,
        "fft_bw": 2e12,
        "fft_fixed": 450e-6,
        "shift_rate": 20e12,
        "shift_bw": 2e12,
        "shift_fixed": 200e-6,
        "shift_grouped_factor": 8.0,
        "shift_taps0": 16.0,
    },
}


@dataclasses.dataclass(frozen=True)
class MethodCost:
    """The cost model's estimate for one method on one convolution (forward+backward)."""

    method: str
    flops: float
    bytes: float
    seconds: float | None  # None: the method does not support the configuration
    note: str = ""  # why it is unsupported, or what dominates

    def __str__(self) -> str:
        if self.seconds is None:
            return f"{self.method:>6}: unsupported ({self.note})"
        return (
            f"{self.method:>6}: {1e3 * self.seconds:9.3f} ms  ({self.flops / 1e9:.3g} GFLOP, "
            f"{self.bytes / 1e6:.3g} MB)"
        )


@dataclasses.dataclass(frozen=True)
class MethodChoice:
    """What ``method="auto"`` picks for a convolution, and why.

    Attributes:
      method: the chosen method, ``"direct"``, ``"fft"`` or ``"shift"``.
      estimates: one :class:`MethodCost` per method (unsupported ones have ``seconds=None``).
      reason: one human-readable sentence.
      backend: the calibration used (``"cpu"`` or ``"gpu"``).
    """

    method: str
    estimates: tuple[MethodCost, ...]
    reason: str
    backend: str

    @property
    def costs(self) -> dict[str, float | None]:
        """Estimated forward+backward seconds per method (``None``: unsupported)."""
        return {e.method: e.seconds for e in self.estimates}

    def __str__(self) -> str:
        lines = [f"method='auto' picks {self.method!r} ({self.backend} cost model): {self.reason}"]
        lines += [f"  {e}" for e in self.estimates]
        return "\n".join(lines)


def _fft_grid(g: Geometry) -> tuple[int, int]:
    from .fft import fft_shape

    f = fft_shape(g)
    full = math.prod(f)
    return full, full // f[-1] * (f[-1] // 2 + 1)


def estimate(
    g: Geometry, dtype: Any = "float32", backend: str | None = None
) -> tuple[MethodCost, ...]:
    """The cost model (module doc) for every method, forward+backward."""
    backend = _backend(backend)
    c = CALIBRATION[backend]
    item = max(np.dtype(dtype).itemsize, 4)  # the fast methods compute in >= float32
    n, cin, cout, cg, og = g.n, g.c_in, g.c_out, g.c_in_g, g.c_out_g
    p, s, k = math.prod(g.out), math.prod(g.spatial), g.taps
    macs = n * cout * cg * p * k
    out = []

    # direct: three convolutions; the XLA rate falls with the work per group, and XLA's CPU
    # backend pays a fixed cost per group and output position for grouped convolutions
    # that are not plain depthwise (measured: 5.6 us * G * N * P, G = 8 .. 64).
    rate = max(c["direct_rate"] * min(1.0, cg * og / c["direct_c0"]), c["direct_min_rate"])
    if g.ndim >= 3:
        rate *= c["direct_rank3"]
    flops = 3 * 2 * macs
    bytes_ = 3 * item * (n * cin * s + n * cout * p + cout * cg * k)
    seconds = flops / rate + bytes_ / c["direct_bw"] + c["direct_fixed"]
    if g.groups > 1 and cg * og > 1:
        seconds += c["direct_group_cost"] * g.groups * n * p
    out.append(
        MethodCost(
            "direct",
            flops,
            bytes_,
            seconds,
            "XLA convolution"
            + (
                ""
                if rate >= c["direct_rate"]
                else f" at a grouped rate of {rate / 1e9:.2g} GFLOP/s"
            ),
        )
    )

    # fft: six batches of real FFTs and three per-frequency contractions.
    fft_why = unsupported_reason("fft", g)
    full, half = _fft_grid(g)
    transforms = 2 * (n * cin + cout * cg + n * cout)
    fft_flops = transforms * 2.5 * full * math.log2(max(full, 2))
    mix_flops = 3 * 8 * n * g.groups * og * cg * half
    cbytes = 2 * item
    fbytes = cbytes * half * (3 * (n * cin + cout * cg + n * cout)) + item * full * transforms
    seconds = (
        fft_flops / c["fft_rate"]
        + mix_flops / c["mix_rate"]
        + fbytes / c["fft_bw"]
        + c["fft_fixed"]
    )
    out.append(
        MethodCost(
            "fft",
            fft_flops + mix_flops,
            fbytes,
            None if fft_why else seconds,
            fft_why or f"FFT grid {full} cells",
        )
    )

    # shift: fused elementwise products of K slices; one K-output reduction for dW. Beyond
    # plain depthwise (Cg = Og = 1) XLA materialises the (N, G, Og, Cg, P) product of every
    # tap in all three passes and runs several times slower per flop (measured 8x and more).
    why = unsupported_reason("shift", g)
    flops = 3 * 2 * macs
    product = 3 * k * n * g.groups * og * cg * p if cg * og > 1 else 0
    bytes_ = item * (2 * n * cin * s + 3 * n * cout * p + product)
    seconds = flops / c["shift_rate"] + bytes_ / c["shift_bw"] + c["shift_fixed"]
    if cg * og > 1:
        seconds *= c["shift_grouped_factor"]
    # K-term sums and a K-output reduction spill registers and cache as K grows (measured:
    # 3x3 -> 7x7 depthwise costs 17x, not 5.4x).
    seconds *= 1 + k / c["shift_taps0"]
    seconds = None if why else seconds
    out.append(MethodCost("shift", flops, bytes_, seconds, why or f"{k} shifted slices"))
    return tuple(out)


def _seconds(e: MethodCost) -> float:
    return math.inf if e.seconds is None else e.seconds


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{1e3 * seconds:.2f} ms"


def _backend(backend: str | None) -> str:
    name = backend or jax.default_backend()
    return "gpu" if name in ("gpu", "cuda", "rocm") else "cpu"


def choose_method(g: Geometry, dtype: Any = "float32", backend: str | None = None) -> MethodChoice:
    """Pick the supported method with the least estimated time (static: runs at trace time)."""
    backend = _backend(backend)
    est = estimate(g, dtype, backend)
    supported = [e for e in est if e.seconds is not None]
    best = min(supported, key=_seconds)
    direct = next(e for e in est if e.method == "direct")
    others = [e for e in supported if e.method != "direct"]
    if best.method == "direct" and not others:
        reason = "no other method supports this configuration"
    elif best.method == "direct":
        runner = min(others, key=_seconds)
        reason = (
            f"the XLA convolution is estimated fastest ({_ms(best.seconds)}; next "
            f"{runner.method!r} at {_ms(runner.seconds)})"
        )
    elif best.method == "fft":
        reason = (
            f"a {g.taps}-tap kernel makes the direct convolution's "
            f"{direct.flops / 1e9:.3g} GFLOP cost more than FFTs over a "
            f"{_fft_grid(g)[0]}-cell grid ({_ms(best.seconds)} vs {_ms(direct.seconds)})"
        )
    else:
        reason = (
            f"{g.c_in_g} input channel(s) per group: {g.taps} shifted, per-channel-scaled "
            f"slices (elementwise work, no convolution) beat the grouped XLA convolution "
            f"({_ms(best.seconds)} vs {_ms(direct.seconds)})"
        )
    return MethodChoice(best.method, est, reason, backend)


def explain_method(
    x_shape: Any,
    w_shape: Any,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: Any = 1,
    *,
    channels_last: bool = False,
    dtype: Any = "float32",
) -> MethodChoice:
    """Which method ``conv(..., method="auto")`` uses for these shapes, and why.

    Args:
      x_shape: input shape, ``(N, C_in, *spatial)`` (``(N, *spatial, C_in)`` if
        ``channels_last``).
      w_shape: kernel shape, ``(C_out, C_in // groups, *kernel)`` (``(*kernel, C_in // groups,
        C_out)`` if ``channels_last``).
      stride, padding, dilation, groups, channels_last: as in :func:`jaxconv.conv`.
      dtype: the arrays' dtype (the fast methods compute in at least float32).

    Returns:
      A :class:`MethodChoice`: ``.method``, the per-method ``.estimates`` (and ``.costs`` in
      seconds), a ``.reason``; ``print`` it for a table. Estimates use the cost model of the
      current default backend (CPU or GPU).

    Raises:
      ValueError, TypeError: the same messages :func:`jaxconv.conv` gives for these arguments.

    >>> print(explain_method((8, 64, 32, 32), (64, 1, 3, 3), padding=1, groups=64).method)
    shift
    """
    x_shape = tuple(int(d) for d in x_shape)
    w_shape = tuple(int(d) for d in w_shape)
    if len(w_shape) < 3 or len(x_shape) != len(w_shape):
        raise ValueError(
            "`x_shape` and `w_shape` must have the same length >= 3 (batch, channel and "
            f"spatial axes), got {x_shape} and {w_shape}"
        )
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"`dtype` must be a floating dtype, got {dtype!r}") from e
    if not (np.issubdtype(dt, np.floating) or dt.name == "bfloat16"):
        raise TypeError(f"`dtype` must be a floating dtype, got {dt.name}")
    cfg, _ = conv_config(
        x_shape,
        w_shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        flip=False,
        channels_last=channels_last,
        method="auto",
    )
    return choose_method(geometry(x_shape, w_shape, cfg), dt)
