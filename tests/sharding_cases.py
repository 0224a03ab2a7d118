"""Gradients of every public op, jitted with sharded inputs on 4 host devices; JSON out.

    python tests/sharding_cases.py batch|spatial [CASE ...]      # no CASE: every case

Run by ``tests/test_sharding.py`` in a fresh process: XLA reads
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` once, when jax starts, so this script
sets it before importing jax. For each case it compiles ``jax.grad`` of a small loss with
``in_shardings`` (the input split along the batch axis, ``PartitionSpec("d")``, or along H,
``PartitionSpec(None, None, "d", None)``; weights replicated) and prints one JSON object:
for each case, the largest relative difference from the same gradient computed unsharded,
every all-gather in the compiled HLO (a sharded op that gathers a whole activation, residual
or gradient onto every device defeats the sharding), and the error if it did not run.
Cases named ``lax:<op>`` are the same losses written with ``lax`` ops: the bar.
"""

# ruff: noqa: E402  (jax is imported after XLA_FLAGS is set)

from __future__ import annotations

import os
import re
import sys

N_DEVICES = 4
if "jax" not in sys.modules:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={N_DEVICES}"
    ).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxconv

X_SHAPE = (8, 3, 64, 64)  # (N, C, H, W): 2 images or 16 rows per device
SPECS = {"batch": P("d"), "spatial": P(None, None, "d", None)}


class Case(NamedTuple):
    op: Callable  # (x, *weights) -> y
    weight_shapes: tuple[tuple[int, ...], ...] = ()


def _window(x, init, reducer, k):
    return lax.reduce_window(x, init, reducer, (1, 1, k, k), (1, 1, k, k), "VALID")


def _lax_conv(x, w, groups=1):
    return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), feature_group_count=groups)


def _model(op_conv, op_max, op_avg):
    """conv -> relu -> max_pool -> conv -> avg_pool: the data-parallel model."""

    def model(x, w1, b1, w2):
        h = jax.nn.relu(op_conv(x, w1) + b1.reshape(1, -1, 1, 1))
        return op_avg(op_conv(op_max(h), w2))

    return model


W = (8, 3, 3, 3)  # (C_out, C_in, kH, kW)
DEPTHWISE = (3, 1, 3, 3)
POINTWISE = (8, 3, 1, 1)
TRANSPOSE = (3, 8, 3, 3)  # (C_in, C_out, kH, kW), PyTorch's layout

CASES: dict[str, Case] = {
    "conv-direct": Case(lambda x, w: jaxconv.conv(x, w, padding=1, method="direct"), (W,)),
    "conv-fft": Case(lambda x, w: jaxconv.conv(x, w, padding=1, method="fft"), (W,)),
    "conv-shift": Case(
        lambda x, w: jaxconv.conv(x, w, padding=1, groups=3, method="shift"), (DEPTHWISE,)
    ),
    "conv-auto": Case(lambda x, w: jaxconv.conv(x, w, padding=1), (W,)),
    "conv-matmul": Case(lambda x, w: jaxconv.conv(x, w, method="matmul"), (POINTWISE,)),
    "max_pool": Case(lambda x: jaxconv.max_pool(x, 2)),
    "avg_pool": Case(lambda x: jaxconv.avg_pool(x, 2)),
    "lp_pool": Case(lambda x: jaxconv.lp_pool(x, 2.0, 2)),
    "adaptive_avg_pool": Case(lambda x: jaxconv.adaptive_avg_pool(x, 16)),
    "adaptive_max_pool": Case(lambda x: jaxconv.adaptive_max_pool(x, 16)),
    "conv_transpose": Case(
        lambda x, w: jaxconv.conv_transpose(x, w, stride=2, padding=1, output_padding=1),
        (TRANSPOSE,),
    ),
    "conv_general_dilated": Case(
        lambda x, w: jaxconv.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1))), (W,)
    ),
    # Data parallel: the whole model's parameter gradients, as a training step needs them.
    "model": Case(
        _model(
            lambda x, w: jaxconv.conv(x, w, padding=1),
            lambda x: jaxconv.max_pool(x, 2),
            lambda x: jaxconv.avg_pool(x, 2),
        ),
        (W, (8,), (8, 8, 3, 3)),
    ),
    # The bar: the same losses in lax ops.
    "lax:conv": Case(_lax_conv, (W,)),
    "lax:conv-depthwise": Case(lambda x, w: _lax_conv(x, w, groups=3), (DEPTHWISE,)),
    "lax:max_pool": Case(lambda x: _window(x, -jnp.inf, lax.max, 2)),
    "lax:avg_pool": Case(lambda x: _window(x, 0.0, lax.add, 2) / 4),
    "lax:lp_pool": Case(lambda x: jnp.sqrt(_window(x * x, 0.0, lax.add, 2))),
    "lax:adaptive_avg_pool": Case(lambda x: _window(x, 0.0, lax.add, 4) / 16),
    "lax:adaptive_max_pool": Case(lambda x: _window(x, -jnp.inf, lax.max, 4)),
    "lax:conv_transpose": Case(
        lambda x, w: lax.conv_transpose(
            x,
            w,
            (2, 2),
            ((1, 2), (1, 2)),
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
            transpose_kernel=True,
        ),
        (TRANSPOSE,),
    ),
    "lax:model": Case(
        _model(
            _lax_conv,
            lambda x: _window(x, -jnp.inf, lax.max, 2),
            lambda x: _window(x, 0.0, lax.add, 2) / 4,
        ),
        (W, (8,), (8, 8, 3, 3)),
    ),
}

# `%all-gather.3 = f32[8,3,70,70]{3,2,1,0} all-gather(f32[2,3,70,70]{3,2,1,0} %p), ...`
# (an async one: `%ags = (f32[2,3]{1,0}, f32[8,3]{1,0}) all-gather-start(...)`)
_GATHER = re.compile(r"=\s*([^=\n]+?)\s+(all-gather(?:-start)?)\(")
_LAYOUT = re.compile(r"\{[^}]*\}")


def all_gathers(hlo: str) -> list[str]:
    """Each all-gather of a compiled HLO module as ``"all-gather f32[8,3,70,70]"``."""
    return [f"{m.group(2)} {_LAYOUT.sub('', m.group(1))}" for m in _GATHER.finditer(hlo)]


def run_case(name: str, sharding: str, mesh: Mesh) -> dict:
    case = CASES[name]
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(X_SHAPE, np.float32)]  # distinct values: no max-pool ties
    arrays += [rng.standard_normal(s, np.float32) for s in case.weight_shapes]

    def loss(*arrays):
        return jnp.sum(jnp.sin(case.op(*arrays)))  # sin: a cotangent that varies per cell

    argnums = tuple(range(len(arrays)))
    grad = jax.grad(loss, argnums)
    shardings = (NamedSharding(mesh, SPECS[sharding]),) + (NamedSharding(mesh, P()),) * (
        len(arrays) - 1
    )
    result: dict = {"case": name, "sharding": sharding}
    try:
        expected = [np.asarray(g) for g in jax.jit(grad)(*arrays)]
        compiled = jax.jit(grad, in_shardings=shardings).lower(*arrays).compile()
        hlo = compiled.as_text()
        actual = compiled(*(jax.device_put(a, s) for a, s in zip(arrays, shardings, strict=True)))
        actual = [np.asarray(g) for g in actual]  # runs it: errors surface here
    except Exception as e:  # an XLA crash is a result to report, not a reason to stop
        result["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        return result
    result["rel_err"] = max(
        float(np.max(np.abs(a - e)) / np.max(np.abs(e)))
        for a, e in zip(actual, expected, strict=True)
    )
    result["all_gathers"] = all_gathers(hlo)
    result["collective_permutes"] = hlo.count(" collective-permute(") + hlo.count(
        " collective-permute-start("
    )
    return result


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in SPECS:
        print(f"usage: sharding_cases.py {{{','.join(SPECS)}}} [CASE ...]", file=sys.stderr)
        return 2
    sharding, names = argv[0], argv[1:] or list(CASES)
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        print(f"sharding_cases.py: unknown cases {unknown}", file=sys.stderr)
        return 2
    if len(jax.devices()) < N_DEVICES:
        print(f"sharding_cases.py: jax sees {len(jax.devices())} devices", file=sys.stderr)
        return 2
    mesh = Mesh(np.array(jax.devices()[:N_DEVICES]), ("d",))
    for name in names:  # one line per case, flushed: a later hard crash keeps the earlier
        print(json.dumps(run_case(name, sharding, mesh)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
