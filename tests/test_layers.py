"""The library's layers import downward only (pyproject.toml's import-linter contracts, run by
`make lint`), and no module imports itself through others: a cycle is an error even inside a layer.
The layer list the docs copy (docs/development.md, the package docstring) is the contract's."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

import cnn_factory
from tests.conftest import ROOT


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    command = [
        str(Path(sys.executable).parent / "lint-imports"),
        "--config",
        str(tree / "pyproject.toml"),
        "--no-cache",
    ]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{tree / 'src'}:{tree}"}
    return subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)


def copy_of_the_code(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for folder in ("src", "stages"):
        shutil.copytree(ROOT / folder, tree / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_contracts_hold_and_fail_on_an_upward_import(tmp_path):
    tree = copy_of_the_code(tmp_path)
    kept = lint_imports(tree)
    assert kept.returncode == 0 and "2 kept, 0 broken" in kept.stdout, kept.stdout + kept.stderr

    leaf = tree / "src" / "cnn_factory" / "losses.py"  # a leaf asking the training loop for something
    leaf.write_text(
        leaf.read_text() + "\n\ndef hook():\n    from cnn_factory.training.fit import fit\n\n    return fit\n"
    )
    broken = lint_imports(tree)
    assert broken.returncode != 0
    assert "cnn_factory.losses -> cnn_factory.training.fit" in broken.stdout, broken.stdout


def contract_layers() -> list[set[str]]:
    """The layers of pyproject.toml's contract, top to bottom, each the set of its modules."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    [layers] = [c["layers"] for c in contracts if c["type"] == "layers"]
    return [{name.strip() for name in layer.split(":")} for layer in layers]


def documented_layers() -> list[set[str]]:
    """The modules column of docs/development.md's layer table, top to bottom."""
    text = (ROOT / "docs" / "development.md").read_text()
    table = text[text.index("| layer | modules | what they do |") :].split("\n\n")[0].splitlines()[2:]
    return [set(re.findall(r"`([^`]+)`", row.split("|")[2])) for row in table]


def docstring_layers() -> list[set[str]]:
    """The package docstring's indented layer list (one layer a line), top to bottom."""
    doc = cnn_factory.__doc__ or ""
    block = doc[doc.index("top to bottom") :].split("\n\n")[1]
    return [set(line.split()) for line in block.splitlines()]


def test_the_docs_list_the_contracts_layers():
    layers = contract_layers()
    assert len(layers) > 10 and "compare" in layers[1]  # parsed, not empty
    assert documented_layers() == layers
    assert docstring_layers() == layers


def cycles(package: str) -> list[list[str]]:
    """Import cycles among the package's modules (function-local imports count), one path each."""
    graph = grimp.build_graph(package, cache_dir=None)
    found, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            found.append(path[path.index(module) :] + [module])
            return
        if module in done:
            return
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            visit(imported, [*path, module])
        done.add(module)

    for module in sorted(graph.modules):
        visit(module, [])
    return found


def test_no_module_imports_itself_through_others():
    assert cycles("cnn_factory") == []


def test_a_cycle_hidden_in_a_function_is_found(tmp_path, monkeypatch):
    package = tmp_path / "knot"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def hook():\n    from knot import high\n\n    return high\n")
    (package / "high.py").write_text("from knot import low\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cycles("knot") == [["knot.high", "knot.low", "knot.high"]]
