"""Shims over the JAX API differences between jax 0.6 and 0.12."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jax

__all__ = ["enable_x64", "explicit_mesh", "replicated_on", "sharding_of"]


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


def explicit_mesh(*arrays: Any) -> Any:
    """The mesh of the first of ``arrays`` (``None`` entries skipped) whose type shards it
    along an ``Explicit`` mesh axis ("sharding in types"), else ``None``.

    Static: read from the types at trace time. An array replicated over an explicit mesh does
    not count, since no operation on it needs an output sharding it cannot infer; nor does
    one on an ``Auto`` mesh or a plain ``NamedSharding`` given to ``jit``, whose types carry
    no sharding.
    """
    explicit = getattr(getattr(jax.sharding, "AxisType", None), "Explicit", None)
    if explicit is None:  # jax < 0.6 had no explicit axes
        return None
    for a in arrays:
        sharding = None if a is None else sharding_of(a)
        if sharding is None:
            continue
        types = dict(zip(sharding.mesh.axis_names, sharding.mesh.axis_types, strict=True))
        for part in sharding.spec:
            names = part if isinstance(part, tuple) else (part,)
            if any(types.get(name) == explicit for name in names if name is not None):
                return sharding.mesh
    return None


def replicated_on(a: jax.Array, mesh: Any) -> jax.Array:
    """``a`` typed as replicated over ``mesh`` when its type carries no sharding, else ``a``.

    Under an explicit mesh lax's transpose rules give each gradient its primal's sharding
    and refuse a primal whose type has none (a kernel never placed on the mesh); typed
    replicated, it differentiates to any order. No data moves: ``a`` is whole everywhere.
    """
    if sharding_of(a) is not None:
        return a
    from jax.sharding import NamedSharding, PartitionSpec

    return jax.sharding.reshard(a, NamedSharding(mesh, PartitionSpec()))
