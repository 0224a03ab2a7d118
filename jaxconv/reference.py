"""Naive loop implementations, straight from the lecture's index formulas.

For teaching, and as a second oracle on small inputs: plain NumPy, float64, one Python loop
over output positions and kernel (or window) taps. Convolutions are channels-first; the
pools (``max_pool``, ``max_pool_grad``, ``avg_pool``, ... ``max_unpool_grad``, each the lecture's
rule as loops) take ``channels_last`` like their jaxconv twins. Nothing here is differentiated or
jitted; every function returns a ``numpy.ndarray``.

With stride ``S``, dilation ``D`` and low padding ``P``, output position ``i`` and tap ``a``
meet input position ``q = S*i + D*a - P`` (cross-correlation). The true convolution of the
lecture, ``Y[i] = sum_a X[i - a] W[a]``, is the same loop with the kernel reversed
(``flip=True``) and ``padding="FULL"``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ._shapes import conv_output_shape, padding_pairs
from ._verify.pool_loops import adaptive_avg_pool_grad_reference as adaptive_avg_pool_grad
from ._verify.pool_loops import adaptive_avg_pool_reference as adaptive_avg_pool
from ._verify.pool_loops import adaptive_max_pool_grad_reference as adaptive_max_pool_grad
from ._verify.pool_loops import adaptive_max_pool_reference as adaptive_max_pool
from ._verify.pool_loops import avg_pool_grad_reference as avg_pool_grad
from ._verify.pool_loops import avg_pool_reference as avg_pool
from ._verify.pool_loops import lp_pool_grad_reference as lp_pool_grad
from ._verify.pool_loops import lp_pool_reference as lp_pool
from ._verify.pool_loops import max_pool_grad_reference as max_pool_grad
from ._verify.pool_loops import max_pool_reference as max_pool
from ._verify.pool_loops import max_unpool_grad_reference as max_unpool_grad
from ._verify.pool_loops import max_unpool_reference as max_unpool

Index = tuple[Any, ...]

__all__ = [
    "adaptive_avg_pool",
    "adaptive_avg_pool_grad",
    "adaptive_max_pool",
    "adaptive_max_pool_grad",
    "avg_pool",
    "avg_pool_grad",
    "conv",
    "conv_input_grad",
    "conv_weight_grad",
    "lp_pool",
    "lp_pool_grad",
    "max_pool",
    "max_pool_grad",
    "max_unpool",
    "max_unpool_grad",
]


def _taps(
    x_spatial: Sequence[int],
    kernel: Sequence[int],
    stride: Any,
    padding: Any,
    dilation: Any,
) -> Iterator[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Every (output position i, tap a, input position q) with q inside the input."""
    n = len(kernel)
    pairs = padding_pairs(padding, x_spatial, kernel, stride, dilation)
    s = (stride,) * n if isinstance(stride, int) else tuple(stride)
    d = (dilation,) * n if isinstance(dilation, int) else tuple(dilation)
    out = conv_output_shape(x_spatial, kernel, stride, pairs, dilation)
    for i in itertools.product(*map(range, out)):
        for a in itertools.product(*map(range, kernel)):
            q = tuple(s[k] * i[k] + d[k] * a[k] - pairs[k][0] for k in range(n))
            if all(0 <= q[k] < x_spatial[k] for k in range(n)):
                yield i, a, q


def _ix(*parts: Any) -> Index:
    """An index tuple (typed loosely: slices and ints mixed)."""
    return parts


def _tap(w: np.ndarray, a: tuple[int, ...], flip: bool) -> np.ndarray:
    kernel = w.shape[2:]
    return (
        w[_ix(slice(None), slice(None), *((k - 1 - t) for k, t in zip(kernel, a, strict=True)))]
        if flip
        else w[_ix(slice(None), slice(None), *a)]
    )


def conv(
    x: Any,
    w: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    flip: bool = False,
) -> np.ndarray:
    """``Y[n, o, i] = b[o] + sum_{c, a} X[n, c, S*i + D*a - P] W[o, c, a]``, by loops.

    Args:
      x: ``(N, C_in, *spatial)``.
      w: ``(C_out, C_in // groups, *kernel)``.
      bias: ``(C_out,)`` or None.
      stride, padding, dilation, groups, flip: as in :func:`jaxconv.conv`.

    Returns:
      ``(N, C_out, *spatial_out)`` float64 array.

    The lecture's true convolution of one channel (``flip=True``, ``padding="FULL"``):

    >>> conv(np.array([[[1.0, 2.0, 3.0]]]), np.array([[[1.0, 1.0]]]), padding="FULL", flip=True)
    array([[[1., 3., 5., 3.]]])
    """
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n_batch, c_in, *spatial = x.shape
    c_out, c_in_g, *kernel = w.shape
    out = conv_output_shape(spatial, kernel, stride, padding, dilation)
    y = np.zeros((n_batch, c_out, *out))
    og = c_out // groups
    for i, a, q in _taps(spatial, kernel, stride, padding, dilation):
        wa = _tap(w, a, flip)  # (C_out, C_in // groups)
        for g in range(groups):
            xs = x[_ix(slice(None), slice(g * c_in_g, (g + 1) * c_in_g), *q)]  # (N, C_in/g)
            y[_ix(slice(None), slice(g * og, (g + 1) * og), *i)] += xs @ wa[g * og : (g + 1) * og].T
    if bias is not None:
        y += np.asarray(bias, np.float64).reshape((1, c_out) + (1,) * len(out))
    return y


def conv_input_grad(
    dy: Any,
    w: Any,
    input_shape: Sequence[int],
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    flip: bool = False,
) -> np.ndarray:
    """``dX[n, c, q] = sum over (i, a) hitting q of sum_o dY[n, o, i] W[o, c, a]``, by loops.

    Only the outputs whose window covered ``q`` contribute (the lecture's region P).
    """
    dy, w = np.asarray(dy, np.float64), np.asarray(w, np.float64)
    n_batch, c_in, *spatial = input_shape
    c_out, c_in_g, *kernel = w.shape
    dx = np.zeros(tuple(input_shape))
    og = c_out // groups
    for i, a, q in _taps(spatial, kernel, stride, padding, dilation):
        wa = _tap(w, a, flip)
        for g in range(groups):
            dys = dy[_ix(slice(None), slice(g * og, (g + 1) * og), *i)]  # (N, C_out/g)
            dx[_ix(slice(None), slice(g * c_in_g, (g + 1) * c_in_g), *q)] += (
                dys @ wa[g * og : (g + 1) * og]
            )
    return dx


def conv_weight_grad(
    x: Any,
    dy: Any,
    weight_shape: Sequence[int],
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    flip: bool = False,
) -> np.ndarray:
    """``dW[o, c, a] = sum_{n, i} dY[n, o, i] X[n, c, S*i + D*a - P]``, by loops.

    Every weight touches every output pixel, so every ``(i, a)`` pair contributes.
    """
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    n_batch, c_in, *spatial = x.shape
    c_out, c_in_g, *kernel = weight_shape
    dw = np.zeros(tuple(weight_shape))
    og = c_out // groups
    for i, a, q in _taps(spatial, kernel, stride, padding, dilation):
        at = tuple((k - 1 - t) for k, t in zip(kernel, a, strict=True)) if flip else a
        for g in range(groups):
            dys = dy[_ix(slice(None), slice(g * og, (g + 1) * og), *i)]  # (N, C_out/g)
            xs = x[_ix(slice(None), slice(g * c_in_g, (g + 1) * c_in_g), *q)]  # (N, C_in/g)
            dw[_ix(slice(g * og, (g + 1) * og), slice(None), *at)] += dys.T @ xs
    return dw
