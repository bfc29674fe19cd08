"""The usage examples in the library's module docstrings call functions and classes as they are:
every call to a name of the module is checked against its signature (argument count, keywords)."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import textwrap

import pytest

import cnn_factory

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(cnn_factory.__path__, "cnn_factory.") if m.name != "cnn_factory.__main__"
)  # it runs the command


def example_calls(module) -> list[ast.Call]:
    """Calls in the docstring's indented example block (lines starting with four spaces)."""
    doc = inspect.getdoc(module) or ""
    block = "\n".join(line for line in doc.splitlines() if line.startswith("    ") or not line.strip())
    try:
        tree = ast.parse(textwrap.dedent(block).replace("...", "None"))
    except SyntaxError:  # an example that is not whole statements: a shape, a folder layout
        return []
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_match_the_signatures(name):
    module = importlib.import_module(name)
    for call in example_calls(module):
        target = getattr(module, call.func.id, None)
        if not callable(target) or getattr(target, "__module__", "").split(".")[0] != "cnn_factory":
            continue
        signature = inspect.signature(target)
        args = [None] * len(call.args)
        kwargs = {k.arg: None for k in call.keywords if k.arg}
        try:
            signature.bind(*args, **kwargs)
        except TypeError as err:
            pytest.fail(f"{name}: the docstring's `{ast.unparse(call)}` does not fit {call.func.id}{signature}: {err}")
