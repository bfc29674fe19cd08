"""Counts the branches of src/cnn_factory that ask whether data is 2-D or 3-D.

    python tools/dimension_branches.py           # the count
    python tools/dimension_branches.py --list    # each branch: file, line, condition

A branch is an `if`/`elif`/`while`, a conditional expression or a comprehension's `if` whose
condition reads `.volumes` / `.volume` (cfg.volumes, spec.volume), or compares a number of axes
(an `ndim`, a `dims`, the `len()` of a size, spacing or shape) with a number that tells images
from volumes (2 to 5: spatial axes, or with batch and channels). Code that works for any number
of axes compares them with each other (`x.ndim != len(window) + 2`) and is not counted. Images and volumes share one
path where only the number of spatial dimensions differs; such a question belongs in a few
places, which are left out of the count: the readers of each file format (images.py, volumes.py,
data/label_maps.py), what brings a row onto the network's grid (data/grids.py: scale or spacing)
and the spacing rule (data/resample.py), and the network's choice of layers (layers.py).
tests/test_dimension_branches.py checks what the count counts.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cnn_factory"
LEFT_OUT = {"images.py", "volumes.py", "data/label_maps.py", "data/grids.py", "data/resample.py", "layers.py"}
SIZES = ("size", "spacing", "shape")


def asks_dimensions(test: ast.expr) -> bool:
    """Whether a condition asks whether data is 2-D or 3-D."""
    for node in ast.walk(test):
        if isinstance(node, ast.Attribute) and node.attr in ("volumes", "volume"):
            return True
        if isinstance(node, ast.Name) and node.id == "volumes":
            return True
        if isinstance(node, ast.Compare) and _axes_against_a_number(node):
            return True
    return False


def _axes_against_a_number(node: ast.Compare) -> bool:
    sides = [node.left, *node.comparators]
    return any(_telling(s) for s in sides) and any(_counts_axes(s) for s in sides)


def _telling(side: ast.expr) -> bool:
    """A number (or a tuple of them) that tells images from volumes: 2 to 5 axes."""
    items = side.elts if isinstance(side, ast.Tuple) else [side]
    return bool(items) and all(isinstance(i, ast.Constant) and i.value in (2, 3, 4, 5) for i in items)


def _counts_axes(side: ast.expr) -> bool:
    if isinstance(side, ast.Attribute) and side.attr in ("ndim", "dims"):
        return True
    if isinstance(side, ast.Name) and side.id in ("ndim", "dims"):
        return True
    is_len = isinstance(side, ast.Call) and isinstance(side.func, ast.Name) and side.func.id == "len" and side.args
    return bool(is_len) and any(word in ast.unparse(side.args[0]) for word in SIZES)  # type: ignore[union-attr]


def conditions(tree: ast.AST) -> Iterator[ast.expr]:
    for node in ast.walk(tree):
        if isinstance(node, ast.If | ast.While | ast.IfExp):
            yield node.test
        elif isinstance(node, ast.comprehension):
            yield from node.ifs


def branches(package: Path = PACKAGE) -> list[tuple[str, int, str]]:
    """(file, line, condition) of every branch on dimensions outside LEFT_OUT."""
    found = []
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        if name in LEFT_OUT:
            continue
        tree = ast.parse(path.read_text(), str(path))
        found += [(name, t.lineno, ast.unparse(t)) for t in conditions(tree) if asks_dimensions(t)]
    return sorted(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="each branch, not only the count")
    args = parser.parse_args()
    found = branches()
    if args.list:
        for name, line, test in found:
            print(f"{name}:{line}: {test}")
    modules = len({name for name, _, _ in found})
    print(f"{len(found)} branches on dimensions in {modules} modules")


if __name__ == "__main__":
    main()
