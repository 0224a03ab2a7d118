"""One helper the convolution methods and the pools share: a value XLA must store once.

A private top-level module, below both subpackages, so neither imports the other.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["materialized"]


def materialized(a: jax.Array) -> jax.Array:
    """Identity that XLA computes once and stores (a residual for the backward).

    Fused into its consumers, a cheap-looking producer (a pool's argmax or window-sum
    chain, a large kernel's sum of shifted slices) is recomputed in every fusion that reads
    it -- 5-10x slower on CPU -- and XLA's CPU pipeline drops ``lax.optimization_barrier``
    before fusion. A conditional's operands are always materialised: on the CPU the value
    passes through one whose branches are both the identity, so its data-dependent predicate
    (which XLA cannot fold away) does not matter; under ``vmap`` it becomes a cheap select.
    Elsewhere (GPU, TPU), where the barrier holds and a conditional would cost a
    device-to-host sync, the barrier is used.

    The predicate reads the first entry as a one-element slice: under a spatial sharding
    XLA fetches that one entry, where ``a.reshape(-1)[0]`` (flattening a sharded axis into
    the others) made it all-gather the whole residual onto every device.
    """
    if a.size == 0:
        return a

    def on_cpu(v: jax.Array) -> jax.Array:
        first = lax.slice(v, (0,) * v.ndim, (1,) * v.ndim).reshape(())
        pred = first > jnp.zeros((), v.dtype)
        return lax.cond(pred, lambda w: w, lambda w: w * jnp.ones((), w.dtype), v)

    return lax.platform_dependent(a, cpu=on_cpu, default=lax.optimization_barrier)
