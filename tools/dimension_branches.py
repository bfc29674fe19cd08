"""Counts the branches of src/cnn_factory that ask whether data is 2-D or 3-D.

    python tools/dimension_branches.py           # the count
    python tools/dimension_branches.py --list    # each branch: file, line, condition

A branch is an `if`/`elif`/`while`, a conditional expression or a comprehension's `if` whose
condition reads `.volumes` / `.volume` (cfg.volumes, spec.volume), an `ndim`, a `dims`, or
compares the `len()` of a size, spacing or shape with 2 or 3. Images and volumes share one
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
    """Whether a condition reads the number of spatial dimensions."""
    for node in ast.walk(test):
        if isinstance(node, ast.Attribute) and node.attr in ("volumes", "volume", "ndim", "dims"):
            return True
        if isinstance(node, ast.Name) and node.id in ("ndim", "dims", "volumes"):
            return True
        if isinstance(node, ast.Compare) and _len_of_size(node):
            return True
    return False


def _len_of_size(node: ast.Compare) -> bool:
    sides = [node.left, *node.comparators]
    lengths = [
        s for s in sides if isinstance(s, ast.Call) and isinstance(s.func, ast.Name) and s.func.id == "len" and s.args
    ]
    numbers = [s for s in sides if isinstance(s, ast.Constant) and s.value in (2, 3)]  # spatial axes, not counts
    return bool(numbers) and any(any(word in ast.unparse(c.args[0]) for word in SIZES) for c in lengths)


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
