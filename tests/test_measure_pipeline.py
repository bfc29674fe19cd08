"""A measure beside the masks through the real `dvc` pipeline: the built-in example's round mask's
area in pixels against the example's `round_px` column, in eval/figures.json, `dvc plots show`
(values and Bland-Altman, their entries in dvc.yaml uncommented) and `cnn-factory summary`."""

from __future__ import annotations

import json

import pytest

from tests.conftest import make_repo, run, tiny_params, with_plots

pytestmark = pytest.mark.slow  # runs the real dvc pipeline; `pytest -m 'not slow'` skips it


def test_repro_reports_a_measure_beside_the_masks(tmp_path):
    params = tiny_params()
    params["outputs"]["round_area"] = {"type": "measure", "of": "round", "measure": "area", "column": "round_px"}
    repo = make_repo(tmp_path / "repo", params)
    with_plots(repo, "values", "bland_altman")
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
