"""SIGKILL at arbitrary moments never leaves a half-written output: the next run finishes and
everything it wrote loads (files are written to a temporary name and renamed into place)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnn_factory.model import load_model
from tests.conftest import clear_a_torn_dvc_lock, make_repo, run, tiny_params

pytestmark = pytest.mark.slow  # runs the real dvc pipeline; `pytest -m 'not slow'` skips it

DELAYS = (2.0, 3.5, 5.0, 6.5)  # seconds after start: fixed, so the test repeats; spread over both stages


def kill_after(repo: Path, command: list[str], delay: float) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(
        command, cwd=repo, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # dvc and the stage it runs
        process.wait()
    clear_a_torn_dvc_lock(repo)


def test_repeated_kills_then_a_clean_finish(tmp_path):
    params = tiny_params(rows=80)
    params["train"].update(epochs=5, log_images_every=2)
    repo = make_repo(tmp_path / "repo", params)
    for delay in DELAYS:
        kill_after(repo, ["dvc", "repro"], delay)
    run(["dvc", "repro"], repo)
    assert "up to date" in run(["dvc", "status"], repo).stdout

    prepared = repo / "data" / "prepared"
    for array in prepared.rglob("*.npy"):
        np.load(array, mmap_mode="r")
    json.loads((prepared / "manifest.json").read_text())
    load_model(repo / "models" / "example.pt")
    for path in ("dvclive/metrics.json", "eval/metrics.json", "eval/figures.json"):
        json.loads((repo / path).read_text())
    assert not [p for p in repo.rglob("*.tmp*") if ".dvc" not in p.parts], "temporary files left behind"

    # DVC rewrites dvc.lock in place: torn by a kill, it stops the next run until removed, as
    # docs/pipeline.md says; the stages' outputs then come back from DVC's run cache
    model = (repo / "models" / "example.pt").read_bytes()
    tear_as_a_kill_would(repo / "dvc.lock")
    assert "dvc.lock' validation failed" in run(["dvc", "repro"], repo, check=False).stderr
    clear_a_torn_dvc_lock(repo)
    assert not (repo / "dvc.lock").exists()
    assert "is cached - skipping run" in run(["dvc", "repro"], repo).stdout
    assert "up to date" in run(["dvc", "status"], repo).stdout
    assert (repo / "models" / "example.pt").read_bytes() == model


def tear_as_a_kill_would(lockfile: Path) -> None:
    """Cuts the file after its last complete line that leaves a stage without a key DVC requires."""
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA
    from voluptuous import Invalid

    lines = lockfile.read_text().splitlines(keepends=True)
    for end in range(len(lines) - 1, 0, -1):
        try:
            COMPILED_LOCKFILE_SCHEMA(yaml.safe_load("".join(lines[:end])))
        except Invalid:
            lockfile.write_text("".join(lines[:end]))
            return
    raise AssertionError("no cut of dvc.lock fails DVC's schema")
