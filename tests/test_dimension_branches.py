"""tools/dimension_branches.py: which conditions count as asking 2-D or 3-D, and which places are left out."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("dimension_branches", ROOT / "tools" / "dimension_branches.py")
assert spec is not None and spec.loader is not None
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def test_branches_on_dimensions_are_counted_and_others_are_not(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "a.py").write_text(
        "if cfg.volumes:\n    pass\n"
        "x = 1 if spec.volume else 2\n"
        "y = [v for v in values if v.ndim == 3]\n"
        "while len(size) == 3:\n    break\n"
        "if len(rows) == 3 or cfg.patch_mode:\n    pass\n"  # not about dimensions
        "if len(sizes) > 1:\n    pass\n"  # several sizes, not the number of axes
        "if x.ndim != len(window) + 2:\n    pass\n"  # any number of axes: compared with each other
        "if dims:\n    pass\n"  # e.g. the axes a flip runs along
    )
    (tmp_path / "volumes.py").write_text("if array.ndim == 3:\n    pass\n")  # a reader: left out
    (tmp_path / "data" / "grids.py").write_text("if spec.volume:\n    pass\n")  # the grid: left out
    found = tool.branches(tmp_path)
    assert [(name, line) for name, line, _ in found] == [("a.py", 1), ("a.py", 3), ("a.py", 4), ("a.py", 5)]


def test_the_tool_reads_the_package():
    names = {path.relative_to(tool.PACKAGE).as_posix() for path in tool.PACKAGE.rglob("*.py")}
    assert names >= tool.LEFT_OUT  # a stale name in LEFT_OUT would leave nothing out


def test_the_library_asks_few_times():
    """What differs by dimension is decided in a few places (the readers, the grid, the spacing rule,
    the layers, config's DIMENSIONS table); elsewhere images and volumes take one path."""
    found = tool.branches()
    assert len(found) < 10, "\n".join(f"{name}:{line}: {test}" for name, line, test in found)
