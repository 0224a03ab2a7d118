"""The ``models`` benchmark (``jaxconv/_bench/models.py``): its networks, and its quick run.

The quick run is also the correctness check the benchmark rests on: the same network code on
jaxconv's ops and on lax's ops (and on PyTorch's, when installed) must give the same loss and
the same gradient for every parameter, in both layouts -- never how fast anything was.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxconv._bench import models
from jaxconv._bench import networks as nets
from jaxconv._bench.suite import NullProgress, Options

# At smoke size the contenders differ by float32 rounding only (~1e-6): no ReLU kink flips
# in a batch of two; a wrong gradient is off by O(1).
AGREE = 1e-4


@pytest.fixture(scope="module")
def quick_tables():
    with models.settings():  # every network, both layouts, the breakdown
        return models.run(Options(quick=True, repeats=1), NullProgress())


def _table(tables, title_part):
    (table,) = [t for t in tables if title_part in t.title]
    return table


# --------------------------------------------------------------------------- networks


@pytest.mark.parametrize(
    ("key", "convs", "kinds"),
    [
        # stem + 6 blocks x (expand, depthwise, project) + the final 1x1
        ("mobilenet", 20, {"stem", "1x1", "dw 3x3", "dw 3x3/2", "norm/act", "pool", "head"}),
        # stem + 6 blocks x (7x7 depthwise, expand, project) + 2 downsampling convolutions
        ("convnext", 21, {"stem", "dw 7x7", "1x1", "dense 2x2/2", "norm/act", "pool", "head"}),
        # stem + 6 blocks x 2 + 2 shortcuts
        ("resnet", 15, {"stem", "dense 3x3", "dense 3x3/2", "1x1", "norm/act", "pool", "head"}),
    ],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_recorded_layers_by_hand(key, convs, kinds, channels_last):
    spec = nets.Spec.full()
    net = nets.network(key, spec)
    params = nets.to_layout(net.init(0), channels_last)
    x, _ = nets.inputs(spec, channels_last=channels_last)
    calls = nets.record(net, nets.jaxconv_ops(channels_last), params, x)
    assert sum(c.op == "conv" for c in calls) == convs
    assert set(nets.kinds_in_order(calls, channels_last)) == kinds
    first = calls[0]
    assert first.op == "conv" and first.shapes[0] == x.shape


def test_record_sees_the_mobilenet_shapes():
    calls = nets.record(
        net := nets.network("mobilenet"), nets.lax_ops(), net.init(0), nets.inputs(net.spec)[0]
    )
    convs = [c for c in calls if c.op == "conv"]
    # the first block: 1x1 expand 16 -> 96 at 32x32, 3x3/2 depthwise, 1x1 project 96 -> 24
    assert convs[1].shapes[:2] == ((32, 16, 32, 32), (96, 16, 1, 1))
    assert convs[2].shapes[:2] == ((32, 96, 32, 32), (96, 1, 3, 3))
    assert dict(convs[2].config) == {"groups": 96, "padding": 1, "stride": 2}
    assert convs[3].shapes[:2] == ((32, 96, 16, 16), (24, 96, 1, 1))


def test_network_rejects_unknown_name():
    with pytest.raises(ValueError, match="`name` must be one of mobilenet, convnext, resnet"):
        nets.network("vgg")


def test_grad_error_sees_a_wrong_gradient():
    rng = np.random.default_rng(0)
    tree = {"a": rng.standard_normal((4, 3)), "b": [rng.standard_normal(5)]}
    assert models.grad_error(tree, tree) == 0.0
    off = jax.tree_util.tree_map(lambda a: a, tree)
    off["b"][0] = off["b"][0] * 1.01
    assert models.grad_error(off, tree) == pytest.approx(0.01)


def test_to_channels_first_undoes_to_layout():
    params = nets.network("resnet", nets.Spec.quick()).init(0)
    back = models.to_channels_first(nets.to_layout(params, True))
    for a, b in zip(
        jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params), strict=True
    ):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- quick run


def test_jaxconv_and_lax_networks_agree(quick_tables):
    results = _table(quick_tables, "train step time").data["results"]
    assert [r["network"] for r in results] == list(nets.NETWORKS)
    for r in results:
        for layout in models.LAYOUTS:
            for kind in ("lax", "jaxconv"):
                assert r["errors"][f"{kind} {layout}"] < AGREE, (r["name"], kind, layout)
        assert not r["disagree"]


def test_torch_twins_agree(quick_tables):
    pytest.importorskip("torch")
    for r in _table(quick_tables, "train step time").data["results"]:
        assert r["errors"]["torch"] < AGREE, r["name"]
        assert r["ms"]["torch"] > 0


def test_step_and_memory_tables(quick_tables):
    step = _table(quick_tables, "train step time")
    assert step.columns[:6] == [
        "network",
        "lax ms",
        "jaxconv ms",
        "torch ms",
        "lax/jaxconv",
        "torch/jaxconv",
    ]
    assert [row[0] for row in step.rows] == [
        f"{name} {layout}"
        for name in ("MobileNetV2", "ConvNeXt", "ResNet")
        for layout in models.LAYOUTS
    ]
    for row in step.rows:
        assert row[1] > 0 and row[2] > 0 and row[4] == pytest.approx(row[1] / row[2])
    assert step.passed is None  # quick: goals not judged
    memory = _table(quick_tables, "peak memory")
    for row in memory.rows:
        lax_mb, jaxconv_mb, ratio = row[1:4]
        assert lax_mb > 0 and jaxconv_mb > 0 and ratio == pytest.approx(jaxconv_mb / lax_mb)


def test_breakdown_covers_every_layer(quick_tables):
    for name, key in (("MobileNetV2", "mobilenet"), ("ConvNeXt", "convnext"), ("ResNet", "resnet")):
        table = _table(quick_tables, f"{name} NCHW layer breakdown")
        net = nets.network(key, nets.Spec.quick())
        calls = nets.record(net, nets.lax_ops(), net.init(0), nets.inputs(net.spec)[0])
        kinds = {row[0]: row for row in table.rows}
        assert kinds["sum of layers"][1] == len(calls)
        assert sum(
            row[1] for k, row in kinds.items() if k in set(nets.kinds_in_order(calls, False))
        ) == len(calls)
        for layer in table.data["layers"]:
            assert max(layer["errors"].values()) < AGREE, layer["label"]
        assert "direct" in kinds["stem"][-1] or "fft" in kinds["stem"][-1]


def test_wrapper_script_rejects_unknown_network(capsys):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_models.py"
    spec = importlib.util.spec_from_file_location("jaxconv_bench_models_script", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    assert module.main(["--networks", "vgg"]) == 2
    assert "unknown network or layout: ['vgg']" in capsys.readouterr().err
