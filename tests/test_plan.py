"""`cnn-factory plan` on images: whole images for small ones, patches for large images with small objects, and why."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from benchmarks.cells import make_cells
from cnn_factory.config import DataConfig, load_params, parse_params
from cnn_factory.data.table import read_table
from cnn_factory.errors import UserError
from cnn_factory.outputs import ColumnReport, make_output
from cnn_factory.plan import run, run_plan
from cnn_factory.plan.budget import Training
from cnn_factory.plan.fingerprint import Fingerprint, Grids, Masks, fingerprint
from cnn_factory.plan.propose import propose, validation_rows
from tests.conftest import ROOT
from tests.test_cli import cli
from tests.test_patches import cell_params

MASK = {"m": type("Mask", (), {"spatial": True})()}
TRAIN = load_params(ROOT / "params.yaml").train  # params.yaml's training section


def _fingerprint(
    rows: int, shapes: np.ndarray, channels: int, foreground: float, objects: float, spacing=(1.0, 1.0)
) -> Fingerprint:
    """Images of `shapes` (n, 2) pixels (or volumes of (n, 3) voxels of `spacing` mm) with one mask output "m"."""
    return Fingerprint(
        rows=rows,
        read=len(shapes),
        channels=channels,
        grids=Grids.of(shapes, np.full(shapes.shape, spacing)),
        intensity=(0.0, 128.0, 255.0),
        masks=Masks(foreground={"m": foreground}, objects={"m": objects}),
    )


def test_small_images_get_whole_images_resized(params, example_dir):
    params["data"].update(csv=str(example_dir / "data.csv"), root=str(example_dir))
    text = run_plan(parse_params(params), sample=10, budget_gb=4)
    assert "inputs.*.mode     resize" in text and "median image 16x16 is small" in text
    assert "-S inputs.image.mode=resize -S inputs.image.size=[16,16] -S model.depth=2" in text
    assert "train.foreground" not in text


def test_large_images_with_small_objects_get_patches(tmp_path):
    make_cells(tmp_path / "cells", rows=12, sizes=(300, 360), seed=0)
    cfg = parse_params(cell_params(tmp_path / "cells"))
    fp = fingerprint(cfg, sample=6)
    density = fp.columns.values["density"]  # every row's class: sparse or dense
    assert len(fp.grids.shapes) == 6 and fp.channels == 1 and len(density) == 12
    assert 0.002 < fp.masks.foreground["cells"] < 0.03 and 6 < fp.masks.objects["cells"] < 20  # cells of 4-8 px radius
    assert (
        fp.grids.target == (1.0, 1.0) and fp.intensity[0] < fp.intensity[1] < fp.intensity[2]
    )  # 1 a pixel; uint8 levels
    rows = {key: (value, why) for key, value, why in propose(fp, 4 * 2**30, cfg.outputs)}
    assert rows["inputs.*.mode"][0] == "patch" and "median image 3" in rows["inputs.*.mode"][1]
    size = rows["inputs.*.size"][0][0]
    assert size % 2 ** rows["model.depth"][0] == 0 and 4 * fp.masks.objects["cells"] <= size <= 256
    assert rows["train.foreground"][0] == 0.33
    text = run_plan(cfg, 6, 4)
    assert f"dvc exp run -S inputs.image.mode=patch -S inputs.image.size=[{size},{size}]" in text
    # a mask is predicted patch by patch: its size left out follows the patch; one given is set to it
    assert not cfg.outputs["cells"].size_given and "outputs.cells.size" not in text
    given = cell_params(tmp_path / "cells")
    given["outputs"]["cells"]["size"] = [32, 32]
    assert f"-S outputs.cells.size=[{size},{size}]" in run_plan(parse_params(given), 6, 4)


def test_the_batch_follows_the_memory_budget():
    fp = _fingerprint(10, np.full((10, 2), 1024), 3, foreground=0.01, objects=10.0)
    small = dict((k, v) for k, v, _ in propose(fp, 0.5 * 2**30, MASK))
    large = dict((k, v) for k, v, _ in propose(fp, 16 * 2**30, MASK))
    assert small["train.batch_size"] < large["train.batch_size"] and large["model.filters"] == 32


def test_patch_mode_validation_is_costed_and_proposed():
    large = np.full((4, 2), 1024)  # 1024 px images, 128 px windows: 15 x 15 windows each
    rows = validation_rows(large, 128, 40, 512)
    assert rows[0][:2] == ("train.val_patches", 208) and "~9000 windows, 352% of an epoch's training" in rows[0][2]
    assert len(rows) == 1 and "cost 10%" in rows[0][2]  # 208 patches and 40 views against 512 x 5: every epoch
    small = validation_rows(np.full((4, 2), 160), 128, 10, 512)  # 4 windows per image: 40 in all, 2%
    assert small == [("train.val_patches", 0, small[0][2])] and "cheap enough" in small[0][2]
    short = dict((k, v) for k, v, _ in validation_rows(large, 128, 40, 32))  # an epoch of 32 patches
    assert short["train.val_patches"] == 32 and short["train.val_every"] == 5  # 72 forwards against 160
    fp = _fingerprint(100, large, 1, foreground=0.01, objects=10.0)
    training = Training(train=TRAIN.model_copy(update={"patches_per_epoch": 512}), rows=80, val=10)
    proposed = dict((k, v) for k, v, _ in propose(fp, 4 * 2**30, MASK, training=training))
    assert proposed["inputs.*.mode"] == "patch" and proposed["train.val_patches"] == 240  # 10 val images


@pytest.mark.parametrize("shape, spacing", [((1024, 1024), (1.0, 1.0)), ((60, 256, 256), (3.0, 0.8, 0.8))])
def test_images_and_volumes_are_cut_alike_to_fit_the_budget(shape, spacing):
    """One planner: the smaller the budget, the smaller the patch (cut side by side until two fit),
    every side a multiple of 2 to its halvings (the depth and a strided stem's)."""
    fp = _fingerprint(10, np.full((10, len(shape)), shape), 1, foreground=0.01, objects=10.0, spacing=spacing)
    voxels, reasons = [], []
    for gib in (64, 4, 0.5, 0.01):
        rows = {k: (v, why) for k, v, why in propose(fp, gib * 2**30, MASK)}
        size, why = rows["inputs.*.size"]
        halvings = rows["model.depth"][0] + (rows.get("model.stem", (None,))[0] == "strided")
        assert len(size) == len(shape) and all(n % 2**halvings == 0 for n in size)
        assert (
            rows["train.batch_size"][0] >= 2
            and next(iter(rows)) == ("inputs.*.mode", "inputs.*.spacing")[len(shape) - 2]
        )
        voxels.append(np.prod(size))
        reasons.append(why)
    assert voxels == sorted(voxels, reverse=True) and voxels[-1] < voxels[0]
    assert "cut" not in reasons[0] and "cut where longest in" in reasons[-1]


@pytest.mark.slow
def test_plan_command_reads_params_and_prints_the_dvc_line(tmp_path):
    make_cells(tmp_path / "cells", rows=8, sizes=(280, 300), seed=0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(cell_params(tmp_path / "cells")))
    result = cli("plan", "--sample", "4", "--budget-gb", "2", cwd=tmp_path)
    assert "cells: foreground" in result.stdout and "dvc exp run -S inputs.image.mode=patch" in result.stdout
    bad = cli("plan", "--sample", "0", cwd=tmp_path, check=False)
    assert bad.returncode == 1 and "--sample: expected an integer >= 1, got 0" in bad.stderr
    assert (ROOT / "params.yaml").is_file()


def test_plan_reports_each_image_level_output_and_warns_about_hard_heads(params, example_dir):
    """A category with a class of two rows and a constant number are named; a spread number is not."""
    header, *rows = (example_dir / "data.csv").read_text().splitlines()
    grades = ["rare" if i < 2 else ("low" if i % 2 else "high") for i in range(len(rows))]
    cells = [f"{r},{g},5.0,{i}" for i, (r, g) in enumerate(zip(rows, grades))]
    (example_dir / "data.csv").write_text("\n".join([f"{header},grade,area,length", *cells]) + "\n")
    params["data"].update(csv=str(example_dir / "data.csv"), root=str(example_dir))
    params["outputs"].update(
        grade={"type": "category", "classes": ["low", "high", "rare"]},
        area={"type": "numeric"},
        length={"type": "numeric"},
    )
    text = run_plan(parse_params(params), sample=4, budget_gb=4)
    assert "  grade: low 11 (46%), high 11 (46%), rare 2 (8%)" in text
    assert "warning: grade: class 'rare' has 2 row(s): too few" in text
    assert "  area: 5 to 5, median 5, mean 5, std 0, 1 distinct value(s)" in text
    assert "warning: area: every row holds 5: the head has nothing to learn" in text
    assert "  length: 0 to 23, median 11.5, mean 11.5, std 6.922, 24 distinct value(s)" in text
    assert "warning: length" not in text and "warning: majority: class 'disc' has 9 row(s)" in text  # 24 rows in all
    assert "  majority: disc " in text


def test_a_lopsided_category_and_a_number_of_few_values_are_warned_about():
    grade = make_output("grade", type="category", classes=["a", "b"])
    line, warnings = ColumnReport.of(grade).report(np.array([0] * 200 + [1] * 12))
    assert line == "a 200 (94%), b 12 (6%)" and warnings == [
        "the largest class has 16x the rows of the smallest: consider outputs.grade.class_weights"
    ]
    assert ColumnReport.of(grade).report(np.array([0] * 20 + [1] * 12))[1] == []
    _, warnings = ColumnReport.of(make_output("stage", type="numeric")).report(np.array([1.0, 2.0, 2.0, 1.0]))
    assert warnings == ["only 2 distinct values: a category output may fit better"]


def test_a_pretrained_encoder_only_where_there_is_a_reason_and_weights(monkeypatch, params, example_dir):
    few = _fingerprint(300, np.full((10, 2), 96), 3, foreground=0.2, objects=30.0)
    without = dict((k, v) for k, v, _ in propose(few, 2**30, MASK))
    assert "model.encoder" not in without and "model.weights" not in without  # weights are never assumed
    rows = dict((k, v) for k, v, _ in propose(few, 2**30, MASK, weights=True))
    assert rows["model.encoder"] == "resnet18" and rows["model.weights"] == "pretrained"
    assert rows["inputs.*.size"][0] % 32 == 0  # resnet18's largest stride
    grey = _fingerprint(300, np.full((10, 2), 96), 1, foreground=0.2, objects=30.0)
    assert "model.encoder" not in dict((k, v) for k, v, _ in propose(grey, 2**30, MASK, weights=True))
    params["data"].update(csv=str(example_dir / "data.csv"), root=str(example_dir))
    monkeypatch.setattr(run, "pretrained_cached", lambda name: False)
    text = run_plan(parse_params(params), sample=4, budget_gb=1)
    assert "note: 3-channel images" in text and "no weights for it on this machine" in text
    assert "model.encoder" not in text.splitlines()[-1]
    monkeypatch.setattr(run, "pretrained_cached", lambda name: True)
    assert "-S model.encoder=resnet18 -S model.weights=pretrained" in run_plan(parse_params(params), 4, 1)


def test_an_unreadable_image_is_one_line_naming_row_and_column(params, example_dir):
    (example_dir / "images" / "0000.png").write_bytes(b"not an image")
    params["data"].update(csv=str(example_dir / "data.csv"), root=str(example_dir))
    with pytest.raises(UserError) as err:
        run_plan(parse_params(params), sample=4, budget_gb=1)
    said = str(err.value)
    assert "row 2, column 'image'" in said and "0000.png cannot be read as an image" in said and "\n" not in said


def test_large_images_with_large_objects_get_whole_images_resized():
    """HC18's fetal heads: 540x800 ultrasound images, heads ~415 px across. A 256-px patch would
    hold part of a head; whole images resized to 256 px on the long side hold it whole."""
    heads = _fingerprint(999, np.full((10, 2), (540, 800)), 1, foreground=0.31, objects=415.0)
    rows = {k: (v, why) for k, v, why in propose(heads, 6 * 2**30, MASK)}
    assert rows["inputs.*.mode"][0] == "resize" and "a 256-px patch holds 0.6 of one across" in rows["inputs.*.mode"][1]
    assert rows["inputs.*.size"][0] == [160, 256] and "scaled by 0.32, its objects ~133 px" in rows["inputs.*.size"][1]
    assert "train.foreground" not in rows
    # objects that a 256-px patch holds four times across keep patches at native resolution
    cells = _fingerprint(999, np.full((10, 2), (540, 800)), 1, foreground=0.1, objects=40.0)
    proposed = {k: v for k, v, _ in propose(cells, 6 * 2**30, MASK)}
    assert proposed["inputs.*.mode"] == "patch" and 4 * 40 <= proposed["inputs.*.size"][0] <= 256


def test_image_level_outputs_alone_get_whole_images_resized(tmp_path):
    """Patches train masks: with category or numeric outputs only, large images are resized whole
    (the plan proposed patches, which its own check of the -S line then refused)."""
    make_cells(tmp_path / "cells", rows=12, sizes=(300, 360), seed=0)
    params = cell_params(tmp_path / "cells")
    params["outputs"] = {"density": params["outputs"]["density"]}
    params["inputs"]["image"]["mode"] = "resize"
    text = run_plan(parse_params(params), 6, 4)
    assert "image-level outputs only (their heads see whole images): whole images resized" in text
    assert "dvc exp run -S inputs.image.mode=resize -S inputs.image.size=[" in text


@pytest.mark.parametrize(
    "split, expected",
    [
        ({"column": "split"}, (7, 2, 11)),  # the CSV's column, whatever the fractions say
        ({}, (10, 5, 5)),  # drawn: 20 rows, a quarter each to val and test
        ({"folds": 5}, (12, 3, 5)),  # fold 0's run: the 15 rows outside the test split, a fifth validating
    ],
)
def test_the_plan_counts_the_rows_its_run_trains_and_validates_on(tmp_path, split, expected):
    names = ["train"] * 7 + ["val"] * 2 + ["test"] * 11
    lines = ["image,labels,split", *(f"{i}.png,{i}.png,{s}" for i, s in enumerate(names))]
    (tmp_path / "data.csv").write_text("\n".join(lines) + "\n")
    data = DataConfig.model_validate(
        {"csv": str(tmp_path / "data.csv"), "split": {"val": 0.25, "test": 0.25, "seed": 0, **split}}
    )
    assert run.split_rows(read_table(data.csv), data) == expected
