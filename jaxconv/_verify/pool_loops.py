"""Naive loop references for every pool and its gradient: the lecture's rules as loops.

Slow and obvious on purpose: plain Python loops over batch, channel, output position and
window offset, computed in float64 NumPy, so the tests can check the fast ops (values and
VJPs) where ``jax.grad`` of ``lax`` has no answer (dilation, ``ceil_mode`` edge windows,
adaptive pools, unpooling). Arguments mirror the public ops; every function returns float64.

Window rule (one spatial dim): output ``o`` reads input position ``o*s + a*d - p`` for
``a = 0..k-1`` in row-major order over dims; positions outside ``[0, L)`` are padding.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

__all__ = [
    "adaptive_avg_pool_grad_reference",
    "adaptive_avg_pool_reference",
    "adaptive_max_pool_grad_reference",
    "adaptive_max_pool_reference",
    "avg_pool_grad_reference",
    "avg_pool_reference",
    "lp_pool_grad_reference",
    "lp_pool_reference",
    "max_pool_grad_reference",
    "max_pool_reference",
    "max_unpool_grad_reference",
    "max_unpool_reference",
]

Ints = int | Sequence[int]


def _quiet(f: Callable) -> Callable:
    """NaN and inf inputs are part of the contract: no floating-point warnings."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            return f(*args, **kwargs)

    return wrapper


def _tuple(v: Ints | None, n: int, default: tuple[int, ...] | None = None) -> tuple[int, ...]:
    if v is None:
        assert default is not None
        return default
    return tuple(v) if isinstance(v, Sequence) else (int(v),) * n


def _channels_first(x: np.ndarray, channels_last: bool) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.moveaxis(x, -1, 1) if channels_last else x


def _restore(y: np.ndarray, channels_last: bool) -> np.ndarray:
    return np.moveaxis(y, 1, -1) if channels_last else y


def _out_len(n: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch: floor/ceil((L + 2p - d(k-1) - 1)/s) + 1, minus a window starting in the pad."""
    num = n + 2 * p - d * (k - 1) - 1
    out = (num + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def _windows(
    size: tuple[int, ...],
    k: tuple[int, ...],
    s: tuple[int, ...],
    p: tuple[int, ...],
    d: tuple[int, ...],
    ceil_mode: bool,
) -> tuple[tuple[int, ...], Iterator[tuple[tuple[int, ...], list[tuple[int, ...]]]]]:
    """Output size and, per output position, its window's positions in row-major order."""
    out = tuple(_out_len(*args, ceil_mode) for args in zip(size, k, s, p, d, strict=True))

    def gen():
        for o in itertools.product(*(range(n) for n in out)):
            positions = [
                tuple(
                    oi * si + ai * di - pi for oi, si, ai, di, pi in zip(o, s, a, d, p, strict=True)
                )
                for a in itertools.product(*(range(ki) for ki in k))
            ]
            yield o, positions

    return out, gen()


def _inside(pos: tuple[int, ...], size: tuple[int, ...]) -> bool:
    return all(0 <= q < n for q, n in zip(pos, size, strict=True))


def _flat(pos: tuple[int, ...], size: tuple[int, ...]) -> int:
    return int(np.ravel_multi_index(pos, size))


def _argmax(plane: np.ndarray, positions: list[tuple[int, ...]]) -> tuple[int, ...]:
    """PyTorch's loop: start at the first in-bounds position with -inf; take v if
    ``v > max`` (the first maximum stays) or ``v`` is NaN (the last NaN wins)."""
    inside = [q for q in positions if _inside(q, plane.shape)]
    best, best_val = inside[0], -math.inf
    for q in inside:
        v = plane[q]
        if v > best_val or math.isnan(v):
            best, best_val = q, v
    return best


def _geometry(x, window, stride, padding, dilation, channels_last):
    x = _channels_first(x, channels_last)
    n = x.ndim - 2
    k = _tuple(window, n)
    return x, k, _tuple(stride, n, k), _tuple(padding, n), _tuple(dilation, n)


@_quiet
def max_pool_reference(
    x,
    window: Ints,
    stride: Ints | None = None,
    padding: Ints = 0,
    dilation: Ints = 1,
    ceil_mode: bool = False,
    *,
    channels_last: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """``(y, indices)``: each window's max and the flat index of its winner in the plane."""
    x, k, s, p, d = _geometry(x, window, stride, padding, dilation, channels_last)
    size = x.shape[2:]
    out, wins = _windows(size, k, s, p, d, ceil_mode)
    y = np.zeros(x.shape[:2] + out)
    idx = np.zeros(x.shape[:2] + out, dtype=np.int64)
    for o, positions in wins:
        for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
            q = _argmax(x[b, c], positions)
            y[(b, c) + o] = x[(b, c) + q]
            idx[(b, c) + o] = _flat(q, size)
    return _restore(y, channels_last), _restore(idx, channels_last)


@_quiet
def max_pool_grad_reference(
    x,
    dy,
    window: Ints,
    stride: Ints | None = None,
    padding: Ints = 0,
    dilation: Ints = 1,
    ceil_mode: bool = False,
    *,
    channels_last: bool = False,
) -> np.ndarray:
    """``dL/dX``: each ``dY[o]`` added to its window's winner (the lecture's routing rule)."""
    x, k, s, p, d = _geometry(x, window, stride, padding, dilation, channels_last)
    dy = _channels_first(dy, channels_last)
    dx = np.zeros_like(x)
    _, wins = _windows(x.shape[2:], k, s, p, d, ceil_mode)
    for o, positions in wins:
        for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
            q = _argmax(x[b, c], positions)
            dx[(b, c) + q] += dy[(b, c) + o]
    return _restore(dx, channels_last)


def _avg_divisor(positions, size, p, count_include_pad, divisor_override) -> float:
    if divisor_override is not None:
        return float(divisor_override)
    if count_include_pad:  # padding counts; the overhang past the right padding does not
        return float(
            sum(
                all(-pi <= q < n + pi for q, n, pi in zip(pos, size, p, strict=True))
                for pos in positions
            )
        )
    return float(sum(_inside(pos, size) for pos in positions))


@_quiet
def avg_pool_reference(
    x,
    window: Ints,
    stride: Ints | None = None,
    padding: Ints = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    *,
    channels_last: bool = False,
) -> np.ndarray:
    """Each window's sum (zero padding) divided by PyTorch's divisor."""
    x, k, s, p, d = _geometry(x, window, stride, padding, 1, channels_last)
    size = x.shape[2:]
    out, wins = _windows(size, k, s, p, d, ceil_mode)
    y = np.zeros(x.shape[:2] + out)
    for o, positions in wins:
        div = _avg_divisor(positions, size, p, count_include_pad, divisor_override)
        inside = [q for q in positions if _inside(q, size)]
        for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
            y[(b, c) + o] = sum(x[(b, c) + q] for q in inside) / div
    return _restore(y, channels_last)


@_quiet
def avg_pool_grad_reference(
    x,
    dy,
    window: Ints,
    stride: Ints | None = None,
    padding: Ints = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    *,
    channels_last: bool = False,
) -> np.ndarray:
    """``dL/dX``: each ``dY[o] / divisor`` added to every in-bounds position of its window."""
    x, k, s, p, d = _geometry(x, window, stride, padding, 1, channels_last)
    dy = _channels_first(dy, channels_last)
    size = x.shape[2:]
    dx = np.zeros_like(x)
    _, wins = _windows(size, k, s, p, d, ceil_mode)
    for o, positions in wins:
        div = _avg_divisor(positions, size, p, count_include_pad, divisor_override)
        for q in positions:
            if _inside(q, size):
                dx[(slice(None), slice(None)) + q] += dy[(slice(None), slice(None)) + o] / div
    return _restore(dx, channels_last)


def _lp_sums(x, p_norm, window, stride, ceil_mode, channels_last):
    """Per window: ``S = (K / n_inside) * sum x^p`` (PyTorch's ``K * avg_pool(x^p)``)."""
    x, k, s, p, d = _geometry(x, window, stride, 0, 1, channels_last)
    size = x.shape[2:]
    out, wins = _windows(size, k, s, p, d, ceil_mode)
    K = math.prod(k)
    with np.errstate(invalid="ignore", divide="ignore"):
        xp = np.power(x, p_norm)
    sums = np.zeros(x.shape[:2] + out)
    windows = []
    for o, positions in wins:
        inside = [q for q in positions if _inside(q, size)]
        windows.append((o, inside))
        for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
            sums[(b, c) + o] = sum(xp[(b, c) + q] for q in inside) * K / len(inside)
    return x, sums, windows, K


def _root(s: np.ndarray, e: float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        if float(e).is_integer():
            return np.power(s, int(e)) if e >= 0 else 1.0 / np.power(s, -int(e))
        return np.power(s, e)


@_quiet
def lp_pool_reference(
    x,
    p: float,
    window: Ints,
    stride: Ints | None = None,
    ceil_mode: bool = False,
    *,
    channels_last: bool = False,
) -> np.ndarray:
    """PyTorch's ``lp_pool``: ``(K * avg_pool(x^p))^(1/p)``; ``p = +-inf`` via max pools."""
    if math.isinf(p):
        sign = 1.0 if p > 0 else -1.0
        y, _ = max_pool_reference(
            sign * np.abs(np.asarray(x, np.float64)),
            window,
            stride,
            ceil_mode=ceil_mode,
            channels_last=channels_last,
        )
        return sign * y
    _, sums, _, _ = _lp_sums(x, p, window, stride, ceil_mode, channels_last)
    return _restore(_root(sums, 1.0 / p), channels_last)


@_quiet
def lp_pool_grad_reference(
    x,
    dy,
    p: float,
    window: Ints,
    stride: Ints | None = None,
    ceil_mode: bool = False,
    *,
    channels_last: bool = False,
) -> np.ndarray:
    """``dX_j = sum_o dY[o] (K/n_o) S[o]^(1/p-1) x_j^(p-1)`` (zero for windows with S = 0)."""
    if math.isinf(p):
        sign = 1.0 if p > 0 else -1.0
        xa = np.asarray(x, np.float64)
        g = max_pool_grad_reference(
            sign * np.abs(xa), dy, window, stride, ceil_mode=ceil_mode, channels_last=channels_last
        )
        return g * np.sign(xa)
    xc, sums, windows, K = _lp_sums(x, p, window, stride, ceil_mode, channels_last)
    dy = _channels_first(dy, channels_last)
    dx = np.zeros_like(xc)
    xp1 = _root(xc, p - 1.0)
    for o, inside in windows:
        for b, c in itertools.product(range(xc.shape[0]), range(xc.shape[1])):
            sv = sums[(b, c) + o]
            if sv == 0:
                continue
            g = dy[(b, c) + o] * K / len(inside) * _root(np.asarray(sv), 1.0 / p - 1.0)
            for q in inside:
                dx[(b, c) + q] += g * xp1[(b, c) + q]
    return _restore(dx, channels_last)


def _adaptive_windows(size: tuple[int, ...], out: tuple[int, ...]):
    """Per output, its window's positions: ``[floor(o*L/out), ceil((o+1)*L/out))`` per dim."""
    ranges = [
        [range((o * n) // m, -(-((o + 1) * n) // m)) for o in range(m)]
        for n, m in zip(size, out, strict=True)
    ]
    for o in itertools.product(*(range(m) for m in out)):
        yield o, list(itertools.product(*(ranges[i][oi] for i, oi in enumerate(o))))


def _adaptive_out(size, output_size) -> tuple[int, ...]:
    n = len(size)
    items = output_size if isinstance(output_size, Sequence) else (output_size,) * n
    return tuple(s if o is None else int(o) for s, o in zip(size, items, strict=True))


@_quiet
def adaptive_avg_pool_reference(x, output_size, *, channels_last: bool = False) -> np.ndarray:
    """The mean of each adaptive window."""
    x = _channels_first(x, channels_last)
    out = _adaptive_out(x.shape[2:], output_size)
    y = np.zeros(x.shape[:2] + out)
    for o, positions in _adaptive_windows(x.shape[2:], out):
        for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
            y[(b, c) + o] = sum(x[(b, c) + q] for q in positions) / len(positions)
    return _restore(y, channels_last)


@_quiet
def adaptive_avg_pool_grad_reference(x, dy, output_size, *, channels_last: bool = False):
    """``dL/dX``: each ``dY[o] / |window|`` added over its adaptive window."""
    x = _channels_first(x, channels_last)
    dy = _channels_first(dy, channels_last)
    out = _adaptive_out(x.shape[2:], output_size)
    dx = np.zeros_like(x)
    for o, positions in _adaptive_windows(x.shape[2:], out):
        for q in positions:
            dx[(slice(None), slice(None)) + q] += dy[(slice(None), slice(None)) + o] / len(
                positions
            )
    return _restore(dx, channels_last)


@_quiet
def adaptive_max_pool_reference(x, output_size, *, channels_last: bool = False):
    """``(y, indices)`` of each adaptive window (max_pool's tie and NaN rules)."""
    x = _channels_first(x, channels_last)
    size = x.shape[2:]
    out = _adaptive_out(size, output_size)
    y = np.zeros(x.shape[:2] + out)
    idx = np.zeros(x.shape[:2] + out, dtype=np.int64)
    for o, positions in _adaptive_windows(size, out):
        for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
            q = _argmax(x[b, c], positions)
            y[(b, c) + o] = x[(b, c) + q]
            idx[(b, c) + o] = _flat(q, size)
    return _restore(y, channels_last), _restore(idx, channels_last)


@_quiet
def adaptive_max_pool_grad_reference(x, dy, output_size, *, channels_last: bool = False):
    """``dL/dX``: each ``dY[o]`` added to its adaptive window's winner."""
    x = _channels_first(x, channels_last)
    dy = _channels_first(dy, channels_last)
    out = _adaptive_out(x.shape[2:], output_size)
    dx = np.zeros_like(x)
    for o, positions in _adaptive_windows(x.shape[2:], out):
        for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
            q = _argmax(x[b, c], positions)
            dx[(b, c) + q] += dy[(b, c) + o]
    return _restore(dx, channels_last)


@_quiet
def max_unpool_reference(y, indices, output_size: Ints, *, channels_last: bool = False):
    """``Out[n, c, idx[n, c, j]] = Y[n, c, j]``, written in row-major ``j`` order (last wins)."""
    y = _channels_first(y, channels_last)
    idx = np.moveaxis(np.asarray(indices), -1, 1) if channels_last else np.asarray(indices)
    size = _tuple(output_size, y.ndim - 2)
    out = np.zeros(y.shape[:2] + (math.prod(size),))
    for b, c in itertools.product(range(y.shape[0]), range(y.shape[1])):
        for j, v in zip(idx[b, c].reshape(-1), y[b, c].reshape(-1), strict=True):
            out[b, c, j] = v
    return _restore(out.reshape(y.shape[:2] + size), channels_last)


@_quiet
def max_unpool_grad_reference(y, indices, d_out, output_size: Ints, *, channels_last=False):
    """``dY[j] = dOut[idx[j]]`` for the entry that was written last there, else 0."""
    y = _channels_first(y, channels_last)
    idx = np.moveaxis(np.asarray(indices), -1, 1) if channels_last else np.asarray(indices)
    d_out = _channels_first(d_out, channels_last)
    dy = np.zeros_like(y)
    for b, c in itertools.product(range(y.shape[0]), range(y.shape[1])):
        flat_idx = idx[b, c].reshape(-1)
        plane = d_out[b, c].reshape(-1)
        g = np.zeros(flat_idx.shape)
        for j, i in enumerate(flat_idx):
            if j == len(flat_idx) - 1 - list(flat_idx[::-1]).index(i):  # last writer of i
                g[j] = plane[i]
        dy[b, c] = g.reshape(y.shape[2:])
    return _restore(dy, channels_last)
