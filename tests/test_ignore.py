"""Label values a mask output ignores (`ignore: 255`, Pascal VOC's unlabelled borders): stored as
255, left out of the losses, the training metrics, evaluate's scores and the patch sampler."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cnn_factory import losses
from cnn_factory.accumulators import ClassOverlapCounts, OverlapCounts
from cnn_factory.config import PREPARED, EvaluateConfig, parse_params
from cnn_factory.data.example import make_example
from cnn_factory.data.prepare import prepare
from cnn_factory.data.ragged import RaggedArray
from cnn_factory.errors import UserError
from cnn_factory.images import read_image, write_image
from cnn_factory.model import ModelFile, load_model
from cnn_factory.outputs import from_definition, make_output
from cnn_factory.outputs.decoding import IGNORE
from cnn_factory.plan import run_plan
from cnn_factory.report import evaluate_and_report
from cnn_factory.training.pictures import HEADING, overlay_grid
from tests.conftest import SIZE, prepare_and_fit, tiny_params
from tests.test_multiclass import model_logits

CLASSES = {"disc": 1, "square": 2, "triangle": 3}  # the example's label values


def with_borders(label_map: np.ndarray) -> np.ndarray:
    """A label map with 255 on the background pixels beside an object, as Pascal VOC draws its
    objects' unlabelled borders."""
    padded = np.pad(label_map, 1)
    near = np.zeros(label_map.shape, bool)
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        near |= padded[1 + dy : 1 + dy + label_map.shape[0], 1 + dx : 1 + dx + label_map.shape[1]] > 0
    return np.where((label_map == 0) & near, 255, label_map).astype(np.uint8)


def ignoring_params(folder: Path | None = None, **train) -> dict:
    params = tiny_params()
    if folder is not None:
        params["data"].update(csv=str(folder / "data.csv"), root=str(folder))
    params["outputs"] = {
        "round": {"type": "segmentation", "column": "labels", "label": 1, "size": SIZE, "ignore": 255},
        "shapes": {"type": "segmentation", "column": "labels", "labels": dict(CLASSES), "size": SIZE, "ignore": [255]},
    }
    params["train"].update(train)
    return params


# --- params and decoding ---
def test_ignored_values_are_stored_as_255_and_left_out_of_the_coverage():
    label_map = np.array([[0, 1, 255], [2, 255, 1], [0, 0, 3]], np.uint8)
    round_ = make_output("round", (3, 3), type="segmentation", label=1, ignore=255)
    shapes = make_output("shapes", (3, 3), type="segmentation", labels=CLASSES, ignore=[255])
    assert round_.mask(label_map, (3, 3)).tolist() == [[0, 1, 255], [0, 255, 1], [0, 0, 0]]
    assert shapes.mask(label_map, (3, 3)).tolist() == [[0, 1, 255], [2, 255, 1], [0, 0, 3]]
    # shares of the 7 pixels that count, not of all 9
    assert round_.summary({"train": round_.mask(label_map, (3, 3))[None]}) == {"coverage_train": round(2 / 7, 4)}
    coverage = shapes.summary({"train": shapes.mask(label_map, (3, 3))[None]})["coverage_train"]
    assert coverage == {"disc": round(2 / 7, 4), "square": round(1 / 7, 4), "triangle": round(1 / 7, 4)}
    without = make_output("round", (3, 3), type="segmentation", label=1)
    assert without.mask(label_map, (3, 3)).tolist() == [[0, 1, 0], [0, 0, 1], [0, 0, 0]]  # 255: background


def test_the_model_file_keeps_the_ignored_values_and_older_files_ignore_none():
    cfg = parse_params(ignoring_params())
    for name in ("round", "shapes"):
        described = cfg.outputs[name].describe()
        assert described["ignore"] == [255] and from_definition(name, described).ignore == (255,)
        del described["ignore"]  # a model file written before `ignore`
        assert from_definition(name, described).ignore == ()


@pytest.mark.parametrize(
    ("name", "ignore", "message"),
    [
        ("round", [1, 255], "outputs.round.ignore: label value 1 is in both ignore and label"),
        ("shapes", 2, "outputs.shapes.ignore: label value 2 is in both ignore and labels.square"),
        ("round", "borders", "outputs.round.ignore: expected a label value (integer >= 0) or a list of them"),
    ],
)
def test_a_bad_ignore_is_named(name, ignore, message):
    params = ignoring_params()
    params["outputs"][name]["ignore"] = ignore
    with pytest.raises(UserError) as err:
        parse_params(params)
    assert message in str(err.value)


# --- losses and metrics ---
def band(target: torch.Tensor) -> torch.Tensor:
    """`target` (B, H, W) with its last 3 columns ignored."""
    target = target.clone()
    target[..., -3:] = IGNORE
    return target


MASK_LOSSES = [(losses.bce_loss, 1), (losses.soft_dice_loss, 1), (losses.bce_dice_loss, 1)]
MASK_LOSSES += [(losses.soft_jaccard_loss, 1), (losses.focal_loss, 1), (losses.class_cross_entropy_loss, 4)]
MASK_LOSSES += [(losses.class_dice_loss, 4), (losses.class_ce_dice_loss, 4)]


@pytest.mark.parametrize(("loss", "channels"), MASK_LOSSES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_ignored_pixels_add_nothing_to_any_mask_loss(loss, channels):
    generator = torch.Generator().manual_seed(0)
    shape = (2, channels, 8, 8) if channels > 1 else (2, 8, 8)
    logits = torch.randn(shape, generator=generator, requires_grad=True)
    target = band(torch.randint(0, max(channels, 2), (2, 8, 8), generator=generator).float())
    masked = losses.ignoring(loss, IGNORE)
    value = masked(logits, target)
    value.backward()
    assert logits.grad is not None and torch.all(logits.grad[..., -3:] == 0)  # nothing learnt there
    assert logits.grad[..., :-3].abs().sum() > 0
    other = logits.detach().clone()
    other[..., -3:] = torch.randn(other[..., -3:].shape, generator=generator) * 10
    assert masked(other, target).item() == pytest.approx(value.item(), abs=1e-6)  # whatever is predicted there
    # as if the band were not there: means over pixels over the 5 counted columns, dice per image of them
    assert value.item() == pytest.approx(loss(logits.detach()[..., :-3], target[..., :-3]).item(), rel=1e-5)


def test_metrics_count_only_the_pixels_that_count():
    target = band(torch.tensor([[[1.0] * 8] * 8]))  # all foreground, the band ignored
    logits = torch.full((1, 8, 8), 5.0)
    logits[..., :2] = -5.0  # two columns missed
    counts = OverlapCounts("cpu", IGNORE)
    counts.update(logits, target)
    assert counts.counts.tolist() == [3 * 8, 0, 2 * 8]  # tp, fp, fn of the 5 counted columns
    classes = ClassOverlapCounts(("a", "b"), "cpu", IGNORE)
    class_logits = torch.zeros(1, 3, 8, 8)
    class_logits[:, 1] = 1.0  # every pixel predicted a
    classes.update(class_logits, band(torch.ones(1, 8, 8)))
    assert classes.compute()["dice_a"] == 1.0  # the band's pixels (predicted a too) are in no class's counts
    assert int(classes.counts.sum()) == 64 and int(classes.counts[0, 0]) == 24  # as background predicted background


# --- prepare, train and evaluate ---
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The tiny example with VOC-style 255 borders around its objects, prepared and trained a few epochs."""
    root = tmp_path_factory.mktemp("ignore")
    make_example(root / "example", rows=24, size=(16, 16), seed=0)
    for path in (root / "example" / "labels").glob("*.png"):
        write_image(path, with_borders(read_image(path)))
    params = ignoring_params(root / "example", epochs=10, lr=0.01, batch_size=4, log_images_every=0)
    params["model"]["filters"] = 8  # enough to mark some pixels of each class in a few seconds
    return prepare_and_fit(root, parse_params(params))


def test_prepare_stores_the_borders_as_255_and_never_samples_them(trained, tmp_path):
    train = np.load(trained / PREPARED / "train" / "round.npy")
    assert set(np.unique(train)) == {0, 1, IGNORE}
    params = ignoring_params(trained / "example")
    params["inputs"]["image"]["mode"] = "patch"
    prepare(parse_params(params), tmp_path / "prepared", None, workers=1)
    native = RaggedArray(tmp_path / "prepared" / "train", "shapes.native", masks=True)
    points = np.load(tmp_path / "prepared" / "train" / "shapes.foreground.npy")
    for row in range(len(native)):
        valid = points[row][points[row, :, 0] >= 0]
        assert set(native[row][valid[:, 0], valid[:, 1]].tolist()) <= {1, 2, 3}  # a patch centres on an object
    metrics = json.loads((trained / "dvclive" / "metrics.json").read_text())
    assert np.isfinite(metrics["train"]["loss"]) and 0 <= metrics["val"]["round"]["dice"] <= 1


def test_evaluate_scores_neither_truth_nor_prediction_on_the_borders(trained, tmp_path):
    model, meta = load_model(trained / "models" / "example.pt")
    cfg = parse_params(ignoring_params(trained / "example"))
    manifest = json.loads((trained / PREPARED / "manifest.json").read_text())
    test = trained / PREPARED / "test"
    split = manifest["splits"]["test"]
    options = EvaluateConfig(bootstrap=20, worst=2)
    model_file, cpu = ModelFile.from_meta(meta), torch.device("cpu")
    evaluate_and_report(tmp_path / "eval", model, model_file, cfg.outputs, test, split, 4, cpu, options)
    logits = model_logits(model, meta, np.load(test / "image.npy"))
    rows = list(csv.DictReader((tmp_path / "eval" / "per_image.csv").open()))
    predicted_on_borders = 0
    for row, file, pred in zip(rows, split["files"], (logits["round"] > 0).numpy()):
        label_map = read_image(trained / "example" / file.replace("images/", "labels/"))
        counts = label_map != 255
        truth = label_map == 1
        predicted_on_borders += int((pred & ~counts).sum())
        assert int(row["round/truth_px"]) == int(truth.sum())
        assert int(row["round/pred_px"]) == int((pred & counts).sum())  # none of the border's pixels
        assert int(row["round/tp"]) == int((pred & truth).sum())
    assert predicted_on_borders > 0  # the borders held predictions that were left unscored


def test_the_truth_panel_greys_the_ignored_pixels_and_says_so():
    images = np.full((1, 3, 16, 16), 200, np.uint8)
    truth, ignored = np.zeros((1, 16, 16), bool), np.zeros((1, 16, 16), bool)
    truth[:, 4:8, 4:8], ignored[:, :, 12:] = True, True
    plain, greyed = overlay_grid(images, truth, truth), overlay_grid(images, truth, truth, ignored)
    changed = (plain[HEADING:] != greyed[HEADING:]).any(-1)
    panel, gap = 16 * 16, 2 * 16  # 16x16 masks are drawn 16 times larger
    truth_panel = changed[:, panel + gap : 2 * panel + gap]
    assert truth_panel[:, 12 * 16 :].all() and not truth_panel[:, : 12 * 16].any()  # the ignored columns alone
    assert changed.sum() == truth_panel.sum()  # neither the image nor the prediction
    assert not np.array_equal(plain[:HEADING], greyed[:HEADING])  # the heading names the grey


def test_the_plan_notes_label_values_that_no_output_names(example_dir):
    maps = sorted((example_dir / "labels").glob("*.png"))
    for path in maps:
        write_image(path, with_borders(read_image(path)))
    params = ignoring_params(example_dir)
    assert "note: column 'labels'" not in run_plan(parse_params(params), sample=24, budget_gb=4)
    for output in params["outputs"].values():
        del output["ignore"]
    del params["outputs"]["shapes"]["labels"]["triangle"]  # value 3: named by no output now
    text = run_plan(parse_params(params), sample=24, budget_gb=4)  # every one of the 24 rows read
    pixels = np.concatenate([read_image(path).ravel() for path in maps])
    shares = [f"{v} ({np.mean(pixels == v):.1%} of its pixels)" for v in (3, 255)]
    assert f"note: column 'labels' holds label value(s) {', '.join(shares)}, which no output names" in text
