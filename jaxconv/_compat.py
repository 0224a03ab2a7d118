"""Shims over the JAX API differences between jax 0.6 and 0.12."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jax

__all__ = ["enable_x64", "sharding_of"]


@contextlib.contextmanager
def enable_x64(enabled: bool = True) -> Iterator[None]:
    """Context manager turning 64-bit types on (``jax.enable_x64`` or its older home)."""
    ctx = getattr(jax, "enable_x64", None)
    if ctx is None:  # jax < 0.8 kept it in jax.experimental
        from jax.experimental import enable_x64 as ctx  # type: ignore[attr-defined,no-redef]

        cm = ctx() if enabled else contextlib.nullcontext()  # type: ignore[misc]
    else:
        cm = ctx(enabled)
    with cm:
        yield


def sharding_of(a: jax.Array) -> Any:
    """The sharding in ``a``'s type under an explicit mesh, else ``None`` (jax >= 0.7 keeps
    it in ``jax.typeof``; lax's transpose rules give each gradient its primal's sharding,
    and so do the hand-derived ones, by passing it as ``out_sharding``)."""
    typeof = getattr(jax, "typeof", None)
    sharding = None if typeof is None else getattr(typeof(a), "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    return None if mesh is None or mesh.empty else sharding
