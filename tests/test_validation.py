"""Patch mode's validation and views: sampled validation against a direct computation, views only
where image-level outputs need them, the saved epoch's rule."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.cells import make_cells
from cnn_factory.config import parse_params
from cnn_factory.data.dataset import read_manifest
from cnn_factory.data.patches import PatchBatches, PatchSplit
from cnn_factory.data.prepare import prepare
from cnn_factory.data.ragged import RaggedArray
from cnn_factory.model import ModelFile, MultiOutputNet, model_args, model_meta
from cnn_factory.training.distributed import SINGLE, Dist
from cnn_factory.training.fit import start
from cnn_factory.training.loop import Placement
from cnn_factory.training.losses import Criterion
from cnn_factory.training.optim import relative_loss
from cnn_factory.training.validation import Sampled, SampledValidation
from tests.conftest import cell_params
from tests.test_patches import PatchRows

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("validation")
    make_cells(root / "cells", rows=20, sizes=(40, 72), seed=1)
    p = cell_params(root / "cells")
    p["data"]["split"].update(val=0.3, test=0.1)
    prepare(parse_params(p), root / "prepared", None, workers=1)
    return p, root / "prepared"


def network(p: dict, prepared: Path) -> tuple[MultiOutputNet, ModelFile, Criterion]:
    cfg = parse_params(p)
    manifest = read_manifest(prepared, cfg.inputs, cfg.outputs)
    torch.manual_seed(0)
    model = MultiOutputNet.from_args(model_args(cfg.model, cfg.inputs, cfg.outputs, manifest)).eval()
    model_file = ModelFile.from_meta(model_meta(cfg.inputs, cfg.outputs, manifest))
    return model, model_file, Criterion(cfg.outputs, manifest["outputs"])


def sampled(p: dict, model_file: ModelFile, folder: Path, ranks: Dist = SINGLE) -> SampledValidation:
    """10 fixed validation patches in batches of 4, a third centred on foreground, drawn from seed 3."""
    return SampledValidation(
        model_file=model_file,
        outputs=parse_params(p).outputs,
        folder=folder,
        sampled=Sampled(count=10, foreground=0.33, seed=3),
        batch_size=4,
        placement=Placement(device=CPU, stats=model_file.normalisation(CPU)),
        ranks=ranks,
    )


def window(array: np.ndarray, corner: tuple[int, int], h: int, w: int) -> np.ndarray:
    """array[..., top:top+h, left:left+w], zeros where the window leaves the image."""
    top, left = corner
    out = np.zeros((*array.shape[:-2], h, w), array.dtype)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, array.shape[-2]), min(left + w, array.shape[-1])
    out[..., y0 - top : y1 - top, x0 - left : x1 - left] = array[..., y0:y1, x0:x1]
    return out


def test_sampled_validation_equals_a_direct_computation_on_the_same_patches(prepared):
    p, folder = prepared
    model, model_file, criterion = network(p, folder)
    val = folder / "val"
    figures = sampled(p, model_file, val)(model, criterion, CPU)

    # the same draws, cut by hand from the stored native arrays, scored one batch at a time
    images, masks = RaggedArray(val, "image.native"), RaggedArray(val, "cells.native", masks=True)
    shapes = np.array([images.shape(i) for i in range(len(images))]).reshape(-1, 2)
    foreground = {"cells": np.load(val / "cells.foreground.npy")}
    rows = PatchRows(shapes=shapes, foreground=foreground, patch=(32, 32))
    batches = list(
        PatchBatches(rows=rows, samples=10, batch_size=4, share=0.33, generator=torch.Generator().manual_seed(3))
    )
    assert sum(map(len, batches)) == 10
    mean, std = model_file.normalisation(CPU)
    tp = fp = fn = 0
    loss_sum = 0.0
    for specs in batches:
        x = np.stack([window(images[r], at, 32, 32) for r, at, _ in specs])
        truth = np.stack([window(masks[r], at, 32, 32) for r, at, _ in specs]) > 0
        with torch.no_grad():
            logits = model((torch.from_numpy(x).float() / 255 - mean) / std)["cells"]
        loss_sum += float(criterion.losses["cells"](logits, torch.from_numpy(truth).float())) * len(specs)
        pred = logits.numpy() > 0
        tp, fp, fn = tp + (pred & truth).sum(), fp + (pred & ~truth).sum(), fn + (~pred & truth).sum()
    assert figures["cells/dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-6)
    assert figures["cells/loss"] == pytest.approx(loss_sum / 10, rel=1e-5)

    # the category on every validation image's view (the whole image at the input size)
    views, density = np.load(val / "image.npy"), np.load(val / "density.npy")
    with torch.no_grad():
        logits = model((torch.from_numpy(views).float() / 255 - mean) / std)["density"]
    accuracy = float((logits.argmax(1).numpy() == density).mean())
    assert figures["density/accuracy"] == pytest.approx(accuracy)
    loss = float(criterion.losses["density"](logits, torch.from_numpy(density)))
    assert figures["density/loss"] == pytest.approx(loss, rel=1e-5)
    weights = criterion.weights
    assert figures["loss"] == pytest.approx(weights["cells"] * loss_sum / 10 + weights["density"] * loss, rel=1e-5)


def encoder_batches(p: dict, prepared: Path, tmp_path: Path, monkeypatch) -> tuple[list[int], tuple]:
    """The batch sizes the encoder sees in one training step, and the step's batch."""
    monkeypatch.chdir(tmp_path)  # start() looks for its checkpoint under ./checkpoints
    run, _ = start(parse_params(p), prepared, SINGLE, CPU)
    seen: list[int] = []
    run.session.model.encoder.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    batch = next(iter(run.loader))
    run.step.forward_backward(batch, sync=True)
    return seen, batch


def test_a_model_without_image_level_outputs_builds_no_views(prepared, tmp_path, monkeypatch):
    p, folder = prepared
    masks_only = {**p, "outputs": {"cells": p["outputs"]["cells"]}}
    split = PatchSplit(folder / "train", ["image"], parse_params(masks_only).outputs, (32, 32))
    assert split.views == {} and split.views_in(4) == 0
    seen, batch = encoder_batches(masks_only, folder, tmp_path, monkeypatch)
    assert batch[3] is None and seen == [4]  # one encoder pass, over the 4 patches only


@pytest.mark.parametrize("share, views", [(0.5, 2), (1.0, 4), (0.01, 1)])
def test_image_level_outputs_get_a_share_of_views_in_the_same_pass(prepared, tmp_path, monkeypatch, share, views):
    p, folder = prepared
    p = {**p, "train": {**p["train"], "view_share": share}}
    seen, batch = encoder_batches(p, folder, tmp_path, monkeypatch)
    x, targets, _, view = batch
    assert len(x) == 4 and len(view) == views and len(targets["density"]) == views and len(targets["cells"]) == 4
    assert seen == [4 + views]  # patches and views through the encoder together


def test_relative_loss_weighs_every_output_by_its_own_progress():
    reference = {"cells/loss": 0.8, "count/loss": 40.0}  # no dice: the mask's term is its loss
    weights = {"cells": 1.0, "count": 1.0}
    assert relative_loss(reference, reference, weights) == pytest.approx(1.0)
    # the count's loss, on a scale 50 times the mask's, halves; the mask's halves: both count alike
    assert relative_loss({"cells/loss": 0.4, "count/loss": 40.0}, reference, weights) == pytest.approx(0.75)
    assert relative_loss({"cells/loss": 0.8, "count/loss": 20.0}, reference, weights) == pytest.approx(0.75)
    assert relative_loss({"cells/loss": 0.4, "count/loss": 40.0}, reference, {"cells": 3.0, "count": 1.0}) == (
        pytest.approx(0.625)
    )
    assert math.isnan(relative_loss({"cells/loss": math.nan, "count/loss": 1.0}, reference, weights))


def test_relative_loss_takes_a_masks_error_from_its_dice():
    reference = {"cells/loss": 0.8, "cells/dice": 0.2, "count/loss": 40.0}
    weights = {"cells": 1.0, "count": 1.0}
    assert relative_loss(reference, reference, weights) == pytest.approx(1.0)
    # 1 - dice from 0.8 to 0.4 halves the mask's term, whatever its loss does
    assert relative_loss({"cells/loss": 0.8, "cells/dice": 0.6, "count/loss": 40.0}, reference, weights) == (
        pytest.approx(0.75)
    )
    assert relative_loss({"cells/loss": 0.1, "cells/dice": 0.2, "count/loss": 20.0}, reference, weights) == (
        pytest.approx(0.75)
    )
    # a lower loss with a worse dice is a worse epoch: the loss does not pick the mask's epoch
    better, sharper = {"cells/loss": 0.5, "cells/dice": 0.9}, {"cells/loss": 0.4, "cells/dice": 0.85}
    only = {"cells": 1.0}
    assert relative_loss(better, reference, only) < relative_loss(sharper, reference, only)
    assert relative_loss(better, reference, only) == pytest.approx(0.1 / 0.8)
    # a first validation with dice 1 (no foreground, none predicted) leaves nothing to divide by: the loss
    empty = {"cells/loss": 0.8, "cells/dice": 1.0}
    assert relative_loss({"cells/loss": 0.2, "cells/dice": 0.0}, empty, only) == pytest.approx(0.25)


def _ranked_figures(rank: int, p: dict, folder: Path, init: str, out: Path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    model, model_file, criterion = network(p, folder)
    validate = sampled(p, model_file, folder / "val", Dist(rank, 2))
    figures = validate(model, criterion, CPU)
    torch.save(figures, out / f"{rank}.pt")
    dist.destroy_process_group()


def test_ranks_share_the_sampled_validation_and_agree_with_one_process(prepared, tmp_path):
    p, folder = prepared
    model, model_file, criterion = network(p, folder)
    alone = sampled(p, model_file, folder / "val")
    assert [len(x) for x, _ in alone.batches] == [10]  # drawn as batches of 4, 3 and 3; scored in one pass
    halves = [sampled(p, model_file, folder / "val", Dist(r, 2)) for r in (0, 1)]
    assert [[len(x) for x, _ in h.batches] for h in halves] == [[7], [3]]  # the drawn batches shared
    assert len(halves[0].rows) + len(halves[1].rows) == len(alone.rows)
    expected = alone(model, criterion, CPU)
    torch.multiprocessing.spawn(_ranked_figures, (p, folder, f"file://{tmp_path / 'rendezvous'}", tmp_path), 2)
    for rank in (0, 1):
        figures = torch.load(tmp_path / f"{rank}.pt")
        assert figures.keys() == expected.keys()
        for key, value in expected.items():
            assert figures[key] == pytest.approx(value, rel=1e-5), key
