"""Shared fixtures: tiny generated data, a tiny params dict, and a throwaway DVC repository."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnn_factory.data.example import make_example

ROOT = Path(__file__).resolve().parents[1]
SIZE = [16, 16]


def tiny_params(rows: int = 24) -> dict:
    """The repository's params.yaml, shrunk to 16x16 images and a few seconds of training."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["example"].update(rows=rows, size=SIZE)
    params["inputs"]["image"]["size"] = SIZE
    for out in params["outputs"].values():
        if out["type"] == "segmentation":
            out["size"] = SIZE
    params["model"].update(depth=2, filters=4)
    params["train"].update(epochs=2, batch_size=8, log_images_every=1)
    return params


@pytest.fixture
def params() -> dict:
    return copy.deepcopy(tiny_params())


@pytest.fixture
def example_dir(tmp_path: Path) -> Path:
    out = tmp_path / "example"
    make_example(out, rows=24, size=tuple(SIZE), seed=0)
    return out


def run(cmd: list[str], cwd: Path, check: bool = True, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs a command with the venv's python and dvc first on PATH."""
    env = {
        **(extra_env or {}),
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": "",
    }
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def make_repo(path: Path, params: dict) -> Path:
    """A git + DVC repository holding this project's code, dvc.yaml and the given params."""
    path.mkdir(parents=True, exist_ok=True)
    for folder in ("stages", "src"):
        shutil.copytree(ROOT / folder, path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, path / name)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], path)
    run(["dvc", "init", "-q"], path)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "init"], path)
    return path


@pytest.fixture
def repo(tmp_path: Path, params: dict) -> Path:
    return make_repo(tmp_path / "repo", params)
