"""Each row's fold: groups kept whole, class shares followed, the test split outside the folds, and
the errors a user can cause; `cnn-factory validate` and `cnn-factory folds` on folds."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
import yaml

from cnn_factory.config import parse_params
from cnn_factory.data.dataset import read_manifest
from cnn_factory.data.folds import TEST, assign_folds, fold_splits
from cnn_factory.data.prepare import prepare
from cnn_factory.data.splits import assign_splits
from cnn_factory.errors import UserError
from tests.conftest import ROOT, run, tiny_params
from tests.test_cli import cli
from tests.test_splits import data, patients, table, validate_patients


@pytest.mark.parametrize("seed", range(4))
def test_no_group_spans_two_folds_or_a_fold_and_the_test_split(seed):
    ids, grades = patients(seed)
    folds = assign_folds(table(ids, grades), data(group="patient", folds=5, seed=seed))
    held: dict[str, set[str]] = {}
    for p, f in zip(ids, folds):
        held.setdefault(p, set()).add(f)
    assert all(len(f) == 1 for f in held.values())
    counts, pool, largest = Counter(folds), len(ids) - Counter(folds)[TEST], max(Counter(ids).values())
    assert abs(counts[TEST] - len(ids) * 0.15) <= largest
    for k in map(str, range(5)):
        assert abs(counts[k] - pool / 5) <= largest, (k, counts)


@pytest.mark.parametrize("seed", range(4))
def test_stratified_folds_hold_each_class_within_one_row_of_its_share(seed):
    ids, grades = patients(seed)
    folds = assign_folds(table(ids, grades), data(stratify="grade", folds=4, seed=seed, test=0.1))
    pool = [g for g, f in zip(grades, folds) if f != TEST]
    whole, sizes = Counter(pool), Counter(f for f in folds if f != TEST)
    assert max(sizes.values()) - min(sizes.values()) <= 1
    for k in map(str, range(4)):
        held = Counter(g for g, f in zip(grades, folds) if f == k)
        for grade, total in whole.items():
            assert abs(held[grade] - total / 4) <= 1, (k, grade, held[grade], total / 4)


@pytest.mark.parametrize("split", [{"stratify": "grade"}, {"group": "patient"}, {}])
def test_the_test_split_is_the_single_splits_and_each_fold_validates_once(split):
    ids, grades = patients(3)
    rows = table(ids, grades)
    folds = assign_folds(rows, data(folds=3, **split))
    assert [f == TEST for f in folds] == [s == "test" for s in assign_splits(rows, data(**split))]
    runs = [fold_splits(folds, k) for k in "012"]
    for i, f in enumerate(folds):  # every row outside the test split validates in exactly one run
        assert [run[i] for run in runs].count("val") == (0 if f == TEST else 1)


def test_no_test_split_puts_every_row_in_a_fold():
    ids, grades = patients(0)
    folds = assign_folds(table(ids, grades), data(folds=5, test=0.0))
    assert TEST not in folds and sorted(Counter(folds).values())[-1] - sorted(Counter(folds).values())[0] <= 1


@pytest.mark.parametrize(
    ("split", "message"),
    [
        (
            {"group": "patient", "folds": 4},
            "data.split.folds: 4 folds, but column 'patient' (data.split.group) has 3 groups outside the test "
            "split; lower data.split.folds to at most that",
        ),
        (
            {"stratify": "grade", "folds": 3},
            "data.split.stratify: class 'rare' of column 'grade' has 2 rows outside the test split, fewer than "
            "data.split.folds (3): a fold would lack it; lower data.split.folds or merge the class into another",
        ),
    ],
)
def test_folds_the_data_cannot_fill_say_which_key(split, message):
    ids = ["A"] * 8 + ["B"] * 8 + ["C"] * 8
    grades = ["low"] * 22 + ["rare"] * 2
    with pytest.raises(UserError) as err:
        assign_folds(table(ids, grades), data(test=0.0, **split))
    assert str(err.value) == message


def test_an_empty_group_cell_stops_the_folds_too():
    ids, grades = patients(2)
    ids[4] = ""
    with pytest.raises(UserError, match=r"row 6, column 'patient': empty; every row needs a value"):
        assign_folds(table(ids, grades), data(group="patient", folds=3))


def test_folds_of_one_row_are_refused_as_a_param():
    params = tiny_params()
    params["data"]["split"]["folds"] = 1
    (message,) = [line for line in _validate_errors(params) if "folds" in line]
    assert "data.split.folds" in message


def _validate_errors(params: dict) -> list[str]:
    with pytest.raises(UserError) as err:
        parse_params(params)
    return str(err.value).splitlines()


def test_validate_reports_rows_groups_and_classes_per_fold(example_dir, tmp_path):
    out = validate_patients(example_dir, tmp_path, test=0.2, folds=3)
    rows = re.search(r"prepare: (\d+) in fold 0, (\d+) in fold 1, (\d+) in fold 2, (\d+) test rows", out)
    assert rows and sum(map(int, rows.groups())) == 24, out
    groups = re.search(r"groups of 'patient': (\d+) in fold 0, (\d+) in fold 1, (\d+) in fold 2, (\d+) test", out)
    assert groups and sum(map(int, groups.groups())) == 12 and min(map(int, groups.groups())) >= 1, out
    shown = re.findall(r"'majority' in (fold \d|test): disc (\d+), square (\d+), triangle (\d+)", out)
    assert [s for s, *_ in shown] == ["fold 0", "fold 1", "fold 2", "test"], out


def test_validate_with_a_class_rarer_than_the_folds_exits_naming_the_key_and_writes_nothing(example_dir, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    params = tiny_params()
    params["data"].update(csv=str(example_dir / "data.csv"), root=str(example_dir))
    params["data"]["split"].update(stratify="majority", folds=12, test=0.0)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = cli("validate", cwd=project, check=False)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: data.split.stratify: class ") and "data.split.folds (12)" in result.stderr
    assert [p.name for p in project.iterdir()] == ["params.yaml"]


def test_the_folds_command_needs_folds_and_writes_a_stage_per_fold(tmp_path):
    params = tiny_params()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    result = cli("folds", cwd=tmp_path, check=False)
    assert result.returncode == 1 and result.stderr.splitlines() == [
        "error: params.yaml: data.split.folds is null; set it to the number of folds (e.g. 5) first"
    ]
    assert not (tmp_path / "folds").exists()
    params["data"]["split"].update(folds=4, test=0.0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cli("folds", cwd=tmp_path)
    stages = yaml.safe_load((tmp_path / "folds" / "dvc.yaml").read_text())["stages"]
    assert list(stages) == ["train", "evaluate", "crossval"]  # no test split: no ensemble to score
    assert stages["train"]["foreach"] == [0, 1, 2, 3] and stages["train"]["do"]["wdir"] == ".."
    shipped = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(shipped["train"]["deps"]) - set(stages["train"]["do"]["deps"]) == {"data/prepared"}


def test_prepare_writes_every_folds_run_from_rows_decoded_once(example_dir, tmp_path):
    params = tiny_params()
    params["data"].update(csv=str(example_dir / "data.csv"), root=str(example_dir))
    params["data"]["split"].update(folds=3, stratify="majority")
    cfg = parse_params(params)
    _, rows = prepare(cfg, tmp_path / "prepared", tmp_path / "cache", workers=1)
    assert rows.decoded == 24 and rows.reused == 0
    members = json.loads((tmp_path / "prepared" / "manifest.json").read_text())["members"]
    for k in "012":
        run = json.loads((tmp_path / "prepared" / "folds" / k / "manifest.json").read_text())["splits"]
        assert run["val"]["rows"] == members[k] and run["test"]["rows"] == members[TEST]
        assert sorted(run["train"]["rows"]) == sorted(r for f in "012" if f != k for r in members[f])
    with pytest.raises(UserError) as err:  # the single split's train stage, on data prepared as folds
        read_manifest(tmp_path / "prepared", cfg.inputs, cfg.outputs)
    assert str(err.value).endswith(
        "prepared as 3 folds (data.split.folds): run them with `cnn-factory folds` and `dvc repro folds/dvc.yaml` "
        "(docs/small-data.md), or set data.split.folds: null"
    )


def test_prepare_without_a_test_split_deals_every_row_into_the_folds(example_dir, tmp_path):
    """`data.split.test: 0` (docs/small-data.md): no rows held out, each fold's run has train and val only."""
    params = tiny_params()
    params["data"].update(csv=str(example_dir / "data.csv"), root=str(example_dir))
    params["data"]["split"].update(folds=3, test=0.0)
    report, _ = prepare(parse_params(params), tmp_path / "prepared", None, workers=1)
    members = json.loads((tmp_path / "prepared" / "manifest.json").read_text())["members"]
    assert members[TEST] == [] and sorted(r for k in "012" for r in members[k]) == list(range(2, 26))
    for k in "012":
        run = json.loads((tmp_path / "prepared" / "folds" / k / "manifest.json").read_text())["splits"]
        assert list(run) == ["train", "val"] and run["val"]["rows"] == members[k]
        fold = json.loads((tmp_path / "prepared" / "folds" / k / "report.json").read_text())
        assert set(fold["outputs"]["round"]) == {"coverage_train", "coverage_val"}
    assert set(report["outputs"]["round"]) == {"coverage_0", "coverage_1", "coverage_2"}


def test_dvc_plots_shows_each_folds_curves_and_reports_and_the_ensembles(tmp_path):
    params = tiny_params()
    params["data"]["split"]["folds"] = 2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    run(["git", "init", "-q"], tmp_path)
    run(["dvc", "init", "-q"], tmp_path)
    cli("folds", cwd=tmp_path)
    for k in ("0", "1"):  # what each fold's train and evaluate write, and the ensemble's evaluate
        for split in ("train", "val"):
            written(tmp_path / f"dvclive/folds/{k}/plots/metrics/{split}/loss.tsv", f"step\tloss\n0\t{k}.5\n")
    for place in ("0", "1", "test"):
        written(tmp_path / f"eval/folds/{place}/plots/dice/round.json", json.dumps([{"truth_px": 9, "dice": 0.5}]))
    shown = json.loads(run(["dvc", "plots", "show", "--json"], tmp_path).stdout)["data"]
    for k in ("0", "1"):
        [loss] = shown[f"Loss: fold {k}"]
        assert loss["content"]["title"]["text"] == f"Weighted loss of all outputs: training and validation (fold {k})"
        assert [v["loss"] for v in loss["content"]["data"]["values"]] == [f"{k}.5", f"{k}.5"]  # train and val
    for place in ("0", "1", "test"):  # each fold's out-of-fold report, and the ensemble's on the test split
        [dice] = shown[f"eval/folds/{place}/plots/dice/round.json"]
        assert dice["content"]["data"]["values"][0]["dice"] == 0.5
    pipeline = yaml.safe_load((tmp_path / "folds" / "dvc.yaml").read_text())
    shipped = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    evaluated = [p for p in shipped if str(p if isinstance(p, str) else next(iter(p))).startswith("eval/")]
    assert len(pipeline["plots"]) == 2 * len(shipped) + len(evaluated)  # every plot per fold; eval/'s once more


def written(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
