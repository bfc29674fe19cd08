"""A 3-fold cross-validation of images grouped by patient under the real `dvc repro folds/dvc.yaml`:
killed in the second fold, then run again, it resumes that fold; a third run re-runs nothing; the
pooled figures are the per-fold tables' own, with intervals over whole patients, and every image
outside the test split is scored exactly once. An experiment of the folds' pipeline is then
compared with the commit on the out-of-fold tables (`cnn-factory compare --folds`)."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from cnn_factory.compare.runs import Run
from cnn_factory.config import parse_params
from cnn_factory.crossval import output_columns
from cnn_factory.outputs import Scorer
from cnn_factory.scores.bootstrap import intervals
from tests.conftest import checkpoint_epoch, make_repo, repro_killed_when, run, tiny_params
from tests.test_compare import direct
from tests.test_splits import patients_csv
from tests.test_sweeps import experiments, metric_columns

pytestmark = pytest.mark.slow  # runs the real dvc pipeline; `pytest -m 'not slow'` skips it

FOLDS = ("0", "1", "2")


def table(text: str) -> dict[str, list[str]]:
    rows = list(csv.reader(io.StringIO(text)))
    return {name: [row[i] for row in rows[1:]] for i, name in enumerate(rows[0])}


def test_three_folds_resume_after_a_kill_rerun_nothing_and_pool_every_image_once(tmp_path, example_dir):
    params = tiny_params()
    params["data"].update(csv=str(patients_csv(example_dir)), root=str(example_dir))
    params["data"]["split"].update(folds=3, stratify="majority", group="patient")
    params["train"].update(epochs=4, log_images_every=0)
    params["evaluate"]["bootstrap"] = 50
    repo = make_repo(tmp_path / "repo", params)
    assert "wrote folds/dvc.yaml for 3 folds" in run(["cnn-factory", "folds"], repo).stdout

    repro_killed_when(repo, lambda: checkpoint_epoch(repo, "fold-1") >= 1, target="folds/dvc.yaml")
    assert (repo / "models" / "folds" / "0.pt").is_file() and not (repo / "models" / "folds" / "1.pt").exists()
    resumed = run(["dvc", "repro", "folds/dvc.yaml"], repo).stdout
    assert "Stage 'folds/dvc.yaml:train@0' didn't change, skipping" in resumed
    assert "train: resuming after epoch" in resumed.split("folds/dvc.yaml:train@1")[1].split("Running stage")[0]
    again = run(["dvc", "repro", "folds/dvc.yaml"], repo).stdout
    assert "Running stage" not in again and "Data and pipelines are up to date" in again

    tables = {k: table((repo / "eval" / "folds" / k / "per_image.csv").read_text()) for k in FOLDS}
    manifest = json.loads((repo / "data" / "prepared" / "manifest.json").read_text())
    for k in FOLDS:  # each fold scored on its own rows, and the folds cover every row outside the test split
        assert sorted(map(int, tables[k]["csv_row"])) == manifest["members"][k]
    scored = [int(r) for t in tables.values() for r in t["csv_row"]]
    assert len(scored) == len(set(scored)) == 24 - len(manifest["members"]["test"])

    pooled = json.loads((repo / "eval" / "folds" / "figures.json").read_text())["out_of_fold"]
    dice = np.array([float(c) for t in tables.values() for c in t["round/dice"] if c])
    right = [a == b for t in tables.values() for a, b in zip(t["majority/true"], t["majority/predicted"])]
    assert abs(pooled["round"]["dice"] - dice.mean()) <= 1e-9
    assert abs(pooled["majority"]["accuracy"] - np.mean(right)) <= 1e-9
    assert pooled["round"]["dice_ci_low"] <= pooled["round"]["dice"] <= pooled["round"]["dice_ci_high"]
    joined = table((repo / "eval" / "folds" / "per_image.csv").read_text())
    assert all(t["group"] == [f"P{(int(r) - 2) // 2}" for r in t["csv_row"]] for t in tables.values())
    scorer = Scorer.of(parse_params(params).outputs["round"])
    columns = output_columns(joined, "round", scorer, repo)
    by_patient = intervals(columns, scorer.summarise, ("dice",), 50, seed=0, groups=joined["group"])["dice"]
    assert (pooled["round"]["dice_ci_low"], pooled["round"]["dice_ci_high"]) == pytest.approx(by_patient, abs=1e-6)
    shown = run(["cnn-factory", "summary", "--figures", "eval/folds/figures.json"], repo).stdout.splitlines()
    assert shown[0] == f"out-of-fold figures (eval/folds/figures.json): {len(scored)} images, 3 folds [95% interval]"
    assert shown[1].startswith(f"  round     dice {pooled['round']['dice']:.3f} [")
    metrics = json.loads((repo / "eval" / "folds" / "metrics.json").read_text())
    assert metrics["round"]["dice"] == pooled["round"]["dice"]
    test = json.loads((repo / "eval" / "folds" / "test" / "figures.json").read_text())["test"]
    assert "dice" in test["round"]  # the folds' ensemble on the held-out test split

    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "folds"], repo)
    run(["dvc", "exp", "run", "-n", "seed-1", "-S", "train.seed=1", "folds/dvc.yaml"], repo)
    epochs = {json.loads((repo / "eval" / "folds" / k / "metrics.json").read_text())["epoch"] for k in FOLDS}
    headline = ("round.dice", "angular.dice", "majority.accuracy", *(["epoch"] if len(epochs) == 1 else []))
    for row in experiments(repo):  # the pooled and the ensemble's headline figures: `dvc exp show` a screen wide
        assert metric_columns(row["data"]) == {
            f"eval/folds/{where}metrics.json:{c}" for where in ("", "test/") for c in headline if where or c != "epoch"
        }  # the ensemble's saved epoch: where all folds saved one
    listed = run(["cnn-factory", "compare", "--folds"], repo).stdout.splitlines()
    patients = len(set(joined["group"]))  # two images each
    assert patients == len(scored) // 2
    title = f"out-of-fold figures of 1 run(s) against master, {len(scored)} images of {patients} groups"
    assert listed[0].startswith(title), listed
    plain = run(["cnn-factory", "compare"], repo, check=False)  # the single split never ran here
    assert plain.returncode == 1 and plain.stderr.startswith("error: master: no eval/per_image.csv")
    assert plain.stderr.endswith("; its cross-validation compares with --folds\n"), plain.stderr
    report = json.loads(run(["cnn-factory", "compare", "--folds", "--json", "--resamples", "200"], repo).stdout)
    seed = report["runs"][1]
    assert (seed["name"], seed["changed"], report["groups"]) == ("seed-1", {"train.seed": 1}, patients)
    ours = Run("seed-1", "seed-1", {}, table=table((repo / "eval" / "folds" / "per_image.csv").read_text()))
    reference = Run("master", "master", {}, table=joined)
    whole, low, high = direct(ours, reference, "round", 200, 0, images=len(scored), groups=joined["group"])
    figure = seed["outputs"]["round"]
    assert (figure["difference"], figure["low"], figure["high"]) == pytest.approx((whole, low, high), abs=1e-9)
