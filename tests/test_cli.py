"""The `cnn-factory` command, each subcommand run as a real process on tiny 16x16 data."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from skimage import io
from skimage.transform import resize

from cnn_factory.config import input_spec, parse_params
from cnn_factory.data.grids import read_input, resize_image
from cnn_factory.model import ModelFile, MultiOutputNet, load_model, model_args, model_meta, save_model
from tests.conftest import ROOT, tiny_params


def cli(*args: str, cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m cnn_factory ARGS` with this venv first on PATH (dvc runs the stages with `python`)."""
    environ = {
        **{k: v for k, v in os.environ.items() if k != "ARGS_FILE"},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "DVC_NO_ANALYTICS": "1",
        **(env or {}),
    }
    result = subprocess.run(
        [sys.executable, "-m", "cnn_factory", *args], cwd=cwd, env=environ, capture_output=True, text=True
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"cnn-factory {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture
def plain_dir(tmp_path: Path) -> Path:
    """A folder with tiny params.yaml and dvc.yaml: enough for `train --dry-run`."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    return tmp_path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """An untrained tiny model file with segmentation, category and numeric outputs (no training needed)."""
    raw = tiny_params()
    raw["outputs"]["area"] = {"type": "numeric", "column": "area", "loss": "mse"}
    cfg = parse_params(raw)
    manifest = {
        "inputs": {"image": {"mean": [0.4, 0.5, 0.45], "std": [0.2, 0.25, 0.22]}},
        "outputs": {"area": {"mean": 30.0, "std": 5.0}},
    }
    torch.manual_seed(0)
    args = model_args(cfg.model, cfg.inputs, cfg.outputs, manifest)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    meta = {**model_meta(cfg.inputs, cfg.outputs, manifest), "epoch": 1, "val": {}}
    save_model(path, MultiOutputNet.from_args(args).eval(), args, meta)
    return path


def test_args_file_flags_lose_to_the_command_line(plain_dir):
    args_file = plain_dir / "train.args.json"
    args_file.write_text(json.dumps(["--num-epochs", "2", "--batch-size", "4", "--modelname", "from-file"]))
    result = cli("train", "--dry-run", "--batch-size", "2", cwd=plain_dir, env={"ARGS_FILE": str(args_file)})
    assert "train.batch_size=2" in result.stdout and "batch_size=4" not in result.stdout
    assert "train.epochs=2" in result.stdout and "model.name='from-file'" in result.stdout
    # the original cnn-factory's form: no subcommand at all, only ARGS_FILE
    result = cli("--dry-run", cwd=plain_dir, env={"ARGS_FILE": str(args_file)})
    assert "train.batch_size=4" in result.stdout


def test_the_users_csv_runs_every_stage_but_the_built_in_example(plain_dir):
    whole = cli("train", "--dry-run", "--num-epochs", "1", cwd=plain_dir)  # the example: the whole pipeline
    assert "dvc exp run -S train.epochs=1" in whole.stdout
    result = cli("train", "--dry-run", "--csv", "/data/input-data.csv", cwd=plain_dir)
    assert "dvc exp run prepare train evaluate -S" in result.stdout


def test_no_arguments_is_a_usage_error_not_a_training_run(plain_dir):
    result = cli(cwd=plain_dir, check=False)
    assert result.returncode == 2 and "required: COMMAND" in result.stderr and "dvc" not in result.stdout


def test_unknown_flag_is_one_line_naming_it(plain_dir):
    result = cli("train", "--num-epoch", "3", cwd=plain_dir, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "cnn-factory train: error: unrecognized arguments: --num-epoch 3 (did you mean --num-epochs?) "
        "(see cnn-factory train --help)"
    ]
    args_file = plain_dir / "bad.json"
    args_file.write_text('["--num-epochs", "2", "--bogus"]')
    result = cli("train", cwd=plain_dir, env={"ARGS_FILE": str(args_file)}, check=False)
    assert result.returncode == 1 and f"error: ARGS_FILE {args_file}: unrecognized arguments: --bogus" in result.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--batch-size", "0"], "train.batch_size: expected an integer >= 1, got 0"),
        (["--network-depth", "5"], "inputs.image.size: [16, 16] must be divisible by 2**model.depth = 32"),
        (
            ["--loss-function", "dice"],
            "--loss-function dice: applies to every output but does not fit outputs.majority",
        ),
        (["--outputs", '{"m": {"type": "segmentation"'], "argument --outputs: not valid JSON"),
        (["--outputs", '{"a b": {"type": "numeric"}}'], "outputs: name 'a b' cannot be passed to dvc"),
        (["--csv", "../data.csv"], "data.root would be '..', the repository root or a folder holding it"),
    ],
)
def test_bad_values_are_reported_with_their_key_before_dvc_runs(plain_dir, flags, message):
    result = cli("train", "--dry-run", *flags, cwd=plain_dir, check=False)
    assert result.returncode in (1, 2) and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "dvc exp run" not in result.stdout


def test_validate_prints_the_report_and_fails_on_a_bad_row(plain_dir, example_dir):
    params = yaml.safe_load((plain_dir / "params.yaml").read_text())
    params["data"].update(csv=str(example_dir / "data.csv"), root=str(example_dir))
    (plain_dir / "params.yaml").write_text(yaml.safe_dump(params))
    result = cli("validate", cwd=plain_dir)
    assert "prepare: 16 train, 4 val, 4 test rows" in result.stdout and '"counts_train"' in result.stdout
    assert not (plain_dir / "data").exists()  # validate writes nothing
    lines = (example_dir / "data.csv").read_text().splitlines()
    lines[2] = lines[2].replace("images/0001.png", "images/gone.png")
    (example_dir / "data.csv").write_text("\n".join(lines) + "\n")
    result = cli("validate", cwd=plain_dir, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{example_dir / 'data.csv'}: row 3, column 'image': file not found" in result.stderr
    assert "Traceback" in cli("validate", "--debug", cwd=plain_dir, check=False).stderr

    # a data.root holding the repository: DVC would refuse dvc.yaml before any stage runs, in its own words
    params["data"].update(csv="../data.csv", root="..")
    (plain_dir / "params.yaml").write_text(yaml.safe_dump(params))
    result = cli("validate", cwd=plain_dir, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "params.yaml: data.root is '..', the repository root or a folder holding it" in result.stderr
    assert "and point data.csv and data.root there" in result.stderr


def expected_mask(model_path: Path, image: Path, output: str) -> np.ndarray:
    """The mask computed in this process: prepare's loading, the model file's normalisation."""
    model, meta = load_model(model_path)
    spec = input_spec("image", "image", meta["inputs"]["image"]["size"], 3)
    native = read_input(image, spec)
    pixels, size = resize_image(native, spec.size), native.shape[-2:]
    mean, std = ModelFile.from_meta(meta).normalisation("cpu")
    with torch.no_grad():
        logits = model((torch.from_numpy(pixels)[None].float() / 255 - mean) / std)[output][0]
    mask = (torch.sigmoid(logits) > 0.5).numpy()
    return resize(mask, size, order=0, preserve_range=True, anti_aliasing=False) > 0


@pytest.mark.parametrize("tta", [False, True])
def test_predict_writes_masks_of_the_original_size_and_a_csv(tmp_path, example_dir, model_file, tta):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("0000.png", "0001.png"):
        shutil.copy(example_dir / "images" / name, images / name)
    big = resize(io.imread(example_dir / "images" / "0002.png"), (40, 24), preserve_range=True).astype(np.uint8)
    io.imsave(images / "big.png", big, check_contrast=False)
    out = tmp_path / "pred"
    cli("predict", str(model_file), str(images / "0*.png"), str(images / "big.png"), "--out", str(out), "--batch-size",
        "2", *(["--tta"] if tta else []), cwd=tmp_path)  # fmt: skip
    for output in ("round", "angular"):
        for stem, size in (("0000", (16, 16)), ("0001", (16, 16)), ("big", (40, 24))):
            mask = io.imread(out / output / f"{stem}.png")
            assert mask.shape == size and set(np.unique(mask)) <= {0, 255}
    if not tta:  # exactly what the model gives on prepare's pixels, resized back with nearest neighbour
        assert (
            (io.imread(out / "round" / "big.png") > 0) == expected_mask(model_file, images / "big.png", "round")
        ).all()
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [Path(r["image"]).stem for r in rows] == ["0000", "0001", "big"]
    for row in rows:
        assert row["majority"] in ("disc", "square", "triangle") and 1 / 3 <= float(row["majority_probability"]) <= 1
        assert np.isfinite(float(row["area"])) and row["round_mask"] == f"round/{Path(row['image']).stem}.png"


def test_predict_tiles_a_large_image_at_its_own_resolution(tmp_path, example_dir, model_file):
    big = np.concatenate([io.imread(example_dir / "images" / f"{i:04d}.png") for i in range(3)], axis=1)  # 16x48
    big = np.concatenate([big, big[:5]], axis=0)  # 21x48: not a multiple of the 16x16 window
    io.imsave(tmp_path / "wide.png", big, check_contrast=False)
    cli("predict", str(model_file), str(tmp_path / "wide.png"), "--tile", "--overlap", "0.25", "--out",
        str(tmp_path / "pred"), cwd=tmp_path)  # fmt: skip
    for output in ("round", "angular"):
        mask = io.imread(tmp_path / "pred" / output / "wide.png")
        assert mask.shape == (21, 48) and set(np.unique(mask)) <= {0, 255}
    row = next(csv.DictReader((tmp_path / "pred" / "predictions.csv").open()))
    assert row["majority"] in ("disc", "square", "triangle")


def test_predict_reads_a_csv_of_images(tmp_path, example_dir, model_file):
    cli("predict", str(model_file), str(example_dir / "data.csv"), "--out", str(tmp_path / "p"), cwd=tmp_path)
    assert len((tmp_path / "p" / "predictions.csv").read_text().splitlines()) == 1 + 24
    result = cli("predict", str(model_file), str(tmp_path / "none*.png"), cwd=tmp_path, check=False)
    assert result.returncode == 1 and "nothing matches it as a glob" in result.stderr


def reference(model_file: Path, x: torch.Tensor) -> list[torch.Tensor]:
    model, _ = load_model(model_file)
    with torch.no_grad():
        return list(model(x).values())


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_export_torchscript_matches_the_model(tmp_path, model_file):
    out = tmp_path / "tiny.ts"
    cli("export", str(model_file), "--format", "torchscript", "--out", str(out), cwd=tmp_path)
    sidecar = json.loads((tmp_path / "tiny.ts.json").read_text())
    assert [o["name"] for o in sidecar["outputs"]] == ["round", "angular", "majority", "area"]
    assert sidecar["input"]["shape"] == ["batch", 3, 16, 16] and len(sidecar["input"]["inputs"]["image"]["std"]) == 3
    assert sidecar["outputs"][2]["classes"] == ["disc", "square", "triangle"]
    assert sidecar["outputs"][1]["labels"] == [2, 3] and sidecar["outputs"][3]["type"] == "numeric"
    x = torch.randn(3, 3, 16, 16)  # another batch size than the one traced
    with torch.no_grad():
        got = torch.jit.load(str(out))(x)
    for a, b in zip(got, reference(model_file, x)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_export_onnx_matches_the_model_or_says_what_to_install(tmp_path, model_file):
    out = tmp_path / "tiny.onnx"
    result = cli("export", str(model_file), "--format", "onnx", "--out", str(out), cwd=tmp_path, check=False)
    if importlib.util.find_spec("onnx") is None:
        assert result.returncode == 1 and "needs the onnx package: pip install onnx" in result.stderr
        pytest.skip("onnx is not installed: the clear error was checked, the export itself was not")
    assert result.returncode == 0, result.stderr
    ort = pytest.importorskip("onnxruntime")
    x = torch.randn(2, 3, 16, 16)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [o["name"] for o in json.loads((tmp_path / "tiny.onnx.json").read_text())["outputs"]]
    assert [o.name for o in session.get_outputs()] == names
    for a, b in zip(session.run(None, {"x": x.numpy()}), reference(model_file, x)):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4, rtol=0)


def test_make_csv_pairs_by_stem_and_reports_the_unpaired(tmp_path):
    for folder, stems in (("images", "abc"), ("labels", "abd")):
        (tmp_path / "raw" / folder).mkdir(parents=True)
        for stem in stems:
            io.imsave(tmp_path / "raw" / folder / f"{stem}.png", np.zeros((4, 4), np.uint8), check_contrast=False)
    (tmp_path / "raw" / "labels" / "notes.txt").write_text("not an image")
    raw = tmp_path / "raw"
    result = cli("make-csv", str(raw / "images"), str(raw / "labels"), "--out", str(raw / "data.csv"), cwd=tmp_path)
    assert (raw / "data.csv").read_text().splitlines() == ["image,labels", "images/a.png,labels/a.png",
                                                           "images/b.png,labels/b.png"]  # fmt: skip
    assert "1 image(s) without a matching label map" in result.stderr and "c.png" in result.stderr
    assert "1 label map(s) without a matching image" in result.stderr and "d.png" in result.stderr
    (raw / "empty").mkdir()
    result = cli("make-csv", str(raw / "images"), str(raw / "empty"), cwd=tmp_path, check=False)
    assert result.returncode == 1 and "no file names in common" in result.stderr


@pytest.mark.parametrize(
    ("images", "labels", "ends"),
    [  # as public sets name them: ISIC's lesions, DRIVE's retinas
        (["ISIC_0000000.jpg", "ISIC_0000001.jpg", "ISIC_0000002.jpg"],
         ["ISIC_0000000_segmentation.png", "ISIC_0000001_segmentation.png"], ("", "_segmentation")),
        (["21_training.tif", "22_training.tif"], ["21_manual1.gif", "22_manual1.gif"], ("_training", "_manual1")),
    ],
)  # fmt: skip
def test_make_csv_pairs_names_that_differ_by_an_ending_every_file_shares(tmp_path, images, labels, ends):
    for folder, names in (("images", images), ("labels", labels)):
        (tmp_path / folder).mkdir()
        for name in names:
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / folder / name)
    result = cli("make-csv", "images", "labels", "--out", "data.csv", cwd=tmp_path)
    assert f"without the ending {ends[0]!r} of every image and {ends[1]!r} of every label map" in result.stdout
    rows = (tmp_path / "data.csv").read_text().splitlines()[1:]
    assert rows == [f"images/{i},labels/{label}" for i, label in zip(images, labels)]
    unpaired = f"1 image(s) without a matching label map: images/{images[-1]}"
    assert len(images) == len(labels) or unpaired in result.stderr

    for name in labels:  # endings that do not start at a separator are part of the name: nothing pairs
        (tmp_path / "labels" / name).rename(tmp_path / "labels" / name.replace("_", "", 1))
    result = cli("make-csv", "images", "labels", "--out", "data.csv", cwd=tmp_path, check=False)
    assert result.returncode == 1 and "no file names in common" in result.stderr


@pytest.mark.parametrize(
    ("pairs", "others", "ending"),
    [  # as public sets ship them in one folder: HC18's fetal heads, BUSI's breast ultrasound
        ([("000_HC.png", "000_HC_Annotation.png"), ("010_2HC.png", "010_2HC_Annotation.png")], ["011_HC.png"],
         "_Annotation"),
        ([("benign (1).png", "benign (1)_mask.png"), ("benign (10).png", "benign (10)_mask.png")],
         ["benign (4)_mask_1.png", "normal (2).png"], "_mask"),
    ],
)  # fmt: skip
def test_make_csv_pairs_images_and_label_maps_of_one_folder(tmp_path, pairs, others, ending):
    """Given one folder twice, each file paired with itself would be a CSV of images as their own
    label maps: the label maps are the files named as an image with the ending most pairs share."""
    (tmp_path / "set").mkdir()
    for name in [name for pair in pairs for name in pair] + others:
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "set" / name)
    result = cli("make-csv", "set", "set", "--out", "data.csv", cwd=tmp_path)
    assert f"one folder: the label maps are the files named as an image with {ending!r} after it" in result.stdout
    assert (tmp_path / "data.csv").read_text().splitlines()[1:] == [f"set/{i},set/{label}" for i, label in pairs]
    assert f"{len(others)} image(s) without a matching label map" in result.stderr

    for name in [pair[1] for pair in pairs] + others:  # images alone: no label map to find
        (tmp_path / "set" / name).unlink()
    result = cli("make-csv", "set", "set", "--out", "data.csv", cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert "set: IMAGES_DIR and LABELS_DIR are one folder, and no file is named as another" in result.stderr


def test_make_csv_joins_a_spreadsheet_of_per_image_values(tmp_path):
    """Per-image values come in a spreadsheet of their own (HC18's pixel sizes and circumferences
    by file name, ISIC's diagnoses by name without suffix): --join adds its columns by the column
    that names the images; an image it lacks gets empty cells and a warning."""
    (tmp_path / "set").mkdir()
    for name in ("000_HC", "000_HC_Annotation", "001_HC", "001_HC_Annotation", "002_HC", "002_HC_Annotation"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "set" / f"{name}.png")
    (tmp_path / "hc.csv").write_text(
        "filename,pixel size(mm),head circumference (mm)\n000_HC.png,0.069,44.3\n001_HC.png,0.09,56.81\n"
        "999_HC.png,0.1,70\n"
    )
    result = cli("make-csv", "set", "set", "--join", "hc.csv", "--out", "data.csv", cwd=tmp_path)
    assert "columns 'pixel size(mm)', 'head circumference (mm)' from hc.csv, by its column 'filename'" in result.stdout
    assert (tmp_path / "data.csv").read_text().splitlines() == [
        "image,labels,pixel size(mm),head circumference (mm)",
        "set/000_HC.png,set/000_HC_Annotation.png,0.069,44.3",
        "set/001_HC.png,set/001_HC_Annotation.png,0.09,56.81",
        "set/002_HC.png,set/002_HC_Annotation.png,,",
    ]
    assert "1 image(s) without a row in hc.csv (left empty): set/002_HC.png" in result.stderr

    (tmp_path / "diagnoses.csv").write_text("MEL,image\n1.0,000_HC\n0.0,001_HC\n0.0,002_HC\n")  # names, no suffix
    cli("make-csv", "set", "set", "--join", "diagnoses.csv", "--out", "data.csv", cwd=tmp_path)
    assert [line.split(",")[-1] for line in (tmp_path / "data.csv").read_text().splitlines()] == [
        "MEL", "1.0", "0.0", "0.0"
    ]  # fmt: skip

    for text, message in (
        ("id,x\n1,2\n", "no column names the images by file name (as 000_HC.png or 000_HC)"),
        ("name,x\n000_HC,1\n000_HC.png,2\n", "row 3, column 'name': '000_HC' again (row 2); one row per image"),
        ("name,labels\n000_HC,1\n", "column 'labels' is one make-csv writes itself"),
    ):
        (tmp_path / "bad.csv").write_text(text)
        result = cli("make-csv", "set", "set", "--join", "bad.csv", "--out", "data.csv", cwd=tmp_path, check=False)
        assert result.returncode == 1 and f"bad.csv: {message}" in result.stderr, result.stderr


def test_make_csv_pairs_nifti_scans_by_their_name_without_nii_gz(tmp_path):
    from cnn_factory.data.volumes_example import make_volume_example

    make_volume_example(tmp_path / "scans", rows=3, size=(6, 8, 8))
    raw = tmp_path / "scans"
    cli("make-csv", str(raw / "images"), str(raw / "labels"), "--out", str(raw / "pairs.csv"), cwd=tmp_path)
    assert (raw / "pairs.csv").read_text().splitlines()[1:] == [
        f"images/000{i}.nii.gz,labels/000{i}.nii.gz" for i in range(3)
    ]


HELP = {
    "validate": ["--params"],
    "train": [
        "--modelname",
        "--csv",
        "--inputs",
        "--outputs",
        "--batch-size",
        "--num-augs",
        "--num-epochs",
        "--output-path",
        "--shuffle-data",
        "--learning-rate",
        "--optimizer",
        "--learning-rate-scheduler",
        "--loss-function",
        "--network-depth",
        "--filter-sizes",
        "--device",
        "--data-root",
        "--set",
        "--dry-run",
    ],  # fmt: skip
    "predict": ["--out", "--batch-size", "--device", "--tta", "--threshold", "--tile", "--overlap"],
    "export": ["--format", "--out", "--batch-size"],
    "serve": ["--host", "--port", "--device", "--tta", "--threshold", "--workers", "--max-bytes", "--max-pixels"],
    "make-csv": ["--out", "--image-column", "--label-column"],
}


@pytest.mark.parametrize("command", sorted(HELP))
def test_help_lists_every_flag_with_its_default(tmp_path, command):
    text = " ".join(cli(command, "--help", cwd=tmp_path).stdout.split())
    for flag in [*HELP[command], "--debug"]:
        assert flag in text
    assert text.count("default") >= len(HELP[command])
