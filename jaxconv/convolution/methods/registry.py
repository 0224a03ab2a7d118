"""The method registry: one :class:`Method` entry per way of computing a convolution.

An entry is three functions of the static :class:`~.plan.Geometry` and the arrays:

- ``supports(geo)``: ``None`` when the method computes this convolution, else the reason it
  cannot (a sentence that ``explain_method`` and the error of an explicit request print);
- ``cost(geo, itemsize, backend)``: the cost model's :class:`Cost` of forward + backward on
  ``"cpu"`` or ``"gpu"``, whose constants the method's own module keeps;
- ``run(x, w, b, plan)``: the convolution itself, with its own hand-derived VJP.

``auto`` (:mod:`.auto`), ``explain_method``, ``jaxconv verify`` and the method tests read
this registry and nothing else, so a new method is one module and one :func:`register` call
(in :mod:`jaxconv.convolution.methods`, next to the built-in ones).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from .plan import Geometry, MethodPlan

__all__ = ["Cost", "Method", "MethodCost", "get", "names", "register", "unregister"]


@dataclasses.dataclass(frozen=True)
class Cost:
    """What a method's cost model says about one convolution (forward + backward)."""

    flops: float
    bytes: float
    seconds: float
    note: str = ""  # what dominates, in a few words


@dataclasses.dataclass(frozen=True)
class MethodCost:
    """The cost model's estimate for one method on one convolution (forward+backward)."""

    method: str
    flops: float
    bytes: float
    seconds: float | None  # None: the method does not support the configuration
    note: str = ""  # why it is unsupported, or what dominates

    def __str__(self) -> str:
        if self.seconds is None:
            return f"{self.method:>6}: unsupported ({self.note})"
        return (
            f"{self.method:>6}: {1e3 * self.seconds:9.3f} ms  ({self.flops / 1e9:.3g} GFLOP, "
            f"{self.bytes / 1e6:.3g} MB)"
        )


@dataclasses.dataclass(frozen=True)
class Method:
    """One registered convolution method (see the module doc).

    Attributes:
      name: what ``conv(..., method=name)`` asks for.
      supports: ``geo -> None`` (computes it) or the reason it cannot.
      cost: ``(geo, itemsize, backend) -> Cost``; only called when ``supports`` says yes.
      run: ``(x, w, b, plan) -> y`` in the caller's layout, differentiable.
      exact: ``True`` when every output is a plain sum of products (rounding bounded per
        output, like ``lax``); ``False`` when the error is relative to the largest output
        (a transform), which ``precision=HIGHEST`` keeps ``auto`` away from.
      partitioned: ``True`` when XLA's SPMD partitioner splits the method's program along a
        sharded batch or spatial axis without gathering whole operands. ``auto`` cannot see
        an input's sharding at trace time (``in_shardings`` are resolved after tracing), so
        in a process with more than one device it keeps to partitioned methods.
      explicit_sharding: ``True`` when the method runs, forward and backward, on inputs sharded
        along the axes of an explicit mesh (``jax.sharding.AxisType.Explicit``: the sharding
        is part of each array's type, and every operation's output sharding must follow
        from its operands' or be given). Unlike ``partitioned`` this is visible at trace
        time, in the inputs' types: there ``auto`` keeps to such methods and an explicit
        request for another is an error. ``False`` by default: a method must be checked.
    """

    name: str
    supports: Callable[[Geometry], str | None]
    cost: Callable[[Geometry, int, str], Cost]
    run: Callable[[jax.Array, jax.Array, jax.Array | None, MethodPlan], jax.Array]
    exact: bool = True
    partitioned: bool = True
    explicit_sharding: bool = False


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry (its name must be new and not ``"auto"``)."""
    if method.name == "auto" or method.name in _REGISTRY:
        raise ValueError(f"`method.name` must be new and not 'auto', got {method.name!r}")
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a registered method (tests register temporary ones)."""
    del _REGISTRY[name]


def names() -> tuple[str, ...]:
    """Registered method names, in registration order (``"direct"`` first)."""
    return tuple(_REGISTRY)


def get(name: str) -> Method:
    """The registered method called ``name``."""
    return _REGISTRY[name]
