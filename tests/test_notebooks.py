"""The five teaching notebooks run, draw their figures, and each ``.ipynb`` matches its ``.py``.

Each notebook is kept as a pair: ``notebooks/NAME.py`` in jupytext's "percent" format (the
reviewable text; ``# %%`` starts a code cell, ``# %% [markdown]`` a markdown cell) and
``notebooks/NAME.ipynb``, generated from it with ``jupytext --to ipynb`` and committed
without outputs. These tests parse both formats themselves (no jupytext needed), so the
pair cannot drift apart, and execute the ``.py`` -- whose cells assert every claim the
notebook makes -- headless (matplotlib's Agg backend), then check from outside that it
printed its verdicts, drew its figures (each saved to a PNG here and required to be more
than a blank canvas), ran within the issue's 90 seconds of CPU time, and left the numbers
the notebook's text is about.
"""

from __future__ import annotations

import json
import re
import runpy
import time
from pathlib import Path

import jax
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")  # before pyplot: figures render to memory, never to a screen

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.image import imread  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PAIRS = sorted(NOTEBOOKS.glob("*.ipynb"))
MARKER = re.compile(r"^# %%(?P<rest>.*)$")

# name -> (figures drawn, check() verdicts printed as "... OK"), at least
EXPECTED = {
    "01_conv_backward": (3, 29),
    "02_pool_backward": (4, 12),
    "03_strides_padding_dilation_groups": (4, 37),
    "04_fast_methods": (3, 21),
    "05_train_a_cnn": (4, 0),  # its checks are asserts on the training run
}
CPU_SECONDS = 90  # the bound per notebook, on 2 cores


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


def test_the_five_notebooks_are_there():
    assert [p.stem for p in PAIRS] == list(EXPECTED)


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


def _check_namespace(name: str, ns: dict) -> None:
    """The numbers each notebook's text is about, re-checked from outside."""
    if name == "01_conv_backward":
        assert ns["y"].shape == (1, 6, 28, 28)  # 32x32x3 with six 5x5x3 filters
        assert ns["dx_as_conv"].shape == (1, 3, 32, 32)
        assert ns["dw_as_conv"].shape == (6, 3, 5, 5)
        assert ns["touched"].sum() == 25  # one pixel touched a 5x5 block of each map
    elif name == "02_pool_backward":
        assert np.asarray(ns["y"]).ravel().tolist() == [6.0, 8.0, 3.0, 4.0]
        assert ns["nbytes"]["jaxconv.max_pool"] * 16 == ns["x_big"].nbytes
    elif name == "03_strides_padding_dilation_groups":
        assert ns["dx_s"].shape == (2, 3, 10, 10) and ns["dy_dilated"].shape == (2, 4, 7, 7)
        assert ns["pads"] == ((0, 1), (0, 1))
    elif name == "04_fast_methods":
        assert ns["rel_err"]["direct"] < 1e-5 < 1e-4 < ns["rel_err"]["fft"]
        assert set(ns["timings"]) == {"direct", "fft", "shift", "lax"}
    elif name == "05_train_a_cnn":
        assert ns["acc"] >= 0.95
        assert ns["difference"][:40].max() <= 1e-5 and len(ns["losses"]) == 220


@pytest.mark.parametrize("ipynb", PAIRS, ids=lambda p: p.stem)
def test_notebook_runs_and_draws(ipynb: Path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the notebook must not depend on the working directory
    plt.close("all")
    cpu = time.process_time()
    # Notebooks are user code on optax and friends, which rely on JAX's default promotion
    # rules; conftest's strict rules are for jaxconv's own code.
    try:
        with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
            namespace = runpy.run_path(str(ipynb.with_suffix(".py")), run_name="__notebook__")
        cpu = time.process_time() - cpu
        figures = [plt.figure(n) for n in plt.get_fignums()]
        for k, fig in enumerate(figures):
            fig.savefig(tmp_path / f"figure{k}.png", dpi=60)
    finally:
        plt.close("all")

    min_figures, min_checks = EXPECTED[ipynb.stem]
    out = capsys.readouterr().out
    assert len(re.findall(r" OK\b", out)) >= min_checks, out
    assert len(figures) >= min_figures, f"{ipynb.stem} drew {len(figures)} figures"
    for k in range(len(figures)):
        png = tmp_path / f"figure{k}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = imread(png)
        assert image.shape[0] >= 80 and image.shape[1] >= 200, image.shape
        assert image[..., :3].std() > 0.05, f"figure {k} is a blank canvas"
        assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 16, f"figure {k} is flat"
    assert cpu < CPU_SECONDS, f"{ipynb.stem} took {cpu:.0f} s of CPU time"
    _check_namespace(ipynb.stem, namespace)
