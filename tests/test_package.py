"""The package's face: exports, what `import jaxconv` pulls in, the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import jaxconv
from jaxconv import _cli, _verify


def test_public_names_exist():
    for name in jaxconv.__all__:
        assert callable(getattr(jaxconv, name)), name
    assert (Path(jaxconv.__file__).parent / "py.typed").exists()


def test_import_pulls_in_no_cli_or_test_dependencies():
    code = (
        "import sys, jaxconv; "
        "mods = ('hypothesis', 'rich', 'torch', 'scipy', 'flax'); "
        "print(sorted(m for m in mods if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_verify_runs_and_writes_json(tmp_path, capsys):
    path = tmp_path / "out.json"
    assert _cli.main(["verify", "--examples", "12", "--seed", "3", "--json", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "all 12 configurations agree" in printed
    data = json.loads(path.read_text())
    assert data["examples"] == 12 and data["failed"] == 0
    ops = {row["op"] for row in data["summary"]}
    assert {"conv", "conv_transpose", "conv_input_grad", "conv_weight_grad"} <= ops


def test_verify_plan_covers_every_public_op_at_default_size():
    ops = set(_verify.plan(240))
    assert set(_verify.CONV_OPS) <= ops
    assert {
        "max_pool",
        "avg_pool",
        "lp_pool",
        "adaptive_avg_pool",
        "adaptive_max_pool",
        "max_unpool",
    } <= ops
    assert len(_verify.plan(240)) >= 200


def test_verify_exits_nonzero_on_a_mismatch(monkeypatch, capsys):
    def broken_sweep(seed, examples, workers=1):
        yield _verify.CaseResult("conv", "1x1x3 1x1x2", {"float64": 0.5}, 0.5, False)

    monkeypatch.setattr(_verify, "sweep", broken_sweep)
    assert _cli.main(["verify", "--examples", "1"]) == 1
    assert "1 of 1 configurations FAILED" in capsys.readouterr().out


def test_verify_rejects_zero_examples(capsys):
    assert _cli.main(["verify", "--examples", "0"]) == 2
    assert "`--examples` must be >= 1" in capsys.readouterr().err


def test_same_cases_whatever_the_worker_count():
    a = sorted((r.op, r.config) for r in _verify.sweep(7, 6, workers=1))
    b = sorted((r.op, r.config) for r in _verify.sweep(7, 6, workers=2))
    assert a == b


@pytest.mark.parametrize("argv", [["--help"], ["verify", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        _cli.main(argv)
    assert e.value.code == 0
    assert "verify" in capsys.readouterr().out
