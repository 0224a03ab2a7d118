"""The teaching notebooks run, and each ``.ipynb`` matches its jupytext ``.py`` twin.

Each notebook is kept as a pair: ``notebooks/NAME.py`` in jupytext's "percent" format (the
reviewable text; ``# %%`` starts a code cell, ``# %% [markdown]`` a markdown cell) and
``notebooks/NAME.ipynb``, generated from it with ``jupytext --to ipynb`` and committed
without outputs. These tests parse both formats themselves (no jupytext needed), so the
pair cannot drift apart, and execute the ``.py`` -- whose cells assert every claim the
notebook makes.
"""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PAIRS = sorted(NOTEBOOKS.glob("*.ipynb"))
MARKER = re.compile(r"^# %%(?P<rest>.*)$")


def _strip_blank(lines: list[str]) -> list[str]:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return lines


def percent_cells(text: str) -> list[tuple[str, str]]:
    """``(cell_type, source)`` for each cell of a jupytext percent-format script."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        m = MARKER.match(line)
        if m:
            kind = "markdown" if m.group("rest").strip().startswith("[markdown]") else "code"
            cells.append((kind, []))
        elif cells:  # lines before the first marker are jupytext's YAML header
            cells[-1][1].append(line)
    out = []
    for kind, lines in cells:
        if kind == "markdown":  # markdown lines are commented out: "# text" or "#"
            assert all(ln == "#" or ln.startswith("# ") or not ln for ln in lines), lines
            lines = [ln[2:] for ln in lines]
        out.append((kind, "\n".join(_strip_blank(lines))))
    return out


def ipynb_cells(nb: dict) -> list[tuple[str, str]]:
    """``(cell_type, source)`` for each cell of a parsed ``.ipynb``."""
    out = []
    for cell in nb["cells"]:
        source = cell["source"]
        text = "".join(source) if isinstance(source, list) else source
        out.append((cell["cell_type"], text.strip("\n")))
    return out


def test_there_are_notebooks():
    assert PAIRS, f"no .ipynb under {NOTEBOOKS}"


def test_percent_parser_on_a_known_script():
    text = (
        "# ---\n# jupyter: {}\n# ---\n\n"
        "# %% [markdown]\n# # Title\n#\n# Body\n\n"
        "# %%\nx = 1\n\n\ny = 2\n\n"
    )
    assert percent_cells(text) == [("markdown", "# Title\n\nBody"), ("code", "x = 1\n\n\ny = 2")]


@pytest.mark.parametrize("ipynb", PAIRS, ids=lambda p: p.stem)
def test_ipynb_matches_its_py_and_has_no_outputs(ipynb: Path):
    py = ipynb.with_suffix(".py")
    assert py.exists(), f"{ipynb.name} has no jupytext twin {py.name}"
    nb = json.loads(ipynb.read_text(encoding="utf-8"))
    from_py, from_nb = percent_cells(py.read_text(encoding="utf-8")), ipynb_cells(nb)
    assert [k for k, _ in from_nb] == [k for k, _ in from_py], "cell types differ"
    for i, ((_, a), (_, b)) in enumerate(zip(from_py, from_nb, strict=True)):
        assert a == b, (
            f"cell {i} of {ipynb.name} differs from {py.name}: regenerate it with "
            f"`jupytext --to ipynb {py.relative_to(NOTEBOOKS.parent)}`"
        )
    assert any(k == "code" for k, _ in from_py)
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"cell {i} of {ipynb.name} has outputs"
            assert cell.get("execution_count") is None, f"cell {i} was executed"
    assert nb["metadata"].get("jupytext", {}).get("formats") == "ipynb,py:percent"


@pytest.mark.parametrize("ipynb", PAIRS, ids=lambda p: p.stem)
def test_notebook_runs(ipynb: Path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the notebook must not depend on the working directory
    namespace = runpy.run_path(str(ipynb.with_suffix(".py")), run_name="__notebook__")
    out = capsys.readouterr().out
    assert "OK" in out
    if ipynb.stem == "backprop_through_conv":
        # The lecture's numbers, re-checked from outside the notebook.
        assert namespace["y"].shape == (1, 6, 28, 28)
        assert namespace["dx_as_conv"].shape == (1, 3, 32, 32)
        assert namespace["dw_as_conv"].shape == (6, 3, 5, 5)
        assert out.count(" OK ") >= 25  # every check() printed its verdict
