"""Class masks: a segmentation naming several classes in `labels`, one index per pixel, one decoder.

Params, prepared arrays, the head's shape, losses and metrics on hand-made inputs, augmentation,
sliding windows, predict's index PNG, export's sidecar, evaluate's per-class figures on a tiny
trained model, and one `dvc repro` through the real CLI.
"""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnn_factory.config import PREPARED, EvaluateConfig, parse_params
from cnn_factory.data.augment import Augmenter
from cnn_factory.data.example import make_example
from cnn_factory.data.prepare import prepare
from cnn_factory.data.ragged import RaggedArray
from cnn_factory.errors import UserError
from cnn_factory.evaluate import evaluate_split
from cnn_factory.export import export_model
from cnn_factory.images import read_image
from cnn_factory.inference import predict_tiled
from cnn_factory.model import ModelFile, MultiOutputNet, NetShape, load_model, model_args, model_meta
from cnn_factory.outputs import Scorer, from_definition, make_output
from cnn_factory.outputs.class_mask import ClassMaskOutput
from cnn_factory.outputs.segmentation import SegmentationOutput
from cnn_factory.palette import class_colours
from cnn_factory.predict import predict_images
from cnn_factory.report import evaluate_and_report
from cnn_factory.scores.masks import class_mask_scores, class_mask_summary
from cnn_factory.training.distributed import SINGLE
from cnn_factory.training.loop import Placement
from cnn_factory.training.losses import Criterion
from cnn_factory.training.metrics import OutputMetrics
from cnn_factory.training.pictures import HEADING, TRUTH, overlay_grid
from cnn_factory.training.validation import make_validation
from tests.conftest import SIZE, make_repo, prepare_and_fit, run, tiny_params
from tests.test_augment import GEOMETRIC  # geometric transforms only

# the example's label maps hold 1 disc, 2 square, 3 triangle; listed out of order so that the
# class indices (1 triangle, 2 disc, 3 square) differ from the label values
CLASSES = {"triangle": 3, "disc": 1, "square": 2}
INDEX = {3: 1, 1: 2, 2: 3}  # label value -> class index


def class_params(folder: Path | None = None, **train) -> dict:
    """The tiny params with a class mask `shapes` beside a boolean mask, on the example in `folder`."""
    params = tiny_params()
    if folder is not None:
        params["data"].update(csv=str(folder / "data.csv"), root=str(folder))
    params["outputs"] = {
        "shapes": {"type": "segmentation", "column": "labels", "labels": dict(CLASSES), "size": SIZE},
        "round": {"type": "segmentation", "column": "labels", "label": 1, "size": SIZE},
    }
    params["train"].update(train)
    return params


def shapes(**definition) -> ClassMaskOutput:
    output = make_output("shapes", (16, 16), type="segmentation", column="labels", **definition)
    assert isinstance(output, ClassMaskOutput)
    return output


def by_hand(label_map: np.ndarray) -> np.ndarray:
    """The class-index mask of a label map, pixel by pixel."""
    return np.vectorize(lambda v: INDEX.get(int(v), 0))(label_map).astype(np.uint8)


# --- params ---
def test_labels_make_a_class_mask_and_label_keeps_the_boolean_mask():
    cfg = parse_params(class_params())
    assert isinstance(cfg.outputs["shapes"], ClassMaskOutput) and isinstance(cfg.outputs["round"], SegmentationOutput)
    assert cfg.outputs["shapes"].classes == ("triangle", "disc", "square")  # in the order params.yaml gives
    assert cfg.outputs["shapes"].loss == "ce_dice" and cfg.outputs["shapes"].size == (16, 16)
    assert cfg.outputs["shapes"].label_values == (3, 1, 2)
    described = cfg.outputs["shapes"].describe()
    assert described["classes"] == ["background", "triangle", "disc", "square"]
    again = from_definition("shapes", described)  # as predict and export rebuild it from the model file
    assert isinstance(again, ClassMaskOutput) and again.labels == cfg.outputs["shapes"].labels
    assert isinstance(from_definition("round", cfg.outputs["round"].describe()), SegmentationOutput)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"a": 1, "b": [2, 1]}, "outputs.shapes.labels: label value 1 is in both 'a' and 'b'"),
        ({"a b": 1}, "outputs.shapes.labels: class name 'a b': use letters, digits"),
        ({"background": 1}, "outputs.shapes.labels: class name 'background'"),
        ({}, "outputs.shapes.labels: expected 1 to 254 classes, got 0"),
        ({f"c{i}": i for i in range(255)}, "outputs.shapes.labels: expected 1 to 254 classes, got 255"),
        ({"a": "one"}, "outputs.shapes.labels.a: expected a label value (integer >= 0) or a list of them"),
    ],
)
def test_bad_labels_are_named(labels, message):
    params = class_params()
    params["outputs"]["shapes"]["labels"] = labels
    with pytest.raises(UserError) as err:
        parse_params(params)
    assert message in str(err.value)


def test_a_boolean_loss_on_a_class_mask_is_named_with_the_kinds_losses():
    params = class_params()
    params["outputs"]["shapes"]["loss"] = "bce_dice"
    with pytest.raises(UserError, match="outputs.shapes.loss: unknown value 'bce_dice'; expected one of ce_dice"):
        parse_params(params)
    params["outputs"]["shapes"]["type"] = "segmentaton"
    with pytest.raises(UserError, match="expected one of segmentation, category, numeric, measure$"):
        parse_params(params)  # the kinds' `type` values, not their internal names


def test_loss_function_flag_names_the_outputs_it_does_not_fit():
    from cnn_factory.cli.train import dvc_overrides

    params = class_params()
    alone = {"outputs": {"shapes": params["outputs"]["shapes"]}}
    assert "++outputs.shapes.loss='ce_dice'" in dvc_overrides({"loss_function": "ce_dice"}, [], alone)
    with pytest.raises(UserError, match="does not fit outputs.round is segmentation"):
        dvc_overrides({"loss_function": "ce_dice"}, [], params)


# --- data ---
def test_mask_maps_label_values_to_class_indices_and_resizes_with_nearest():
    output = shapes(labels={"a": [5, 7], "b": 2})
    label_map = np.array([[0, 5, 7, 2], [2, 9, 5, 0]], np.int32)
    assert np.array_equal(output.mask(label_map, (2, 4)), [[0, 1, 1, 2], [2, 0, 1, 0]])
    big = output.mask(np.kron(label_map, np.ones((3, 3), np.int32)), (5, 9))
    assert big.dtype == np.uint8 and set(np.unique(big)) <= {0, 1, 2}  # never a value between classes
    assert output.lacks_labels(np.array([[0, 9]])) and not output.lacks_labels(np.array([[7]]))


def test_prepare_stores_class_indices_at_the_mask_size_and_the_label_maps_own_size(example_dir, tmp_path):
    params = class_params(example_dir)
    params["outputs"]["shapes"]["size"] = [8, 8]
    cfg = parse_params(params)
    report, _ = prepare(cfg, tmp_path / "prepared", None, workers=1)
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    train = np.load(tmp_path / "prepared" / "train" / "shapes.npy")
    assert train.dtype == np.uint8 and train.shape == (16, 8, 8) and set(np.unique(train)) == {0, 1, 2, 3}
    assert set(np.unique(np.load(tmp_path / "prepared" / "train" / "round.npy"))) == {0, 1}  # unchanged
    truth = RaggedArray(tmp_path / "prepared" / "test", "shapes.truth", masks=True)
    for k, file in enumerate(manifest["splits"]["test"]["files"]):
        label_map = read_image(example_dir / file.replace("images/", "labels/"))
        assert np.array_equal(truth[k], by_hand(label_map))  # at the label map's own 16x16
    coverage = report["outputs"]["shapes"]["coverage_train"]
    assert list(coverage) == ["triangle", "disc", "square"]
    assert coverage["disc"] == pytest.approx((train == 2).mean(), abs=1e-4)


def test_patch_mode_samples_foreground_from_any_class(example_dir, tmp_path):
    params = class_params(example_dir)
    params["inputs"]["image"]["mode"] = "patch"
    params["outputs"] = {"shapes": params["outputs"]["shapes"]}
    cfg = parse_params(params)
    prepare(cfg, tmp_path / "prepared", None, workers=1)
    native = RaggedArray(tmp_path / "prepared" / "train", "shapes.native", masks=True)
    points = np.load(tmp_path / "prepared" / "train" / "shapes.foreground.npy")
    classes_seen = set()
    for row in range(len(native)):
        mask, valid = native[row], points[row][points[row, :, 0] >= 0]
        assert len(valid) == min(64, np.count_nonzero(mask))  # every class counts as foreground
        classes_seen |= set(mask[valid[:, 0], valid[:, 1]].tolist())
    assert classes_seen == {1, 2, 3}


# --- model, losses, metrics ---
@pytest.mark.parametrize(("labels", "size"), [({"a": 1}, [16, 16]), ({"a": 1, "b": 2, "c": [3, 4]}, [8, 8])])
def test_one_decoder_gives_background_and_each_class(labels, size):
    output, mask = shapes(labels=labels, size=size), make_output("m", (16, 16), type="segmentation", label=1)
    shape = NetShape(in_channels=3, depth=2, filters=4)
    model = MultiOutputNet(shape=shape, outputs={"shapes": output.head_args({}), "m": mask.head_args({})})
    logits = model(torch.randn(2, 3, 16, 16))
    assert logits["shapes"].shape == (2, len(labels) + 1, *size)
    assert logits["m"].shape == (2, 16, 16) and model.heads["m"].head.weight.shape[0] == 1  # the boolean head as before
    probs = output.probabilities(logits["shapes"])
    assert torch.allclose(probs.sum(1), torch.ones(2, *size))
    predicted = Scorer.of(output).predicted_mask(probs)
    assert predicted.shape == (2, *size) and predicted.max() <= len(labels)


def one_hot_logits(index: torch.Tensor, classes: int, scale: float = 30.0) -> torch.Tensor:
    """(B, classes, H, W) logits that put (nearly) all probability on `index` (B, H, W)."""
    return scale * torch.nn.functional.one_hot(index.long(), classes).permute(0, 3, 1, 2).float()


def test_losses_on_perfect_and_uniform_predictions():
    output = shapes(labels={"a": 1, "b": 2, "c": 3})
    target = torch.tensor([[[0, 1, 1, 2], [2, 2, 0, 0]]]).float()  # class c absent
    perfect = one_hot_logits(target, 4)
    losses = {name: output.model_copy(update={"loss": name}).make_loss({}) for name in output.losses}
    assert losses["cross_entropy"](perfect, target).item() < 1e-6
    assert losses["dice"](perfect, target).item() < 1e-6  # the absent class too: nothing predicted, nothing true
    uniform = torch.zeros(1, 4, 2, 4)
    assert losses["cross_entropy"](uniform, target).item() == pytest.approx(math.log(4))
    # each class gets 1/4 of each of the 8 pixels: soft dice (2 * n / 4 + 1) / (8 / 4 + n + 1) for n true pixels
    expected = 1 - np.mean([(2 * n / 4 + 1) / (8 / 4 + n + 1) for n in (2, 3, 0)])
    assert losses["dice"](uniform, target).item() == pytest.approx(expected)
    assert losses["ce_dice"](uniform, target).item() == pytest.approx(math.log(4) + expected)
    assert output.make_loss({}) is losses["ce_dice"]  # the default


def test_metrics_per_class_and_their_mean_with_a_class_absent_from_truth_and_prediction():
    output = shapes(labels={"a": 1, "b": 2, "c": 3})
    truth = torch.tensor([[[0, 1, 1, 2]], [[0, 0, 2, 2]]]).float()
    pred = torch.tensor([[[0, 1, 2, 2]], [[0, 0, 2, 0]]])
    metrics = OutputMetrics({"shapes": output})
    metrics.update({"shapes": one_hot_logits(pred[:1], 4)}, {"shapes": truth[:1]})  # two batches, pooled
    metrics.update({"shapes": one_hot_logits(pred[1:], 4)}, {"shapes": truth[1:]})
    result = metrics.compute()
    # a: tp 1, fn 1 -> dice 2/3, IoU 1/2; b: tp 2, fp 1, fn 1 -> dice 2/3, IoU 1/2; c: nowhere -> 1, 1
    assert result["shapes/dice_a"] == pytest.approx(2 / 3) and result["shapes/iou_a"] == pytest.approx(1 / 2)
    assert result["shapes/dice_b"] == pytest.approx(2 / 3) and result["shapes/iou_b"] == pytest.approx(1 / 2)
    assert result["shapes/dice_c"] == 1.0 and result["shapes/iou_c"] == 1.0
    assert result["shapes/dice"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert list(result)[:2] == ["shapes/dice", "shapes/iou"]  # the headline first


def test_image_scores_per_class_and_summary_means_over_the_classes_scored():
    classes = ("a", "b", "c")
    truth = np.array([[0, 1, 1, 0], [0, 1, 1, 0], [2, 0, 0, 0]], np.uint8)
    pred = np.array([[0, 1, 1, 0], [0, 1, 0, 0], [2, 2, 0, 0]], np.uint8)
    row = class_mask_scores(pred, truth, classes, tolerance=1.0)
    assert row["dice_a"] == pytest.approx(2 * 3 / (2 * 3 + 0 + 1)) and row["truth_px_a"] == 4 and row["pred_px_a"] == 3
    assert row["dice_b"] == pytest.approx(2 / 3) and row["iou_b"] == pytest.approx(1 / 2)
    assert math.isnan(row["dice_c"]) and math.isnan(row["hd95_c"])  # absent from both: not scored
    assert row["dice"] == pytest.approx((row["dice_a"] + row["dice_b"]) / 2)
    other = class_mask_scores(np.zeros_like(pred), truth, classes, tolerance=1.0)
    columns = {k: np.array([row[k], other[k]]) for k in row}
    summary = class_mask_summary(columns, classes)
    assert summary["dice_a"] == pytest.approx((row["dice_a"] + 0) / 2)  # missed entirely in the second image
    assert summary["dice_b"] == pytest.approx((row["dice_b"] + 0) / 2)
    assert math.isnan(summary["dice_c"]) and summary["empty_images_c"] == 2
    assert summary["dice"] == pytest.approx((summary["dice_a"] + summary["dice_b"]) / 2)
    assert summary["dice_pooled_a"] == pytest.approx(2 * 3 / (2 * 3 + 0 + 5))  # tp 3, fn 1 + 4


# --- augmentation, pictures, sliding windows ---


def test_augmentation_moves_the_index_mask_with_its_image_and_keeps_its_values():
    blocks = torch.randint(0, 4, (8, 1, 8, 8), generator=torch.Generator().manual_seed(0)).float()
    index = blocks.repeat_interleave(4, -1).repeat_interleave(4, -2)[:, 0]  # (8, 32, 32) values 0..3
    image = (index / 3)[:, None].repeat(1, 3, 1, 1)  # the image shows its own class index
    outputs = {"shapes": shapes(labels={"a": 1, "b": 2, "c": 3}, size=[32, 32])}
    zero, one = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    y, out = Augmenter(GEOMETRIC, seed=0)(image, {"shapes": index}, torch.ones(8, dtype=torch.bool), outputs, zero, one)
    assert not torch.equal(out["shapes"], index)
    assert set(out["shapes"].unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}  # nearest neighbour: no value in between
    # inside the blocks the bilinear image still shows one index exactly: the mask must hold it there
    shown = y[:, 0] * 3
    inside = (shown - shown.round()).abs() < 0.01
    assert inside.float().mean() > 0.5
    assert (shown.round() == out["shapes"])[inside].float().mean() > 0.99
    still = {"vflip": 0, "rotate": 0, "scale": (1.0, 1.0), "translate": 0, "shear": 0, "crop": 1.0}
    flip = GEOMETRIC.model_copy(update={"hflip": 1.0, **still})
    _, out = Augmenter(flip, seed=0)(image, {"shapes": index}, torch.ones(8, dtype=torch.bool), outputs, zero, one)
    assert torch.equal(out["shapes"], index.flip(-1))


def test_pictures_outline_each_class_in_its_colour_and_boolean_masks_in_yellow():
    palette = class_colours(255)
    assert (palette[0] == 0).all() and len({tuple(c) for c in palette}) == 256  # background black, all distinct
    images = np.full((1, 3, 2, 2), 90, np.uint8)
    truth, pred = np.array([[[0, 1], [2, 3]]], np.uint8), np.array([[[3, 3], [0, 1]]], np.uint8)
    grid = overlay_grid(images, truth, pred)[HEADING:]
    scale = 256 // 2
    at = lambda panel, y, x, dy=0: grid[y * scale + dy, (panel * 4 + x) * scale + scale // 2]  # noqa: E731
    assert (at(0, 0, 1) == 90).all() and (at(1, 0, 0, 64) == 90).all()  # image and background as they are
    for y, x, k in ((0, 1, 1), (1, 0, 2), (1, 1, 3)):
        assert (at(1, y, x) == palette[k]).all()  # the class's edge, in its colour
        assert (at(1, y, x, 64) == 90).all()  # and the image inside it
    assert (at(2, 0, 0) == palette[3]).all()
    boolean = overlay_grid(images, truth > 0, pred > 0)[HEADING:]  # the truth outlined in yellow
    assert (boolean[1 * scale, 4 * scale] == TRUTH).all()


class PixelModel(torch.nn.Module):
    """A stand-in whose class logits at each pixel are that pixel's channels (x10, background 0):
    a correct blend of windows gives back the softmax of the whole image exactly."""

    def forward(self, x):
        return {"shapes": 10 * torch.cat([torch.zeros_like(x[:, :1]), x], 1)}


@pytest.mark.parametrize(("size", "tta"), [((20, 28), False), ((5, 11), False), ((12, 20), True)])
def test_sliding_windows_blend_every_class_channel(size, tta):
    torch.manual_seed(0)
    x = torch.randn(1, 3, *size)
    outputs = {"shapes": shapes(labels={"a": 1, "b": 2, "c": 3}, size=[8, 8])}
    probs = predict_tiled(PixelModel(), x, (8, 8), overlap=0.5, tta=tta, batch_size=3, outputs=outputs)
    assert probs["shapes"].shape == (1, 4, *size)
    expected = torch.softmax(10 * torch.cat([torch.zeros_like(x[:, :1]), x], 1), 1)
    assert torch.allclose(probs["shapes"], expected, atol=1e-5)


def test_patch_mode_scores_a_class_mask_as_resize_mode_when_one_window_covers_the_image(example_dir, tmp_path):
    results, losses, weights = {}, {}, None
    torch.manual_seed(0)
    for mode in ("resize", "patch"):
        params = class_params(example_dir)
        params["inputs"]["image"]["mode"] = mode
        cfg = parse_params(params)
        prepare(cfg, tmp_path / mode, None, workers=1)
        manifest = json.loads((tmp_path / mode / "manifest.json").read_text())
        model = MultiOutputNet.from_args(model_args(cfg.model, cfg.inputs, cfg.outputs, manifest)).eval()
        weights = weights or copy.deepcopy(model.state_dict())
        model.load_state_dict(weights)
        model_file, cpu = ModelFile.from_meta(model_meta(cfg.inputs, cfg.outputs, manifest)), torch.device("cpu")
        scored = evaluate_split(model, model_file, cfg.outputs, tmp_path / mode / "test", 4, cpu)
        validate = make_validation(
            model_file=model_file,
            outputs=cfg.outputs,
            folder=tmp_path / mode / "test",
            batch_size=4,
            placement=Placement(device=cpu, stats=model_file.normalisation(cpu)),
            ranks=SINGLE,
        )
        losses[mode] = validate(model, Criterion(cfg.outputs, manifest["outputs"]), cpu)
        results[mode] = scored.metrics
    assert {f"shapes/dice_{c}" for c in CLASSES} <= set(results["patch"])
    for key, value in results["resize"].items():
        assert results["patch"][key] == pytest.approx(value, abs=1e-6), key
    loss_keys = [k for k in losses["resize"] if k.endswith("loss")]
    assert {"loss", "shapes/loss"} <= set(loss_keys)
    for key in loss_keys:  # blended probabilities back to logits, then the loss
        assert losses["patch"][key] == pytest.approx(losses["resize"][key], rel=1e-4), key


# --- predict, export, evaluate on a model file ---
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A folder holding the tiny example, its prepared arrays and a model trained on them for a few epochs."""
    root = tmp_path_factory.mktemp("trained")
    make_example(root / "example", rows=24, size=(16, 16), seed=0)
    params = class_params(root / "example", epochs=10, lr=0.01, batch_size=4, log_images_every=0)
    params["model"]["filters"] = 8  # enough to mark some pixels of each class in a few seconds
    return prepare_and_fit(root, parse_params(params))


def model_logits(model: MultiOutputNet, meta: dict, images: np.ndarray) -> dict[str, torch.Tensor]:
    """The model's logits for uint8 (N, C, H, W) images, normalised as the model file says."""
    mean, std = (torch.tensor(meta["inputs"]["image"][k]).view(1, -1, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        return model((torch.from_numpy(images).float() / 255 - mean) / std)


def test_predict_writes_an_index_png_with_a_palette(trained, tmp_path):
    model_file, images = trained / "models" / "example.pt", trained / "example" / "images"
    files = [images / "0000.png", images / "0001.png"]
    predict_images(str(model_file), [str(f) for f in files], tmp_path / "out", 2, "cpu", tta=False)
    model, meta = load_model(model_file)
    logits = model_logits(model, meta, np.stack([read_image(f).transpose(2, 0, 1) for f in files]))["shapes"]
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    assert [r["shapes_mask"] for r in rows] == ["shapes/0000.png", "shapes/0001.png"]
    for k, row in enumerate(rows):
        png = Image.open(tmp_path / "out" / "shapes" / f"{k:04d}.png")
        assert png.mode == "P"
        index = np.asarray(png)
        assert index.shape == (16, 16) and set(np.unique(index)) <= {0, 1, 2, 3}
        assert np.array_equal(index, logits[k].argmax(0).numpy())  # the most probable class per pixel
        palette = np.asarray(png.getpalette()[: 3 * 4], np.uint8).reshape(4, 3)
        assert np.array_equal(palette, class_colours(3)[:4]) and (palette[0] == 0).all()
        assert len({tuple(c) for c in palette}) == 4
        for c, name in enumerate(CLASSES, 1):
            assert float(row[f"shapes_{name}_coverage"]) == pytest.approx((index == c).mean(), abs=1e-4)
        assert set(np.unique(read_image(tmp_path / "out" / "round" / f"{k:04d}.png"))) <= {0, 255}


def test_predict_tiles_a_large_image_into_an_index_png(trained, tmp_path):
    images = trained / "example" / "images"
    wide = np.concatenate([read_image(images / f"{i:04d}.png") for i in range(3)], axis=1)[:13]  # 13x48
    Image.fromarray(wide).save(tmp_path / "wide.png")
    model_file, out = str(trained / "models" / "example.pt"), tmp_path / "out"
    predict_images(model_file, [str(tmp_path / "wide.png")], out, 4, "cpu", tta=False, tile=True, overlap=0.25)
    index = np.asarray(Image.open(tmp_path / "out" / "shapes" / "wide.png"))
    assert index.shape == (13, 48) and set(np.unique(index)) <= {0, 1, 2, 3}


def test_export_sidecar_describes_the_class_channels_and_softmax(trained, tmp_path):
    target = export_model(str(trained / "models" / "example.pt"), "torchscript", str(tmp_path / "m.ts"))
    side = json.loads(target.with_name("m.ts.json").read_text())
    entry = next(o for o in side["outputs"] if o["name"] == "shapes")
    assert entry["activation"] == "softmax" and entry["shape"] == ["batch", 4, 16, 16]
    assert entry["classes"] == ["background", "triangle", "disc", "square"]
    assert entry["labels"] == {"triangle": [3], "disc": [1], "square": [2]}
    boolean = next(o for o in side["outputs"] if o["name"] == "round")
    assert boolean["activation"] == "sigmoid" and boolean["shape"] == ["batch", 16, 16] and boolean["labels"] == [1]
    exported = torch.jit.load(str(target))
    model, meta = load_model(trained / "models" / "example.pt")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(exported(x)[entry["index"]], model(x)["shapes"], atol=1e-4)


def test_evaluate_scores_each_class_and_their_mean(trained, tmp_path):
    model, meta = load_model(trained / "models" / "example.pt")
    cfg = parse_params(class_params(trained / "example"))
    manifest = json.loads((trained / PREPARED / "manifest.json").read_text())
    test = trained / PREPARED / "test"
    options = EvaluateConfig(bootstrap=50, worst=2)
    split, cpu = manifest["splits"]["test"], torch.device("cpu")
    figures = evaluate_and_report(
        tmp_path / "eval", model, ModelFile.from_meta(meta), cfg.outputs, test, split, 4, cpu, options
    )
    # by hand: each test image's most probable class per pixel against its label map, class by class
    logits = model_logits(model, meta, np.load(test / "image.npy"))["shapes"]
    files = manifest["splits"]["test"]["files"]
    truths = [by_hand(read_image(trained / "example" / f.replace("images/", "labels/"))) for f in files]
    per_class = {}
    for c, name in enumerate(CLASSES, 1):
        dice = []
        for pred, truth in zip(logits.argmax(1).numpy(), truths):
            tp, fp = ((pred == c) & (truth == c)).sum(), ((pred == c) & (truth != c)).sum()
            fn = ((pred != c) & (truth == c)).sum()
            if tp + fp + fn:
                dice.append(2 * tp / (2 * tp + fp + fn))
        per_class[name] = np.mean(dice) if dice else math.nan
        if dice:
            assert figures[f"shapes/dice_{name}"] == pytest.approx(per_class[name]), name
    scored = [v for v in per_class.values() if not math.isnan(v)]
    assert len(scored) >= 2 and figures["shapes/dice"] == pytest.approx(np.mean(scored))
    assert 0 < figures["shapes/dice"] < 1  # a real comparison: some pixels right, some wrong
    for figure in ("dice", "iou", "hd95", "nsd", "dice_pooled"):
        assert figures[f"shapes/{figure}_ci_low"] <= figures[f"shapes/{figure}"] <= figures[f"shapes/{figure}_ci_high"]
    assert {f"shapes/{f}_{c}" for f in ("iou", "hd95", "nsd", "dice_pooled") for c in CLASSES} <= set(figures)
    metrics = json.loads((tmp_path / "eval" / "figures.json").read_text())["test"]
    assert metrics["shapes"]["dice_triangle"] == figures["shapes/dice_triangle"]
    assert "dice_pooled_resized" in metrics["round"]  # the boolean mask's figures beside them, as before

    rows = list(csv.DictReader((tmp_path / "eval" / "per_image.csv").open()))
    assert len(rows) == len(files)
    for row, truth in zip(rows, truths):
        assert [int(row[f"shapes/truth_px_{name}"]) for name in CLASSES] == [(truth == c).sum() for c in (1, 2, 3)]
        assert {"shapes/dice", "shapes/hd95_disc", "shapes/nsd_square", "round/dice"} <= set(row)
    points = json.loads((tmp_path / "eval" / "plots" / "dice" / "shapes.json").read_text())
    assert {p["class"] for p in points} <= set(CLASSES) and points
    worst = Image.open(tmp_path / "eval" / "plots" / "images" / "shapes_worst.png")
    assert worst.size[1] > 2 * 16  # two panels with their captions
    assert (tmp_path / "eval" / "plots" / "images" / "shapes.png").is_file()


def test_evaluate_command_scores_a_csv_of_the_test_rows_as_the_stage_does(trained, tmp_path):
    from cnn_factory.cli.main import run as cli

    model_file = trained / "models" / "example.pt"
    manifest = json.loads((trained / PREPARED / "manifest.json").read_text())
    lines = (trained / "example" / "data.csv").read_text().splitlines()
    numbers = manifest["splits"]["test"]["rows"]  # spreadsheet rows: the header is row 1
    (tmp_path / "test.csv").write_text("\n".join([lines[0], *(lines[n - 1] for n in numbers)]) + "\n")
    root, out = str(trained / "example"), str(tmp_path / "command")
    cli(["evaluate", str(model_file), str(tmp_path / "test.csv"), "--root", root, "--out", out, "--bootstrap", "0"])
    model, meta = load_model(model_file)
    cfg = parse_params(class_params(trained / "example"))
    split, cpu = manifest["splits"]["test"], torch.device("cpu")
    test, options = trained / PREPARED / "test", EvaluateConfig(bootstrap=0)
    stage = evaluate_and_report(
        tmp_path / "stage", model, ModelFile.from_meta(meta), cfg.outputs, test, split, 4, cpu, options
    )
    command = json.loads((tmp_path / "command" / "figures.json").read_text())["test"]["shapes"]
    shapes = {k.removeprefix("shapes/"): v for k, v in stage.items() if k.startswith("shapes/")}
    assert {f"dice_{c}" for c in CLASSES} <= set(shapes)
    assert {k: command[k] for k in shapes} == pytest.approx(shapes)


def test_training_logs_each_class_and_the_mean(trained):
    logged = json.loads((trained / "dvclive" / "metrics.json").read_text())["val"]["shapes"]
    assert {"loss", "dice", "iou", *(f"{m}_{c}" for m in ("dice", "iou") for c in CLASSES)} <= set(logged)
    assert logged["dice"] == pytest.approx(np.mean([logged[f"dice_{c}"] for c in CLASSES]))
    curve = (trained / "dvclive" / "plots" / "curves" / "masks" / "shapes.tsv").read_text().splitlines()
    assert curve[0] == "step\tdice\tiou" and len(curve) == 1 + 10


# --- the pipeline ---
@pytest.mark.slow
def test_dvc_repro_with_a_class_mask(tmp_path):
    params = tiny_params()
    params["outputs"]["shapes"] = {"type": "segmentation", "column": "labels", "labels": dict(CLASSES), "size": SIZE}
    repo = make_repo(tmp_path / "repo", copy.deepcopy(params))
    run(["dvc", "repro"], repo)
    metrics = json.loads((repo / "eval" / "figures.json").read_text())["test"]
    assert {"dice", "iou", "hd95", "nsd", "dice_pooled", "dice_ci_low", "dice_ci_high"} <= set(metrics["shapes"])
    assert {f"dice_{c}" for c in CLASSES} <= set(metrics["shapes"]) and "dice" in metrics["round"]
    header = (repo / "eval" / "per_image.csv").read_text().splitlines()[0].split(",")
    assert {"shapes/dice", *(f"shapes/dice_{c}" for c in CLASSES), "round/dice"} <= set(header)
    assert (repo / "eval" / "plots" / "images" / "shapes_worst.png").is_file()
    val = json.loads((repo / "dvclive" / "metrics.json").read_text())["val"]["shapes"]
    assert {f"dice_{c}" for c in CLASSES} <= set(val)
    checkpoint = torch.load(repo / "models" / "example.pt", weights_only=True)
    assert checkpoint["outputs"]["shapes"]["classes"] == ["background", "triangle", "disc", "square"]
    assert checkpoint["outputs"]["round"]["labels"] == [1]  # the boolean mask's description as before
    run(["cnn-factory", "predict", "models/example.pt", "data/example/images/0000.png", "--out", "pred"], repo)
    png = Image.open(repo / "pred" / "shapes" / "0000.png")
    assert png.mode == "P" and set(np.unique(np.asarray(png))) <= {0, 1, 2, 3}
    assert run(["dvc", "status"], repo).stdout.strip().endswith("up to date.")  # nothing left to run


def test_the_model_file_keeps_what_rebuilds_the_class_mask_head(trained):
    checkpoint = torch.load(trained / "models" / "example.pt", weights_only=True)
    heads = checkpoint["model_args"]["outputs"]
    labels = {"triangle": [3], "disc": [1], "square": [2]}
    assert heads["shapes"] == {"type": "segmentation", "size": [16, 16], "labels": labels}
    assert heads["round"] == {"type": "segmentation", "size": [16, 16]}  # the boolean mask's, as before
    model, _ = load_model(trained / "models" / "example.pt")
    assert model.heads["shapes"].head.out_channels == 4 and model.heads["round"].head.out_channels == 1
