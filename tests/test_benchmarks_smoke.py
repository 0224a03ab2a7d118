"""Smoke test of ``benchmarks/bench_conv.py``: the ``--quick`` run works end to end.

It checks that the table, the goal line and the JSON come out, and that every contender
computed the same gradients as ``jax.grad`` of ``lax`` -- never how fast anything was
(speed goals live in the benchmark itself, run on demand).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import jax
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_conv.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    # Imported by path: benchmarks/ is not a package. Registered in sys.modules before
    # executing, as dataclasses need to find the module of the classes they decorate.
    name = "jaxconv_bench_conv"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_quick_run_prints_table_and_goal_line(bench, capsys, tmp_path):
    out_json = tmp_path / "bench.json"
    status = bench.main(["--quick", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert status == 0  # without --check a missed goal is reported, not an error

    lines = out.splitlines()
    header = [c.strip() for c in next(ln for ln in lines if ln.startswith("| case")).split("|")]
    assert header[1:-1] == [
        "case", "direct ms", "auto ms", "lax ms", "torch ms",
        "direct/lax", "auto/lax", "direct/torch", "max err",
    ]
    rows = {
        cells[1]: cells[2:-1]
        for ln in lines
        if ln.startswith("| ") and not ln.startswith("| case")
        for cells in [[c.strip() for c in ln.split("|")]]
    }
    names = [case.name for case in bench.cases(quick=True)]
    assert list(rows) == [*names, "geo-mean"]
    # PyTorch runs when it is installed and has the device JAX runs on (CPU, or CUDA).
    has_torch = (
        importlib.util.find_spec("torch") is not None
        and bench._torch_device(jax.devices()[0].platform)[0] is not None
    )
    # float32; GPUs may run float32 convolutions as TF32 (the benchmark allows the same).
    max_err = 2e-3 if jax.default_backend() == "cpu" else 2e-2
    for name in names:
        direct, auto, lax_ms, torch_ms = rows[name][:4]
        for cell in (direct, auto, lax_ms):
            assert float(cell) > 0.0
        assert (torch_ms != "n/a") == has_torch
        assert float(rows[name][-1]) <= max_err  # gradients agree with lax
    assert float(rows["geo-mean"][4]) > 0.0
    assert re.search(
        r"^(PASS|FAIL): geo-mean jaxconv\(direct\)/lax = \d+\.\d{3} \(goal <= 1\.05\), "
        r"worst case .+ = \d+\.\d{3} \(goal <= 1\.15\)",
        out,
        re.MULTILINE,
    )

    data = json.loads(out_json.read_text())  # strict JSON: no NaN
    assert [r["case"]["name"] for r in data["results"]] == names
    for r in data["results"]:
        assert len(r["samples_ms"]["lax"]) == 2  # --quick takes 2 samples per contender
        assert set(r["ms"]) == {"direct", "auto", "lax"} | ({"torch"} if has_torch else set())
    assert isinstance(data["goal"]["passed"], bool)


def test_quick_shapes_keep_the_issue_cases_structure(bench):
    # The smoke run must exercise what the real run does: same kernels, strides, groups, rank.
    for small, big in zip(bench.cases(quick=True), bench.cases(quick=False), strict=True):
        assert small.name == big.name
        assert small.w_shape[2:] == big.w_shape[2:]
        assert (small.stride, small.padding, small.ndim) == (big.stride, big.padding, big.ndim)
        assert (small.groups == 1) == (big.groups == 1)


def test_bad_arguments_exit_with_a_message(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--repeats", "0"])
    assert "--repeats must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--device", "tpu"])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err
