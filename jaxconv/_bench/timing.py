"""Timing helpers shared by the benchmark suites.

Every contender is timed round-robin: one sample of each in turn, repeated, so that a burst
of machine noise (another process, a frequency change) lands on all of them instead of
biasing whichever happened to run during it. The order within a round changes from round
to round (a Williams design: over a cycle of rounds every contender directly follows every
other one equally often), because what ran just before matters too -- PyTorch's OpenMP
workers keep spinning after a call, and a big working set leaves the caches cold -- and a
fixed order would charge that to the same contender every time.

A sample is the wall time of ``number`` calls (each one blocked until its result is ready)
divided by ``number``; ``number`` is chosen per contender so that a sample lasts at least
``min_sample_s``, which keeps timer resolution and dispatch jitter out of fast cases.
Reported numbers are medians of the samples.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "balanced_orders",
    "block",
    "blocking",
    "geomean",
    "rel_err",
    "summarize",
    "time_round_robin",
]


def block(result: Any) -> Any:
    """Wait until every array in ``result`` (any pytree of JAX arrays, or not) is computed."""
    import jax

    return jax.block_until_ready(result)


def blocking(fn: Callable[..., Any], args: Sequence[Any]) -> Callable[[], Any]:
    """A zero-argument callable running ``fn(*args)`` and waiting for its result."""
    return lambda: block(fn(*args))


def _calibrate(fn: Callable[[], Any], min_sample_s: float) -> int:
    """Calls per sample so that one sample lasts at least ``min_sample_s`` (>= 1)."""
    if min_sample_s <= 0.0:
        return 1
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    if once <= 0.0:
        return 1
    return max(1, math.ceil(min_sample_s / once))


def balanced_orders(k: int) -> list[list[int]]:
    """Orders of ``range(k)``, one per round, in which each index is directly preceded by
    every other index equally often (Williams's Latin square; ``2k`` rows when ``k`` is odd).

    >>> balanced_orders(4)
    [[0, 1, 3, 2], [1, 2, 0, 3], [2, 3, 1, 0], [3, 0, 2, 1]]
    """
    base, lo, hi = [0], 1, k - 1
    while len(base) < k:
        base.append(lo)
        lo += 1
        if len(base) < k:
            base.append(hi)
            hi -= 1
    rows = [[(b + r) % k for b in base] for r in range(k)]
    return rows if k % 2 == 0 else rows + [row[::-1] for row in rows]


def time_round_robin(
    fns: Mapping[str, Callable[[], Any]],
    *,
    repeats: int,
    warmup: int = 1,
    min_sample_s: float = 0.0,
) -> dict[str, list[float]]:
    """Time each zero-argument callable ``repeats`` times, interleaved.

    Args:
      fns: name -> callable. Each call must block until its work is done (wrap JAX calls in
        :func:`block`, synchronise CUDA for PyTorch).
      repeats: samples per contender (>= 1).
      warmup: untimed calls of each contender first (compilation, caches, thread pools).
      min_sample_s: lower bound on one sample's duration; fast contenders are called several
        times per sample and the mean per call is recorded.

    Returns:
      name -> list of ``repeats`` per-call times in seconds, in the order they were taken.
    """
    if repeats < 1:
        raise ValueError(f"`repeats` must be >= 1, got {repeats}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    number = {name: _calibrate(fn, min_sample_s) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    orders = balanced_orders(len(names))
    for r in range(repeats):
        for name in (names[i] for i in orders[r % len(orders)]):
            fn, k = fns[name], number[name]
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            samples[name].append((time.perf_counter() - t0) / k)
    return samples


def summarize(samples: Iterable[float]) -> dict[str, float]:
    """Median, minimum and maximum of a list of times (seconds)."""
    xs = list(samples)
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def geomean(values: Iterable[float]) -> float:
    """Geometric mean of positive numbers (NaN if there are none or any is not positive)."""
    xs = [float(v) for v in values]
    if not xs or any(not v > 0.0 for v in xs):
        return math.nan
    return math.exp(sum(math.log(v) for v in xs) / len(xs))


def rel_err(actual: Any, expected: Any) -> float:
    """Worst absolute difference over the largest magnitude of ``expected`` (in float64).

    Relative to the whole array's scale rather than per element, so an element that is zero
    by structure (where another algorithm returns rounding noise) does not blow it up.
    """
    import numpy as np

    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(a - e)) / max(float(np.max(np.abs(e))), 1e-30))
