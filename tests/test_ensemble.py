"""Several model files of one model predicting as one: their probabilities averaged, each member
on its own normalisation, for images and for scans (sliding windows at the model's spacing); and
the commands that take one model file saying so."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from cnn_factory.errors import UserError
from cnn_factory.export import export_model
from cnn_factory.inference import predict_batch
from cnn_factory.model import model_files
from cnn_factory.native import load_models
from cnn_factory.predict import Predictor
from cnn_factory.serve import create_app
from tests.test_cli import cli


def another_member(model: Path, path: Path, mean: float = 0.3, **outputs) -> Path:
    """A model file of the same model with other weights (a second fold) and another training
    split's normalisation; `outputs` replace parts of an output's definition (another model)."""
    checkpoint = torch.load(model, weights_only=True)
    generator = torch.Generator().manual_seed(1)
    for key, value in checkpoint["state_dict"].items():
        if value.is_floating_point() and "running" not in key:
            value.add_(0.05 * torch.randn(value.shape, generator=generator))
    checkpoint["inputs"]["image"]["mean"] = [mean] * len(checkpoint["inputs"]["image"]["mean"])
    checkpoint["epoch"] += 1  # saved at another epoch, as folds may be
    for name, changes in outputs.items():
        checkpoint["outputs"][name].update(changes)
    torch.save(checkpoint, path)
    return path


def test_two_copies_of_a_model_predict_exactly_what_one_does(served, tmp_path):
    folds = tmp_path / "folds"
    folds.mkdir()
    for name in ("fold-0.pt", "fold-1.pt"):
        shutil.copy(served["resize"], folds / name)
    images = str(served["resize_images"] / "*.png")
    cli("predict", str(served["resize"]), images, "--out", str(tmp_path / "one"), cwd=tmp_path)
    cli("predict", str(folds), images, "--out", str(tmp_path / "two"), cwd=tmp_path)
    written = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(written) > 3 and written == sorted(
        p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file()
    )
    for path in written:
        assert (tmp_path / "one" / path).read_bytes() == (tmp_path / "two" / path).read_bytes(), path


def a_model_and_its_images(request: pytest.FixtureRequest, kind: str) -> tuple[Path, list[Path]]:
    """The resize model and its images, or the volume model (patch mode: sliding windows over
    each scan at the model's spacing) and its scans."""
    if kind == "image":
        served = request.getfixturevalue("served")
        return served["resize"], sorted(served["resize_images"].glob("*.png"))
    scans = request.getfixturevalue("served_scans")
    return scans["model"], [scans["folder"] / "oblique.nii.gz", scans["folder"] / "stack.tif"]


@pytest.mark.parametrize("kind", ["image", "volume"])
def test_an_ensemble_averages_its_members_each_on_its_own_normalisation(request, kind, tmp_path):
    model, images = a_model_and_its_images(request, kind)
    first = shutil.copy(model, tmp_path / "fold-0.pt")
    second = another_member(model, tmp_path / "fold-1.pt", mean=0.6)  # neither model's own mean
    cpu = torch.device("cpu")
    members = [Predictor.from_model_file(p, cpu, tile=True, batch_size=3) for p in (first, second)]
    both = Predictor.from_model_file(str(tmp_path / "fold-*.pt"), cpu, tile=True, batch_size=3)
    assert both.model.shifts[0] is None and both.model.shifts[1] is not None
    for image in images:
        [ours] = both.predict([both.load({"image": image})])
        each = [m.predict([m.load({"image": image})])[0] for m in members]
        measures = {n: o.of for n, o in both.outputs.items() if o.type == "measure"}
        for name, value in ours.items():
            if name in measures:  # of the ensemble's own mask, not the members' measures averaged
                mask = measures[name]
                per_voxel = each[0][name][0] / np.count_nonzero(each[0][mask] > 0.5)  # (value, 1 in mm)
                assert np.isclose(value[0], per_voxel * np.count_nonzero(ours[mask] > 0.5), rtol=1e-6), name
                assert value[1] == each[0][name][1] == 1, name  # a scan's measure in mm
                continue
            mean = (each[0][name] + each[1][name]) / 2
            assert np.allclose(value, mean, atol=1e-6), name
            assert not np.allclose(each[0][name], each[1][name], atol=1e-4), name  # the members differ


def test_model_files_of_another_model_are_refused_naming_the_file(served, tmp_path):
    shutil.copy(served["resize"], tmp_path / "fold-0.pt")
    other = another_member(served["resize"], tmp_path / "fold-1.pt", majority={"classes": ["a", "b", "c"]})
    with pytest.raises(UserError) as err:
        Predictor.from_model_file(tmp_path, torch.device("cpu"))
    assert str(err.value) == (
        f"{other}: its outputs differ from {tmp_path / 'fold-0.pt'}'s; an ensemble takes model files of one "
        "model (e.g. the folds of one cross-validation)"
    )


@pytest.mark.parametrize("kind", ["image", "volume"])
def test_an_ensemble_exports_as_one_network_whose_activations_are_its_averaged_probabilities(request, kind, tmp_path):
    """`cnn-factory export models/folds/`: TorchScript and ONNX whose outputs, through the sidecar's
    activations, are the members' averaged probabilities, each member on its own normalisation."""
    model, _ = a_model_and_its_images(request, kind)
    folds = tmp_path / "folds"
    folds.mkdir()
    shutil.copy(model, folds / "0.pt")
    another_member(model, folds / "1.pt", mean=0.6)
    ensemble, model_file = load_models(model_files(folds), "cpu")
    x = torch.randn(2, model_file.channels, *model_file.first.size)  # normalised as the sidecar says
    expected = predict_batch(ensemble, x, False, dict(model_file.outputs.trained))
    single = predict_batch(load_models(model_files(folds / "0.pt"), "cpu")[0], x, False, dict(model_file.outputs))
    number = IMAGE_LEVEL[kind][0]
    assert not torch.allclose(single[number], expected[number], atol=1e-4)  # the members differ
    target = cli("export", str(folds), "--format", "torchscript", cwd=tmp_path)  # beside the folder
    assert "folds.ts" in target.stdout
    side = json.loads((tmp_path / "folds.ts.json").read_text())
    assert side["model"]["members"] == ["0.pt", "1.pt"] and side["model"]["val"] is None
    names = [entry["name"] for entry in side["outputs"]]
    assert names == list(expected)
    onnxruntime = pytest.importorskip("onnxruntime")
    export_model(str(folds), "onnx", str(tmp_path / "folds.onnx"))
    onnx = onnxruntime.InferenceSession(str(tmp_path / "folds.onnx")).run(None, {"x": x.numpy()})
    traced = torch.jit.load(str(tmp_path / "folds.ts"))(x)
    for name, script, graph in zip(names, traced, onnx):
        output = model_file.outputs[name]
        assert torch.allclose(output.probabilities(script), expected[name], atol=1e-5), name
        assert torch.allclose(output.probabilities(torch.from_numpy(graph)), expected[name], atol=1e-4), name


def test_serve_answers_with_the_ensemble_of_a_folder_of_model_files(served, tmp_path):
    """`cnn-factory serve models/folds/`: the members averaged as predict averages them, the page's
    and API's answers the ensemble's, /info naming its files."""
    folds = tmp_path / "folds"
    folds.mkdir()
    shutil.copy(served["resize"], folds / "0.pt")
    another_member(served["resize"], folds / "1.pt", mean=0.6)
    upload = {"image": ("small.png", (served["resize_images"] / "small.png").read_bytes(), "image/png")}
    client = TestClient(create_app(folds, device="cpu"))
    info = client.get("/info").json()["model"]
    assert info["file"] == "folds" and info["members"] == ["0.pt", "1.pt"]
    assert info["sha256"] == hashlib.sha256((folds / "0.pt").read_bytes() + (folds / "1.pt").read_bytes()).hexdigest()
    both = client.post("/predict", files=upload).json()["outputs"]
    each = [TestClient(create_app(folds / f, device="cpu")).post("/predict", files=upload).json()["outputs"]
            for f in ("0.pt", "1.pt")]  # fmt: skip
    assert each[0]["area"]["value"] != pytest.approx(each[1]["area"]["value"], abs=1e-3)
    assert both["area"]["value"] == pytest.approx((each[0]["area"]["value"] + each[1]["area"]["value"]) / 2, abs=1e-5)


def labelled(served: dict[str, Path], tmp_path: Path) -> list[str]:
    """The served example's CSV with the resize model's number ('area') added, and its --root."""
    example = served["resize"].parent / "example"
    lines = (example / "data.csv").read_text().splitlines()
    rows = [lines[0] + ",area"] + [f"{line},{20 + 3 * i}" for i, line in enumerate(lines[1:])]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    return [str(tmp_path / "data.csv"), "--root", str(example)]


def written(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def model_and_csv(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> tuple[Path, list[str]]:
    """A model file and the labelled CSV (with its --root) `cnn-factory evaluate` scores it on:
    the resize model on images, or the volume model on scans (sliding windows, scores in mm)."""
    if kind == "image":
        served = request.getfixturevalue("served")
        return served["resize"], labelled(served, tmp_path)
    scans = request.getfixturevalue("served_scans")
    example = scans["folder"] / "example"
    return scans["model"], [str(example / "data.csv"), "--root", str(example)]


@pytest.mark.parametrize("kind", ["image", "volume"])
def test_two_copies_of_a_model_evaluate_exactly_as_one_does(request, kind, tmp_path):
    model, labels = model_and_csv(request, kind, tmp_path)
    folds = tmp_path / "folds"
    folds.mkdir()
    for name in ("fold-0.pt", "fold-1.pt"):
        shutil.copy(model, folds / name)
    cli("evaluate", str(model), *labels, "--out", str(tmp_path / "one"), cwd=tmp_path)
    cli("evaluate", str(folds), *labels, "--out", str(tmp_path / "two"), cwd=tmp_path)
    one, two = written(tmp_path / "one"), written(tmp_path / "two")
    assert len(one) > 5 and one.keys() == two.keys()
    for path, content in one.items():
        assert content == two[path], path


IMAGE_LEVEL = {"image": ("area", "majority"), "volume": ("tumour_ml", "grade")}  # each model's number, category


@pytest.mark.parametrize("kind", ["image", "volume"])
def test_an_ensemble_evaluates_its_averaged_probabilities(request, kind, tmp_path):
    """Members that differ: the ensemble's per-image figures are neither member's, and its number
    and class probabilities per image are the members' mean; saved at other epochs, it has none."""
    model, labels = model_and_csv(request, kind, tmp_path)
    first = shutil.copy(model, tmp_path / "fold-0.pt")
    another_member(model, tmp_path / "fold-1.pt", mean=0.6)
    for out, model in (("a", first), ("b", tmp_path / "fold-1.pt"), ("both", tmp_path / "fold-*.pt")):
        cli("evaluate", str(model), *labels, "--out", str(tmp_path / out), cwd=tmp_path)
    tables = {out: (tmp_path / out / "per_image.csv").read_text() for out in ("a", "b", "both")}
    epochs = {out: json.loads((tmp_path / out / "metrics.json").read_text()).get("epoch") for out in ("a", "b", "both")}
    assert epochs["b"] == epochs["a"] + 1 and epochs["both"] is None
    assert tables["both"] != tables["a"] and tables["both"] != tables["b"]
    a, b, both = (list(csv.DictReader(io.StringIO(tables[out]))) for out in ("a", "b", "both"))
    number, category = IMAGE_LEVEL[kind]
    averaged = [f"{number}/predicted", *(c for c in both[0] if c.startswith(f"{category}/p_"))]
    assert len(averaged) >= 3
    for row_a, row_b, row in zip(a, b, both, strict=True):
        for column in averaged:  # the table's 6 decimals: within 1e-6 of the mean of the members' cells
            assert abs(float(row[column]) - (float(row_a[column]) + float(row_b[column])) / 2) <= 2e-6, column


def test_evaluate_refuses_model_files_of_another_model_naming_the_file(served, tmp_path):
    shutil.copy(served["resize"], tmp_path / "fold-0.pt")
    other = another_member(served["resize"], tmp_path / "fold-1.pt", majority={"classes": ["a", "b", "c"]})
    labels = labelled(served, tmp_path)
    result = cli("evaluate", str(tmp_path), *labels, "--out", str(tmp_path / "out"), cwd=tmp_path, check=False)
    assert result.returncode == 1 and result.stderr.splitlines() == [
        f"error: {other}: its outputs differ from {tmp_path / 'fold-0.pt'}'s; an ensemble takes model files of "
        "one model (e.g. the folds of one cross-validation)"
    ]
    assert not (tmp_path / "out").exists()
