"""Shims over the JAX API differences between jax 0.6 and 0.12."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import jax

__all__ = [
    "enable_x64",
    "explicit_context_mesh",
    "explicit_mesh",
    "on_auto_axes",
    "replicated_on",
    "sharding_of",
]


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


def explicit_context_mesh() -> Any:
    """The mesh set by ``jax.set_mesh`` when one of its axes is ``Explicit``, else ``None``.

    Under ``vmap`` an operand's type shows the per-example shape only, so a batch split
    along an explicit axis is invisible to ``explicit_mesh``; the context mesh still says
    that one may be.
    """
    explicit = getattr(getattr(jax.sharding, "AxisType", None), "Explicit", None)
    get_abstract_mesh = getattr(jax.sharding, "get_abstract_mesh", None)
    if explicit is None or get_abstract_mesh is None:
        return None
    mesh = get_abstract_mesh()
    if mesh is None or mesh.empty or explicit not in mesh.axis_types:
        return None
    return mesh


def on_auto_axes(f: Callable[..., Any], *arrays: Any) -> Any:
    """``f(*arrays)``, run with the axes of an explicit mesh made ``Auto`` when one of
    ``arrays`` is split along such an axis (``explicit_mesh``) or the context mesh has one
    (``explicit_context_mesh``: a ``vmap``-ed axis may be split); else plain ``f(*arrays)``,
    the same program as without this call.

    For ops whose reshapes, slices and pads of a split axis JAX cannot type (a window split
    off a sharded axis, a one-entry slice of one): inside, XLA's SPMD partitioner places
    them as on an ``Auto`` mesh -- halo exchanges and all-reduces -- and jit, grad, vmap and
    higher derivatives see one ``jax.sharding.auto_axes`` call. Each output is typed with
    the sharding of the first split array, axis by axis, where it has that array's rank
    and the mesh axes divide its length, and replicated along the other axes (a global
    pool's length-1 axes, say). Gradients come back sharded like their primals.
    """
    mesh = explicit_mesh(*arrays)
    if mesh is None:
        mesh = explicit_context_mesh()
        if mesh is None:
            return f(*arrays)
    from jax.sharding import NamedSharding, PartitionSpec

    split = [a for a in arrays if a is not None and explicit_mesh(a) is not None]
    spec = sharding_of(split[0]).spec if split else PartitionSpec()
    ndim = split[0].ndim if split else None
    sizes = dict(mesh.shape)
    shapes = jax.eval_shape(f, *(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in arrays))

    def out_sharding(out: Any) -> Any:
        parts: list[Any] = [None] * len(out.shape)
        if len(out.shape) == ndim:
            for axis, part in enumerate(spec):
                names = part if isinstance(part, tuple) else (part,)
                ways = math.prod(sizes[n] for n in names if n is not None)
                if part is not None and out.shape[axis] % ways == 0:
                    parts[axis] = part
        return NamedSharding(mesh, PartitionSpec(*parts))

    shardings = jax.tree.map(out_sharding, shapes)
    return jax.sharding.auto_axes(f, out_sharding=shardings)(*arrays)
