"""``jaxconv bench`` (``jaxconv._bench``): the quick suite runs end to end and its outputs are
right; bad arguments fail in one line before anything runs; the ``benchmarks/`` wrappers
still work.

These check that every contender computed what ``jax.grad`` of ``lax`` computes and that the
tables, JSON and chart come out -- never how fast anything was (speed goals are judged by
the benchmarks themselves, run on demand). The suites and the command are private modules,
tested here by name.
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
import pytest

from jaxconv._bench import cli, conv, methods, pool
from jaxconv._bench.suite import torch_for

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HAS_MODELS = importlib.util.find_spec("jaxconv._bench.models") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
# PyTorch is a column when it is installed and has the device JAX runs on (CPU, or CUDA).
HAS_TORCH = torch_for(jax.devices()[0].platform)[0] is not None
# float32; GPUs may run float32 convolutions as TF32 (the suites allow the same).
CONV_TOL = 2e-3 if jax.default_backend() == "cpu" else 2e-2


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
        # The models suite has tests of its own (tests/test_bench_models.py); running it here
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


# --------------------------------------------------------------------------- bad arguments


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


# --------------------------------------------------------------------------- wrappers


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
