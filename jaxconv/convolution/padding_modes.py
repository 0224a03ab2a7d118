"""Non-zero padding modes (PyTorch's ``reflect``, ``replicate``, ``circular``) and their adjoints.

Each padded cell is a copy of one input cell, so the forward is a gather with a fixed
index map ``src(p)`` per axis, and its VJP folds the gradient of every padded cell back onto
the cell it copied: ``dX[q] = sum_{p : src(p) = q} dXpad[p]``. Axes are independent, so
the fold is done one axis at a time. For a low pad of ``lo`` and a high pad of ``hi`` on an
axis of length ``L`` (padded index ``p``, ``k = 0, 1, ...``)::

    reflect:   low cell lo-1-k copies q = k+1          high cell lo+L+k copies q = L-2-k
    replicate: every low cell copies q = 0,            every high cell copies q = L-1
    circular:  low cell lo-1-k copies q = L-1-k,       high cell lo+L+k copies q = k
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from .._checks import check_choice
from .._shapes import Pairs

__all__ = ["PADDING_MODES", "check_mode_padding", "pad", "pad_adjoint"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

JNP_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def check_mode_padding(
    mode: str, pairs: Pairs, spatial: Sequence[int], name: str = "padding"
) -> None:
    """PyTorch's limits: ``reflect`` needs pad < size, ``circular`` pad <= size."""
    check_choice(mode, "padding_mode", PADDING_MODES)
    for (lo, hi), size in zip(pairs, spatial, strict=True):
        if mode == "reflect" and max(lo, hi) >= size:
            raise ValueError(
                f"`{name}` must be smaller than the input size in every spatial dimension "
                f"for padding_mode='reflect', got padding {pairs} for spatial shape "
                f"{tuple(spatial)}"
            )
        if mode == "circular" and max(lo, hi) > size:
            raise ValueError(
                f"`{name}` must be at most the input size in every spatial dimension for "
                f"padding_mode='circular', got padding {pairs} for spatial shape {tuple(spatial)}"
            )


def _full_pads(axes: Sequence[int], pairs: Pairs, ndim: int) -> list[tuple[int, int]]:
    pads = [(0, 0)] * ndim
    for ax, pr in zip(axes, pairs, strict=True):
        pads[ax] = pr
    return pads


def _pad_forward(x: jax.Array, mode: str, axes: tuple[int, ...], pairs: Pairs) -> jax.Array:
    return jnp.pad(x, _full_pads(axes, pairs, x.ndim), mode=JNP_PAD_MODE[mode])


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def pad(x: jax.Array, mode: str, axes: tuple[int, ...], pairs: Pairs) -> jax.Array:
    """Pad ``x`` on ``axes`` by ``pairs`` with PyTorch's ``mode`` (not ``"zeros"``)."""
    return _pad_forward(x, mode, axes, pairs)


def _pad_fwd(x, mode, axes, pairs):
    # The index map is static, so there are no residuals. (Call the plain forward, not
    # `pad`: a custom_vjp call inside _fwd would refuse the jvp of jax.hessian.)
    return _pad_forward(x, mode, axes, pairs), None


def _pad_bwd(mode, axes, pairs, _, g):
    return (pad_adjoint(g, mode, axes, pairs),)


pad.defvjp(_pad_fwd, _pad_bwd)


def _place(piece: jax.Array, axis: int, start: int, length: int) -> jax.Array:
    """``piece`` zero-padded along ``axis`` to ``length`` cells, starting at ``start``."""
    pads = [(0, 0)] * piece.ndim
    pads[axis] = (start, length - start - piece.shape[axis])
    return jnp.pad(piece, pads)


def _fold_axis(g: jax.Array, mode: str, axis: int, lo: int, hi: int) -> jax.Array:
    size = g.shape[axis] - lo - hi
    take = partial(lax.slice_in_dim, g, axis=axis)
    out = take(lo, lo + size)
    low, high = take(0, lo), take(lo + size, lo + size + hi)
    if mode == "reflect":
        # low cells p = lo-1-k -> q = k+1: reversed, they land on q = 1..lo
        if lo:
            out = out + _place(lax.rev(low, (axis,)), axis, 1, size)
        if hi:  # high cells lo+L+k -> q = L-2-k: reversed, they land on q = L-1-hi .. L-2
            out = out + _place(lax.rev(high, (axis,)), axis, size - 1 - hi, size)
    elif mode == "replicate":
        if lo:
            out = out + _place(jnp.sum(low, axis=axis, keepdims=True), axis, 0, size)
        if hi:
            out = out + _place(jnp.sum(high, axis=axis, keepdims=True), axis, size - 1, size)
    else:  # circular
        if lo:  # low cells copy the last lo cells, in order
            out = out + _place(low, axis, size - lo, size)
        if hi:  # high cells copy the first hi cells, in order
            out = out + _place(high, axis, 0, size)
    return out


def pad_adjoint(g: jax.Array, mode: str, axes: Sequence[int], pairs: Pairs) -> jax.Array:
    """The VJP of :func:`pad`: fold each padded cell's gradient onto its source cell.

    Built from slices, reversals, zero pads and sums, so it is itself differentiable in
    both modes (and linear: its own VJP is :func:`pad` again).
    """
    for ax, (lo, hi) in zip(axes, pairs, strict=True):
        g = _fold_axis(g, mode, ax, lo, hi)
    return g
