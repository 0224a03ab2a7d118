"""PyTorch twins of the ``models`` suite's networks: the same network code
(:mod:`jaxconv._bench.networks`) run with an :class:`~jaxconv._bench.networks.Ops` table of
``torch.nn.functional`` ops, eagerly, on the same parameters.

Import this module only when torch is installed (it imports torch at the top).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .networks import Ops

__all__ = ["grad_step", "to_torch", "torch_ops"]


def torch_ops() -> Ops:
    """``F.conv2d``, ``F.max_pool2d``, ``mean``, ``F.relu``/``relu6``/``gelu`` (exact), a
    channels-first layer norm as ConvNeXt's reference code writes it, ``F.linear`` and
    ``F.cross_entropy``: channels-first (NCHW) tensors and ``(O, I, kH, kW)`` kernels."""

    def conv(x, w, b, *, stride, padding, groups):
        return F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)

    def max_pool(x, *, window, stride, padding):
        return F.max_pool2d(x, window, stride, padding)

    def layer_norm(x, scale, bias):
        mean = x.mean(1, keepdim=True)
        centred = x - mean
        var = centred.pow(2).mean(1, keepdim=True)
        return centred * torch.rsqrt(var + 1e-6) * scale[:, None, None] + bias[:, None, None]

    return Ops(
        name="torch",
        channels_last=False,
        conv=conv,
        max_pool=max_pool,
        global_avg_pool=lambda x: x.mean((2, 3)),
        relu=F.relu,
        relu6=F.relu6,
        gelu=F.gelu,
        layer_norm=layer_norm,
        dense=lambda x, w, b: F.linear(x, w.t(), b),
        cross_entropy=lambda logits, labels: F.cross_entropy(logits, labels.long()),
    )


def to_torch(tree: Any, requires_grad: bool = False) -> Any:
    """A pytree of NumPy/JAX arrays as the same pytree of CPU float tensors (copies)."""
    import jax
    import numpy as np

    def leaf(a: Any) -> torch.Tensor:
        t = torch.from_numpy(np.array(a))
        return t.requires_grad_(True) if requires_grad and t.is_floating_point() else t

    return jax.tree_util.tree_map(leaf, tree)


def grad_step(net: Any, ops: Ops, params: Any, x: torch.Tensor, labels: torch.Tensor):
    """One eager train step: the loss and its gradients w.r.t. every leaf of ``params``
    (``torch.autograd.grad``; no optimiser, as in the JAX step). Returns ``(loss, grads)``
    with ``grads`` the same pytree as ``params``."""
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(params)
    loss = ops.cross_entropy(net.apply(ops, params, x), labels)
    grads = torch.autograd.grad(loss, leaves)
    return loss.detach(), jax.tree_util.tree_unflatten(treedef, list(grads))
