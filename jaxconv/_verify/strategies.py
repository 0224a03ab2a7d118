"""Hypothesis strategies for pooling configurations (imported by tests and ``jaxconv.testing``).

Constructive ``@st.composite`` strategies draw dependent values in order: spatial rank,
window, dilation, stride, padding (``<= window // 2``), ``ceil_mode``, layout, then an input
just large enough for the window, then a PRNG seed. Array contents come from the seed, so
examples are cheap, shrink to small configurations, and never flake. ``values`` chooses the
contents: ``"normal"`` (continuous, ties have probability 0), ``"ties"`` (small integers
cast to float: many tied maxima) or ``"special"`` (normal with NaN and +-inf injected).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

try:
    from hypothesis import strategies as st
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError('jaxconv.testing needs hypothesis: pip install "jaxconv[test]"') from e

__all__ = [
    "AdaptiveCase",
    "PoolCase",
    "adaptive_pool_cases",
    "pool_array",
    "pool_cases",
]

VALUE_KINDS = ("normal", "ties", "special")


def pool_array(
    rng: np.random.Generator, shape: Sequence[int], dtype: Any, values: str = "normal"
) -> jax.Array:
    """An input array of ``shape`` drawn from ``rng``.

    Args:
      rng: the generator (seeded by the drawn case).
      shape: array shape.
      dtype: the array's dtype.
      values: ``"normal"``, ``"ties"`` (integers in ``[-2, 2]``: many equal maxima, exact
        in every float dtype) or ``"special"`` (about one entry in six NaN, +inf or -inf).
    """
    shape = tuple(shape)
    if values == "ties":
        a = rng.integers(-2, 3, size=shape).astype(np.float64)
    elif values == "normal":
        a = rng.standard_normal(shape)
    elif values == "special":
        a = rng.standard_normal(shape)
        pick = rng.integers(0, 18, size=shape)
        a = np.where(pick == 0, np.nan, a)
        a = np.where(pick == 1, np.inf, a)
        a = np.where(pick == 2, -np.inf, a)
    else:
        raise ValueError(f"`values` must be one of {VALUE_KINDS}, got {values!r}")
    return jnp.asarray(a, dtype=dtype)


@dataclasses.dataclass(frozen=True)
class PoolCase:
    """One drawn windowed pool: input shape, keyword arguments of the op, contents, seed.

    ``kwargs`` holds ``window``, ``stride``, ``padding``, ``ceil_mode``, ``channels_last``
    and, per op, ``dilation`` (max) or ``count_include_pad``/``divisor_override`` (avg).
    """

    op: str
    x_shape: tuple[int, ...]
    kwargs: dict[str, Any]
    values: str
    seed: int

    @property
    def rank(self) -> int:
        return len(self.x_shape) - 2

    def array(self, dtype: Any = np.float64) -> jax.Array:
        """The input, drawn from ``self.seed``."""
        return pool_array(np.random.default_rng(self.seed), self.x_shape, dtype, self.values)

    def cotangent(self, shape: Sequence[int], dtype: Any = np.float64) -> jax.Array:
        """A standard-normal cotangent of ``shape`` (seeded from ``self.seed`` too)."""
        rng = np.random.default_rng(self.seed + 1)
        return jnp.asarray(rng.standard_normal(tuple(shape)), dtype=dtype)


@st.composite
def pool_cases(
    draw: st.DrawFn,
    *,
    op: str = "max",
    ranks: Sequence[int] = (1, 2, 3),
    max_window: int = 3,
    max_stride: int = 3,
    max_dilation: int = 2,
    ceil_modes: Sequence[bool] = (False, True),
    layouts: Sequence[bool] = (False, True),
    values: Sequence[str] = ("normal",),
    max_extra: int = 3,
    max_batch: int = 2,
    max_channels: int = 2,
) -> PoolCase:
    """A valid ``max_pool`` / ``avg_pool`` / ``lp_pool`` configuration and input.

    Args:
      op: ``"max"`` (draws a dilation), ``"avg"`` (draws ``count_include_pad`` and
        ``divisor_override``) or ``"lp"`` (no padding, as PyTorch's ``lp_pool``).
      ranks: spatial ranks to draw from.
      max_window, max_stride, max_dilation: bounds per spatial dim (dilation 1 unless max).
      ceil_modes, layouts: the allowed ``ceil_mode`` / ``channels_last`` values.
      values: the allowed input kinds (see ``pool_array``).
      max_extra: how much longer than its smallest valid size an input dim may be.
      max_batch, max_channels: bounds of ``N`` and ``C``.
    """
    rank = draw(st.sampled_from(tuple(ranks)))
    window = tuple(draw(st.integers(1, max_window)) for _ in range(rank))
    dilation = (
        tuple(draw(st.integers(1, max_dilation)) if k > 1 else 1 for k in window)
        if op == "max"
        else (1,) * rank
    )
    stride = (
        None
        if draw(st.booleans())
        else tuple(draw(st.integers(1, max_stride)) for _ in range(rank))
    )
    padding = (0,) * rank if op == "lp" else tuple(draw(st.integers(0, k // 2)) for k in window)
    ceil_mode = draw(st.sampled_from(tuple(ceil_modes)))
    channels_last = draw(st.sampled_from(tuple(layouts)))
    spatial = []
    for k, d, p in zip(window, dilation, padding, strict=True):
        # every window must hold an in-bounds entry: L >= d(k-1)+1 when dilated, else
        # L + 2p >= k (which keeps at least one output)
        smallest = d * (k - 1) + 1 if d > 1 else max(1, k - 2 * p)
        spatial.append(smallest + draw(st.integers(0, max_extra)))
    n = draw(st.integers(1, max_batch))
    c = draw(st.integers(1, max_channels))
    x_shape = (n, *spatial, c) if channels_last else (n, c, *spatial)
    kwargs: dict[str, Any] = {
        "window": window,
        "stride": stride,
        "ceil_mode": ceil_mode,
        "channels_last": channels_last,
    }
    if op != "lp":
        kwargs["padding"] = padding
    if op == "max":
        kwargs["dilation"] = dilation
    if op == "avg":
        kwargs["count_include_pad"] = draw(st.booleans())
        kwargs["divisor_override"] = draw(st.one_of(st.none(), st.integers(1, 5)))
    kind = draw(st.sampled_from(tuple(values)))
    seed = draw(st.integers(0, 2**31 - 1))
    return PoolCase(op, x_shape, kwargs, kind, seed)


@dataclasses.dataclass(frozen=True)
class AdaptiveCase:
    """One drawn adaptive pool: input shape, ``output_size`` (ints or None), layout, seed."""

    x_shape: tuple[int, ...]
    output_size: tuple[int | None, ...]
    channels_last: bool
    values: str
    seed: int

    def array(self, dtype: Any = np.float64) -> jax.Array:
        return pool_array(np.random.default_rng(self.seed), self.x_shape, dtype, self.values)

    def cotangent(self, shape: Sequence[int], dtype: Any = np.float64) -> jax.Array:
        rng = np.random.default_rng(self.seed + 1)
        return jnp.asarray(rng.standard_normal(tuple(shape)), dtype=dtype)


@st.composite
def adaptive_pool_cases(
    draw: st.DrawFn,
    *,
    ranks: Sequence[int] = (1, 2, 3),
    max_size: int = 7,
    layouts: Sequence[bool] = (False, True),
    values: Sequence[str] = ("normal",),
    max_batch: int = 2,
    max_channels: int = 2,
) -> AdaptiveCase:
    """An adaptive pool: input lengths in ``[1, max_size]``, outputs in ``[1, L + 2]`` or None.

    Outputs larger than the input (overlapping windows of one or two entries) are allowed,
    as PyTorch allows them.
    """
    rank = draw(st.sampled_from(tuple(ranks)))
    spatial = tuple(draw(st.integers(1, max_size)) for _ in range(rank))
    out = tuple(draw(st.one_of(st.none(), st.integers(1, n + 2))) for n in spatial)
    channels_last = draw(st.sampled_from(tuple(layouts)))
    n = draw(st.integers(1, max_batch))
    c = draw(st.integers(1, max_channels))
    x_shape = (n, *spatial, c) if channels_last else (n, c, *spatial)
    kind = draw(st.sampled_from(tuple(values)))
    return AdaptiveCase(x_shape, out, channels_last, kind, draw(st.integers(0, 2**31 - 1)))
