"""Shims over the JAX API differences between jax 0.6 and 0.12."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

__all__ = ["enable_x64"]


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
