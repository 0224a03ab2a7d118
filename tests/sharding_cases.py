"""Gradients of every public op, jitted with sharded inputs on 4 host devices; JSON out.

    python tests/sharding_cases.py batch|spatial [CASE ...]      # no CASE: every case

Run by ``tests/test_sharding.py`` in a fresh process: XLA reads
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` once, when jax starts, so this script
sets it before importing jax. For each case it compiles ``jax.grad`` of a small loss with
``in_shardings`` (the input split along the batch axis, ``PartitionSpec("d")``, or along one
spatial axis: H, ``PartitionSpec(None, None, "d", None)``, unless the case names another;
weights replicated) and prints one JSON object: for each case, the largest relative
difference from the same gradient computed unsharded, every all-gather in the compiled HLO
(a sharded op that gathers a whole activation, residual or gradient onto every device
defeats the sharding), and the error if it did not run.

Cases named after a public op hold one configuration each; cases named ``lax:<op>`` are the
same losses written with ``lax`` ops: the bar. ``POOL_CASES`` are the geometries the pools
take different paths for, each on its own input and split axis.
"""

# ruff: noqa: E402  (jax is imported after XLA_FLAGS is set)

from __future__ import annotations

import os
import re
import sys

N_DEVICES = 4
if "jax" not in sys.modules:  # run as a script; imported by the tests, it leaves jax alone
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={N_DEVICES}"
    ).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json
import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import jaxconv

NCHW = (8, 3, 64, 64)  # (N, C, H, W): 2 images or 16 rows per device
NHWC = (8, 64, 64, 3)
SHARDINGS = ("batch", "spatial")


class Case(NamedTuple):
    op: Callable  # (x, *weights) -> y
    weight_shapes: tuple[tuple[int, ...], ...] = ()
    shape: tuple[int, ...] = NCHW  # of x
    axis: int = 2  # the spatial axis split in the "spatial" run


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


def _unpool(x):
    y, idx = jaxconv.max_pool(x, 2, return_indices=True)
    return jaxconv.max_unpool(y, idx, x.shape[2:])


_POOL_W = np.random.default_rng(1).standard_normal((8, 3, 3, 3), np.float32)


def _conv_relu_max_avg(x):
    """The issue's model: its max-pool residual (u8[2,8,64,32] for 2 images) was gathered."""
    h = jax.nn.relu(jaxconv.conv(x, jnp.asarray(_POOL_W), padding=1, method="direct"))
    return jaxconv.avg_pool(jaxconv.max_pool(h, 2), 2)


def _positive(op: Callable) -> Callable:
    """``op`` on ``|x| + 1/2``: a real ``x^p`` for every ``p``."""
    return lambda x: op(jnp.abs(x) + 0.5)


W = (8, 3, 3, 3)  # (C_out, C_in, kH, kW)
DEPTHWISE = (3, 1, 3, 3)
POINTWISE = (8, 3, 1, 1)
TRANSPOSE = (3, 8, 3, 3)  # (C_in, C_out, kH, kW), PyTorch's layout

# The geometries the pools take different paths for: overlapping, padded, dilated and
# ceil_mode windows (stride phases), large tiling windows and global pooling (blocks),
# adaptive windows that do not tile (a static gather), p = +-inf, channels-last, 1-D and
# 3-D, split along H, W or D; and max_unpool, which writes where its indices say.
POOL_CASES: dict[str, Case] = {
    "max 3/2/1": Case(partial(jaxconv.max_pool, window=3, stride=2, padding=1)),
    "max 3/2 ceil, along W": Case(
        partial(jaxconv.max_pool, window=3, stride=2, ceil_mode=True), axis=3
    ),
    "max 2/1 dilated": Case(partial(jaxconv.max_pool, window=2, stride=1, dilation=2)),
    "max 16 (blocks)": Case(partial(jaxconv.max_pool, window=16)),
    "max 3/2/1 NHWC": Case(
        partial(jaxconv.max_pool, window=3, stride=2, padding=1, channels_last=True),
        shape=NHWC,
        axis=1,
    ),
    "max 3/2/1 1-D": Case(
        partial(jaxconv.max_pool, window=3, stride=2, padding=1), shape=(8, 3, 64)
    ),
    "max 2/2/1 3-D": Case(
        partial(jaxconv.max_pool, window=2, stride=2, padding=1), shape=(4, 2, 16, 16, 16)
    ),
    "avg 3/2/1": Case(
        partial(jaxconv.avg_pool, window=3, stride=2, padding=1, count_include_pad=False)
    ),
    "lp 3 3/2": Case(_positive(partial(jaxconv.lp_pool, p=3.0, window=3, stride=2))),
    "lp inf 2": Case(partial(jaxconv.lp_pool, p=math.inf, window=2)),
    "adaptive max 1 (global), along W": Case(
        partial(jaxconv.adaptive_max_pool, output_size=1), axis=3
    ),
    "adaptive max 7": Case(partial(jaxconv.adaptive_max_pool, output_size=7)),
    "adaptive avg 7": Case(partial(jaxconv.adaptive_avg_pool, output_size=7)),
    "conv, max 2, avg 2": Case(_conv_relu_max_avg, shape=(4, 3, 128, 64)),
    "unpool": Case(_unpool),
}

CASES: dict[str, Case] = {
    "conv-direct": Case(lambda x, w: jaxconv.conv(x, w, padding=1, method="direct"), (W,)),
    "conv-fft": Case(lambda x, w: jaxconv.conv(x, w, padding=1, method="fft"), (W,)),
    "conv-shift": Case(
        lambda x, w: jaxconv.conv(x, w, padding=1, groups=3, method="shift"), (DEPTHWISE,)
    ),
    "conv-auto": Case(lambda x, w: jaxconv.conv(x, w, padding=1), (W,)),
    "conv-matmul": Case(lambda x, w: jaxconv.conv(x, w, method="matmul"), (POINTWISE,)),
    "conv-im2col": Case(
        lambda x, w: jaxconv.conv(x, w, stride=2, padding=1, method="im2col"), (W,)
    ),
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
    **POOL_CASES,
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
    arrays = [rng.standard_normal(case.shape, np.float32)]  # distinct values: no max-pool ties
    arrays += [rng.standard_normal(s, np.float32) for s in case.weight_shapes]

    def loss(*arrays):
        return jnp.sum(jnp.sin(case.op(*arrays)))  # sin: a cotangent that varies per cell

    argnums = tuple(range(len(arrays)))
    grad = jax.grad(loss, argnums)
    spec: list[str | None] = [None] * len(case.shape)
    spec[0 if sharding == "batch" else case.axis] = "d"
    shardings = (NamedSharding(mesh, P(*spec)),) + (NamedSharding(mesh, P()),) * (len(arrays) - 1)
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
    if not argv or argv[0] not in SHARDINGS:
        print(f"usage: sharding_cases.py {{{','.join(SHARDINGS)}}} [CASE ...]", file=sys.stderr)
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
