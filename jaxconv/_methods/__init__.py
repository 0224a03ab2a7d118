"""Convolution methods behind ``conv(..., method=...)``.

Each method takes the same normalised :class:`~jaxconv._config.ConvConfig` and carries its
own hand-derived VJP. ``dispatch`` resolves ``"auto"`` at trace time from static shapes.
"""

from __future__ import annotations

import dataclasses

import jax

from .._config import ConvConfig

__all__ = ["dispatch"]


def dispatch(x: jax.Array, w: jax.Array, b: jax.Array | None, cfg: ConvConfig) -> jax.Array:
    from .._conv import direct

    method = cfg.method
    if method == "auto":
        method = "direct"
    return direct(x, w, b, dataclasses.replace(cfg, method=method))
