"""The examples in the docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "jaxconv._conv",
    "jaxconv._conv_vjp",
    "jaxconv._conv_transpose",
    "jaxconv._general",
    "jaxconv._shapes",
    "jaxconv.reference",
    "jaxconv._pool",
    "jaxconv._methods.auto",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
