"""The whole pipeline through the real `dvc` CLI, in a throwaway git repository, on tiny data."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from skimage import io

from tests.conftest import ROOT, make_repo, run, tiny_params

pytestmark = pytest.mark.slow  # runs the real dvc pipeline; `pytest -m 'not slow'` skips it


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A repository after one successful `dvc repro` on the tiny built-in example."""
    repo = make_repo(tmp_path_factory.mktemp("built") / "repo", tiny_params())
    imports = repo.parent / "imports.log"  # each stage's cnn_factory modules (cnn_factory/runtime.py)
    result = run(["dvc", "repro"], repo, extra_env={"CNN_FACTORY_LOG_IMPORTS": str(imports)})
    assert "Running stage 'example'" in result.stdout
    (repo.parent / "repro.log").write_text(result.stdout)
    return repo


@pytest.fixture
def repo_copy(built, tmp_path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "copy", symlinks=True))


def ran(result) -> set[str]:
    return {line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage '")}


def test_repro_writes_model_metrics_and_plots(built):
    metrics = json.loads((built / "eval" / "figures.json").read_text())["test"]
    # at the label maps' own size: means over images, pooled, boundary figures, 95% intervals;
    # and (resize mode) pooled at the input size the network saw
    figures = {"dice", "iou", "hd95", "nsd", "dice_pooled"}
    expected = {"iou_pooled", "empty_images", "dice_pooled_resized", "iou_pooled_resized"} | figures
    expected |= {f"{f}_ci_{end}" for f in figures for end in ("low", "high")}
    for name in ("round", "angular"):
        assert set(metrics[name]) == expected, metrics[name]
        m = metrics[name]
        assert all(0 <= m[k] <= 1 for k in m if k.startswith(("dice", "iou", "nsd")))
        assert m["dice_ci_low"] <= m["dice"] <= m["dice_ci_high"]
    headline = {"accuracy", "balanced_accuracy", "f1_macro"}
    assert headline | {"ece"} | {f"{f}_ci_{end}" for f in headline for end in ("low", "high")} <= set(
        metrics["majority"]
    )
    assert set(metrics["majority"]["disc"]) == {"precision", "recall", "f1"}
    # DVC's metrics file: each output's headline figure (the kind's first) and the saved epoch, a screen wide
    headlines = json.loads((built / "eval" / "metrics.json").read_text())
    assert headlines == {
        "round": {"dice": metrics["round"]["dice"]},
        "angular": {"dice": metrics["angular"]["dice"]},
        "majority": {"accuracy": metrics["majority"]["accuracy"]},
        "epoch": torch.load(built / "models" / "example.pt", weights_only=True)["epoch"],
    }
    header, *rows = (built / "eval" / "per_image.csv").read_text().splitlines()
    assert header.startswith("image,csv_row,round/dice,round/iou,round/hd95,round/nsd,")
    assert "majority/predicted" in header and len(rows) == 4  # the test split of 24 rows
    assert (built / "eval" / "plots" / "images" / "round_worst.png").is_file()
    assert json.loads((built / "eval" / "plots" / "calibration" / "majority.json").read_text())
    train = json.loads((built / "dvclive" / "metrics.json").read_text())
    assert train["step"] == 1  # two epochs: steps 0 and 1
    assert {"loss", "dice", "iou"} <= set(train["val"]["round"]) and "loss" in train["train"]["majority"]
    assert (built / "dvclive" / "plots" / "metrics" / "val" / "round" / "dice.tsv").is_file()
    assert (built / "eval" / "plots" / "images" / "round.png").is_file()
    confusion = json.loads((built / "eval" / "plots" / "sklearn" / "majority.json").read_text())
    assert {row["actual"] for row in confusion} <= {"disc", "square", "triangle"}
    checkpoint = torch.load(built / "models" / "example.pt", weights_only=True)
    assert checkpoint["outputs"]["angular"]["labels"] == [2, 3]
    assert checkpoint["outputs"]["majority"]["classes"] == ["disc", "square", "triangle"]
    assert len(checkpoint["inputs"]["image"]["mean"]) == 3


def test_each_stage_depends_on_the_library_code_it_runs(built):
    """dvc.yaml's deps name library folders and files; every module a stage ran must lie under one,
    so that a change to any code a stage runs re-runs it (the top package's __init__ holds only the version)."""
    stages = yaml.safe_load((built / "dvc.yaml").read_text())["stages"]
    ran = {}
    for line in (built.parent / "imports.log").read_text().splitlines():
        script, *modules = line.split()
        ran[script.removesuffix(".py")] = modules
    assert set(ran) == {"make_example", "prepare", "train", "evaluate"}
    # prepare and make_example import the output kinds to read params.yaml, but what they write
    # depends only on outputs/decoding.py (the kinds' data halves): not on the kinds' losses or plots,
    # nor on their adapters' bases (scoring.py, writing.py, planning.py: evaluation, prediction, the plan)
    kinds = {
        f"cnn_factory.outputs.{k}"
        for k in ("segmentation", "class_mask", "category", "numeric", "measure", "scoring", "writing", "planning")
    }
    exempt = {"example": kinds | {"cnn_factory.outputs.decoding"}, "prepare": kinds}  # the example uses none
    for name, stage in stages.items():
        script = stage["cmd"].split("stages.")[1].split()[0]
        deps = [d for d in stage["deps"] if d.startswith("src/")]
        if name == "prepare":
            assert "src/cnn_factory/outputs/decoding.py" in deps and "src/cnn_factory/outputs" not in deps
        for module in ran[script]:
            if module == "cnn_factory" or module in exempt.get(name, ()):
                continue
            path = "src/" + module.replace(".", "/")
            path = path + ".py" if (built / (path + ".py")).is_file() else path + "/__init__.py"
            assert any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps), f"{name}: {path} not in deps"


def test_overlays_every_epoch_and_one_line_per_epoch(built):
    for epoch in (1, 2):  # log_images_every: 1, one picture per output and epoch (a slider in DVC's viewers)
        assert (built / "dvclive" / "plots" / "images" / "round" / f"{epoch}.png").is_file()
        assert (built / "dvclive" / "plots" / "images" / "angular" / f"{epoch}.png").is_file()
    log = (built.parent / "repro.log").read_text()
    assert [line.split()[1] for line in log.splitlines() if line.startswith("epoch ")] == ["1/2", "2/2"]
    assert "\r" not in log  # no progress bar redraws when stdout is not a terminal


def test_dvc_plots_show_draws_every_plot_of_a_run(built):
    """dvc.yaml's plots name the training pictures, the grouped curves and the evaluate plots, and
    `dvc plots show` finds every one of them after a run, without an error."""
    plots = [
        next(iter(p)) if isinstance(p, dict) else p for p in yaml.safe_load((built / "dvc.yaml").read_text())["plots"]
    ]
    assert {"dvclive/plots/images", "dvclive/plots/curves/loss", "eval/plots/images", "eval/plots/dice"} <= set(plots)
    shown = json.loads(run(["dvc", "plots", "show", "--json"], built).stdout)
    assert not shown.get("errors"), shown.get("errors")
    drawn = set(shown["data"])
    for name in ("round", "angular", "majority"):
        assert f"dvclive/plots/curves/loss/{name}.tsv" in drawn
    assert {"dvclive/plots/curves/masks/round.tsv", "dvclive/plots/curves/classes/majority.tsv"} <= drawn
    assert {"dvclive/plots/images/round/2.png", "eval/plots/images/round_worst.png"} <= drawn
    assert {"eval/plots/dice/round.json", "eval/plots/calibration/majority.json"} <= drawn
    assert "eval/plots/sklearn/majority.json" in drawn
    loss = (built / "dvclive" / "plots" / "curves" / "loss" / "round.tsv").read_text().splitlines()
    assert loss[0].split("\t") == ["step", "train", "val"] and len(loss) == 3  # two validated epochs


def test_make_run_ends_with_a_summary_a_screen_wide(built):
    """`cnn-factory summary`, the last line of `make run`: per output its headline test figures with
    their 95% intervals from eval/figures.json, in at most 100 columns."""
    recipe = (ROOT / "Makefile").read_text().split("\nrun:")[1].split("\n\n")[0]
    assert recipe.strip().splitlines()[-1].strip().startswith("cnn-factory summary")
    lines = run(["cnn-factory", "summary"], built).stdout.splitlines()
    test = json.loads((built / "eval" / "figures.json").read_text())["test"]
    assert len(lines) == 4 and max(map(len, lines)) <= 100, lines
    for line, name in zip(lines[1:], ("round", "angular", "majority")):
        assert line.startswith(f"  {name} ")
    r, m = test["round"], test["majority"]
    assert (
        f"dice {r['dice']:.3f} [{r['dice_ci_low']:.3f}, {r['dice_ci_high']:.3f}]   HD95 px {r['hd95']:.1f} ["
        in lines[1]
    )
    assert f"accuracy {m['accuracy']:.3f} [{m['accuracy_ci_low']:.3f}, {m['accuracy_ci_high']:.3f}]" in lines[3]
    assert f"macro F1 {m['f1_macro']:.3f} [{m['f1_macro_ci_low']:.3f}, {m['f1_macro_ci_high']:.3f}]" in lines[3]


def test_val_every_validates_some_epochs_and_the_last(repo_copy):
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["train"].update(epochs=5, val_every=2, log_images_every=1)
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["dvc", "repro"], repo_copy)
    assert ran(result) == {"train", "evaluate"}
    lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert [("val_loss" in line) for line in lines] == [False, True, False, True, True]
    curves = repo_copy / "dvclive" / "plots" / "metrics"
    assert tsv_steps(curves / "train" / "loss.tsv") == [0, 1, 2, 3, 4]
    assert tsv_steps(curves / "val" / "loss.tsv") == [1, 3, 4]  # epochs 2, 4 and 5 (dvclive's step = epoch - 1)
    pictures = repo_copy / "dvclive" / "plots" / "images" / "round"
    assert sorted(p.name for p in pictures.glob("*.png")) == ["2.png", "4.png", "5.png"]
    assert torch.load(repo_copy / "models" / "example.pt", weights_only=True)["epoch"] in (2, 4, 5)


def tsv_steps(path: Path) -> list[int]:
    header, *rows = path.read_text().splitlines()
    return [int(row.split("\t")[header.split("\t").index("step")]) for row in rows]


def test_nothing_changed_runs_nothing(repo_copy):
    result = run(["dvc", "repro"], repo_copy)
    assert ran(result) == set()
    assert "up to date" in run(["dvc", "status"], repo_copy).stdout


def test_exp_run_with_new_lr_reruns_train_and_evaluate_only(repo_copy):
    run(["git", "add", "-A"], repo_copy)
    run(["git", "commit", "-qm", "baseline"], repo_copy)
    result = run(["dvc", "exp", "run", "-S", "train.lr=1e-5"], repo_copy)  # DVC writes it as 1e-05
    assert ran(result) == {"train", "evaluate"}
    show = json.loads(run(["dvc", "exp", "show", "--json"], repo_copy).stdout)
    experiments = [exp for row in show for exp in (row.get("experiments") or [])]
    assert experiments, show
    data = experiments[0]["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["train"]["lr"] == 1e-05
    assert set(data["metrics"]) == {"eval/metrics.json"}  # the headline figures; the curves' last values are no metric
    assert "dice" in data["metrics"]["eval/metrics.json"]["data"]["round"]


def test_back_to_params_that_ran_restores_train_from_the_run_cache(repo_copy):
    """No stage output is persisted but prepare's: an experiment, then the main params again, and
    train and evaluate come back from DVC's run-cache instead of training again."""
    run(["git", "add", "-A"], repo_copy)
    run(["git", "commit", "-qm", "baseline"], repo_copy)
    before = {p: (repo_copy / p).read_bytes() for p in ("models/example.pt", "eval/metrics.json", "eval/figures.json")}
    run(["dvc", "exp", "run", "-S", "train.lr=0.01"], repo_copy)
    assert (repo_copy / "models" / "example.pt").read_bytes() != before["models/example.pt"]
    run(["git", "checkout", "params.yaml"], repo_copy)
    result = run(["dvc", "repro"], repo_copy)
    assert "Stage 'train' is cached - skipping run, checking out outputs" in result.stdout
    assert "Stage 'evaluate' is cached - skipping run, checking out outputs" in result.stdout
    assert not [line for line in result.stdout.splitlines() if line.startswith("epoch ")]  # no training
    assert {p: (repo_copy / p).read_bytes() for p in before} == before
    assert (repo_copy / "dvclive" / "plots" / "metrics" / "val" / "loss.tsv").is_file()


def test_same_params_same_metrics(repo_copy, built):
    run(["dvc", "repro", "-f", "train", "evaluate"], repo_copy)
    for path in ("dvclive/metrics.json", "eval/metrics.json", "eval/figures.json"):
        assert (repo_copy / path).read_text() == (built / path).read_text()


def test_changing_an_image_behind_the_csv_reruns_prepare(repo_copy):
    raw = repo_copy / "data" / "raw"
    shutil.copytree(repo_copy / "data" / "example", raw)
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["data"].update(csv="data/raw/data.csv", root="data/raw")
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "prepare" in ran(run(["dvc", "repro", "evaluate"], repo_copy))
    assert ran(run(["dvc", "repro", "evaluate"], repo_copy)) == set()
    image = raw / "images" / "0003.png"
    io.imsave(image, 255 - io.imread(image), check_contrast=False)  # the CSV itself is untouched
    assert ran(run(["dvc", "repro", "evaluate"], repo_copy)) == {"prepare", "train", "evaluate"}


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_bad_csv_fails_clearly_and_keeps_earlier_outputs(repo_copy):
    before = {d: snapshot(repo_copy / d) for d in ("models", "data/prepared")}
    raw = repo_copy / "data" / "raw"
    shutil.copytree(repo_copy / "data" / "example", raw)
    lines = (raw / "data.csv").read_text().splitlines()
    lines[2] = lines[2].replace("images/0001.png", "images/gone.png")
    (raw / "data.csv").write_text("\n".join(lines) + "\n")
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["data"].update(csv="data/raw/data.csv", root="data/raw")
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["dvc", "repro"], repo_copy, check=False)
    assert result.returncode != 0
    assert "data/raw/data.csv: row 3, column 'image': file not found" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert {d: snapshot(repo_copy / d) for d in before} == before


def test_bad_params_fail_with_the_key(repo_copy):
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["train"]["batch_size"] = 0
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["dvc", "repro"], repo_copy, check=False)
    assert result.returncode != 0
    assert "train.batch_size: expected an integer >= 1, got 0" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_debug_shows_the_traceback(repo_copy):
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    params["train"]["epochs"] = -1
    (repo_copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(["python", "-m", "stages.train", "--debug"], repo_copy, check=False)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_evaluate_command_scores_a_csv_as_the_stage_does(built, tmp_path):
    """`cnn-factory evaluate MODEL CSV` on the test split's rows gives the evaluate stage's figures."""
    manifest = json.loads((built / "data" / "prepared" / "manifest.json").read_text())
    lines = (built / "data" / "example" / "data.csv").read_text().splitlines()
    test_csv = built / "data" / "example" / "test_rows.csv"  # beside the images: its paths resolve there
    test_csv.write_text("\n".join([lines[0], *(lines[r - 1] for r in manifest["splits"]["test"]["rows"])]) + "\n")
    command = ["cnn-factory", "evaluate", "models/example.pt", str(test_csv), "--out"]
    try:
        run([*command, str(tmp_path / "cli")], built)
        run([*command, str(tmp_path / "grouped"), "--group", "majority"], built)  # a column as the patients
        refused = run([*command, str(tmp_path / "none"), "--group", "patient"], built, check=False)
    finally:
        test_csv.unlink()
    assert refused.returncode == 1 and refused.stderr == (
        f"error: --group: {test_csv} has no column 'patient'; its columns: image, labels, majority, round_px\n"
    )
    grouped = list(csv.DictReader((tmp_path / "grouped" / "per_image.csv").read_text().splitlines()))
    assert [r["group"] for r in grouped] == [r["majority/true"] for r in grouped]
    for name in ("metrics.json", "figures.json"):
        assert json.loads((tmp_path / "cli" / name).read_text()) == json.loads((built / "eval" / name).read_text())
    column = slice(2, None)  # the CSV row numbers differ (another CSV); the files and scores do not
    for ours, theirs in zip(
        *(p.read_text().splitlines() for p in (built / "eval" / "per_image.csv", tmp_path / "cli" / "per_image.csv"))
    ):
        assert ours.split(",")[0] == theirs.split(",")[0] and ours.split(",")[column] == theirs.split(",")[column]
    assert (tmp_path / "cli" / "plots" / "images" / "round_worst.png").is_file()


def test_prediction_picture_shows_image_truth_and_prediction(built):
    picture = io.imread(built / "eval" / "plots" / "images" / "round.png")
    assert picture.ndim == 3 and picture.shape[1] > 2 * picture.shape[0] / 6  # three panels side by side
    assert np.unique(picture.reshape(-1, picture.shape[-1]), axis=0).shape[0] > 10


def test_model_file_holds_the_best_epoch_by_the_early_stopping_metric(built):
    def curve(name: str) -> dict[int, float]:
        header, *rows = (built / "dvclive" / "plots" / "metrics" / "val" / f"{name}.tsv").read_text().splitlines()
        step, value = header.split("\t").index("step"), header.split("\t").index(name)
        return {int(r.split("\t")[step]) + 1: float(r.split("\t")[value]) for r in rows}

    stopping = yaml.safe_load((built / "params.yaml").read_text())["train"]["early_stopping"]
    assert stopping["metric"] == "val/relative_loss" and stopping["mode"] == "min"
    s, validations = stopping["smoothing"], sorted(curve("relative_loss").items())
    average, averages = None, {}
    for i, (epoch, value) in enumerate(validations):  # from the third on, the median of a value and the two before
        median = sorted(v for _, v in validations[i - 2 : i + 1])[1] if i >= 2 else value
        average = median if average is None else s * average + (1 - s) * median
        if value <= 2 * median:  # over twice the median: a stray validation, never saved
            averages[epoch] = average
    checkpoint = torch.load(built / "models" / "example.pt", weights_only=True)
    assert checkpoint["epoch"] == min(averages, key=averages.get)
    assert checkpoint["val"]["loss"] == pytest.approx(curve("loss")[checkpoint["epoch"]])


def test_editing_a_loss_or_a_plot_re_runs_train_and_evaluate_but_not_prepare(repo_copy):
    """prepare depends on what decodes a row (outputs/decoding.py), not on the kinds' other parts."""
    for path, edit in (
        ("src/cnn_factory/losses.py", "\n# a loss edited\n"),
        ("src/cnn_factory/outputs/segmentation.py", "\n# its loss table, plots or prediction writer edited\n"),
    ):
        with (repo_copy / path).open("a") as f:
            f.write(edit)
    result = run(["dvc", "repro"], repo_copy)
    assert ran(result) == {"train", "evaluate"}, result.stdout

    with (repo_copy / "src/cnn_factory/outputs/decoding.py").open("a") as f:
        f.write("\n# what a row decodes to edited\n")
    assert ran(run(["dvc", "repro", "prepare"], repo_copy)) == {"prepare"}  # and the row cache's key (test_prepare)
