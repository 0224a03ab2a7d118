"""Smoke test of ``benchmarks/bench_pool.py``: the ``--quick`` run works end to end and every
contender computed the gradient ``jax.grad`` of ``lax`` computes (never how fast)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pool.py"


def _load():
    name = "jaxconv_bench_pool"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_quick_run_prints_table_and_goal_line(capsys, tmp_path):
    bench = _load()
    out_json = tmp_path / "bench.json"
    assert bench.main(["--quick", "--repeats", "1", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = [c.strip() for c in next(ln for ln in lines if ln.startswith("| case")).split("|")]
    assert header[1:-1] == [
        "case",
        "jaxconv ms",
        "lax ms",
        "torch ms",
        "lax/jaxconv",
        "goal",
        "torch/jaxconv",
        "max err",
    ]
    rows = [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| case")]
    assert len(rows) == len(bench.cases(quick=True)) == 6
    assert any(ln.startswith(("PASS", "FAIL")) and "--quick" in ln for ln in lines)
    payload = json.loads(out_json.read_text())
    for result in payload["results"]:
        for err in result["max_rel_err_vs_lax"].values():
            assert err <= 1e-5
