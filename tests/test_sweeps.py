"""Sweeps through DVC's own tools, then compared: experiments queued on one machine and run on
another, pushed to a shared Git remote and DVC remote, pulled on a third clone and compared there
(`dvc exp show` a screen wide, `cnn-factory compare`)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from cnn_factory.compare.runs import Run
from tests.conftest import make_repo, run, tiny_params
from tests.test_compare import direct

pytestmark = pytest.mark.slow  # runs the real dvc pipeline; `pytest -m 'not slow'` skips it


def wait_for_the_queue(repo: Path, timeout: float = 400) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], repo).stdout
        if "Queued" not in status and "Running" not in status:
            return status
        time.sleep(2)
    raise AssertionError(f"the queue did not finish in {timeout} s:\n{status}")


def experiments(repo: Path) -> list[dict]:
    """`dvc exp show --json`'s experiment rows (name, rev and data)."""
    show = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    return [rev for row in show for exp in (row.get("experiments") or []) for rev in exp["revs"]]


def metric_columns(data: dict) -> set[str]:
    def leaves(value, prefix: str) -> set[str]:
        if isinstance(value, dict):
            return {k for key, v in value.items() for k in leaves(v, f"{prefix}{key}.")}
        return {prefix[:-1]}

    found = data["metrics"].items()  # a metrics file the run did not write has no data (an error instead)
    return {c for path, metrics in found if "data" in metrics for c in leaves(metrics["data"], f"{path}:")}


def params() -> dict:
    """The tiny set, trained long enough that runs with other params score differently."""
    params = tiny_params()
    params["train"].update(epochs=6, log_images_every=0)
    return params


def test_a_sweep_queued_and_run_on_two_machines_is_compared_on_a_third(tmp_path, monkeypatch):
    origin = make_repo(tmp_path / "origin", params())
    run(["dvc", "remote", "add", "-d", "shared", str(tmp_path / "dvc-remote")], origin)
    run(["dvc", "repro"], origin)
    run(["git", "add", "-A"], origin)
    run(["git", "commit", "-qm", "baseline"], origin)
    run(["dvc", "push"], origin)
    run(["git", "clone", "-q", "--bare", str(origin), str(tmp_path / "shared.git")], tmp_path)
    machines = {}
    for name in ("a", "b", "c"):
        machines[name] = tmp_path / name
        run(["git", "clone", "-q", str(tmp_path / "shared.git"), name], tmp_path)

    # machine a: DVC's grid syntax queues one experiment per value, `dvc queue start` runs them
    a = machines["a"]
    run(["dvc", "pull", "-q"], a)
    run(["dvc", "exp", "run", "--queue", "-S", "train.lr=0.001,0.0003", "-S", "outputs.round.loss=dice"], a)
    run(["dvc", "queue", "start", "-j", "2"], a)
    status = wait_for_the_queue(a)
    assert "Failed" not in status, status
    assert {e["data"]["params"]["params.yaml"]["data"]["train"]["lr"] for e in experiments(a)} == {0.001, 0.0003}
    assert yaml.safe_load((a / "params.yaml").read_text())["train"]["lr"] == params()["train"]["lr"]
    run(["dvc", "exp", "push", "origin"], a)

    # machine b: one experiment of its own
    b = machines["b"]
    run(["dvc", "pull", "-q"], b)
    run(["dvc", "exp", "run", "-n", "seed-1", "-S", "train.seed=1"], b)
    listed = run(["cnn-factory", "compare"], b).stdout.splitlines()  # b's workspace holds seed-1's results
    assert [line.split()[0] for line in listed[2:] if not line.startswith(" ")] == ["master", "seed-1"], listed
    run(["dvc", "exp", "run", "-n", "not-run", "-S", "train.seed=2", "prepare"], b)  # train and evaluate do not run
    listed = run(["cnn-factory", "compare"], b).stdout.splitlines()  # nor is the workspace it leaves evaluated
    assert [line.split()[0] for line in listed[2:] if not line.startswith(" ")][:2] == ["master", "seed-1"], listed
    assert listed[-1] == "not evaluated with their params (running, failed, not pulled or not run): not-run", listed
    named = run(["cnn-factory", "compare", "not-run"], b, check=False)  # its dvc.lock: seed-1's, which it started from
    assert named.returncode == 1 and named.stderr == (
        "error: not-run: its eval/per_image.csv was not written with its params (train.seed is 2 in its params.yaml, "
        "1 in dvc.lock's train stage): its pipeline did not run there; run it (dvc exp run) to compare it\n"
    )
    run(["dvc", "exp", "push", "origin", "seed-1"], b)
    run(["dvc", "exp", "apply", "seed-1"], b)  # the workspace: seed-1's params, lock and outputs again
    assert run(["cnn-factory", "compare", "workspace"], b).returncode == 0
    table = b / "eval" / "per_image.csv"
    table.write_text(table.read_text() + "\n")  # no longer the table b's dvc.lock records
    changed = run(["cnn-factory", "compare", "workspace"], b, check=False)
    assert changed.returncode == 1 and changed.stderr.startswith(
        "error: workspace: its eval/per_image.csv is not the one its dvc.lock records"
    ), changed.stderr

    # machine c: pulls them all and compares them, with nothing of its own run or pulled before
    c = machines["c"]
    run(["dvc", "exp", "pull", "origin"], c)
    rows = experiments(c)
    assert len(rows) == 3 and "seed-1" in {r["name"] for r in rows}
    for row in rows:  # DVC's metrics: each output's headline figure and the saved epoch, no more
        columns = metric_columns(row["data"])
        assert columns == {
            f"eval/metrics.json:{c}" for c in ("round.dice", "angular.dice", "majority.accuracy", "epoch")
        }
        assert len(columns) <= 20
    monkeypatch.setenv("COLUMNS", "120")  # a terminal 120 columns wide (whatever the test runner's says)
    shown = run(["dvc", "exp", "show", "--only-changed", "--no-pager"], c).stdout
    assert max(map(len, shown.splitlines())) <= 120, shown
    values = {k: {json.dumps(_flat(r["data"]["metrics"]["eval/metrics.json"]["data"])[k]) for r in rows} for k in
              ("round.dice", "angular.dice", "majority.accuracy")}  # fmt: skip
    header = shown.splitlines()[1]
    assert any(len(seen) > 1 for seen in values.values()), values  # the runs differ: the check below bites
    for key, seen in values.items():  # a headline figure that differs between runs has its column, whole
        assert (len(seen) > 1) <= (re.search(rf"\b{re.escape(key)}\b", header) is not None), (key, shown)

    compared = run(["cnn-factory", "compare"], c).stdout.splitlines()
    assert max(map(len, compared)) <= 100, compared
    names = [r["name"] for r in rows]
    assert all(sum(line.startswith(n) for line in compared) == 1 for n in names), compared
    assert compared[0].startswith("test figures of 3 run(s) against master, 4 test images")
    report = json.loads(run(["cnn-factory", "compare", "--json", "--resamples", "200"], c).stdout)
    assert sorted(r["name"] for r in report["runs"][1:]) == sorted(names)
    seed = next(r for r in report["runs"] if r["name"] == "seed-1")
    assert seed["changed"] == {"train.seed": 1}
    table = {r["name"]: _table(c, r["rev"]) for r in report["runs"]}
    reference, ours = (Run(n, n, {}, table=table[n]) for n in ("master", "seed-1"))
    whole, low, high = direct(ours, reference, "round", 200, 0, images=report["images"])
    figure = seed["outputs"]["round"]
    assert (figure["difference"], figure["low"], figure["high"]) == pytest.approx((whole, low, high), abs=1e-9)

    for args, message in (
        (["nope"], "error: nope: no experiment, branch, tag or commit of that name here"),
        (["workspace"], "error: workspace: no eval/per_image.csv"),  # c never ran the pipeline
        (
            ["--folds"],
            "error: master: no eval/folds/per_image.csv (FileNotFoundError): it has no evaluation here; "
            "run the pipeline there (dvc repro folds/dvc.yaml or dvc exp run folds/dvc.yaml)",
        ),  # no cross-validation
    ):
        bad = run(["cnn-factory", "compare", *args], c, check=False)
        assert bad.returncode == 1 and bad.stderr.startswith(message) and len(bad.stderr.splitlines()) == 1, bad.stderr


def _flat(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        flat.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def _table(repo: Path, rev: str) -> dict[str, list[str]]:
    """A revision's eval/per_image.csv read through DVC's API, as a user's script would."""
    import csv
    import io

    import dvc.api

    rows = list(csv.reader(io.StringIO(dvc.api.read("eval/per_image.csv", repo=str(repo), rev=rev))))
    return {name: [row[i] for row in rows[1:]] for i, name in enumerate(rows[0])}
