"""Interrupted and queued training through the real dvc CLI: resume after SIGKILL, sweeps."""

from __future__ import annotations

import json
import time

import pytest
import yaml

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


def test_queued_experiments_run_side_by_side(tmp_path):
    repo = make_repo(tmp_path / "repo", tiny_params())
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "baseline"], repo)
    sweeps = (
        ["train.optimizer=sgd", "train.scheduler=cosine", "train.num_augs=2"],
        ["train.lr=0.01", "outputs.round.loss=dice", "outputs.round.weight=2"],  # nested keys too
    )
    for sets in sweeps:
        run(["dvc", "exp", "run", "--queue", *(arg for s in sets for arg in ("-S", s))], repo)
    run(["dvc", "queue", "start", "-j", "2"], repo)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert "Failed" not in status, status + run(["dvc", "queue", "logs", "--help"], repo, check=False).stdout
    show = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    experiments = [rev["data"] for row in show for exp in (row.get("experiments") or []) for rev in exp["revs"]]
    assert len(experiments) == 2, status
    params = [e["params"]["params.yaml"]["data"] for e in experiments]
    assert {p["train"]["optimizer"] for p in params} == {"sgd", "adam"}
    assert {p["outputs"]["round"]["loss"] for p in params} == {"dice", "bce_dice"}
    assert any(p["train"]["num_augs"] == 2 and p["train"]["scheduler"] == "cosine" for p in params)
    for e in experiments:
        assert "accuracy" in e["metrics"]["eval/metrics.json"]["data"]["majority"]
    baseline = yaml.safe_load((repo / "params.yaml").read_text())
    assert baseline["train"]["lr"] == tiny_params()["train"]["lr"]  # the workspace is left alone


def test_resuming_trims_the_curves_to_the_checkpoint(tmp_path):
    curve = tmp_path / "plots" / "metrics" / "val" / "loss.tsv"
    curve.parent.mkdir(parents=True)
    rows = [f"{1000 + s}\t{s}\t{1 / (s + 1)}" for s in range(5)]
    curve.write_text("\n".join(["timestamp\tstep\tloss", *rows, "1005\t5"]) + "\n")  # the last one cut short
    trim_curves(tmp_path, steps=3)  # a checkpoint after epoch 3: steps 0, 1, 2 stay
    assert curve.read_text().splitlines() == ["timestamp\tstep\tloss", *rows[:3]]
    trim_curves(tmp_path, steps=3)  # nothing more to drop
    assert curve.read_text().splitlines() == ["timestamp\tstep\tloss", *rows[:3]]
