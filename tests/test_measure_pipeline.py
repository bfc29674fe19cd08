"""A measure beside the masks through the real `dvc` pipeline: the built-in example's round mask's
area in pixels against a `round_px` column added to its CSV, in eval/figures.json, `dvc plots show`
(values and Bland-Altman, their entries in dvc.yaml uncommented) and `cnn-factory summary`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage import io

from tests.conftest import make_repo, run, tiny_params

pytestmark = pytest.mark.slow  # runs the real dvc pipeline; `pytest -m 'not slow'` skips it


def with_round_px(folder: Path) -> None:
    """The example's data.csv in `folder` with `round_px`: the disc's (label 1) true area in pixels."""
    lines = (folder / "data.csv").read_text().splitlines()
    header = lines[0].split(",")
    areas = [np.count_nonzero(io.imread(folder / line.split(",")[header.index("labels")]) == 1) for line in lines[1:]]
    rows = [f"{lines[0]},round_px", *(f"{line},{area}" for line, area in zip(lines[1:], areas))]
    (folder / "data.csv").write_text("\n".join(rows) + "\n")


def test_repro_reports_a_measure_beside_the_masks(tmp_path):
    params = tiny_params()
    params["data"].update(csv="data/raw/data.csv", root="data/raw")
    params["outputs"]["round_area"] = {"type": "measure", "of": "round", "measure": "area", "column": "round_px"}
    repo = make_repo(tmp_path / "repo", params)
    run(["python", "-m", "stages.make_example", "--out", "data/raw"], repo)
    with_round_px(repo / "data" / "raw")
    dvc_yaml = repo / "dvc.yaml"
    text = dvc_yaml.read_text()
    for folder in ("values", "bland_altman"):  # the entries dvc.yaml ships commented out
        start = text.index(f"  # - eval/plots/{folder}:")
        end = text.index("y_label", start)
        end = text.index("\n", end) + 1
        text = text[:start] + text[start:end].replace("  # ", "  ").replace("  #   ", "    ") + text[end:]
    dvc_yaml.write_text(text)
    run(["dvc", "repro"], repo)

    test = json.loads((repo / "eval" / "figures.json").read_text())["test"]
    area = test["round_area"]
    assert {"mae", "bias", "loa_low", "loa_high", "r2", "images"} <= set(area)
    assert area["loa_low"] <= area["bias"] <= area["loa_high"]
    assert area["bias_ci_low"] <= area["bias"] <= area["bias_ci_high"]
    assert set(test["round"]) >= {"dice", "hd95"}  # the masks scored as without the measure

    shown = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)
    assert not shown.get("errors"), shown.get("errors")
    assert {"eval/plots/values/round_area.json", "eval/plots/bland_altman/round_area.json"} <= set(shown["data"])

    lines = run(["cnn-factory", "summary"], repo).stdout.splitlines()
    [line] = [x for x in lines if x.startswith("  round_area ")]
    assert f"MAE px {area['mae']:.4g} [" in line and f"bias px {area['bias']:.4g} [" in line
    assert max(map(len, lines)) <= 100
