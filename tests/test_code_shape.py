"""tools/code_shape.py: the library has no function over 60 lines and no constructor over 8
parameters, and the tool finds both where they are."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("code_shape", ROOT / "tools" / "code_shape.py")
assert spec is not None and spec.loader is not None
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def test_the_tool_finds_a_long_function_and_a_wide_constructor(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    fields = "\n".join(f"    f{i}: int" for i in range(9))
    (tmp_path / "a.py").write_text(
        f"from dataclasses import dataclass\n\ndef long():\n{body}\n\n@dataclass\nclass Wide:\n{fields}\n"
    )
    found = tool.findings(tmp_path / "a.py")
    assert len(found) == 2 and "long: 62 lines" in found[0] and "Wide: 9 constructor parameters" in found[1]


def test_the_library_keeps_its_shape():
    found = [line for path in sorted((ROOT / "src" / "cnn_factory").rglob("*.py")) for line in tool.findings(path)]
    assert not found, "\n".join(found)
