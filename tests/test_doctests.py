"""The examples in the docstrings run and print what they say.

Every module of the package is doctested (found by walking it, so a moved or new module is
never left out), and every public function shows at least one example.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest

import jaxconv

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(jaxconv.__path__, "jaxconv.")
    if not m.name.startswith(("jaxconv._bench", "jaxconv.__main__"))
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0


@pytest.mark.parametrize(
    "name", [n for n in jaxconv.__all__ if inspect.isfunction(getattr(jaxconv, n))]
)
def test_every_public_function_has_an_example(name):
    assert ">>>" in (getattr(jaxconv, name).__doc__ or ""), f"jaxconv.{name} shows no example"
