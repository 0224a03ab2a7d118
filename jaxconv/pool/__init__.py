"""Pooling: the six pooling ops with PyTorch's semantics and hand-derived, scatter-free VJPs.

One module per op family holds the public op, its ``jax.custom_vjp`` and its backward rule
under the derivation: :mod:`.max` (``max_pool``), :mod:`.avg` (``avg_pool``, ``lp_pool``),
:mod:`.adaptive` (``adaptive_avg_pool``, ``adaptive_max_pool``) and :mod:`.unpool`
(``max_unpool``). They share :mod:`._config` (arguments -> frozen geometries and configs,
validated before tracing), :mod:`._geometry` (the pure-int window arithmetic),
:mod:`._windows` (padding, window slices and blocks, the NaN-aware argmax, winner codes and
indices) and :mod:`._vjp` (routing gradients back per stride phase or through an inverse
gather). A new pooling op goes in the module of its family, or a new one re-exported here,
built from those pieces; the loop oracles and Hypothesis strategies that check it live with
the verification tools, not here.

Under an explicit mesh (``jax.sharding.AxisType.Explicit``) each public op runs its body
through ``jaxconv._compat.on_auto_axes``: the mesh axes are ``Auto`` inside, where XLA places
the window splits and slices of a split batch or spatial axis, and the outputs come back split
like the input where the mesh divides their length.
"""

from __future__ import annotations

from .adaptive import adaptive_avg_pool as adaptive_avg_pool
from .adaptive import adaptive_max_pool as adaptive_max_pool
from .avg import avg_pool as avg_pool
from .avg import lp_pool as lp_pool
from .max import max_pool as max_pool
from .unpool import max_unpool as max_unpool

__all__ = [
    "adaptive_avg_pool",
    "adaptive_max_pool",
    "avg_pool",
    "lp_pool",
    "max_pool",
    "max_unpool",
]
