"""Reports the library's functions longer than a screen and its constructors with too many parameters.

    python tools/code_shape.py            # one line per finding; exit status 1 when there is any
    python tools/code_shape.py src/cnn_factory/training

A function's length counts from its `def` line (decorators left out) to its last line, docstring
included; a constructor is a class's `__init__` (`self` left out) or, for a dataclass without one,
its fields (ClassVar left out: every other field is a parameter of the generated `__init__`).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LIBRARY = Path(__file__).resolve().parents[1] / "src" / "cnn_factory"
MAX_LINES = 60
MAX_PARAMETERS = 8


def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = node.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    return len(names) - (1 if names and names[0].arg in ("self", "cls") else 0)


def is_dataclass(node: ast.ClassDef) -> bool:
    def name(d: ast.expr) -> str:
        d = d.func if isinstance(d, ast.Call) else d
        return d.attr if isinstance(d, ast.Attribute) else getattr(d, "id", "")

    return any(name(d) == "dataclass" for d in node.decorator_list)


def dataclass_fields(node: ast.ClassDef) -> int:
    fields = [s for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
    return sum(
        1 for f in fields if "ClassVar" not in ast.unparse(f.annotation) and ast.unparse(f.annotation) != "KW_ONLY"
    )


def findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_LINES:
                found.append(f"{path}:{node.lineno}: {node.name}: {lines} lines (at most {MAX_LINES})")
        elif isinstance(node, ast.ClassDef):
            inits = [s for s in node.body if isinstance(s, ast.FunctionDef) and s.name == "__init__"]
            count = parameters(inits[0]) if inits else dataclass_fields(node) if is_dataclass(node) else 0
            if count > MAX_PARAMETERS:
                found.append(
                    f"{path}:{node.lineno}: {node.name}: {count} constructor parameters (at most {MAX_PARAMETERS})"
                )
    return found


def main(folders: list[str]) -> int:
    paths = sorted(p for folder in folders or [str(LIBRARY)] for p in Path(folder).rglob("*.py"))
    found = [line for path in paths for line in findings(path)]
    print("\n".join(found) or "code shape: nothing over the limits")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
