"""``jaxconv bench`` (``jaxconv._bench``): the quick suites run end to end and their outputs
are right; bad arguments fail in one line before anything runs; the ``benchmarks/`` wrappers
still work.

These check that every contender computed what ``jax.grad`` of ``lax`` computes and that the
tables, JSON and chart come out -- never how fast anything was (speed goals are judged by
the benchmarks themselves, run on demand). The ``models`` suite (``_bench/models.py``) has a
section of its own: its networks, and its quick run, which is also the correctness check
the benchmark rests on: the same network code on jaxconv's ops and on lax's ops (and on
PyTorch's, when installed) must give the same loss and the same gradient for every
parameter, in both layouts. The suites and the command are private modules, tested here by
name.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jax
import numpy as np
import pytest

from jaxconv._bench import cli, conv, methods, models, pool
from jaxconv._bench import networks as nets
from jaxconv._bench.suite import NullProgress, Options, torch_for

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HAS_MODELS = importlib.util.find_spec("jaxconv._bench.models") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
# PyTorch is a column when it is installed and has the device JAX runs on (CPU, or CUDA).
HAS_TORCH = torch_for(jax.devices()[0].platform)[0] is not None
# float32; GPUs may run float32 convolutions as TF32 (the suites allow the same).
CONV_TOL = 2e-3 if jax.default_backend() == "cpu" else 2e-2
# Models at smoke size: the contenders differ by float32 rounding only (~1e-6): no ReLU
# kink flips in a batch of two; a wrong gradient is off by O(1).
AGREE = 1e-4


# --- conv, pool and methods suites: the quick run


def _run(argv: list[str], main=cli.main) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


def _no_nan(constant: str) -> None:
    raise ValueError(f"not strict JSON: {constant}")


class _Recorder:
    """A Progress that checks every phase advances exactly as often as it announced."""

    phases: list[tuple[str, int, int]] = []

    def __init__(self, progress: Any) -> None:
        del progress

    def start(self, total: int, description: str) -> None:
        self.phases.append((description, total, 0))

    def advance(self, description: str | None = None) -> None:
        name, total, done = self.phases[-1]
        self.phases[-1] = (name, total, done + 1)

    def finish(self) -> None:
        pass


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> dict[str, Any]:
    """One ``jaxconv bench --suite quick --json --plot`` run, shared by the tests below."""
    tmp = tmp_path_factory.mktemp("bench")
    argv = ["--suite", "quick", "--json", str(tmp / "q.json")]
    if HAS_MATPLOTLIB:
        argv += ["--plot", str(tmp / "q.png")]
    with pytest.MonkeyPatch.context() as mp:
        # The models suite has tests of its own (its section below); running it here
        # too would double the suite's most expensive smoke run. That `quick` includes it is
        # checked below without running it.
        mp.setattr(cli, "SUITES", ("conv", "pool", "methods"))
        mp.setattr(cli, "_RichProgress", _Recorder)
        _Recorder.phases = []
        status, out, err = _run(argv)
        phases = list(_Recorder.phases)
    data = json.loads((tmp / "q.json").read_text(), parse_constant=_no_nan)
    return {
        "status": status,
        "out": out,
        "err": err,
        "json": data,
        "tables": {t["title"].split(":")[0]: t for t in data["tables"]},
        "png": tmp / "q.png",
        "phases": phases,
    }


def test_quick_runs_every_suite(quick):
    assert quick["status"] == 0, quick["err"]
    assert list(quick["tables"]) == ["conv", "pool", "methods"]
    assert quick["json"]["options"] == {
        "quick": True,
        "repeats": None,
        "device": "default",
        "torch": True,
    }
    assert quick["json"]["environment"]["device"]["platform"] == jax.devices()[0].platform
    for table in quick["json"]["tables"]:
        assert table["title"] in quick["out"]  # every table printed
        for note in table["notes"]:
            assert note in quick["out"]
        assert all(len(row) == len(table["columns"]) for row in table["rows"])
        assert table["ratios"], table["title"]  # every one of these suites has a chart
        assert all(v is not None and v > 0.0 for v in table["ratios"].values())
    # Every phase a suite announced to the progress bar advanced to its end.
    assert quick["phases"] and all(total == done for _, total, done in quick["phases"])


def test_quick_conv_table(quick):
    table = quick["tables"]["conv"]
    assert table["columns"] == [
        "case",
        "direct ms",
        "auto ms",
        "lax ms",
        "torch ms",
        "direct/lax",
        "auto/lax",
        "direct/torch",
        "max err",
    ]
    rows = {row[0]: dict(zip(table["columns"], row, strict=True)) for row in table["rows"]}
    names = [case.name for case in conv.cases(quick=True)]
    assert list(rows) == [*names, "geo-mean"]
    for name in names:
        row = rows[name]
        assert row["direct ms"] > 0.0 and row["auto ms"] > 0.0 and row["lax ms"] > 0.0
        assert (row["torch ms"] is not None) == HAS_TORCH
        assert row["max err"] <= CONV_TOL  # gradients agree with lax
        assert math.isclose(row["direct/lax"], row["direct ms"] / row["lax ms"])
    assert rows["geo-mean"]["direct/lax"] > 0.0
    assert table["passed"] is None  # quick: timings are not judged, gradients agreed
    assert table["notes"][-1].startswith(("PASS: geo-mean", "FAIL: geo-mean"))
    for result in table["data"]["results"]:
        assert len(result["samples_ms"]["lax"]) == 2  # quick takes 2 samples per contender
        assert set(result["ms"]) == {"direct", "auto", "lax"} | ({"torch"} if HAS_TORCH else set())


def test_quick_pool_table(quick):
    table = quick["tables"]["pool"]
    assert table["columns"][:4] == ["case", "jaxconv ms", "lax ms", "torch ms"]
    assert [row[0] for row in table["rows"]] == [case.name for case in pool.cases(quick=True)]
    assert len(table["rows"]) == 6
    for result in table["data"]["results"]:
        assert result["max_rel_err_vs_lax"]["jaxconv"] <= 1e-6
        assert ("torch" in result["ms"]) == HAS_TORCH


def test_quick_methods_table(quick):
    table = quick["tables"]["methods"]
    listed = table["data"]["methods"]
    assert {"direct", "fft", "shift", "matmul"} <= set(listed)
    assert table["columns"][: 2 + len(listed)] == ["case", "lax ms", *(f"{m} ms" for m in listed)]
    rows = {row[0]: dict(zip(table["columns"], row, strict=True)) for row in table["rows"]}
    assert list(rows) == [case.name for case in methods.cases(quick=True)]
    for row in rows.values():
        assert row["auto pick"] in listed
        assert row[f"{row['auto pick']} ms"] is not None  # auto picks a supported method
        assert row["max err"] <= CONV_TOL  # outputs and gradients agree with lax
    assert rows["31x31 SAME"]["shift ms"] is None  # shift does not take a 31x31 kernel
    assert table["passed"] is None


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")
def test_quick_plot_is_a_png(quick):
    import matplotlib.image

    data = quick["png"].read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    image = matplotlib.image.imread(quick["png"])
    assert image.shape[0] > 200 and image.shape[1] > 200


def test_quick_shapes_keep_the_full_cases_structure():
    # The smoke run must exercise what the real run does: same kernels, strides, groups, rank.
    for small, big in zip(conv.cases(quick=True), conv.cases(quick=False), strict=True):
        assert small.name == big.name
        assert small.w_shape[2:] == big.w_shape[2:]
        assert (small.stride, small.padding, small.ndim) == (big.stride, big.padding, big.ndim)
        assert (small.groups == 1) == (big.groups == 1)
    for p_small, p_big in zip(pool.cases(quick=True), pool.cases(quick=False), strict=True):
        assert (p_small.op, p_small.window, p_small.stride, p_small.padding, p_small.goal) == (
            p_big.op,
            p_big.window,
            p_big.stride,
            p_big.padding,
            p_big.goal,
        )
    full = {case.name: case for case in methods.cases(quick=False)}
    for m_small in methods.cases(quick=True):
        m_big = full[m_small.name]
        assert (m_small.w[2:], m_small.stride, m_small.padding) == (
            m_big.w[2:],
            m_big.stride,
            m_big.padding,
        )
        assert (m_small.groups == 1) == (m_big.groups == 1)
        assert (m_small.groups == m_small.x[1]) == (m_big.groups == m_big.x[1])  # depthwise


# --- bad arguments


def _bad(argv: list[str], main=cli.main) -> str:
    status, out, err = _run(argv, main)
    assert status == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no traceback
    return lines[0]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--repeats", "0"], "--repeats must be >= 1, got 0"),
        (["--repeats", "x"], "argument --repeats: invalid int value: 'x'"),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["--suite", "fast"], "argument --suite: invalid choice: 'fast'"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["--json", "/no/such/dir/out.json"], "--json /no/such/dir/out.json: directory"),
        (["--plot", "/no/such/dir/out.png"], "--plot /no/such/dir/out.png: directory"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, message):
    line = _bad(argv)
    assert line.startswith("jaxconv bench: error: ")
    assert message in line


def test_output_path_that_is_a_directory(tmp_path):
    assert "is a directory" in _bad(["--json", str(tmp_path)])


def test_unwritable_output_directory(monkeypatch, tmp_path):
    # Permission bits do not stop root, who may run this: pretend the check says no.
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False)
    line = _bad(["--json", str(tmp_path / "out.json")])
    assert line.endswith(f"--json {tmp_path / 'out.json'}: not writable")


def test_no_gpu_is_a_usage_error():
    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("this machine has a GPU")
    assert "--device gpu: JAX has no gpu backend here" in _bad(["--device", "gpu"])


def test_plot_without_matplotlib_fails_before_running(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError

    def never(*args, **kwargs):
        raise AssertionError("a suite ran before the arguments were checked")

    for suite in (conv, pool, methods):
        monkeypatch.setattr(suite, "run", never)
    line = _bad(["--suite", "quick", "--plot", str(tmp_path / "x.png")])
    assert "--plot needs matplotlib" in line
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("which", ["quick", "full"])
def test_quick_and_full_run_every_suite(which):
    _, suites = cli._resolve(["--suite", which], "jaxconv bench", None)
    expected = ["conv", "pool", "methods"] + (["models"] if HAS_MODELS else [])
    assert [s.__name__.rsplit(".", 1)[1] for s in suites] == expected
    assert all(callable(s.run) for s in suites)


def test_missing_models_suite(monkeypatch):
    monkeypatch.setitem(sys.modules, "jaxconv._bench.models", None)  # as if not shipped
    line = _bad(["--suite", "models"])
    assert line == (
        "jaxconv bench: error: --suite models: the models suite is not part of this jaxconv version"
    )
    _, suites = cli._resolve(["--suite", "full"], "jaxconv bench", None)
    assert [s.__name__.rsplit(".", 1)[1] for s in suites] == ["conv", "pool", "methods"]


def test_help_lists_every_suite():
    status, out, err = _run(["--help"])
    assert status == 0 and err == ""
    for name in ("quick", "full", *cli.SUITES):
        assert f"\n  {name} " in out
    for option in ("--suite", "--json", "--plot", "--repeats", "--device", "--no-torch"):
        assert option in out


# --- wrappers


def _wrapper(suite: str) -> ModuleType:
    # Imported by path: benchmarks/ is not a package.
    path = ROOT / "benchmarks" / f"bench_{suite}.py"
    spec = importlib.util.spec_from_file_location(f"jaxconv_bench_{suite}_script", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("suite", ["conv", "pool", "methods"])
def test_wrapper_runs_its_suite_only(suite):
    main = _wrapper(suite).main
    status, out, _ = _run(["--help"], main)
    assert status == 0 and f"usage: bench_{suite}.py" in out and "[--suite" not in out
    assert "unrecognized arguments: --suite" in _bad(["--suite", "conv"], main)


def test_pool_wrapper_quick_run(tmp_path):
    status, out, err = _run(
        ["--quick", "--repeats", "1", "--json", str(tmp_path / "p.json")], _wrapper("pool").main
    )
    assert status == 0, err
    (table,) = json.loads((tmp_path / "p.json").read_text())["tables"]
    assert table["title"].startswith("pool:")
    assert table["title"] in out
    assert all(len(r["samples_ms"]["jaxconv"]) == 1 for r in table["data"]["results"])


def test_wrapper_script_rejects_unknown_network(capsys):
    assert _wrapper("models").main(["--networks", "vgg"]) == 2
    assert "unknown network or layout: ['vgg']" in capsys.readouterr().err


# --- models suite


@pytest.fixture(scope="module")
def quick_tables():
    with models.settings():  # every network, both layouts, the breakdown
        return models.run(Options(quick=True, repeats=1), NullProgress())


def _table(tables, title_part):
    (table,) = [t for t in tables if title_part in t.title]
    return table


# --- models suite: networks


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


# --- models suite: the quick run


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
