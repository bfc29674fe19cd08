"""Native resolution: ragged storage, incremental patch-mode prepare, the patch sampler, sliding-window scoring."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from benchmarks.cells import make_cells
from cnn_factory.config import parse_params
from cnn_factory.data.dataset import to_device
from cnn_factory.data.patches import PatchBatches, PatchSplit
from cnn_factory.data.prepare import prepare
from cnn_factory.data.ragged import RaggedArray, RaggedWriter
from cnn_factory.errors import UserError
from cnn_factory.evaluate import evaluate_split
from cnn_factory.images import read_image, write_image
from cnn_factory.model import ModelFile, MultiOutputNet, model_args, model_meta
from cnn_factory.predict import predict_images
from tests.conftest import cell_params


@dataclass(frozen=True, kw_only=True)
class PatchRows:
    """What PatchBatches draws from, without a prepared split: each row's image shape, each mask's
    foreground points, the patch size (a PatchSplit's three attributes)."""

    shapes: np.ndarray  # (rows, dims)
    foreground: Mapping[str, np.ndarray]  # per mask: (rows, FOREGROUND_SAMPLES, dims), -1 where none
    patch: tuple[int, ...]


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cells") / "data"
    make_cells(folder, rows=20, sizes=(40, 72), seed=1)
    return folder


def test_ragged_round_trip_and_crops(tmp_path):
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 256, (3, h, w), dtype=np.uint8) for h, w in [(5, 7), (1, 1), (12, 4)]]
    masks = [rng.integers(0, 2, (h, w), dtype=np.uint8) for h, w in [(5, 7), (1, 1), (12, 4)]]
    images, labels = RaggedWriter(tmp_path, "image"), RaggedWriter(tmp_path, "mask")
    for row, mask in zip(rows, masks):
        images.append(row)
        labels.append(mask)
    images.close()
    labels.close()
    read, read_masks = RaggedArray(tmp_path, "image"), RaggedArray(tmp_path, "mask", masks=True)
    assert len(read) == 3 and read.shape(2) == (12, 4)
    for i in range(3):
        assert np.array_equal(read[i], rows[i]) and np.array_equal(read_masks[i], masks[i])
    crop = read.crop(0, (-2, 3), (4, 6))  # 2 rows above the image and 2 columns past its right edge: zeros
    assert crop.shape == (3, 4, 6)
    assert np.array_equal(crop[:, 2:, :4], rows[0][:, :2, 3:7]) and not crop[:, :2].any() and not crop[:, :, 4:].any()
    assert read_masks.crop(1, (0, 0), (2, 2)).shape == (2, 2)


def test_ragged_volumes_round_trip_and_crop_in_three_dimensions(tmp_path):
    rng = np.random.default_rng(1)
    volumes = [rng.integers(0, 256, (2, d, h, w), dtype=np.uint8) for d, h, w in [(3, 5, 7), (6, 4, 4)]]
    masks = [rng.integers(0, 2, v.shape[1:], dtype=np.uint8) for v in volumes]
    images, labels = RaggedWriter(tmp_path, "scan", dims=3), RaggedWriter(tmp_path, "mask", dims=3)
    for volume, mask in zip(volumes, masks):
        images.append(volume)
        labels.append(mask)  # no channel axis: a mask
    images.close()
    labels.close()
    read, read_masks = RaggedArray(tmp_path, "scan"), RaggedArray(tmp_path, "mask", masks=True)
    assert read.dims == 3 and read.shape(1) == (6, 4, 4)
    assert np.array_equal(read[0], volumes[0]) and np.array_equal(read_masks[1], masks[1])
    crop = read.crop(0, (-1, 2, 5), (4, 2, 4))  # a slice before the volume, 2 columns past its right edge
    assert crop.shape == (2, 4, 2, 4)
    assert np.array_equal(crop[:, 1:, :, :2], volumes[0][:, :3, 2:4, 5:7])
    assert not crop[:, 0].any() and not crop[..., 2:].any()
    assert np.array_equal(read_masks.crop(1, (1, 1, 1), (2, 2, 2)), masks[1][1:3, 1:3, 1:3])


def test_the_sampler_draws_volume_patches_inside_and_on_foreground():
    shapes = np.array([[8, 40, 40], [20, 12, 12]])
    points = np.full((2, 64, 3), -1, np.int32)
    points[0, :3] = [[4, 30, 30], [5, 31, 29], [3, 29, 31]]  # row 0's only foreground
    rows = PatchRows(shapes=shapes, foreground={"m": points}, patch=(4, 16, 16))
    batches = PatchBatches(rows=rows, samples=64, batch_size=4, share=0.5, generator=torch.Generator().manual_seed(0))
    specs = [spec for batch in batches for spec in batch]
    assert len(specs) == 64
    for k, (row, corner, _) in enumerate(specs):
        inside = [
            0 <= c <= n - p if n >= p else c == -((p - n) // 2) for c, n, p in zip(corner, shapes[row], (4, 16, 16))
        ]
        assert all(inside), (row, corner)
        if k % 4 >= 2 and row == 0:  # the batch's forced half, on a row with foreground: it holds a foreground voxel
            assert any(all(c <= q < c + p for c, q, p in zip(corner, point, (4, 16, 16))) for point in points[0, :3])


def test_damaged_ragged_array_is_a_user_error(tmp_path):
    writer = RaggedWriter(tmp_path, "image")
    writer.append(np.ones((1, 8, 8), np.uint8))
    writer.close()
    (tmp_path / "image.u8").write_bytes(b"\x01" * 10)  # truncated
    with pytest.raises(UserError, match="shorter than its index"):
        RaggedArray(tmp_path, "image")


def test_patch_prepare_keeps_native_sizes_and_is_incremental(cells, tmp_path):
    cfg = parse_params(cell_params(cells))
    out, cache = tmp_path / "prepared", tmp_path / "cache"
    report, rows = prepare(cfg, out, cache, workers=2)
    assert rows.decoded == 20 and rows.reused == 0
    split = PatchSplit(out / "train", ["image"], cfg.outputs, (32, 32))
    sizes = {tuple(s) for s in split.shapes}
    assert len(sizes) > 3 and all(40 <= h <= 72 and 40 <= w <= 72 for h, w in sizes)  # each image its own size
    assert np.asarray(split.views["image"]).shape[1:] == (1, 32, 32)  # and resized, for image-level outputs
    truth = RaggedArray(out / "test", "cells.truth", masks=True)
    assert truth[0].shape == tuple(RaggedArray(out / "test", "image.native").shape(0))
    first = {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    _, again = prepare(cfg, out, cache, workers=1)  # everything from the cache, byte for byte
    assert again.decoded == 0 and again.reused == 20
    assert {p.name: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == first


def test_sampler_forces_the_foreground_share(tmp_path):
    make_cells(tmp_path / "large", rows=10, sizes=(160, 200), seed=4)  # foreground is rare in 16x16 windows
    cfg = parse_params(cell_params(tmp_path / "large"))
    prepare(cfg, tmp_path / "prepared", None, workers=1)
    split = PatchSplit(tmp_path / "prepared" / "train", ["image"], cfg.outputs, (16, 16))

    def foreground_rate(share: float) -> float:
        g = torch.Generator().manual_seed(0)
        batches = PatchBatches(rows=split, samples=400, batch_size=6, share=share, generator=g)
        hits = [split[batch][1]["cells"].flatten(1).any(1) for batch in batches]
        return torch.cat(hits).float().mean().item()

    uniform, forced = foreground_rate(0.0), foreground_rate(1 / 3)
    assert forced >= 1 / 3 + 0.8 * uniform * (2 / 3)  # the forced third always, the rest at the uniform rate
    assert forced > uniform + 0.15
    assert foreground_rate(1.0) == 1.0


def test_sampler_shards_an_epoch_over_ranks_and_repeats_from_its_generator(cells, tmp_path):
    cfg = parse_params(cell_params(cells))
    prepare(cfg, tmp_path / "prepared", None, workers=1)
    split = PatchSplit(tmp_path / "prepared" / "train", ["image"], cfg.outputs, (16, 16))

    def epoch(rank: int, world: int) -> list:
        g = torch.Generator().manual_seed(5)
        draws = PatchBatches(
            rows=split, samples=25, batch_size=4, share=0.3, generator=g, num_augs=1, part=(rank, world)
        )
        return list(draws)

    one = [spec for batch in epoch(0, 1) for spec in batch]
    two = [epoch(0, 2), epoch(1, 2)]
    assert len(one) == 50 and sum(s[2] for s in one) == 25  # num_augs 1: each patch once more, augmented
    assert len(two[0]) == len(two[1])  # DDP needs the same number of steps on every rank
    assert sorted(s for batches in two for batch in batches for s in batch) == sorted(one)
    assert epoch(0, 1) == epoch(0, 1)


def test_sliding_window_scoring_equals_whole_image_scoring_when_one_window_covers_it(tmp_path):
    make_cells(tmp_path / "square", rows=12, sizes=(64, 64), seed=2)  # every image is exactly one window
    results = {}
    torch.manual_seed(0)
    weights = None
    for mode in ("resize", "patch"):
        cfg = parse_params(cell_params(tmp_path / "square", mode, size=[64, 64]))
        prepared = tmp_path / mode
        prepare(cfg, prepared, None, workers=1)
        manifest = yaml.safe_load((prepared / "manifest.json").read_text())
        args, meta = (
            model_args(cfg.model, cfg.inputs, cfg.outputs, manifest),
            model_meta(cfg.inputs, cfg.outputs, manifest),
        )
        model = MultiOutputNet.from_args(args).eval()
        if weights is None:
            weights = copy.deepcopy(model.state_dict())
        model.load_state_dict(weights)
        model_file = ModelFile.from_meta(meta)
        results[mode] = evaluate_split(
            model, model_file, cfg.outputs, prepared / "test", 4, torch.device("cpu")
        ).metrics
    assert results["patch"].keys() == results["resize"].keys()
    for key, value in results["resize"].items():
        assert results["patch"][key] == pytest.approx(value, abs=1e-6), key


def test_predict_reproduces_evaluates_native_figures(cells, tmp_path):
    cfg = parse_params(cell_params(cells))
    prepared = tmp_path / "prepared"
    prepare(cfg, prepared, None, workers=1)
    manifest = yaml.safe_load((prepared / "manifest.json").read_text())
    args, meta = model_args(cfg.model, cfg.inputs, cfg.outputs, manifest), model_meta(cfg.inputs, cfg.outputs, manifest)
    torch.manual_seed(3)
    model = MultiOutputNet.from_args(args).eval()
    with torch.no_grad():  # an untrained model that marks some pixels and not others
        model.heads["cells"].head.bias.fill_(0.05)
    path = tmp_path / "model.pt"
    from cnn_factory.model import save_model

    save_model(path, model, args, {**meta, "epoch": 1, "val": {}})
    model_file = ModelFile.from_meta(meta)
    scored = evaluate_split(model, model_file, model_file.outputs, prepared / "test", 4, torch.device("cpu"))
    files = manifest["splits"]["test"]["files"]
    predict_images(str(path), [str(cells / f) for f in files], tmp_path / "out", 4, "cpu", tta=False)
    from cnn_factory.images import read_image

    tp = fp = fn = 0
    for f in files:
        pred = read_image(tmp_path / "out" / "cells" / Path(f).name) > 0
        truth = read_image(cells / f.replace("images/", "labels/")) == 1
        tp, fp, fn = tp + (pred & truth).sum(), fp + (pred & ~truth).sum(), fn + (~pred & truth).sum()
    dice = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    assert dice == pytest.approx(scored.metrics["cells/dice"], abs=1e-6)
    assert 0 < dice < 1  # a real comparison, not two empty masks


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"inputs": {"image": {"scale": 0.001}}}, "inputs.image.scale 0.001 leaves 0x0 pixels; raise the scale"),
        ({"inputs": {"image": {"size": [30, 32]}}}, "inputs.image.size: [30, 32] must be divisible by 2**model.depth"),
    ],
)
def test_bad_patch_settings_name_the_key(cells, tmp_path, edit, message):
    params = cell_params(cells)
    params["inputs"]["image"].update(edit["inputs"]["image"])
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("*", r"\*")):
        prepare(parse_params(params), tmp_path / "prepared", None, workers=1)


def test_images_smaller_than_the_patch_are_padded_and_reported(cells, tmp_path, capsys):
    cfg = parse_params(cell_params(cells, size=[64, 64]))  # some images are 40-63 px a side
    report, _ = prepare(cfg, tmp_path / "prepared", None, workers=1)
    assert report["images"]["padded"] > 0
    split = PatchSplit(tmp_path / "prepared" / "train", ["image"], cfg.outputs, (64, 64))
    batches = PatchBatches(rows=split, samples=8, batch_size=8, share=0.5, generator=torch.Generator().manual_seed(0))
    x, targets, _, views = split[next(iter(batches))]
    assert x.shape == (8, 1, 64, 64) and targets["cells"].shape == (8, 64, 64) and views.shape == (8, 1, 64, 64)


def test_patch_mode_needs_a_mask_output(cells):
    params = cell_params(cells)
    del params["outputs"]["cells"]
    with pytest.raises(UserError, match="mode patch needs a segmentation output"):
        parse_params(params)


def test_a_mask_with_no_foreground_in_the_training_split_is_named(tmp_path, capsys):
    make_cells(tmp_path / "cells", rows=12, sizes=(48, 56), seed=5)
    lines = (tmp_path / "cells" / "data.csv").read_text().splitlines()
    folds = ["train"] * 8 + ["val"] * 2 + ["test"] * 2
    (tmp_path / "cells" / "data.csv").write_text(
        "\n".join([lines[0] + ",fold"] + [f"{line},{fold}" for line, fold in zip(lines[1:], folds)]) + "\n"
    )
    for line in lines[1:9]:  # the training rows' label maps: empty
        label = tmp_path / "cells" / line.split(",")[1]
        write_image(label, np.zeros_like(read_image(label)))
    params = cell_params(tmp_path / "cells")
    params["data"]["split"]["column"] = "fold"
    prepare(parse_params(params), tmp_path / "prepared", None, workers=1)
    assert "outputs.cells: none of the 8 training rows holds any of its foreground" in capsys.readouterr().err


@pytest.mark.slow
def test_dvc_repro_in_patch_mode_scores_at_native_resolution(tmp_path):
    from tests.conftest import make_repo, run

    params = cell_params(Path("data/cells"), epochs=2, patches_per_epoch=16, log_images_every=1)
    params["data"].update(csv="data/cells/data.csv", root="data/cells")
    params["example"].update(rows=12, size=[16, 16])
    repo = make_repo(tmp_path / "repo", params)
    make_cells(repo / "data" / "cells", rows=16, sizes=(40, 72), seed=3)
    result = run(["dvc", "repro"], repo)
    assert "16 patches of 32x32 from" in result.stdout
    metrics = yaml.safe_load((repo / "eval" / "figures.json").read_text())["test"]
    assert {"dice", "iou", "hd95", "nsd", "dice_pooled"} <= set(metrics["cells"])
    assert not [k for k in metrics["cells"] if k.endswith("_resized")]  # patch mode never resizes masks
    model = torch.load(repo / "models" / "example.pt", weights_only=True)
    assert model["inputs"]["image"]["mode"] == "patch" and len(model["images"]["median"]) == 2
    assert (repo / "dvclive" / "plots" / "images" / "cells" / "2.png").is_file()
    # epochs validated on fixed patches; the saved model's record: its whole val images, as evaluate scores
    assert "(64 patches per validation; the whole images for the saved model)" in result.stdout
    net, model_file = ModelFile.load(repo / "models" / "example.pt")
    folder = repo / "data" / "prepared" / "val"
    cfg = parse_params(yaml.safe_load((repo / "params.yaml").read_text()))
    whole = evaluate_split(net, model_file, cfg.outputs, folder, 4, torch.device("cpu"))
    assert model["val"]["cells/dice"] == pytest.approx(whole.metrics["cells/dice"], abs=1e-6)
    assert model["val"]["density/accuracy"] == pytest.approx(whole.metrics["density/accuracy"], abs=1e-6)
    best = json.loads((repo / "dvclive" / "metrics.json").read_text())["best"]
    assert best["epoch"] == model["epoch"] and best["cells"]["dice"] == pytest.approx(model["val"]["cells/dice"])
    assert "up to date" in run(["dvc", "status"], repo).stdout


def test_batches_of_volumes_are_normalised_per_channel_and_kept_channels_last():
    x = torch.arange(2 * 2 * 3 * 4 * 5, dtype=torch.uint8).reshape(2, 2, 3, 4, 5)  # (B, C, D, H, W)
    mean, std = torch.tensor([0.1, 0.5]).view(1, 2, 1, 1), torch.tensor([0.2, 0.25]).view(1, 2, 1, 1)
    out, _ = to_device(x, {}, torch.device("cpu"), mean, std)
    assert torch.allclose(out[:, 1], (x[:, 1].float() / 255 - 0.5) / 0.25)
    assert out.is_contiguous(memory_format=torch.channels_last_3d)
    image, _ = to_device(x[:, :, 0], {}, torch.device("cpu"), mean, std)
    assert torch.allclose(image[:, 0], (x[:, 0, 0].float() / 255 - 0.1) / 0.2)
    assert image.is_contiguous(memory_format=torch.channels_last)
