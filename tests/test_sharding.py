"""Every public op and every pool geometry, sharded over 4 host devices: the same gradient,
and no all-gather.

``tests/sharding_cases.py`` runs in a fresh process per sharding (XLA reads
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` once, when jax starts, and this process
has started it already), compiling every case there. For each case it jits ``jax.grad`` of a
small loss with ``x`` split along the batch (``PartitionSpec("d")``) or along a spatial axis
(H: ``PartitionSpec(None, None, "d", None)``) and checks

(a) the gradient equals the unsharded one, to float32 rounding;
(b) the compiled HLO holds no all-gather at all: XLA's SPMD partitioner then exchanges halos
    (collective-permutes) and all-reduces, and never copies a whole activation, residual or
    gradient onto every device. lax's own ops meet this bar: convolution, depthwise
    convolution and every pool written with ``lax`` exchange halos only -- run
    ``python tests/sharding_cases.py spatial lax:max_pool`` etc. to see.
    (``lax.conv_transpose`` along H gathers; jaxconv's does not.)

Conv: one configuration per public op, ``x`` of shape ``(8, 3, 64, 64)``, and a data-parallel
check that a conv + pool model's parameter gradients with the batch sharded equal the
single-device ones.

Pool: the geometries the pools take different paths for -- overlapping, padded, dilated and
``ceil_mode`` windows (stride phases), large tiling windows and global pooling (blocks),
adaptive windows that do not tile (a static gather), ``p = +-inf``, channels-last, 1-D and
3-D -- with the input split along the batch, along H or W, or along D of a volume.
``max_unpool`` writes each value where its index says -- data, not geometry -- so along a
sharded spatial axis some values must travel: the compiled program may gather the pooled
values and indices (a quarter of the output for 2x2 windows), never the unpooled output
or its gradient. Along the batch it gathers nothing.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

HELPER = Path(__file__).with_name("sharding_cases.py")
sys.path.insert(0, str(HELPER.parent))
try:
    from sharding_cases import NCHW, POOL_CASES, SHARDINGS, all_gathers
finally:
    sys.path.remove(str(HELPER.parent))

OPS = [
    "conv-direct",
    "conv-fft",
    "conv-shift",  # depthwise: the configuration the shift method exists for
    "conv-auto",  # fft on one device for this 3x3 stem; with 4 devices auto keeps off fft
    "conv-matmul",  # pointwise
    "max_pool",
    "avg_pool",
    "lp_pool",
    "adaptive_avg_pool",
    "adaptive_max_pool",
    "conv_transpose",
    "conv_general_dilated",
]
RTOL = 1e-5  # measured: <= 3.3e-6 (shift), <= 2.6e-7 for the others

# Failing today (jax 0.10.2, 4 CPU host devices) and therefore NOT run; move a case into the
# tested set once the library is fixed, and say here what each does now. (None now: the pools'
# H-sharded residual gathers are gone.)
KNOWN_FAILING: list[tuple[str, str]] = []
# An explicit method="fft" runs under any sharding and gives the unsharded gradient, but XLA's
# SPMD partitioner replicates every FFT operand, even one sharded only along an axis the
# transform does not touch (openxla/xla#24, jax-ml/jax#15680): all-gathers of the padded
# input and its spectra. The method is marked not partitioned, so `auto` keeps off it in any
# multi-device process and explain_method says why; these cases check values only.
GATHERS_BY_DESIGN = [("conv-fft", "batch"), ("conv-fft", "spatial")]
TESTED = [(op, s) for s in SHARDINGS for op in OPS if (op, s) not in KNOWN_FAILING]


def _run_helper(sharding: str, cases: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the helper sets it
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.Popen(
        [sys.executable, str(HELPER), sharding, *cases],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture(scope="module")
def results() -> dict[tuple[str, str], dict]:
    """Every tested case, plus the data-parallel model and the pool geometries, compiled in
    one process per sharding (the two run side by side)."""
    runs = {
        s: _run_helper(
            s,
            [op for op, t in TESTED if t == s]
            + (["model"] if s == "batch" else [])
            + list(POOL_CASES),
        )
        for s in SHARDINGS
    }
    out = {}
    for sharding, proc in runs.items():
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{sharding}: {stderr[-3000:]}"
        for line in stdout.splitlines():
            result = json.loads(line)
            out[result["case"], result["sharding"]] = result
    return out


# --- conv


def test_every_case_is_tested_or_known_failing():
    assert set(KNOWN_FAILING) <= {(op, s) for op in OPS for s in SHARDINGS}
    assert len(TESTED) + len(KNOWN_FAILING) == len(OPS) * len(SHARDINGS)


@pytest.mark.parametrize("op, sharding", TESTED)
def test_sharded_gradient_equals_unsharded_without_all_gather(op, sharding, results):
    result = results[op, sharding]
    assert "error" not in result, result["error"]
    assert result["rel_err"] <= RTOL, result
    if (op, sharding) not in GATHERS_BY_DESIGN:
        gathers = result["all_gathers"]
        assert gathers == [], f"{op} sharded along {sharding}: {gathers}"


def test_auto_keeps_off_fft_on_several_devices_and_says_why():
    code = (
        "import jaxconv; c = jaxconv.explain_method((8, 3, 64, 64), (8, 3, 3, 3), padding=1); "
        "print(c.method); print(c)"
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert out.splitlines()[0] != "fft"
    assert "4 devices: XLA does not partition this method" in out


def test_data_parallel_model_gradients_equal_single_device(results):
    """conv -> relu -> max_pool -> conv -> avg_pool with default methods: the gradients of
    all three parameters with the batch split over 4 devices equal the single-device ones."""
    result = results["model", "batch"]
    assert "error" not in result, result["error"]
    assert result["rel_err"] <= RTOL, result


def test_the_hlo_scan_finds_all_gathers():
    hlo = """
      %all-gather.3 = f32[8,3,70,70]{3,2,1,0} all-gather(f32[2,3,70,70]{3,2,1,0} %p), dimensions={0}
      %ags = (u8[2,8,16,32]{3,2,1,0}, u8[2,8,64,32]{3,2,1,0}) all-gather-start(u8[2,8,16,32] %w)
      %cp = f32[8,3,18,64]{3,2,1,0} collective-permute(f32[8,3,18,64]{3,2,1,0} %x)
    """
    assert all_gathers(hlo) == [
        "all-gather f32[8,3,70,70]",
        "all-gather-start (u8[2,8,16,32], u8[2,8,64,32])",
    ]


# --- pool


@pytest.mark.parametrize("sharding", SHARDINGS)
@pytest.mark.parametrize("name", [n for n in POOL_CASES if n != "unpool"])
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
