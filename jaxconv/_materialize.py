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


def materialized(values: T, *, after: jax.Array | None = None) -> T:
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

    ``after`` (an array, typically a backward's upstream gradient) makes ``values`` depend on
    it: the predicate reads ``after`` instead, so XLA can neither compute what is built from
    the result before ``after`` exists nor merge it with the same computation in the forward
    (common-subexpression elimination would keep, say, a convolution's forward slices of
    ``x`` alive until its backward re-slices the same ``x``).
    """
    leaves = jax.tree.leaves(values)
    if not leaves or any(leaf.size == 0 for leaf in leaves):
        return values
    if after is not None and after.size == 0:
        after = None

    def on_cpu(v: T, dep: jax.Array | None) -> T:
        head = jax.tree.leaves(v)[0] if dep is None else dep
        first = lax.slice(head, (0,) * head.ndim, (1,) * head.ndim).reshape(())
        first = jnp.real(first)  # a complex upstream gradient orders by its real part
        pred = first > jnp.zeros((), first.dtype)

        def scaled(w: T) -> T:
            return jax.tree.map(lambda leaf: leaf * jnp.ones((), leaf.dtype), w)

        return lax.cond(pred, lambda w: w, scaled, v)

    def elsewhere(v: T, dep: jax.Array | None) -> T:
        if dep is None:
            return lax.optimization_barrier(v)
        return lax.optimization_barrier((v, dep))[0]

    return lax.platform_dependent(values, after, cpu=on_cpu, default=elsewhere)
