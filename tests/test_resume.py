"""Interrupted training through the real dvc CLI: resume after SIGKILL (sweeps: tests/test_sweeps.py)."""

from __future__ import annotations

import json

import pytest

from cnn_factory.training.live import trim_curves
from tests.conftest import checkpoint_epoch, make_repo, repro_killed_when, run, tiny_params

pytestmark = pytest.mark.slow  # runs the real dvc pipeline; `pytest -m 'not slow'` skips it


def params_with(**train) -> dict:
    params = tiny_params()
    params["train"].update(train)
    return params


def test_killed_training_resumes_to_the_same_result(tmp_path):
    params = params_with(epochs=10, log_images_every=0)
    whole = make_repo(tmp_path / "whole", params)
    run(["dvc", "repro"], whole)

    cut = make_repo(tmp_path / "cut", params)
    repro_killed_when(cut, lambda: checkpoint_epoch(cut) >= 2)
    killed_at = checkpoint_epoch(cut)
    assert 2 <= killed_at < 10
    assert not (cut / "models" / "example.pt").exists()

    result = run(["dvc", "repro"], cut)
    assert f"train: resuming after epoch {killed_at}" in result.stdout
    for path in ("dvclive/metrics.json", "eval/metrics.json", "eval/figures.json"):
        assert json.loads((cut / path).read_text()) == json.loads((whole / path).read_text()), path
    header, *rows = (cut / "dvclive" / "plots" / "metrics" / "val" / "loss.tsv").read_text().splitlines()
    steps = [int(row.split("\t")[header.split("\t").index("step")]) for row in rows]
    assert steps == list(range(10))  # one point per epoch: what the killed run logged after its checkpoint went


def test_resuming_trims_the_curves_to_the_checkpoint(tmp_path):
    curve = tmp_path / "plots" / "metrics" / "val" / "loss.tsv"
    curve.parent.mkdir(parents=True)
    rows = [f"{1000 + s}\t{s}\t{1 / (s + 1)}" for s in range(5)]
    curve.write_text("\n".join(["timestamp\tstep\tloss", *rows, "1005\t5"]) + "\n")  # the last one cut short
    trim_curves(tmp_path, steps=3)  # a checkpoint after epoch 3: steps 0, 1, 2 stay
    assert curve.read_text().splitlines() == ["timestamp\tstep\tloss", *rows[:3]]
    trim_curves(tmp_path, steps=3)  # nothing more to drop
    assert curve.read_text().splitlines() == ["timestamp\tstep\tloss", *rows[:3]]
