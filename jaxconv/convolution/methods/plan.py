"""What every convolution method shares: the static geometry of one convolution, the
layout moves into and out of the channels-first form the fast methods compute in, and the
:class:`MethodPlan` that :func:`jaxconv.convolution.methods.dispatch` builds once per call.

Plain ints in, plain ints out, except for the four layout moves (transposes).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Self

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpy.typing import DTypeLike

from ..._dtypes import compute_dtype
from ..._shapes import conv_output_size, dilate_dim
from .._config import ConvConfig, split_shapes

__all__ = [
    "Geometry",
    "MethodPlan",
    "all_finite",
    "finite_max_abs",
    "geometry",
    "pad_spatial",
    "plain_conv_reason",
    "spatial_window",
    "tap_window",
    "w_from_cf",
    "w_to_cf",
    "x_from_cf",
    "x_to_cf",
]


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Static sizes of one convolution, in channels-first terms (plain ints, no arrays)."""

    n: int
    c_in: int
    spatial: tuple[int, ...]
    c_out: int
    c_in_g: int
    kernel: tuple[int, ...]
    groups: int
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    out: tuple[int, ...]
    lhs_dilation: tuple[int, ...] = ()
    batch_group_count: int = 1
    channels_last: bool = False  # the caller's layout (a method computing in the other pays moves)

    @property
    def ndim(self) -> int:
        return len(self.spatial)

    @property
    def spans(self) -> tuple[int, ...]:
        """Cells the dilated kernel covers: ``D(K-1)+1`` per axis."""
        return tuple(dilate_dim(k, d) for k, d in zip(self.kernel, self.dilations, strict=True))

    @property
    def c_out_g(self) -> int:
        return self.c_out // self.groups

    @property
    def taps(self) -> int:
        return int(np.prod(self.kernel))

    @property
    def tap_offsets(self) -> list[tuple[int, ...]]:
        """Every kernel offset ``(a_1, .., a_n)``, row-major: the list index is the tap."""
        return list(itertools.product(*(range(k) for k in self.kernel)))

    @property
    def empty(self) -> bool:
        return self.n == 0 or self.c_in == 0 or self.c_out == 0 or 0 in self.out


def geometry(x_shape: Sequence[int], w_shape: Sequence[int], cfg: ConvConfig) -> Geometry:
    """The :class:`Geometry` of ``cfg`` applied to arrays of these (user-layout) shapes."""
    n, c_in, spatial, c_out, c_in_g, kernel = split_shapes(x_shape, w_shape, cfg.channels_last)
    out = tuple(
        conv_output_size(i, k, s, p, d)
        for i, k, s, p, d in zip(
            spatial, kernel, cfg.window_strides, cfg.padding, cfg.rhs_dilation, strict=True
        )
    )
    return Geometry(
        n=n,
        c_in=c_in,
        spatial=spatial,
        c_out=c_out,
        c_in_g=c_in_g,
        kernel=kernel,
        groups=cfg.feature_group_count,
        strides=cfg.window_strides,
        dilations=cfg.rhs_dilation,
        padding=cfg.padding,
        out=out,
        lhs_dilation=cfg.lhs_dilation,
        batch_group_count=cfg.batch_group_count,
        channels_last=cfg.channels_last,
    )


# ---------------------------------------------------------------------------------------
# Layout: the methods compute channels-first, (N, C, *S) and (O, I, *K).


def x_to_cf(x: jax.Array, cfg: ConvConfig) -> jax.Array:
    """``(N, *S, C)`` -> ``(N, C, *S)`` when ``cfg`` is channels-last (identity otherwise)."""
    return _moveaxis(x, -1, 1) if cfg.channels_last else x


def x_from_cf(x: jax.Array, cfg: ConvConfig) -> jax.Array:
    """Inverse of :func:`x_to_cf` (also for outputs, which share the input's layout)."""
    return _moveaxis(x, 1, -1) if cfg.channels_last else x


def w_to_cf(w: jax.Array, cfg: ConvConfig) -> jax.Array:
    """``(*K, I, O)`` -> ``(O, I, *K)`` when ``cfg`` is channels-last."""
    if not cfg.channels_last:
        return w
    nd = w.ndim - 2
    return lax.transpose(w, (nd + 1, nd) + tuple(range(nd)))


def w_from_cf(w: jax.Array, cfg: ConvConfig) -> jax.Array:
    """Inverse of :func:`w_to_cf`."""
    if not cfg.channels_last:
        return w
    nd = w.ndim - 2
    return lax.transpose(w, tuple(range(2, nd + 2)) + (1, 0))


def _moveaxis(x: jax.Array, src: int, dst: int) -> jax.Array:
    perm = list(range(x.ndim))
    perm.insert(dst % x.ndim, perm.pop(src % x.ndim))
    return lax.transpose(x, tuple(perm))


def output_dtype(cfg: ConvConfig, dtype: DTypeLike) -> np.dtype:
    """The forward's output dtype: ``preferred_element_type`` if given, else the input's."""
    return np.dtype(cfg.preferred_element_type or dtype)


@dataclasses.dataclass(frozen=True)
class MethodPlan:
    """What every fast method resolves once, before its ``custom_vjp``: the config, its
    geometry, and the three dtypes (input, compute, output). Hashable: it is the
    ``nondiff_argnums`` entry."""

    cfg: ConvConfig
    geo: Geometry
    has_bias: bool
    compute: str  # "float32" or "float64"
    out_dtype: str
    in_dtype: str

    @classmethod
    def build(cls, x: jax.Array, b: jax.Array | None, cfg: ConvConfig, geo: Geometry) -> Self:
        """The plan for these arrays (``geo`` is the geometry of ``x`` and the kernel)."""
        return cls(
            cfg=cfg,
            geo=geo,
            has_bias=b is not None,
            compute=compute_dtype(x.dtype).name,
            out_dtype=output_dtype(cfg, x.dtype).name,
            in_dtype=np.dtype(x.dtype).name,
        )

    @classmethod
    def of(cls, plan: MethodPlan) -> Self:
        """The same plan as a method's own subclass (which only adds derived properties)."""
        return cls(**{f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)})


# ---------------------------------------------------------------------------------------
# Windows on the spatial axes, and their adjoints: what the tap-by-tap methods share.


def spatial_window(
    a: jax.Array,
    axes: Sequence[int],
    start: Sequence[int],
    size: Sequence[int],
    step: Sequence[int],
) -> jax.Array:
    """``a[.., start + step*i, ..]`` for ``i < size`` on the spatial ``axes``."""
    begin, limit, strides = [0] * a.ndim, list(a.shape), [1] * a.ndim
    for ax, s, t, n in zip(axes, start, step, size, strict=True):
        begin[ax], limit[ax], strides[ax] = s, s + t * (n - 1) + 1, t
    return lax.slice(a, tuple(begin), tuple(limit), tuple(strides))


def tap_window(xp: jax.Array, axes: Sequence[int], g: Geometry, tap: Sequence[int]) -> jax.Array:
    """``Xa``: the cells of the padded input ``xp`` that kernel tap ``a`` reads for every
    output, ``xp[.., D*a + S*i, ..]`` for ``i < out``."""
    start = [d * a for d, a in zip(g.dilations, tap, strict=True)]
    return spatial_window(xp, axes, start, g.out, g.strides)


def pad_spatial(
    a: jax.Array, axes: Sequence[int], pads: Sequence[tuple[int, int, int]]
) -> jax.Array:
    """``lax.pad`` with zeros on the spatial ``axes`` (``(low, high, interior)`` each; a
    negative edge crops). The identity when every entry is zero."""
    config = [(0, 0, 0)] * a.ndim
    for ax, (lo, hi, interior) in zip(axes, pads, strict=True):
        config[ax] = (lo, hi, interior)
    if all(c == (0, 0, 0) for c in config):
        return a
    return lax.pad(a, np.array(0, a.dtype), config)


def all_finite(*arrays: jax.Array) -> jax.Array:
    """One scalar: every entry of every array is finite.

    A boolean reduction, not ``isfinite(max|a|)``: XLA's CPU max reduction (its YNNPACK path,
    jax 0.10) drops NaNs from large enough arrays, so a max can come out finite.
    """
    ok = jnp.array(True)
    for a in arrays:
        if a.size:
            ok = ok & jnp.all(jnp.isfinite(a))
    return ok


def finite_max_abs(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(all_finite(a), max|a|)`` in one pass over ``a``, as constants (no gradient).

    One variadic reduction carries both: the finiteness is a boolean ``and``, so it does not
    depend on how the maximum treats NaNs (see :func:`all_finite`), and ``max|a|`` is only
    meaningful when it is true. Half the memory traffic of a max and a separate check.
    """
    a = lax.stop_gradient(a)
    mag = jnp.abs(a)
    if not a.size:
        return jnp.array(True), jnp.zeros((), mag.dtype)
    peak, finite = lax.reduce(
        (mag, jnp.isfinite(a)),
        (np.zeros((), mag.dtype), np.True_),
        lambda p, q: (lax.max(p[0], q[0]), lax.bitwise_and(p[1], q[1])),
        tuple(range(a.ndim)),
    )
    return finite, peak


def plain_conv_reason(g: Geometry) -> str | None:
    """Why a method built for ``conv``'s configurations refuses ``g``, or ``None``.

    ``conv`` never builds input dilation or batch groups; only ``conv_general_dilated``
    (transposed convolutions, lax's weight-gradient form) does, and those stay direct.
    """
    if any(d != 1 for d in g.lhs_dilation) or g.batch_group_count != 1:
        return (
            "it needs lhs_dilation 1 and batch_group_count 1, got "
            f"{g.lhs_dilation} and {g.batch_group_count}"
        )
    return None
