"""The data lives in a DVC remote: push, lose every local copy, pull, and nothing needs re-running."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from cnn_factory.data.example import make_example
from tests.conftest import SIZE, make_repo, run, tiny_params

pytestmark = pytest.mark.slow  # runs the real dvc pipeline; `pytest -m 'not slow'` skips it

WRITTEN = ["data/raw", "data/example", "data/prepared", "data/cache", "models", "checkpoints", "dvclive", "eval"]
# git-ignored or DVC-cached: none of it comes with a clone but the metrics files (cache: false, in git)


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_push_then_pull_into_an_empty_workspace_is_up_to_date(tmp_path):
    params = tiny_params()
    params["data"].update(csv="data/raw/data.csv", root="data/raw")  # the user's own data set
    params["train"].update(log_images_every=0)
    repo = make_repo(tmp_path / "repo", params)
    make_example(repo / "data" / "raw", rows=24, size=tuple(SIZE), seed=0)
    run(["dvc", "add", "data/raw"], repo)
    run(["dvc", "repro"], repo)
    run(["dvc", "remote", "add", "-d", "local", str(tmp_path / "remote")], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "data and pipeline"], repo)
    run(["dvc", "push"], repo)
    model = md5(repo / "models" / "example.pt")

    clone = tmp_path / "clone"  # a fresh clone elsewhere: git's files, no DVC cache, no outputs
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    shutil.rmtree(repo / ".dvc" / "cache")  # and the original's cache gone too: the remote alone holds the data
    repo = clone
    for path in WRITTEN:
        assert not (repo / path).exists() or path in ("dvclive", "eval"), path  # the metrics files are in git
    assert "deleted" in run(["dvc", "status"], repo).stdout

    run(["dvc", "pull"], repo)
    assert (repo / "data" / "raw" / "data.csv").is_file()
    result = run(["dvc", "repro"], repo)
    assert "Running stage" not in result.stdout, result.stdout
    assert "up to date" in result.stdout, result.stdout
    assert md5(repo / "models" / "example.pt") == model
    assert "up to date" in run(["dvc", "status"], repo).stdout
