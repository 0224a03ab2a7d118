"""Every pool's gradient sharded over 4 host devices: equal to unsharded, and no all-gather.

``tests/test_sharding.py`` checks one configuration per public op; this file covers the
geometries the pools take different paths for -- overlapping, padded, dilated and
``ceil_mode`` windows (stride phases), large tiling windows and global pooling (blocks),
adaptive windows that do not tile (a static gather), ``p = +-inf``, channels-last, 1-D and
3-D -- with the input split along the batch, along H or W, or along D of a volume. Each
compiled ``jax.grad`` must equal the unsharded gradient and hold no all-gather: XLA's SPMD
partitioner then exchanges halos (collective-permutes) and all-reduces, and never copies a
whole activation, residual or gradient onto every device.

``max_unpool`` writes each value where its index says -- data, not geometry -- so along a
sharded spatial axis some values must travel: the compiled program may gather the pooled
values and indices (a quarter of the output for 2x2 windows), never the unpooled output
or its gradient. Along the batch it gathers nothing.

Run as a script (``python tests/test_pool_sharding.py batch|spatial``) it compiles the
cases in a fresh process, where ``XLA_FLAGS`` can still make 4 host devices.
"""

# ruff: noqa: E402  (as a script, jax is imported after XLA_FLAGS is set)

from __future__ import annotations

import os
import sys

N_DEVICES = 4
if __name__ == "__main__":
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={N_DEVICES}"
    ).strip()
    os.environ["JAX_PLATFORMS"] = "cpu"

import json
import math
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv

sys.path.insert(0, str(Path(__file__).parent))
from sharding_cases import all_gathers  # noqa: I001  (the shared HLO scan)

sys.path.pop(0)

RTOL = 1e-5


class Case(NamedTuple):
    op: Callable
    shape: tuple[int, ...]
    axis: int  # the spatial axis split in the "spatial" run


NCHW = (8, 3, 64, 64)
NHWC = (8, 64, 64, 3)


def _unpool(x):
    y, idx = jaxconv.max_pool(x, 2, return_indices=True)
    return jaxconv.max_unpool(y, idx, x.shape[2:])


_W = np.random.default_rng(1).standard_normal((8, 3, 3, 3), np.float32)


def _conv_relu_max_avg(x):
    """The issue's model: its max-pool residual (u8[2,8,64,32] for 2 images) was gathered."""
    h = jax.nn.relu(jaxconv.conv(x, jnp.asarray(_W), padding=1, method="direct"))
    return jaxconv.avg_pool(jaxconv.max_pool(h, 2), 2)


def _positive(op: Callable) -> Callable:
    """``op`` on ``|x| + 1/2``: a real ``x^p`` for every ``p``."""
    return lambda x: op(jnp.abs(x) + 0.5)


CASES: dict[str, Case] = {
    "max 3/2/1": Case(partial(jaxconv.max_pool, window=3, stride=2, padding=1), NCHW, 2),
    "max 3/2 ceil, along W": Case(
        partial(jaxconv.max_pool, window=3, stride=2, ceil_mode=True), NCHW, 3
    ),
    "max 2/1 dilated": Case(partial(jaxconv.max_pool, window=2, stride=1, dilation=2), NCHW, 2),
    "max 8 (blocks)": Case(partial(jaxconv.max_pool, window=8), NCHW, 2),
    "max 3/2/1 NHWC": Case(
        partial(jaxconv.max_pool, window=3, stride=2, padding=1, channels_last=True), NHWC, 1
    ),
    "max 3/2/1 1-D": Case(partial(jaxconv.max_pool, window=3, stride=2, padding=1), (8, 3, 64), 2),
    "max 2/2/1 3-D": Case(
        partial(jaxconv.max_pool, window=2, stride=2, padding=1), (4, 2, 16, 16, 16), 2
    ),
    "avg 3/2/1": Case(
        partial(jaxconv.avg_pool, window=3, stride=2, padding=1, count_include_pad=False), NCHW, 2
    ),
    "lp 3 3/2": Case(_positive(partial(jaxconv.lp_pool, p=3.0, window=3, stride=2)), NCHW, 2),
    "lp inf 2": Case(partial(jaxconv.lp_pool, p=math.inf, window=2), NCHW, 2),
    "adaptive max 1 (global), along W": Case(
        partial(jaxconv.adaptive_max_pool, output_size=1), NCHW, 3
    ),
    "adaptive max 7": Case(partial(jaxconv.adaptive_max_pool, output_size=7), NCHW, 2),
    "adaptive avg 7": Case(partial(jaxconv.adaptive_avg_pool, output_size=7), NCHW, 2),
    "conv, max 2, avg 2": Case(_conv_relu_max_avg, (4, 3, 128, 64), 2),
    "unpool": Case(_unpool, NCHW, 2),
}
SHARDINGS = ["batch", "spatial"]


def run_case(name: str, sharding: str, mesh) -> dict:
    """The case's gradient sharded and unsharded: relative error and the HLO's all-gathers."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    case = CASES[name]
    x = np.random.default_rng(0).standard_normal(case.shape, np.float32)  # no ties
    spec = [None] * len(case.shape)
    spec[0 if sharding == "batch" else case.axis] = "d"
    shard = NamedSharding(mesh, P(*spec))
    grad = jax.grad(lambda a: jnp.sum(jnp.sin(case.op(a))))
    result: dict = {"case": name, "sharding": sharding}
    try:
        expected = np.asarray(jax.jit(grad)(x))
        compiled = jax.jit(grad, in_shardings=(shard,)).lower(x).compile()
        actual = np.asarray(compiled(jax.device_put(x, shard)))
    except Exception as e:  # an XLA crash is a result to report
        result["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        return result
    result["rel_err"] = float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))
    result["all_gathers"] = all_gathers(compiled.as_text())
    return result


@pytest.fixture(scope="module")
def results() -> dict[tuple[str, str], dict]:
    """Every case, compiled in one fresh process per sharding (the two side by side)."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    runs = {
        s: subprocess.Popen(
            [sys.executable, __file__, s],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for s in SHARDINGS
    }
    out = {}
    for sharding, proc in runs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{sharding}: {stderr[-3000:]}"
        for line in stdout.splitlines():
            r = json.loads(line)
            out[r["case"], r["sharding"]] = r
    return out


@pytest.mark.parametrize("sharding", SHARDINGS)
@pytest.mark.parametrize("name", [n for n in CASES if n != "unpool"])
def test_sharded_pool_gradient_equals_unsharded_without_all_gather(name, sharding, results):
    r = results[name, sharding]
    assert "error" not in r, r["error"]
    assert r["rel_err"] <= RTOL, r
    assert r["all_gathers"] == [], f"{name} sharded along {sharding}: {r['all_gathers']}"


def test_max_unpool_gathers_at_most_its_pooled_inputs(results):
    batch, spatial = results["unpool", "batch"], results["unpool", "spatial"]
    for r in (batch, spatial):
        assert "error" not in r, r["error"]
        assert r["rel_err"] <= RTOL, r
    assert batch["all_gathers"] == []
    pooled = math.prod(NCHW) // 4
    for gather in spatial["all_gathers"]:  # e.g. "all-gather f32[8,3,1024]"
        dims = gather.split("[")[1].split("]")[0].split(",")
        assert math.prod(int(d) for d in dims) <= pooled, spatial["all_gathers"]


def main(argv: list[str]) -> int:
    from jax.sharding import Mesh

    if len(argv) != 1 or argv[0] not in SHARDINGS:
        print(f"usage: test_pool_sharding.py {{{','.join(SHARDINGS)}}}", file=sys.stderr)
        return 2
    if len(jax.devices()) < N_DEVICES:
        print(f"test_pool_sharding.py: jax sees {len(jax.devices())} devices", file=sys.stderr)
        return 2
    mesh = Mesh(np.array(jax.devices()[:N_DEVICES]), ("d",))
    for name in CASES:
        print(json.dumps(run_case(name, argv[0], mesh)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
