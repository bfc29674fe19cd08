"""`cnn-factory summary`: the headline test figures with their intervals, a screen wide."""

from __future__ import annotations

import json

import yaml

from cnn_factory.config import parse_params
from cnn_factory.summary import summary_lines
from tests.conftest import ROOT, tiny_params
from tests.test_cli import cli


def metrics() -> dict:
    mask = {"dice": 0.9361, "dice_ci_low": 0.881, "dice_ci_high": 0.967, "hd95": 3.52, "iou": 0.9}
    return {
        "test": {
            "round": {**mask, "hd95_ci_low": 2.04, "hd95_ci_high": 5.0},
            "angular": mask,  # no interval for HD95: the value alone
            "majority": {"accuracy": 0.944, "accuracy_ci_low": 0.9, "accuracy_ci_high": 0.989, "disc": {"f1": 1.0}},
        }
    }


def test_each_output_shows_its_kinds_headline_figures_with_their_intervals():
    outputs = parse_params(tiny_params()).outputs
    lines = summary_lines(metrics(), outputs, "eval/figures.json")
    assert lines == [
        "test figures (eval/figures.json) [95% interval]",
        "  round     dice 0.936 [0.881, 0.967]   HD95 px 3.5 [2.0, 5.0]",
        "  angular   dice 0.936 [0.881, 0.967]   HD95 px 3.5",
        "  majority  accuracy 0.944 [0.900, 0.989]   macro F1 n/a",
    ]


def test_a_volumes_distances_are_in_mm():
    cfg = parse_params(yaml.safe_load((ROOT / "examples" / "volumes" / "params.yaml").read_text()))
    figures = {"test": {"tumour": metrics()["test"]["round"]}}
    lines = summary_lines(figures, {"tumour": cfg.outputs["tumour"]}, "eval/figures.json", cfg.volumes)
    assert lines[1] == "  tumour  dice 0.936 [0.881, 0.967]   HD95 mm 3.5 [2.0, 5.0]"


def test_a_number_shows_mae_and_r2_and_an_output_without_figures_says_so():
    params = tiny_params()
    params["outputs"] = {"area": {"type": "numeric"}, "grade": {"type": "category", "size": 2}}
    figures = {"test": {"area": {"mae": 12.25, "mae_ci_low": 10.5, "mae_ci_high": 14.0, "r2": 0.81}}}
    lines = summary_lines(figures, parse_params(params).outputs, "m.json")
    assert lines[1:] == ["  area   MAE 12.25 [10.5, 14]   R^2 0.810", "  grade  no test figures: run dvc repro"]


def test_a_cross_validations_figures_are_its_out_of_fold_ones():
    outputs = parse_params(tiny_params()).outputs
    folds = {"out_of_fold": {"round": metrics()["test"]["round"]}, "folds": {}, "images": {"0": 7, "1": 7, "2": 6}}
    lines = summary_lines(folds, outputs, "eval/folds/figures.json")
    assert lines == [
        "out-of-fold figures (eval/folds/figures.json): 20 images, 3 folds [95% interval]",
        "  round     dice 0.936 [0.881, 0.967]   HD95 px 3.5 [2.0, 5.0]",
        "  angular   no out-of-fold figures: run dvc repro folds/dvc.yaml",
        "  majority  no out-of-fold figures: run dvc repro folds/dvc.yaml",
    ]


def test_summary_command_reads_the_files_and_fails_in_one_line_without_metrics(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    bad = cli("summary", cwd=tmp_path, check=False)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "error: eval/figures.json: not found; run dvc repro (or make run) first"
    ]
    (tmp_path / "m.json").write_text(json.dumps(metrics()))
    shown = cli("summary", "--figures", "m.json", cwd=tmp_path).stdout.splitlines()
    assert shown[1] == "  round     dice 0.936 [0.881, 0.967]   HD95 px 3.5 [2.0, 5.0]" and len(shown) == 4
