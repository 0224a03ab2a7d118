"""The documentation site: its pages cover the public API and every notebook, and it builds.

The site is ``mkdocs.yml`` + ``docs/``: mkdocs-material, an API reference that mkdocstrings
generates from the public docstrings, and the notebooks, which mkdocs-jupyter executes
during the build so their pages carry the figures. The build test runs ``mkdocs build
--strict`` (warnings are errors) and needs the ``docs`` extra; without it, it skips. The
other tests only read files and always run.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jaxconv
import jaxconv.reference
import jaxconv.testing

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
DIRECTIVE = re.compile(r"^::: (\S+)\s*$", re.MULTILINE)
# Figures each notebook draws (tests/test_notebooks.py checks the same numbers).
FIGURES = {
    "01_conv_backward": 3,
    "02_pool_backward": 4,
    "03_strides_padding_dilation_groups": 4,
    "04_fast_methods": 3,
    "05_train_a_cnn": 4,
}
DOCS_PACKAGES = (
    "mkdocs",
    "material",
    "mkdocstrings",
    "mkdocstrings_handlers.python",
    "mkdocs_jupyter",
)


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def test_api_page_documents_exactly_the_public_names():
    """One ``::: jaxconv.NAME`` per name in ``jaxconv.__all__``: public names only, so the
    reference survives any reshuffle of the private modules, and a new export needs a line."""
    documented = DIRECTIVE.findall((DOCS / "api" / "jaxconv.md").read_text(encoding="utf-8"))
    assert len(documented) == len(set(documented)), "a name is documented twice"
    assert sorted(documented) == sorted(f"jaxconv.{name}" for name in jaxconv.__all__)


@pytest.mark.parametrize("module", ["reference", "testing"])
def test_module_pages_document_their_public_modules(module):
    text = (DOCS / "api" / f"{module}.md").read_text(encoding="utf-8")
    assert DIRECTIVE.findall(text) == [f"jaxconv.{module}"]


def test_every_notebook_is_in_the_nav_and_on_the_home_page():
    assert NOTEBOOKS == list(FIGURES)
    nav = re.findall(r"^\s*- (notebooks/\S+\.ipynb)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    assert nav == [f"notebooks/{name}.ipynb" for name in NOTEBOOKS]
    home = (DOCS / "index.md").read_text(encoding="utf-8")
    for name in NOTEBOOKS:
        assert f"(notebooks/{name}.ipynb)" in home, name
    # docs/notebooks is the top-level folder itself (a link), not a copy that could go stale.
    assert (DOCS / "notebooks").resolve() == (ROOT / "notebooks").resolve()


@pytest.mark.slow
@pytest.mark.skipif(
    not all(_has(m) for m in DOCS_PACKAGES), reason='needs the docs extra: pip install ".[docs]"'
)
def test_site_builds_strictly_with_api_and_executed_notebooks(tmp_path):
    site = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the kernel draws inline
    env["NO_MKDOCS_2_WARNING"] = "1"  # mkdocs-material's banner about its successor
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]

    # The API reference: an entry for every public name of the three modules.
    pages = {
        jaxconv: site / "api" / "jaxconv" / "index.html",
        jaxconv.reference: site / "api" / "reference" / "index.html",
        jaxconv.testing: site / "api" / "testing" / "index.html",
    }
    for module, page in pages.items():
        html = page.read_text(encoding="utf-8")
        for name in module.__all__:
            assert f'id="{module.__name__}.{name}"' in html, (page, name)
    # ... rendered from the docstrings: every public function's Args became a table.
    functions = [n for n in jaxconv.__all__ if not isinstance(getattr(jaxconv, n), type)]
    assert pages[jaxconv].read_text(encoding="utf-8").count("Parameters:") >= len(functions)

    # Each notebook page: executed, without errors, with its figures inline.
    for name, count in FIGURES.items():
        html = (site / "notebooks" / name / "index.html").read_text(encoding="utf-8")
        images = re.findall(r'<img[^>]+src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
        assert len(images) >= count, f"{name}: {len(images)} figures on the page"
        assert all(len(data) > 5000 for data in images), name
        # No cell wrote to stderr: no warning, no traceback (the build stops on errors).
        assert 'data-mime-type="application/vnd.jupyter.stderr">' not in html, name
        verdict = r"test accuracy" if name == "05_train_a_cnn" else r" OK\b"
        assert re.search(verdict, html), name  # the cells' printed output is on the page
    assert (site / "index.html").exists() and (site / "search" / "search_index.json").exists()
