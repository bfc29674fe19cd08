"""Each row's split: groups kept whole, class shares followed, and the errors a user can cause."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnn_factory.config import SPLITS, parse_params
from cnn_factory.data.splits import assign_splits, split_report
from cnn_factory.data.table import Table
from cnn_factory.errors import UserError
from tests.conftest import tiny_params
from tests.test_cli import cli


def table(patients: list[str], classes: list[str]) -> Table:
    rows = [{"image": f"{i}.png", "patient": p, "grade": c} for i, (p, c) in enumerate(zip(patients, classes))]
    return Table("data.csv", ["image", "patient", "grade"], rows, list(range(2, len(rows) + 2)))


def data(**split):
    params = tiny_params()
    params["data"]["split"].update(split)
    return parse_params(params).data


def patients(seed: int, n_patients: int = 40) -> tuple[list[str], list[str]]:
    """1 to 8 images per patient; the grade a patient's, mostly (some patients' images differ)."""
    rng = np.random.default_rng(seed)
    ids, grades = [], []
    for p in range(n_patients):
        grade = str(rng.choice(["low", "mid", "high"], p=[0.6, 0.3, 0.1]))
        for _ in range(int(rng.integers(1, 9))):
            ids.append(f"P{p:03d}")
            grades.append(grade if rng.random() < 0.9 else "mid")
    return ids, grades


@pytest.mark.parametrize("seed", range(5))
def test_no_group_spans_two_splits_and_the_splits_get_their_share(seed):
    ids, grades = patients(seed)
    names = assign_splits(table(ids, grades), data(group="patient", seed=seed))
    by_patient: dict[str, set[str]] = {}
    for p, s in zip(ids, names):
        by_patient.setdefault(p, set()).add(s)
    assert all(len(s) == 1 for s in by_patient.values())
    counts, n, largest = Counter(names), len(ids), max(Counter(ids).values())
    for split, fraction in (("val", 0.15), ("test", 0.15)):
        assert abs(counts[split] - n * fraction) <= largest, (split, counts)


@pytest.mark.parametrize("seed", range(5))
def test_stratified_splits_hold_each_class_within_one_row_of_its_share(seed):
    ids, grades = patients(seed)
    names = assign_splits(table(ids, grades), data(stratify="grade", seed=seed, val=0.2, test=0.1))
    n, whole = len(grades), Counter(grades)
    counts = Counter(names)
    assert (counts["val"], counts["test"]) == (round(n * 0.2), round(n * 0.1))
    for split, fraction in (("val", 0.2), ("test", 0.1), ("train", 0.7)):
        held = Counter(g for g, s in zip(grades, names) if s == split)
        for grade, total in whole.items():
            assert abs(held[grade] - total * fraction) <= 1, (split, grade, held[grade], total * fraction)


def test_groups_and_classes_together_keep_groups_whole_and_every_class_in_every_split():
    ids, grades = patients(0, n_patients=60)
    names = assign_splits(table(ids, grades), data(group="patient", stratify="grade"))
    assert all(len({s for q, s in zip(ids, names) if q == p}) == 1 for p in set(ids))
    for split in SPLITS:
        assert {g for g, s in zip(grades, names) if s == split} == {"low", "mid", "high"}, split
    report = split_report(table(ids, grades), data(group="patient", stratify="grade"), names)
    assert report["group"] == "patient" and sum(report["groups"].values()) == 60
    assert sum(sum(c.values()) for c in report["classes"].values()) == len(ids)


def test_the_same_seed_gives_the_same_split_and_another_seed_another():
    ids, grades = patients(1)
    first, again = (assign_splits(table(ids, grades), data(group="patient", stratify="grade")) for _ in range(2))
    other = assign_splits(table(ids, grades), data(group="patient", stratify="grade", seed=1))
    assert first == again and first != other


def test_an_empty_group_cell_names_its_row_and_column():
    ids, grades = patients(2)
    ids[4] = ""
    with pytest.raises(UserError) as err:
        assign_splits(table(ids, grades), data(group="patient"))
    assert (
        str(err.value)
        == "data.csv: row 6, column 'patient': empty; every row needs a value in the data.split.group column"
    )


def test_too_few_groups_for_every_split_say_so():
    with pytest.raises(UserError) as err:
        assign_splits(table(["A"] * 10 + ["B"] * 10, ["low"] * 20), data(group="patient"))
    assert str(err.value).startswith("data.csv: the val split is empty (2 groups in column 'patient' for 20 rows")
    assert str(err.value).endswith("add rows or groups, or raise data.split.val / test")


def test_group_or_stratify_with_a_split_column_is_refused():
    params = tiny_params()
    params["data"]["split"].update(column="fold", group="patient")
    with pytest.raises(UserError) as err:
        parse_params(params)
    assert "group and stratify shape the random split; with column the CSV names each row's split" in str(err.value)


def test_validate_reports_groups_and_classes_per_split(example_dir, tmp_path):
    """`cnn-factory validate` on the example with a patient column (two images each) and its category."""
    out = validate_patients(example_dir, tmp_path, val=0.2, test=0.2)
    groups = re.search(r"groups of 'patient': (\d+) train, (\d+) val, (\d+) test", out)
    assert groups and sum(map(int, groups.groups())) == 12 and min(map(int, groups.groups())) >= 1, out
    shown = re.findall(r"'majority' in (\w+): disc (\d+), square (\d+), triangle (\d+)", out)
    assert [s for s, *_ in shown] == list(SPLITS) and sum(int(k) for *_, a, b, c in shown for k in (a, b, c)) == 24


def patients_csv(example_dir: Path) -> Path:
    """example_dir/patients.csv: the example's data.csv with a patient column, two images each."""
    lines = (example_dir / "data.csv").read_text().splitlines()
    csv = [lines[0] + ",patient"] + [f"{line},P{i // 2}" for i, line in enumerate(lines[1:])]
    (example_dir / "patients.csv").write_text("\n".join(csv) + "\n")
    return example_dir / "patients.csv"


def validate_patients(example_dir: Path, folder: Path, **split) -> str:
    """`cnn-factory validate`'s report of the example with a patient column (two images each),
    grouped by it and stratified by the example's category, with `split`'s other data.split keys."""
    params = tiny_params()
    params["data"].update(csv=str(patients_csv(example_dir)), root=str(example_dir))
    params["data"]["split"].update(group="patient", stratify="majority", **split)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return cli("validate", cwd=folder).stdout
