"""Atomic file replacement: the old file or the new one, never half of one, and nothing left over."""

from __future__ import annotations

import json

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


def test_training_logs_in_a_git_repository_without_commits(tmp_path, monkeypatch):
    """A new project's first `dvc repro` comes before its first commit: dvclive alone fails there."""
    from cnn_factory.training.live import AtomicLive
    from tests.conftest import run

    run(["git", "init", "-q"], tmp_path)
    run(["dvc", "init", "-q"], tmp_path)
    monkeypatch.chdir(tmp_path)
    with AtomicLive("dvclive", save_dvc_exp=False, dvcyaml=None) as live:
        live.log_metric("val/loss", 0.5)
        live.next_step()
    assert json.loads((tmp_path / "dvclive" / "metrics.json").read_text()) == {"val": {"loss": 0.5}, "step": 0}
