"""The measure kind (outputs/measure.py): its params checked against the other outputs, prepare's
(truth, spacing) per row and its bad cells, a model trained beside it without a head for it, and
evaluate, predict, serve and export reporting it in its unit."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from cnn_factory.config import parse_params
from cnn_factory.data.prepare import prepare
from cnn_factory.errors import UserError
from cnn_factory.evaluate import Scoring, evaluate_split
from cnn_factory.export import sidecar
from cnn_factory.model import ModelFile
from cnn_factory.outputs import ColumnReport, Scorer, Writer, make_output
from cnn_factory.predict import predict_images
from cnn_factory.report import write_report
from cnn_factory.serve import create_app
from cnn_factory.training.fit import fit

AREA = {"type": "measure", "of": "round", "measure": "area", "column": "round_px"}


def with_columns(example_dir: Path, spacing: dict[int, str] | None = None) -> Path:
    """The example's data.csv with `pixel_mm`, 0.5 mm per pixel (or the cells `spacing` gives by row
    index), beside its `round_px`, the round shape's true area in pixels of each label map."""
    path = example_dir / "data.csv"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        labels = np.asarray(Image.open(example_dir / row["labels"]))
        assert row["round_px"] == str(int(np.count_nonzero(labels == 1)))
        row["pixel_mm"] = (spacing or {}).get(i, "0.5")
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def as_dicom(image: Path, path: Path, pixel_mm: float) -> Path:
    """A colour image as a DICOM file holding it as it is, with its pixel size."""
    import pydicom

    from tests.test_serve import rgb_dicom

    dataset = pydicom.dcmread(io.BytesIO(rgb_dicom(np.asarray(Image.open(image).convert("RGB")))))
    dataset.PixelSpacing = [pixel_mm, pixel_mm]
    dataset.save_as(path)
    return path


def test_a_measure_needs_a_mask_a_fitting_measure_and_a_spacing_for_mm(params):
    params["outputs"]["size_mm"] = {"type": "measure", "of": "majority", "measure": "volume", "unit": "mm"}
    with pytest.raises(UserError) as err:
        parse_params(params)
    lines = str(err.value).splitlines()
    assert any("outputs.size_mm.of: 'majority' is no mask output; expected one of round, angular" in x for x in lines)
    assert any("outputs.size_mm.measure: volume measures volumes; these inputs are images" in x for x in lines)
    assert any("outputs.size_mm.unit: mm needs each image's pixel size" in x for x in lines)


def test_units_follow_the_spacing_and_classes_of_a_class_mask_are_measured():
    assert make_output("a", (16, 16), **AREA).unit_name == "px"
    assert make_output("a", (16, 16), **AREA, spacing_column="pixel_mm").unit_name == "mm2"
    assert make_output("v", (8, 16, 16), type="measure", of="organs.liver", measure="volume").unit_name == "mL"
    organs = make_output("organs", (4, 4), type="segmentation", labels={"liver": 1, "kidney": 2})
    count = make_output("n", (4, 4), type="measure", of="organs.kidney", measure="count")
    outputs = {"organs": organs, "n": count}
    assert count.source(outputs) == ("organs", "kidney") and count.problems_among("outputs.n", outputs, 2) == []
    index = np.array([[0, 2, 0, 2], [1, 1, 0, 0], [0, 0, 0, 2], [1, 0, 0, 2]], np.uint8)
    assert Scorer.of(count).measured({"organs": index}, outputs, np.full(2, np.nan), None) == 3


def test_without_truths_the_figures_are_undefined_and_plan_says_so():
    output = make_output("a", (16, 16), **{**AREA, "column": ""})
    figures = Scorer.of(output).summarise({"true": np.full(3, np.nan), "measured": np.ones(3)})
    assert figures["images"] == 0 and all(math.isnan(figures[k]) for k in ("mae", "bias", "loa_low", "r2"))
    stored = np.array([[np.nan, np.nan], [40.0, np.nan], [12.0, np.nan]], np.float32)
    assert ColumnReport.of(output).report(stored) == (
        "area of round in px, 2 of 3 rows with a truth, 12 to 40",
        [],
    )


def test_prepare_stores_truth_and_spacing_and_names_a_bad_spacing_cell(params, example_dir, tmp_path):
    csv_path = with_columns(example_dir, {3: "", 5: "-1"})
    params["data"].update(csv=str(csv_path), root=str(example_dir))
    params["outputs"]["round_area"] = {**AREA, "spacing_column": "pixel_mm"}
    with pytest.raises(UserError) as err:
        prepare(parse_params(params), tmp_path / "prepared", None, workers=1)
    text = str(err.value)
    assert "row 5, column 'pixel_mm': empty cell; expected mm per pixel for outputs.round_area" in text
    assert "row 7, column 'pixel_mm': '-1' is not positive" in text


def test_the_shipped_plot_templates_draw_a_measures_rows():
    """dvc.yaml's values and Bland-Altman entries name templates in .dvc/plots: DVC fills every anchor
    of each from a measure's rows, the Bland-Altman rows carrying the unit their lines are labelled in."""
    from dvc_render.vega import VegaRenderer

    output = make_output("v", (8, 16, 16), type="measure", of="tumour", measure="volume", column="tumour_ml")
    plots = Scorer.of(output).plots({"true": np.array([1.0, 2.0, np.nan]), "measured": np.array([1.5, 1.5, 3.0])})
    assert plots["bland_altman"] == [
        {"mean": 1.25, "difference": 0.5, "unit": "mL"},
        {"mean": 1.75, "difference": -0.5, "unit": "mL"},
    ]
    for template, rows, x, y in (
        ("bland_altman", plots["bland_altman"], "mean", "difference"),
        ("identity_scatter", plots["values"], "truth", "prediction"),
    ):
        data = [{**row, "rev": "workspace"} for row in rows]
        folder = str(Path(__file__).resolve().parents[1] / ".dvc" / "plots")
        spec = VegaRenderer(data, template, template=template, template_dir=folder, x=x, y=y).get_filled_template()
        assert "<DVC_METRIC" not in json.dumps(spec) and spec["data"]["values"] == data


def test_a_measure_beside_the_masks_trains_evaluates_and_predicts(params, example_dir, tmp_path, monkeypatch):
    params["data"].update(csv=str(with_columns(example_dir)), root=str(example_dir))
    params["train"].update(epochs=1, log_images_every=0)
    params["outputs"]["round_area"] = AREA
    params["outputs"]["round_mm2"] = {**AREA, "spacing_column": "pixel_mm", "components": "largest"}
    cfg = parse_params(params)
    prepare(cfg, tmp_path / "prepared", None, workers=1)
    monkeypatch.chdir(tmp_path)
    fit(cfg, tmp_path / "prepared")

    model, model_file = ModelFile.load(tmp_path / cfg.model.path)
    assert set(model.heads) == {"round", "angular", "majority"}  # no head for a measure
    assert model_file.outputs["round_mm2"].unit_name == "mm2"
    result = evaluate_split(
        model, model_file, model_file.outputs, tmp_path / "prepared" / "test", 4, torch.device("cpu"), scoring=Scoring()
    )
    pixels, mm2 = result.rows["round_area"], result.rows["round_mm2"]
    assert len(pixels["true"]) == len(result.rows["round"]["dice"])
    assert np.all(pixels["true"] == np.rint(pixels["true"]))
    assert mm2["true"] == pytest.approx(pixels["true"])  # the truth column is in pixels either way
    predicted = result.rows["round"]["pred_px"]  # the mask evaluate scored: its area is the measure
    assert pixels["measured"] == pytest.approx(predicted)
    assert np.all(mm2["measured"] <= pixels["measured"] * 0.25 + 1e-6)  # 0.5 mm pixels, largest component
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    figures = write_report(tmp_path / "eval", result, model_file.outputs, manifest["splits"]["test"], 50, 0)
    difference = pixels["measured"] - pixels["true"]
    assert figures["round_area/bias"] == pytest.approx(difference.mean())
    assert figures["round_area/loa_high"] == pytest.approx(difference.mean() + 1.96 * difference.std(ddof=1))
    assert figures["round_area/bias_ci_low"] <= figures["round_area/bias"] <= figures["round_area/bias_ci_high"]
    points = json.loads((tmp_path / "eval" / "plots" / "bland_altman" / "round_area.json").read_text())
    assert len(points) == len(difference) and points[0].keys() == {"mean", "difference", "unit"}
    assert {p["unit"] for p in points} == {"px"}
    header = (tmp_path / "eval" / "per_image.csv").read_text().splitlines()[0]
    assert "round_area/true,round_area/measured,round_area/difference" in header
    assert [f[1] for f in Scorer.of(model_file.outputs["round_mm2"]).summary_figures] == ["MAE mm2", "bias mm2"]

    writer = Writer.of(model_file.outputs["round_area"])
    assert writer.prediction_columns() == ["round_area", "round_area_unit"]
    assert writer.write_prediction(np.asarray([12.0, 0.0]), tmp_path, "a", (16, 16), 0.5) == ["12", "px"]
    # an image without a spacing at predict: pixels, as its unit says
    assert Writer.of(model_file.outputs["round_mm2"]).answer(np.asarray([3.0, 0.0]), (16, 16), 0.5) == {
        "value": 3.0,
        "unit": "px",
    }
    assert not math.isnan(figures["round_area/mae"])

    first = example_dir / manifest["splits"]["test"]["files"][0]
    predict_images(str(tmp_path / cfg.model.path), [str(first)], tmp_path / "out", 4, "cpu", False)
    with (tmp_path / "out" / "predictions.csv").open() as f:
        [row] = list(csv.DictReader(f))
    mask = np.asarray(Image.open(tmp_path / "out" / row["round_mask"])) > 0
    assert float(row["round_area"]) == np.count_nonzero(mask) and row["round_area_unit"] == "px"
    client = TestClient(create_app(tmp_path / cfg.model.path, device="cpu"))
    served = client.post("/predict", files={"image": first.read_bytes()}).json()["outputs"]
    assert served["round_area"] == {"kind": "measure", "value": float(row["round_area"]), "unit": "px"}
    assert served["round_mm2"]["unit"] == "px"  # a PNG has no pixel size

    # the same image as a DICOM file with its pixel size: the mm measure in mm, the pixel one in pixels
    dicom = as_dicom(first, tmp_path / "first.dcm", pixel_mm=0.5)
    predict_images(str(tmp_path / cfg.model.path), [str(dicom)], tmp_path / "dicom", 4, "cpu", False)
    with (tmp_path / "dicom" / "predictions.csv").open() as f:
        [spaced] = list(csv.DictReader(f))
    assert spaced["round_area"] == row["round_area"] and spaced["round_area_unit"] == "px"
    assert spaced["round_mm2_unit"] == "mm2" and float(spaced["round_mm2"]) == pytest.approx(
        float(row["round_mm2"]) * 0.25, rel=1e-5
    )
    answer = client.post("/predict", files={"image": dicom.read_bytes()}).json()
    assert answer["outputs"]["round_mm2"] == {"kind": "measure", "value": float(spaced["round_mm2"]), "unit": "mm2"}
    assert (
        answer["image"]["pixel_mm"] == 0.5
        and "pixel_mm" not in client.post("/predict", files={"image": first.read_bytes()}).json()["image"]
    )

    # a CSV with the measure's spacing column: each row's own mm per pixel, as evaluate takes it
    shutil.copy(first, tmp_path / "again.png")
    table = tmp_path / "new.csv"
    table.write_text(f"image,pixel_mm\n{first},0.5\nagain.png,0.25\n")
    predict_images(str(tmp_path / cfg.model.path), [str(table)], tmp_path / "csv", 4, "cpu", False)
    with (tmp_path / "csv" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["round_mm2_unit"] for r in rows] == ["mm2", "mm2"] and rows[0]["round_area_unit"] == "px"
    assert [float(r["round_mm2"]) for r in rows] == pytest.approx(
        [float(row["round_mm2"]) * 0.25, float(row["round_mm2"]) * 0.0625], rel=1e-5
    )
    table.write_text(f"image,pixel_mm\n{first},0.5\nagain.png,-1\n")
    with pytest.raises(UserError, match=r"new.csv: row 3, column 'pixel_mm': '-1' is not positive; expected mm"):
        predict_images(str(tmp_path / cfg.model.path), [str(table)], tmp_path / "bad", 4, "cpu", False)
    assert not (tmp_path / "bad").exists()  # refused before any prediction is written
    side = sidecar(model_file, list(model.heads), "torchscript", "example.ts")
    assert [o["name"] for o in side["outputs"]] == ["round", "angular", "majority"]
    assert [(c["name"], c["of"], c["unit"]) for c in side["computed"]] == [
        ("round_area", "round", "px"),
        ("round_mm2", "round", "mm2"),
    ]
