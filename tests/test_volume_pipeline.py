"""Volumes through the pipeline: params, prepare (spacing, native grids, the row cache), bad scans,
evaluate's millimetres, predict's NIfTI masks, and `dvc repro` of the volume example."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cnn_factory.config import BEFORE_MAXIMUM, PERCENTILES, parse_params
from cnn_factory.data.grids import window_to_uint8
from cnn_factory.data.prepare import prepare
from cnn_factory.data.ragged import RaggedArray
from cnn_factory.data.resample import resampled_shape, target_spacing
from cnn_factory.data.volumes_example import make_volume_example
from cnn_factory.errors import UserError
from cnn_factory.evaluate import Scoring, evaluate_split
from cnn_factory.model import ModelFile, MultiOutputNet, model_args, model_meta, save_model
from cnn_factory.predict import predict_images
from cnn_factory.scores.masks import mask_scores
from cnn_factory.volumes import read_label_volume, read_volume, spacing_affine, write_volume

ROOT = Path(__file__).resolve().parents[1]
PATCH = [8, 16, 16]


def volume_params(folder: Path, **train) -> dict:
    """examples/volumes/params.yaml on the scans in `folder`, shrunk to seconds of training."""
    params = yaml.safe_load((ROOT / "examples" / "volumes" / "params.yaml").read_text())
    params["data"].update(csv=str(folder / "data.csv"), root=str(folder))
    params["inputs"]["image"]["size"] = PATCH
    params["model"].update(depth=2, filters=4)
    params["train"].update(epochs=2, batch_size=4, patches_per_epoch=8, val_patches=8, **train)
    return params


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scans")
    make_volume_example(folder, rows=14, size=(12, 20, 20), seed=1)
    return folder


def _error(params: dict) -> str:
    with pytest.raises(UserError) as err:
        parse_params(params)
    return str(err.value)


def test_the_shipped_volume_params_parse_as_a_volume_pipeline():
    cfg = parse_params(yaml.safe_load((ROOT / "examples" / "volumes" / "params.yaml").read_text()))
    assert cfg.volumes and cfg.patch_mode and cfg.first_input.spacing == "auto"
    assert len(cfg.example.size) == 3 and cfg.outputs["tumour"].size == tuple(cfg.first_input.size)


def test_validate_advises_the_auto_stem_for_volumes_with_the_full_one_on_the_cpu(scans, tmp_path, capsys):
    from cnn_factory.cli.main import run

    params = volume_params(scans)
    params["train"]["device"] = "cpu"
    for stem in ("full", "auto"):
        params["model"]["stem"] = stem
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        run(["validate", "--params", str(tmp_path / "params.yaml")])
        out = capsys.readouterr().out
        advice = [line for line in out.splitlines() if "model.stem full" in line]
        assert len(advice) == (stem == "full") and all(a.endswith("-S model.stem=auto") for a in advice), out


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"mode": "resize"}, "inputs.image.mode: a volume input ([depth, height, width] size) trains on patches"),
        ({"scale": 0.5}, "inputs.image.scale: volumes are resampled to `spacing`, not scaled: remove scale"),
        ({"spacing": [0, 1, 1]}, "inputs.image.spacing: expected auto or [depth, height, width] in mm"),
        ({"window": [5, 1]}, "inputs.image.window: expected null or [low, high] intensities with low < high"),
        (
            {"size": [12, 16, 16]},
            "inputs.image.size: [12, 16, 16] must be divisible by 2**(model.depth + 1) (model.stem strided) = 8",
        ),
    ],
)
def test_bad_volume_settings_name_the_key(scans, edit, message):
    params = volume_params(scans)
    params["inputs"]["image"].update(edit)
    assert message in _error(params)


def test_volume_keys_on_an_image_input_and_masks_of_other_dimensions_are_refused(scans):
    params = volume_params(scans)
    params["inputs"]["image"].update(size=[16, 16], mode="patch", spacing=[1, 1, 1])
    assert "inputs.image.spacing: is for volume inputs ([depth, height, width] size) only" in _error(params)
    params = volume_params(scans)
    params["outputs"]["tumour"]["size"] = [16, 16]
    assert "outputs.tumour.size: [16, 16] has 2 numbers but the input's size has 3" in _error(params)
    params = volume_params(scans)
    params["model"].update(encoder="resnet18", stem="full")  # a strided stem would be refused first
    assert "model.encoder: resnet18 takes images; volume inputs take the unet encoder" in _error(params)


def test_prepare_resamples_to_the_training_scans_spacing_and_keeps_each_scans_own_grid(scans, tmp_path):
    cfg = parse_params(volume_params(scans))
    report, rows = prepare(cfg, tmp_path / "prepared", tmp_path / "cache", workers=1)
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    grids = [read_volume(scans / f, "test") for f in train["files"]]
    expected = target_spacing([g.spacing for g in grids], [g.shape for g in grids])
    assert manifest["spacing"] == pytest.approx(list(expected), abs=1e-6) and report["spacing"] == manifest["spacing"]
    assert expected[0] > 2 * expected[1]  # anisotropic: slices further apart than pixels
    images = RaggedArray(tmp_path / "prepared" / "train", "image.native")
    truths = RaggedArray(tmp_path / "prepared" / "train", "tumour.truth", masks=True)
    natives = RaggedArray(tmp_path / "prepared" / "train", "tumour.native", masks=True)
    spacing = np.load(tmp_path / "prepared" / "train" / "spacing.npy")
    for k, (f, grid) in enumerate(zip(train["files"], grids)):
        shape = resampled_shape(grid.shape, grid.spacing, manifest["spacing"])
        assert images[k].shape == (1, *shape) and natives[k].shape == shape
        labels = read_label_volume(scans / f.replace("images/", "labels/"), "test").array
        np.testing.assert_array_equal(truths[k], labels == 2)  # the truth: the label volume's own grid
        assert train["sizes"][k] == list(grid.shape) and spacing[k] == pytest.approx(grid.spacing)
    assert np.load(tmp_path / "prepared" / "train" / "image.npy").shape[1:] == (1, *PATCH)  # the views
    assert rows.decoded == 14
    # again: every row from the cache; another spacing decodes them all again
    _, again = prepare(cfg, tmp_path / "prepared", tmp_path / "cache", workers=1)
    assert (again.decoded, again.reused) == (0, 14)
    params = volume_params(scans)
    params["inputs"]["image"]["spacing"] = [4.0, 2.0, 2.0]
    _, other = prepare(parse_params(params), tmp_path / "prepared", tmp_path / "cache", workers=1)
    assert other.decoded == 14
    assert json.loads((tmp_path / "prepared" / "manifest.json").read_text())["spacing"] == [4.0, 2.0, 2.0]


def test_bad_scans_are_one_line_each_naming_row_column_and_file(scans, tmp_path):
    folder = tmp_path / "bad"
    make_volume_example(folder, rows=12, size=(8, 16, 16), seed=2)
    scan = read_volume(folder / "images" / "0003.nii.gz", "test")
    write_volume(folder / "labels" / "0003.nii.gz", np.zeros((scan.shape[0], 8, 8), np.uint8), scan.affine)
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "flat.png")
    text = (folder / "data.csv").read_text().replace("images/0005.nii.gz", "flat.png")
    (folder / "data.csv").write_text(text)
    shifted = spacing_affine(scan.spacing, origin=(9.0, 0.0, 0.0))
    write_volume(
        folder / "labels" / "0007.nii.gz", read_label_volume(folder / "labels" / "0007.nii.gz", "t").array, shifted
    )
    before = tmp_path / "prepared"
    with pytest.raises(UserError) as err:
        prepare(parse_params(volume_params(folder)), before, None, workers=1)
    lines = str(err.value).splitlines()
    assert lines[0] == "3 problem(s) in the data:"
    assert f"row 5, column 'labels': {folder / 'labels' / '0003.nii.gz'} has 8x8x" in lines[1]
    assert lines[1].endswith("a label volume must cover its image voxel for voxel")
    assert f"row 7, column 'image': {folder / 'flat.png'} is not a volume file" in lines[2]
    assert f"row 9, column 'labels': {folder / 'labels' / '0007.nii.gz'} is placed differently" in lines[3]
    assert not before.exists()  # nothing written


def test_tiff_stacks_without_calibration_take_the_stated_spacing(scans, tmp_path):
    """A microscopy user's uncalibrated TIFF stacks: prepared at params.yaml's spacing, refused under auto."""
    import tifffile

    folder = tmp_path / "stacks"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    lines = ["image,labels,grade,tumour_ml"]
    for line in (scans / "data.csv").read_text().splitlines()[1:]:
        image, labels, grade, ml = line.split(",")
        name = Path(image).name.replace(".nii.gz", ".tif")
        tifffile.imwrite(folder / "images" / name, read_volume(scans / image, "test").array[0])
        tifffile.imwrite(folder / "labels" / name, read_label_volume(scans / labels, "test").array)
        lines.append(f"images/{name},labels/{name},{grade},{ml}")
    (folder / "data.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"inputs.image.spacing: auto takes the training scans' spacing, and none"):
        prepare(parse_params(volume_params(folder)), tmp_path / "prepared", None, workers=1)
    params = volume_params(folder)
    params["inputs"]["image"]["spacing"] = [3.0, 1.0, 1.0]
    prepare(parse_params(params), tmp_path / "prepared", None, workers=1)
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert manifest["spacing"] == [3.0, 1.0, 1.0] and manifest["splits"]["train"]["count"] > 0
    assert np.load(tmp_path / "prepared" / "train" / "spacing.npy").tolist()[0] == [3.0, 1.0, 1.0]


def _untrained(cfg, prepared: Path, path: Path, marked: tuple[str, ...] = ("organ",)) -> None:
    """A model file of an untrained volume network whose `marked` masks hold some voxels and not others."""
    manifest = json.loads((prepared / "manifest.json").read_text())
    args, meta = model_args(cfg.model, cfg.inputs, cfg.outputs, manifest), model_meta(cfg.inputs, cfg.outputs, manifest)
    torch.manual_seed(3)
    model = MultiOutputNet.from_args(args).eval()
    with torch.no_grad():
        for name in marked:
            model.heads[name].head.bias.fill_(0.02)
    save_model(path, model, args, {**meta, "epoch": 1, "val": {}})


def test_predict_writes_nifti_masks_on_each_scans_grid_that_score_as_evaluate_does(scans, tmp_path):
    cfg = parse_params(volume_params(scans))
    prepare(cfg, tmp_path / "prepared", None, workers=1)
    _untrained(cfg, tmp_path / "prepared", tmp_path / "model.pt")
    net, model_file = ModelFile.load(tmp_path / "model.pt")
    assert model_file.first.volume and model_file.first.spacing is not None
    scored = evaluate_split(net, model_file, model_file.outputs, tmp_path / "prepared" / "test", 2, torch.device("cpu"))
    files = json.loads((tmp_path / "prepared" / "manifest.json").read_text())["splits"]["test"]["files"]
    predict_images(str(tmp_path / "model.pt"), [str(scans / f) for f in files], tmp_path / "out", 2, "cpu", tta=False)
    tp = fp = fn = 0
    for f in files:
        scan = read_volume(scans / f, "test")
        mask = read_label_volume(tmp_path / "out" / "organ" / Path(f).name, "test")
        assert mask.shape == scan.shape and np.allclose(mask.affine, scan.affine, atol=1e-4)
        truth = read_label_volume(scans / f.replace("images/", "labels/"), "test").array == 1
        pred = mask.array > 0
        tp, fp, fn = tp + (pred & truth).sum(), fp + (pred & ~truth).sum(), fn + (~pred & truth).sum()
    dice = 2 * tp / (2 * tp + fp + fn)
    assert dice == pytest.approx(scored.metrics["organ/dice"], abs=1e-6)
    assert 0 < dice < 1  # a real comparison, not two empty masks
    with (tmp_path / "out" / "predictions.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [row["organ_mask"] for row in table] == [f"organ/{Path(f).name}" for f in files]
    assert all(row["grade"] in ("low", "high") and float(row["tumour_ml"]) == float(row["tumour_ml"]) for row in table)


def test_a_small_bright_structure_keeps_its_contrast_and_older_model_files_read_as_they_trained(scans, tmp_path):
    scan = np.random.default_rng(0).normal(0, 5, (1, 20, 50, 50))
    scan[:, 5:15, 10:30, 10:30] += 100 + 20 * np.linspace(0, 1, 20)  # an organ, 8% of the voxels
    scan[:, 8:11, 30:34, 30:34] += 200  # a tumour at its edge, 0.1%
    tumour, organ = scan[0] > 150, (scan[0] > 50) & (scan[0] <= 150)
    now, before = window_to_uint8(scan, None)[0], window_to_uint8(scan, None, BEFORE_MAXIMUM)[0]
    assert now[tumour].min() > now[organ].max() + 20
    assert before[tumour].min() == before[organ].max() == 255  # the old top clipped the two together
    cfg = parse_params(volume_params(scans))
    prepare(cfg, tmp_path / "prepared", None, workers=1)
    _untrained(cfg, tmp_path / "prepared", tmp_path / "model.pt")
    assert ModelFile.load(tmp_path / "model.pt")[1].input_specs()["image"].percentiles == PERCENTILES
    meta = torch.load(tmp_path / "model.pt", weights_only=True)
    del meta["percentiles"]
    assert ModelFile.from_meta(meta).input_specs()["image"].percentiles == BEFORE_MAXIMUM


def test_export_sidecar_of_a_volume_model_names_its_spacing_and_patch(scans, tmp_path):
    from cnn_factory.export import export_model

    cfg = parse_params(volume_params(scans))
    prepare(cfg, tmp_path / "prepared", None, workers=1)
    _untrained(cfg, tmp_path / "prepared", tmp_path / "model.pt")
    target = export_model(str(tmp_path / "model.pt"), "torchscript")
    side = json.loads(target.with_name(target.name + ".json").read_text())
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert side["input"]["spacing"] == pytest.approx(manifest["spacing"]) and side["input"]["patch"] == PATCH
    assert side["input"]["shape"] == ["batch", 1, *PATCH] and side["input"]["layout"].startswith("NCDHW")
    traced = torch.jit.load(str(target))
    logits = traced(torch.zeros(1, 1, *PATCH))
    assert logits[side["outputs"][0]["index"]].shape[-3:] == tuple(PATCH)


@pytest.mark.slow
def test_dvc_repro_of_the_volume_example_then_predict_on_its_test_scans(tmp_path):
    from tests.conftest import make_repo, run, with_plots

    params = yaml.safe_load((ROOT / "examples" / "volumes" / "params.yaml").read_text())
    params["example"].update(rows=16, size=[10, 20, 20])
    params["inputs"]["image"]["size"] = PATCH
    params["model"].update(depth=2, filters=4)
    params["train"].update(epochs=2, batch_size=4, patches_per_epoch=8, val_patches=8, log_images_every=1)
    repo = make_repo(tmp_path / "repo", params)
    with_plots(repo, "values", "bland_altman")  # as docs/volumes.md says for its number and measure
    result = run(["dvc", "repro"], repo)
    assert "8 patches of 8x16x16 from" in result.stdout and "resampled to" in result.stdout
    metrics = json.loads((repo / "eval" / "figures.json").read_text())["test"]
    assert {"dice", "hd95", "nsd"} <= set(metrics["tumour"]) and "accuracy" in metrics["grade"]
    measured = metrics["tumour_volume"]  # the tumour mask's volume, beside the learned tumour_ml
    assert measured["loa_low"] <= measured["bias"] <= measured["loa_high"] and "mae" in metrics["tumour_ml"]
    shown = json.loads(run(["dvc", "plots", "show", "--json"], repo).stdout)
    assert not shown.get("errors"), shown.get("errors")
    [bland_altman] = shown["data"]["eval/plots/bland_altman/tumour_volume.json"]
    assert {row["unit"] for row in bland_altman["content"]["data"]["values"]} == {"mL"}
    assert {f"eval/plots/values/{name}.json" for name in ("tumour_ml", "tumour_volume")} <= set(shown["data"])
    summary = run(["cnn-factory", "summary"], repo).stdout
    assert f"  tumour_volume  MAE mL {measured['mae']:.4g} [" in summary and "  tumour_ml      MAE " in summary
    assert (repo / "dvclive" / "plots" / "images" / "organ" / "2.png").is_file()
    assert (repo / "eval" / "plots" / "images" / "organ_worst.png").is_file()
    manifest = json.loads((repo / "data" / "prepared" / "manifest.json").read_text())
    files = manifest["splits"]["test"]["files"]
    run(["cnn-factory", "predict", "models/volumes.pt", *[f"data/example/{f}" for f in files]], repo)
    with (repo / "eval" / "per_image.csv").open() as f:
        per_image = {Path(row["image"]).name: row for row in csv.DictReader(f)}
    for f in files:
        scan = read_volume(repo / "data" / "example" / f, "test")
        mask = read_label_volume(repo / "predictions" / "tumour" / Path(f).name, "test")
        assert mask.shape == scan.shape and np.allclose(mask.affine, scan.affine, atol=1e-4)
        truth = read_label_volume(repo / "data" / "example" / f.replace("images/", "labels/"), "test").array == 2
        pred = mask.array > 0
        both = 2 * (pred & truth).sum() + (pred & ~truth).sum() + (~pred & truth).sum()
        if both:
            expected = float(per_image[Path(f).name]["tumour/dice"])
            assert 2 * (pred & truth).sum() / both == pytest.approx(expected, abs=1e-4)
        # boundaries in mm, from the scan's own spacing
        hd95 = mask_scores(pred, truth, params["evaluate"]["tolerance"], scan.spacing)["hd95"]
        assert hd95 == pytest.approx(float(per_image[Path(f).name]["tumour/hd95"]), rel=1e-4)
    assert "up to date" in run(["dvc", "status"], repo).stdout


def test_a_volume_measure_in_ml_beside_the_learned_number_in_evaluate_and_predict(scans, tmp_path):
    """The tumour's volume measured from its predicted mask, in mL at each scan's own spacing, next to
    the learned `tumour_ml` and judged against the same column."""
    params = volume_params(scans)
    params["outputs"]["tumour_volume"] = {"type": "measure", "of": "tumour", "measure": "volume", "column": "tumour_ml"}
    cfg = parse_params(params)
    assert cfg.outputs["tumour_volume"].unit_name == "mL"
    prepare(cfg, tmp_path / "prepared", None, workers=1)
    _untrained(cfg, tmp_path / "prepared", tmp_path / "model.pt", marked=("organ", "tumour"))
    net, model_file = ModelFile.load(tmp_path / "model.pt")
    result = evaluate_split(
        net, model_file, model_file.outputs, tmp_path / "prepared" / "test", 2, torch.device("cpu"), scoring=Scoring()
    )
    spacing = np.load(tmp_path / "prepared" / "test" / "spacing.npy")
    voxel_ml = np.prod(spacing, axis=1) / 1000
    rows, learned = result.rows["tumour_volume"], result.rows["tumour_ml"]
    assert rows["measured"] == pytest.approx(result.rows["tumour"]["pred_px"] * voxel_ml)
    assert rows["measured"].max() > 0  # some tumour predicted: a real volume
    assert rows["true"] == pytest.approx(learned["true"], rel=1e-6)  # one column, two outputs side by side
    files = json.loads((tmp_path / "prepared" / "manifest.json").read_text())["splits"]["test"]["files"][:2]
    predict_images(str(tmp_path / "model.pt"), [str(scans / f) for f in files], tmp_path / "out", 2, "cpu", tta=False)
    with (tmp_path / "out" / "predictions.csv").open() as f:
        table = list(csv.DictReader(f))
    for f, row in zip(files, table):
        mask = read_label_volume(tmp_path / "out" / "tumour" / Path(f).name, "test")
        ml = np.count_nonzero(mask.array) * np.prod(read_volume(scans / f, "test").spacing) / 1000
        assert row["tumour_volume_unit"] == "mL" and float(row["tumour_volume"]) == pytest.approx(ml, rel=1e-5)
