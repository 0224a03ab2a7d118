"""Pooling arguments -> frozen, hashable geometries and configs, validated before tracing.

Each public pool calls one builder here; the result is the only thing its ``custom_vjp``
receives as static configuration. Messages name the arguments as the caller spelled them (a
pool without a ``dilation`` argument never hears about dilation) and end with the value
received.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from .._checks import (
    check_at_most,
    check_bool,
    check_float_array,
    check_int,
    check_int_array,
    check_ndim,
    check_static,
    normalize_tuple,
)
from ._geometry import (
    AdaptiveGeometry,
    PoolGeometry,
    first_valid_offsets,
    pool_output_size,
    spatial_axes,
)

__all__ = [
    "AvgPoolConfig",
    "LpPoolConfig",
    "UnpoolConfig",
    "adaptive_geometry",
    "avg_pool_config",
    "lp_pool_config",
    "pool_geometry",
    "static_bool",
    "unpool_config",
]

_LAYOUT = {False: "(N, C, *spatial)", True: "(N, *spatial, C)"}


def static_bool(value: Any, name: str) -> bool:
    """A static flag: a Python or NumPy bool, never a traced one."""
    return check_bool(check_static(value, name, "a Python bool"), name)


@dataclass(frozen=True)
class AvgPoolConfig:
    """Static configuration of ``avg_pool``: geometry and PyTorch's divisor options."""

    geom: PoolGeometry
    count_include_pad: bool
    divisor_override: int | None


@dataclass(frozen=True)
class LpPoolConfig:
    """Static configuration of ``lp_pool``: geometry (no padding) and the norm's ``p``."""

    geom: PoolGeometry
    p: float


@dataclass(frozen=True)
class UnpoolConfig:
    """Static configuration of ``max_unpool``: pooled and output spatial sizes, layout."""

    in_size: tuple[int, ...]
    out_size: tuple[int, ...]
    channels_last: bool


def _spatial_rank(x: Any, name: str, spec: Any, spec_name: str, channels_last: bool) -> int:
    """Spatial rank from ``spec`` (a sequence: its length) or from ``x.ndim - 2``."""
    layout = _LAYOUT[channels_last]
    if isinstance(spec, Sequence) and not isinstance(spec, str | bytes):
        rank = len(spec)
        if not 1 <= rank <= 3:
            raise ValueError(
                f"`{spec_name}` must have 1, 2 or 3 entries (one per spatial dimension), "
                f"got {spec!r}"
            )
        if np.ndim(x) != rank + 2:
            raise ValueError(
                f"`{name}` must be {layout} with ndim {rank + 2} to match `{spec_name}` "
                f"({rank} spatial dims), got shape {tuple(np.shape(x))}"
            )
        return rank
    check_ndim(x, name, (3, 4, 5), layout)
    return np.ndim(x) - 2


def _spatial_size(x: Any, rank: int, channels_last: bool) -> tuple[int, ...]:
    shape = tuple(np.shape(x))
    return tuple(shape[a] for a in spatial_axes(rank, channels_last))


def pool_geometry(
    x: Any,
    window: Any,
    stride: Any,
    padding: Any = 0,
    dilation: Any = 1,
    *,
    ceil_mode: Any,
    channels_last: Any,
    arguments: Sequence[str] = ("window", "stride", "padding", "dilation"),
) -> PoolGeometry:
    """Validate a windowed pool's arguments and resolve them into a ``PoolGeometry``.

    ``arguments`` lists the window arguments the calling op actually has (``avg_pool`` has
    no ``dilation``, ``lp_pool`` no ``padding`` either); only those appear in messages,
    with the values the caller passed.
    """
    received = {
        name: check_static(value, name)
        for name, value in zip(
            ("window", "stride", "padding", "dilation"),
            (window, stride, padding, dilation),
            strict=True,
        )
    }
    window, stride, padding, dilation = received.values()
    as_passed = ", ".join(f"{name}={received[name]!r}" for name in arguments)
    channels_last = static_bool(channels_last, "channels_last")
    ceil_mode = static_bool(ceil_mode, "ceil_mode")
    check_float_array(x, "x")
    rank = _spatial_rank(x, "x", window, "window", channels_last)
    window = normalize_tuple(window, rank, "window", minimum=1)
    stride = window if stride is None else normalize_tuple(stride, rank, "stride", minimum=1)
    padding = normalize_tuple(padding, rank, "padding", minimum=0)
    dilation = normalize_tuple(dilation, rank, "dilation", minimum=1)
    check_at_most(
        padding,
        [k // 2 for k in window],
        "padding",
        "at most half of `window` (padding <= window // 2, as PyTorch requires)",
        f"padding={received['padding']!r} for window={received['window']!r}",
    )
    in_size = _spatial_size(x, rank, channels_last)
    out_size = tuple(
        pool_output_size(n, k, s, p, d, ceil_mode)
        for n, k, s, p, d in zip(in_size, window, stride, padding, dilation, strict=True)
    )
    if any(o < 1 for o in out_size):
        raise ValueError(
            f"`x` must be large enough for one window in every spatial dimension with "
            f"{as_passed}{', ceil_mode=True' if ceil_mode else ''} (its output would have "
            f"spatial size {out_size}), got shape {tuple(np.shape(x))}"
        )
    for n, o, k, s, p, d in zip(in_size, out_size, window, stride, padding, dilation, strict=True):
        if -1 in first_valid_offsets(n, o, k, s, p, d):
            raise ValueError(
                f"`x` must be large enough that no window with {as_passed} lies entirely in "
                "the padding (a window would lie entirely in the padding of a dimension of "
                f"length {n}), got shape {tuple(np.shape(x))}"
            )
    return PoolGeometry(
        in_size, window, stride, padding, dilation, ceil_mode, channels_last, out_size
    )


def avg_pool_config(
    x: Any,
    window: Any,
    stride: Any,
    padding: Any,
    ceil_mode: Any,
    count_include_pad: Any,
    divisor_override: Any,
    channels_last: Any,
) -> AvgPoolConfig:
    """Validate ``avg_pool``'s arguments into an ``AvgPoolConfig``."""
    count_include_pad = static_bool(count_include_pad, "count_include_pad")
    divisor_override = check_static(divisor_override, "divisor_override")
    if divisor_override is not None:
        divisor_override = check_int(divisor_override, "divisor_override", minimum=1)
    geom = pool_geometry(
        x,
        window,
        stride,
        padding,
        ceil_mode=ceil_mode,
        channels_last=channels_last,
        arguments=("window", "stride", "padding"),
    )
    return AvgPoolConfig(geom, count_include_pad, divisor_override)


def lp_pool_config(
    x: Any, p: Any, window: Any, stride: Any, ceil_mode: Any, channels_last: Any
) -> LpPoolConfig:
    """Validate ``lp_pool``'s arguments into an ``LpPoolConfig`` (``p`` as a float)."""
    p = check_static(p, "p", "a Python number")
    if isinstance(p, bool | np.bool_) or not isinstance(p, int | float | np.integer | np.floating):
        raise TypeError(f"`p` must be a real number (int or float), got {p!r}")
    p = float(p)
    if not (p > 0 or p == -math.inf):
        raise ValueError(f"`p` must be > 0, inf or -inf, got {p!r}")
    geom = pool_geometry(
        x,
        window,
        stride,
        ceil_mode=ceil_mode,
        channels_last=channels_last,
        arguments=("window", "stride"),
    )
    return LpPoolConfig(geom, p)


def adaptive_geometry(x: Any, output_size: Any, channels_last: Any) -> AdaptiveGeometry:
    """Validate an adaptive pool's arguments into an ``AdaptiveGeometry``."""
    output_size = check_static(output_size, "output_size", "Python ints or None")
    channels_last = static_bool(channels_last, "channels_last")
    check_float_array(x, "x")
    rank = _spatial_rank(x, "x", output_size, "output_size", channels_last)
    in_size = _spatial_size(x, rank, channels_last)
    if isinstance(output_size, Sequence) and not isinstance(output_size, str | bytes):
        items = tuple(output_size)
    else:
        items = (output_size,) * rank
    out = []
    for n, o in zip(in_size, items, strict=True):
        if o is None:
            out.append(n)
            continue
        if isinstance(o, bool | np.bool_) or not isinstance(o, int | np.integer):
            raise TypeError(
                f"`output_size` must be an int, None, or a sequence of ints/None, "
                f"got {output_size!r}"
            )
        out.append(int(o))
    if any(o < 1 for o in out):
        raise ValueError(f"`output_size` must be >= 1 in every dimension, got {output_size!r}")
    if any(n < 1 for n in in_size):
        raise ValueError(f"`x` must have a non-empty spatial size, got shape {np.shape(x)}")
    return AdaptiveGeometry(in_size, tuple(out), channels_last)


def unpool_config(y: Any, indices: Any, output_size: Any, channels_last: Any) -> UnpoolConfig:
    """Validate ``max_unpool``'s arguments into an ``UnpoolConfig``.

    Concrete ``indices`` are range-checked here; traced ones cannot be (``max_unpool``
    documents that it then ignores out-of-range entries).
    """
    output_size = check_static(output_size, "output_size")
    channels_last = static_bool(channels_last, "channels_last")
    check_float_array(y, "y")
    rank = _spatial_rank(y, "y", output_size, "output_size", channels_last)
    check_int_array(indices, "indices")
    if tuple(np.shape(indices)) != tuple(np.shape(y)):
        raise ValueError(
            f"`indices` must have the shape of `y` {tuple(np.shape(y))}, "
            f"got {tuple(np.shape(indices))}"
        )
    out_size = normalize_tuple(output_size, rank, "output_size", minimum=1)
    plane = math.prod(out_size)
    try:
        concrete = np.asarray(indices)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        concrete = None
    if concrete is not None:
        if concrete.size and (concrete.min() < 0 or concrete.max() >= plane):
            raise ValueError(
                f"`indices` must lie in [0, {plane}) for output_size={output_size!r}, got values "
                f"in [{concrete.min()}, {concrete.max()}]"
            )
    return UnpoolConfig(_spatial_size(y, rank, channels_last), out_size, channels_last)
