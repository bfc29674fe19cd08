"""Atomic file replacement: the old file or the new one, never half of one, and nothing left over."""

from __future__ import annotations

import pytest

from cnn_factory.atomic import replace_file


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "out" / "model.pt"
    replace_file(target, lambda tmp: tmp.write_text("old"))

    def half(tmp):
        tmp.write_text("ne")
        raise OSError("killed")

    with pytest.raises(OSError):
        replace_file(target, half)
    assert target.read_text() == "old"


def test_what_a_killed_write_left_is_replaced_by_the_next_write(tmp_path):
    (tmp_path / ".metrics.json.tmp").write_text('{"half')  # a kill between write and rename
    replace_file(tmp_path / "metrics.json", lambda tmp: tmp.write_text("{}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    assert (tmp_path / "metrics.json").read_text() == "{}"
