"""Scores a model on a prepared split at the label maps' own resolution: what a user of predict gets.

    result = evaluate_split(model, meta, outputs, PREPARED / "test", batch_size=16, device=device)
    result.metrics    # {"round/dice": 0.95, "majority/accuracy": 0.94, ...} at each label map's own size
    result.resized    # resize mode: the masks' metrics at the input size, as the network saw them

Every mask is predicted as `cnn-factory predict` predicts it (inference.py): in resize mode the
whole image at the input size, in patch mode sliding windows over the image at `inputs.*.scale`
times its size, Gaussian-blended; its probabilities are brought to the label map's own size
(bilinear) and thresholded at 0.5 there. Image-level outputs (category, numeric) are predicted from
the whole image resized to the input size. The evaluate stage (stages/evaluate.py) logs the result;
in patch mode the train stage validates with it too (`with_losses`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnn_factory.data.dataset import PreparedSplit, make_loader, normalisation, to_device
from cnn_factory.data.ragged import RaggedArray
from cnn_factory.inference import predict_tiled, to_logits, upsample
from cnn_factory.model import MultiOutputNet
from cnn_factory.outputs import Output
from cnn_factory.training.losses import Criterion
from cnn_factory.training.metrics import ClassCounts, OutputMetrics
from cnn_factory.training.pictures import Gallery

SHOWN = 6  # test images drawn in each prediction picture
OVERLAP = 0.5  # sliding windows' share of a window with its neighbour, as predict's default


@dataclass
class Evaluation:
    metrics: dict[str, float]  # at the label maps' own size
    resized: dict[str, float]  # resize mode: masks' metrics at the input size; empty in patch mode
    gallery: Gallery
    confusion: dict[str, tuple[list[int], list[int]]]  # per category output: true and predicted class ids
    losses: dict[str, float] = field(default_factory=dict)  # with a criterion: "loss", "<output>/loss"


@torch.inference_mode()
def evaluate_split(
    model: MultiOutputNet,
    meta: dict,
    outputs: Mapping[str, Output],
    folder: Path,
    batch_size: int,
    device: torch.device,
    criterion: Criterion | None = None,
    gallery_size: int = SHOWN,
) -> Evaluation:
    """Runs the model over every image of a prepared split once; metrics on the device, one sync."""
    model.eval()
    first = next(iter(meta["inputs"].values()))
    patch, window = first.get("mode") == "patch", tuple(first["size"])
    spatial = [n for n, o in outputs.items() if o.spatial]
    split = PreparedSplit(folder, list(meta["inputs"]), outputs)  # whole images at the input size
    truths = {n: RaggedArray(folder, f"{n}.truth", masks=True) for n in spatial}
    natives = {n: RaggedArray(folder, f"{n}.native") for n in meta["inputs"]} if patch else {}
    native_masks = {n: RaggedArray(folder, f"{n}.native", masks=True) for n in spatial} if patch else {}
    stats = normalisation(meta["inputs"], device)
    native, resized = OutputMetrics(outputs, device), OutputMetrics({n: outputs[n] for n in spatial}, device)
    losses = torch.zeros(len(outputs), device=device)  # summed over images, per output
    gallery, row = Gallery(outputs, gallery_size), 0
    whole = [n for n in outputs if not (patch and n in spatial)]  # scored from the resized whole image
    for x_raw, targets, _ in make_loader(split, batch_size, shuffle=False):
        x, targets = to_device(x_raw, targets, device, *stats)
        logits = {k: v.float() for k, v in model(x).items()}  # patch mode: image-level outputs only count
        native.update({n: logits[n] for n in whole if n not in spatial}, targets)
        if not patch:
            resized.update({n: logits[n] for n in spatial}, targets)
        if criterion is not None:
            for k, n in enumerate(outputs):
                if n in whole:
                    losses[k] += criterion.losses[n](logits[n], targets[n]) * len(x)
        for k in range(len(x)):
            if patch:
                image = torch.cat([torch.from_numpy(natives[n][row].copy()) for n in meta["inputs"]])[None]
                image, _ = to_device(image, {}, device, *stats)
                probs = predict_tiled(model, image, window, OVERLAP, False, batch_size, dict(outputs))
                for j, n in enumerate(outputs):
                    if n in spatial and criterion is not None:
                        mask = torch.from_numpy(native_masks[n][row].copy()).to(device).float()[None]
                        losses[j] += criterion.losses[n](to_logits(probs[n]), mask)
                for n in spatial:  # for the picture: the blended mask at the picture's size
                    logits[n][k] = to_logits(upsample(probs[n][0], tuple(logits[n].shape[-2:])))
            else:
                probs = {n: outputs[n].probabilities(logits[n][k : k + 1]) for n in spatial}
            for n in spatial:
                truth = torch.from_numpy(truths[n][row].copy()).to(device)
                size = (int(truth.shape[0]), int(truth.shape[1]))
                native.update({n: to_logits(upsample(probs[n][0], size))[None]}, {n: truth[None].float()})
            row += 1
        gallery.add(x_raw, targets, logits)
    confusion = {n: m.pairs() for n, m in native.metrics.items() if isinstance(m, ClassCounts)}
    result = Evaluation(native.compute(), resized.compute() if not patch else {}, gallery, confusion)
    if criterion is not None:
        per = (losses / max(row, 1)).tolist()
        weighted = sum(criterion.weights[n] * v for n, v in zip(outputs, per))
        result.losses = {"loss": weighted, **{f"{n}/loss": v for n, v in zip(outputs, per)}}
    return result
