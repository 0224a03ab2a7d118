"""``method="auto"``: a FLOP-and-byte cost model that picks the method, and ``explain_method``.

Every registered method (:mod:`.registry`) estimates the forward+backward pass of one
convolution as ``seconds = flops / rate + bytes / bandwidth + fixed``, with constants of its
own: each method's module documents its terms and keeps its ``CALIBRATION`` -- ``"cpu"``
measured on the development machine's 2-core x86 CPU (``jaxconv bench --suite methods``),
``"gpu"`` on one H100, where at these sizes every method is bound by kernel launches and the
fixed costs decide. ``auto`` runs the cheapest method that supports the configuration.

In a process with more than one device, only the methods XLA partitions along a sharded
axis compete (``Method.partitioned``; not ``fft``: XLA gathers every FFT operand whole),
since an input's sharding is not visible at trace time.

Under an explicit mesh (``jax.sharding.AxisType.Explicit``), where an input's sharding is
part of its type and so visible at trace time, only the methods that run there compete
(``Method.explicit_sharding``): ``conv`` finds such an input and asks with
``explicit_sharding=True``.

With ``exact_only`` (what ``precision=HIGHEST`` asks for) only the exactly-summing methods
compete (``Method.exact``: every output a plain sum of products, as in ``lax``), so the error
of a transform -- bounded relative to the *largest* output, not to each output -- never
enters. The backend is read at trace time, from ``jax.default_backend()``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from ..._checks import check_float_dtype, check_shape
from .._config import conv_config
from . import registry
from .plan import Geometry, geometry
from .registry import MethodCost

__all__ = [
    "EXPLICIT_SHARDING_REASON",
    "MethodChoice",
    "MethodCost",
    "choose_method",
    "estimate",
    "explain_method",
]


@dataclasses.dataclass(frozen=True)
class MethodChoice:
    """What ``method="auto"`` picks for a convolution, and why.

    Attributes:
      method: the chosen method's name (``"direct"``, ``"fft"``, ``"shift"``, ...).
      estimates: one :class:`MethodCost` per registered method (``seconds=None``: it does not
        support this configuration, or ``exact_only`` ruled it out).
      reason: one human-readable sentence.
      backend: the calibration used (``"cpu"`` or ``"gpu"``).
    """

    method: str
    estimates: tuple[MethodCost, ...]
    reason: str
    backend: str

    @property
    def costs(self) -> dict[str, float | None]:
        """Estimated forward+backward seconds per method (``None``: not a candidate)."""
        return {e.method: e.seconds for e in self.estimates}

    def __str__(self) -> str:
        lines = [f"method='auto' picks {self.method!r} ({self.backend} cost model): {self.reason}"]
        lines += [f"  {e}" for e in self.estimates]
        return "\n".join(lines)


def _backend(backend: str | None) -> str:
    name = backend or jax.default_backend()
    return "gpu" if name in ("gpu", "cuda", "rocm") else "cpu"


EXPLICIT_SHARDING_REASON = (
    "an input is sharded along an explicit mesh axis (jax.sharding.AxisType.Explicit), where "
    "every step's output sharding must follow from its operands', and this method's do not"
)


def estimate(
    g: Geometry,
    dtype: Any = "float32",
    backend: str | None = None,
    *,
    exact_only: bool = False,
    devices: int | None = None,
    explicit_sharding: bool = False,
) -> tuple[MethodCost, ...]:
    """Every registered method's cost (module doc), forward+backward, in registry order.

    ``devices`` (default: ``jax.device_count()``) above 1 rules out the methods XLA does not
    partition (``Method.partitioned``); ``explicit_sharding`` (an input sharded along an
    explicit mesh axis) the methods that cannot run there (``Method.explicit_sharding``).
    """
    backend = _backend(backend)
    devices = jax.device_count() if devices is None else devices
    item = max(np.dtype(dtype).itemsize, 4)  # the methods compute in >= float32
    out = []
    for name in registry.names():
        method = registry.get(name)
        why = method.supports(g)
        if why is None and exact_only and not method.exact:
            why = (
                "precision=HIGHEST keeps auto to exactly-summing methods; this one's error "
                "is relative to the largest output"
            )
        if why is None and explicit_sharding and not method.explicit_sharding:
            why = EXPLICIT_SHARDING_REASON
        if why is None and devices > 1 and not method.partitioned:
            why = (
                f"{devices} devices: XLA does not partition this method along a sharded axis "
                "(it would gather whole operands onto every device, and auto cannot see "
                f"an input's sharding at trace time); method={name!r} still runs"
            )
        if why is not None:
            out.append(MethodCost(name, 0.0, 0.0, None, why))
            continue
        c = method.cost(g, item, backend)
        out.append(MethodCost(name, c.flops, c.bytes, c.seconds, c.note))
    return tuple(out)


def _seconds(e: MethodCost) -> float:
    return math.inf if e.seconds is None else e.seconds


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{1e3 * seconds:.2f} ms"


def choose_method(
    g: Geometry,
    dtype: Any = "float32",
    backend: str | None = None,
    *,
    exact_only: bool = False,
    devices: int | None = None,
    explicit_sharding: bool = False,
) -> MethodChoice:
    """Pick the candidate method with the least estimated time (static: runs at trace time)."""
    backend = _backend(backend)
    est = estimate(
        g,
        dtype,
        backend,
        exact_only=exact_only,
        devices=devices,
        explicit_sharding=explicit_sharding,
    )
    candidates = [e for e in est if e.seconds is not None]  # "direct" always is one
    best = min(candidates, key=_seconds)
    direct = next(e for e in est if e.method == "direct")
    others = [e for e in candidates if e.method != "direct"]
    if best.method == "direct" and not others:
        reason = "no other method supports this configuration"
    elif best.method == "direct":
        runner = min(others, key=_seconds)
        reason = (
            f"the XLA convolution is estimated fastest ({_ms(best.seconds)}; next "
            f"{runner.method!r} at {_ms(runner.seconds)})"
        )
    else:
        reason = (
            f"{best.method!r} ({best.note}) is estimated faster than the XLA convolution's "
            f"{direct.flops / 1e9:.3g} GFLOP ({_ms(best.seconds)} vs {_ms(direct.seconds)})"
        )
    if exact_only:
        reason += "; precision=HIGHEST: exactly-summing methods only"
    if explicit_sharding:
        reason += "; an input sharded along an explicit mesh axis: methods that run there only"
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
    precision: Any = None,
) -> MethodChoice:
    """Which method ``conv(..., method="auto")`` uses for these shapes, and why.

    Args:
      x_shape: input shape, ``(N, C_in, *spatial)`` (``(N, *spatial, C_in)`` if
        ``channels_last``).
      w_shape: kernel shape, ``(C_out, C_in // groups, *kernel)`` (``(*kernel, C_in // groups,
        C_out)`` if ``channels_last``).
      stride, padding, dilation, groups, channels_last, precision: as in :func:`jaxconv.conv`
        (``precision=HIGHEST`` keeps ``auto`` to exactly-summing methods).
      dtype: the arrays' dtype (the methods compute in at least float32).

    Returns:
      A :class:`MethodChoice`: ``.method``, the per-method ``.estimates`` (and ``.costs`` in
      seconds), a ``.reason``; ``print`` it for a table. Estimates use the cost model of the
      current default backend (CPU or GPU). ``"fft"``'s error is bounded relative to the
      largest output (``4 eps (log2 F + 1)``, ``F`` the FFT grid's cells), not to each output.

    Raises:
      ValueError, TypeError: the same messages :func:`jaxconv.conv` gives for these arguments.

    >>> print(explain_method((8, 64, 32, 32), (64, 1, 3, 3), padding=1, groups=64).method)
    shift
    """
    x_shape = check_shape(x_shape, "x_shape")
    w_shape = check_shape(w_shape, "w_shape")
    if len(w_shape) < 3 or len(x_shape) != len(w_shape):
        raise ValueError(
            "`x_shape` and `w_shape` must have the same length >= 3 (batch, channel and "
            f"spatial axes), got {x_shape} and {w_shape}"
        )
    dt = check_float_dtype(dtype, "dtype")
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
        precision=precision,
        x_name="x_shape",
        w_name="w_shape",
    )
    return choose_method(geometry(x_shape, w_shape, cfg), dt, exact_only=cfg.exact_only)
