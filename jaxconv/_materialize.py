"""One helper the convolution methods and the pools share: a value XLA must store once.

A private top-level module, below both subpackages, so neither imports the other.
"""

from __future__ import annotations

from typing import TypeVar

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["materialized"]


T = TypeVar("T", jax.Array, tuple[jax.Array, ...])


def materialized(values: T) -> T:
    """Identity that XLA computes once and stores (a residual for the backward).

    Fused into the backward, the forward's argmax (or window-sum) chain would be recomputed
    for every window offset that reads it -- 5-10x slower on CPU -- and XLA's CPU pipeline
    drops ``lax.optimization_barrier`` before fusion. A conditional's operands are always
    materialised: on the CPU the values pass through one whose branches are both the
    identity, so its data-dependent predicate (which XLA cannot fold away) does not matter;
    under ``vmap`` it becomes a cheap select. Elsewhere (GPU, TPU), where the barrier holds
    and a conditional would cost a device-to-host sync, the barrier is used.

    ``values`` is an array or a tuple of arrays (a max pool's output and winner codes): each
    is stored once, and a backward that reads any of them (the gradient of ``sum(y**2)``
    reads ``y``) never recomputes its chain.

    The predicate reads the first entry as a one-element slice: under a spatial sharding
    XLA fetches that one entry, where ``a.reshape(-1)[0]`` (flattening a sharded axis into
    the others) made it all-gather the whole residual onto every device.
    """
    leaves = jax.tree.leaves(values)
    if not leaves or any(leaf.size == 0 for leaf in leaves):
        return values

    def on_cpu(v: T) -> T:
        head = jax.tree.leaves(v)[0]
        first = lax.slice(head, (0,) * head.ndim, (1,) * head.ndim).reshape(())
        pred = first > jnp.zeros((), head.dtype)

        def scaled(w: T) -> T:
            return jax.tree.map(lambda leaf: leaf * jnp.ones((), leaf.dtype), w)

        return lax.cond(pred, lambda w: w, scaled, v)

    return lax.platform_dependent(values, cpu=on_cpu, default=lax.optimization_barrier)
