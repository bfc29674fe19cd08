"""`cnn-factory plan` proposes cross-validation for a small table, with the reason and the cost,
and a patient column as data.split.group."""

from __future__ import annotations

import pytest

from cnn_factory.config import parse_params
from cnn_factory.data.table import Table
from cnn_factory.plan import run_plan
from cnn_factory.plan.fingerprint import owners
from cnn_factory.plan.folds import SMALL, fold_cost, folds_lines, group_lines
from tests.test_splits import data, patients_csv


def test_a_small_table_gets_folds_proposed_with_the_reason_and_the_cost(params, example_dir):
    params["data"].update(csv=str(example_dir / "data.csv"), root=str(example_dir))
    text = run_plan(parse_params(params), sample=10, budget_gb=4)
    assert "note: 24 rows: a test split of 4 images leaves its figures wide intervals" in text
    assert "scores all 20 others once. Set data.split.folds: 5, run `cnn-factory folds`" in text
    assert "note: 5 folds train 5 models on ~16 rows each: 4.9x the single split's training" in text
    assert "data.split.folds" not in text.splitlines()[-1]  # a note, not a -S: folds run as their own pipeline


def test_the_cost_is_the_rows_each_fold_trains_on_against_the_single_splits():
    split = data(val=0.15, test=0.15).split
    assert fold_cost(split, 5) == pytest.approx(5 * 0.85 * 0.8 / 0.7)
    assert fold_cost(data(val=0.2, test=0.0).split, 5) == pytest.approx(5.0)  # each fold trains on 80%, as the split
    (_, cost) = folds_lines(100, split, seconds=120.0)
    assert cost.endswith(
        f"{fold_cost(split):.1f}x the single split's training: ~{120 * fold_cost(split) / 60:.0f} min here"
    )


@pytest.mark.parametrize("split", [{"folds": 5}, {"column": "fold"}])
def test_no_proposal_for_a_large_table_or_when_the_split_is_chosen(split):
    assert folds_lines(SMALL, data().split) == []
    assert folds_lines(50, data(**split).split) == []


def test_a_column_naming_whose_image_a_row_is_gets_data_split_group_proposed(params, example_dir):
    columns = ["image", "labels", "majority", "PatientID", "subject", "image_id", "density", "case"]
    rows = [
        dict(zip(columns, [f"{i}.png", f"{i}.png", "disc", f"P{i // 3}", f"s{i % 4}", str(i), "dense", "c1"]))
        for i in range(12)
    ]  # image_id: one per row; density: no owner's word; case: one value for all
    found = owners(parse_params(params), Table("data.csv", columns, rows, list(range(2, 14))))
    assert found == {"PatientID": 4, "subject": 4}
    assert group_lines(12, data(group="subject").split, found) == []
    (line, _) = group_lines(12, data().split, found)
    assert line == (
        "  note: column 'PatientID' repeats its values (12 rows, 4 values): if it says whose image a row is, "
        "set data.split.group: PatientID, so that rows sharing a value stay in one split (none both trained on "
        "and tested on) and the intervals resample them whole (docs/small-data.md)"
    )
    params["data"].update(csv=str(patients_csv(example_dir)), root=str(example_dir))
    assert "set data.split.group: patient," in run_plan(parse_params(params), sample=10, budget_gb=4)
    params["data"]["split"]["group"] = "patient"
    assert "data.split.group" not in run_plan(parse_params(params), sample=10, budget_gb=4)


def test_the_test_split_named_is_the_one_prepare_draws(params, example_dir):
    lines = (example_dir / "data.csv").read_text().splitlines()
    csv = [lines[0] + ",patient"] + [f"{line},P{i // 3}" for i, line in enumerate(lines[1:])]  # 3 images each
    (example_dir / "patients.csv").write_text("\n".join(csv) + "\n")
    params["data"].update(csv=str(example_dir / "patients.csv"), root=str(example_dir))
    params["data"]["split"]["group"] = "patient"
    text = run_plan(parse_params(params), sample=10, budget_gb=4)
    # whole patients: 1 of 8 in the test split, where 15% of 24 rows would say 4 images
    assert "note: 24 rows: a test split of 3 images leaves its figures wide intervals" in text
    assert "scores all 21 others once" in text
