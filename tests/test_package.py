"""The package's face: exports, what `import jaxconv` pulls in, the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import jaxconv
from jaxconv import _cli
from jaxconv._verify import conv_cases, sweep


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


POOLS = {"max_pool", "avg_pool", "lp_pool", "adaptive_avg_pool", "adaptive_max_pool", "max_unpool"}


def test_verify_plan_covers_every_op_before_repeating_one():
    every = [op.name for op in sweep.ops()]
    methods = {"conv[fft]", "conv[shift]", "conv[matmul]", "conv[im2col]"}
    assert len(every) == len(set(every)) == 15
    assert {"conv", *methods, *conv_cases.CONV_OPS, *POOLS} == set(every)
    assert [op.name for op in sweep.plan(15)] == every
    assert [op.name for op in sweep.plan(5)] == every[:5]
    assert len(sweep.plan(240)) == 240 and {op.name for op in sweep.plan(240)} == set(every)


def test_verify_says_which_ops_a_short_run_covered(capsys):
    assert _cli.main(["verify", "--examples", "2", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "ops covered (2 of 15): conv, conv[fft]" in out
    assert "not covered (raise --examples to 15): conv[shift]" in out


def test_verify_exits_nonzero_on_a_mismatch(monkeypatch, capsys):
    def broken_sweep(seed, examples, workers=1):
        yield conv_cases.CaseResult("conv", "1x1x3 1x1x2", {"float64": 0.5}, 0.5, False)

    monkeypatch.setattr(sweep, "sweep", broken_sweep)
    assert _cli.main(["verify", "--examples", "1"]) == 1
    assert "1 of 1 configurations FAILED" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--examples", "0"], "`--examples` must be >= 1, got 0"),
        (["--seed", "-1"], "`--seed` must be >= 0, got -1"),
        (["--workers", "0"], "`--workers` must be >= 1, got 0"),
        (["--json", "/no/such/dir/x.json"], "`--json`'s directory does not exist: '/no/such/dir'"),
    ],
)
def test_verify_rejects_bad_arguments_up_front(argv, message, monkeypatch, capsys):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the sweep ran before the arguments were checked")

    monkeypatch.setattr(sweep, "sweep", must_not_run)
    assert _cli.main(["verify", *argv]) == 2
    err = capsys.readouterr().err
    assert err == f"jaxconv verify: error: {message}\n"


def test_same_cases_whatever_the_worker_count():
    a = sorted((r.op, r.config) for r in sweep.sweep(7, 6, workers=1))
    b = sorted((r.op, r.config) for r in sweep.sweep(7, 6, workers=2))
    assert a == b


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        _cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"jaxconv {jaxconv.__version__}"


def test_bench_is_a_subcommand(capsys):
    assert _cli.main(["bench", "--suite", "nope"]) == 2
    assert capsys.readouterr().err.startswith("jaxconv bench: error:")
    assert _cli.main(["bench", "--help"]) == 0
    assert "--suite" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--help"], ["verify", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        _cli.main(argv)
    assert e.value.code == 0
    assert "verify" in capsys.readouterr().out
