"""The ways of computing a convolution, behind ``conv(..., method=...)``, and ``auto``.

Each method is one module with its own hand-derived VJP and one :class:`~.registry.Method`
entry (``supports``, ``cost``, ``run``), registered below:

- ``"direct"`` (:mod:`.direct`): one XLA convolution forward, two backward;
- ``"fft"`` (:mod:`.fft`): real FFTs over the spatial axes, gradients in the frequency domain;
- ``"shift"`` (:mod:`.shift`): depthwise and small grouped convolutions as sums of shifted,
  per-channel-scaled slices;
- ``"matmul"`` (:mod:`.matmul`): pointwise (1x1) convolutions as channel matrix products in
  the caller's layout;
- ``"im2col"`` (:mod:`.im2col`): any kernel as one channel matrix product per kernel tap
  (implicit im2col: the patch matrix is never built).

:func:`dispatch` builds the static :class:`~.plan.MethodPlan` once per call, resolves
``"auto"`` with the cost model of :mod:`.auto`, and runs the method. To add a method, write
its module (the three functions and the VJP) and add one :func:`register` line here; ``auto``,
``explain_method``, ``jaxconv verify`` and the method tests pick it up from the registry.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from ..._checks import check_choice
from .._config import ConvConfig
from . import direct, fft, im2col, matmul, shift
from .auto import EXPLICIT_SHARDING_REASON, choose_method
from .plan import Geometry, MethodPlan, geometry
from .registry import Method, get, names, register, unregister

__all__ = [
    "Method",
    "check_method",
    "dispatch",
    "names",
    "register",
    "resolve_method",
    "unregister",
]

register(direct.METHOD)
register(fft.METHOD)
register(shift.METHOD)
register(matmul.METHOD)
register(im2col.METHOD)


def check_method(method: object) -> str:
    """``method`` is ``"auto"`` or a registered name."""
    return check_choice(method, "method", ("auto", *names()))


def resolve_method(
    geo: Geometry, dtype: Any, cfg: ConvConfig, *, explicit_sharding: bool = False
) -> str:
    """The method that computes ``cfg`` on ``geo``: ``"auto"`` resolved by the cost model, an
    explicit request checked. ``explicit_sharding``: an input is split along an explicit mesh
    axis, where only the methods whose ``Method.explicit_sharding`` is set run.

    Raises:
      ValueError: an explicitly requested method that cannot compute this configuration, or
        cannot run on inputs sharded along an explicit mesh axis.
    """
    name = cfg.method
    if name == "auto":
        return choose_method(
            geo, dtype, exact_only=cfg.exact_only, explicit_sharding=explicit_sharding
        ).method
    if explicit_sharding and not get(name).explicit_sharding:
        able = [
            repr(m) for m in names() if get(m).explicit_sharding and get(m).supports(geo) is None
        ]
        raise ValueError(
            f"`method`={name!r} cannot run here: {EXPLICIT_SHARDING_REASON}; use "
            f"method={', '.join(able)} or 'auto', or reshard the input (jax.sharding.reshard) "
            "to replicated"
        )
    reason = get(name).supports(geo)
    if reason is not None:
        able = [repr(m) for m in names() if m != name and get(m).supports(geo) is None]
        raise ValueError(
            f"`method`={name!r} cannot compute this convolution: {reason}; use "
            f"method={', '.join(able)} or 'auto'"
        )
    return name


def dispatch(x: jax.Array, w: jax.Array, b: jax.Array | None, cfg: ConvConfig) -> jax.Array:
    """Run the convolution ``cfg`` describes with ``cfg.method`` (``"auto"`` resolved here,
    :func:`resolve_method`)."""
    geo = geometry(x.shape, w.shape, cfg)
    name = resolve_method(geo, x.dtype, cfg)
    if geo.empty:
        name = "direct"  # nothing to transform: the XLA path handles empty arrays
    cfg = dataclasses.replace(cfg, method=name)
    return get(name).run(x, w, b, MethodPlan.build(x, b, cfg, geo))
