"""Scores a model on a prepared split at the label maps' own resolution: what a user of predict gets.

    result = evaluate_split(model, meta, outputs, PREPARED / "test", batch_size=16, device=device)
    result.metrics    # pooled over all pixels, as validation: {"round/dice": 0.95, "majority/accuracy": 0.94}
    result.resized    # resize mode: the masks' metrics at the input size, as the network saw them
    result.rows       # with scoring=Scoring(...): {output: {column: per-image values}} (report.py)

Every mask is predicted as `cnn-factory predict` predicts it (inference.py): in resize mode the
whole image at the input size, in patch mode sliding windows over the image at `inputs.*.scale`
times its size, Gaussian-blended; its probabilities are brought to the label map's own size
(bilinear) and made a mask there by its kind (`predicted_mask`: thresholded at 0.5, or the most
probable class per pixel). Image-level outputs (category, numeric) are predicted from
the whole image resized to the input size. The evaluate stage (stages/evaluate.py) logs the result;
in patch mode the train stage validates with it too (`with_losses`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cnn_factory.data.dataset import PreparedSplit, make_loader, normalisation, to_device
from cnn_factory.data.ragged import RaggedArray
from cnn_factory.inference import predict_tiled, upsample
from cnn_factory.model import MultiOutputNet
from cnn_factory.outputs import Output
from cnn_factory.training.losses import Criterion
from cnn_factory.training.metrics import ClassCounts, OutputMetrics
from cnn_factory.training.pictures import Gallery, WorstCases

SHOWN = 6  # test images drawn in each prediction picture
OVERLAP = 0.5  # sliding windows' share of a window with its neighbour, as predict's default


@dataclass(frozen=True)
class Scoring:
    """Per-image scores: surface-dice tolerance in pixels, and how many worst images to draw per mask."""

    tolerance: float = 2.0
    worst: int = 6


@dataclass
class Evaluation:
    metrics: dict[str, float]  # at the label maps' own size
    resized: dict[str, float]  # resize mode: `<output>/dice_pooled` etc. at the input size; else empty
    gallery: Gallery
    confusion: dict[str, tuple[list[int], list[int]]]  # per category output: true and predicted class ids
    losses: dict[str, float] = field(default_factory=dict)  # with a criterion: "loss", "<output>/loss"
    rows: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # with scoring: per output, per column
    worst: dict[str, WorstCases] = field(default_factory=dict)  # with scoring: per segmentation output


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
    scoring: Scoring | None = None,
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
    scores: dict[str, list[dict]] = {n: [] for n in outputs}
    worst = {n: WorstCases(scoring.worst) for n in spatial} if scoring else {}
    # a bar for evaluate on a terminal (patch mode slides windows over every image: long on large ones)
    bar = tqdm(total=len(split), desc="evaluate", unit="image", disable=None if scoring else True, file=sys.stdout)
    for x_raw, targets, _ in make_loader(split, batch_size, shuffle=False):
        x, targets = to_device(x_raw, targets, device, *stats)
        logits = {k: v.float() for k, v in model(x).items()}  # patch mode: image-level outputs only count
        native.update({n: logits[n] for n in whole if n not in spatial}, targets)
        if scoring:
            for n in outputs:
                if n not in spatial:
                    values, labels = outputs[n].probabilities(logits[n]).cpu().numpy(), targets[n].cpu().numpy()
                    scores[n] += [outputs[n].image_scores(v, t, scoring.tolerance) for v, t in zip(values, labels)]
        if not patch:
            resized.update({n: logits[n] for n in spatial}, targets)
        if criterion is not None:
            for k, n in enumerate(outputs):
                if n in whole:
                    losses[k] += criterion.losses[n](logits[n], targets[n]) * len(x)
        for k in range(len(x)):
            if patch:
                raw = torch.cat([torch.from_numpy(natives[n][row].copy()) for n in meta["inputs"]])
                image, _ = to_device(raw[None], {}, device, *stats)
                probs = predict_tiled(model, image, window, OVERLAP, False, batch_size, dict(outputs))
                for j, n in enumerate(outputs):
                    if n in spatial and criterion is not None:
                        mask = torch.from_numpy(native_masks[n][row].copy()).to(device).float()[None]
                        losses[j] += criterion.losses[n](outputs[n].to_logits(probs[n]), mask)
                for n in spatial:  # for the picture: the blended mask at the picture's size
                    logits[n][k] = outputs[n].to_logits(upsample(probs[n][0], tuple(logits[n].shape[-2:])))
            else:
                probs = {n: outputs[n].probabilities(logits[n][k : k + 1]) for n in spatial}
            for n in spatial:
                truth = torch.from_numpy(truths[n][row].copy()).to(device)
                size = (int(truth.shape[0]), int(truth.shape[1]))
                prob = upsample(probs[n][0], size)
                native.update({n: outputs[n].to_logits(prob)[None]}, {n: truth[None].float()})
                if scoring:
                    pred = outputs[n].predicted_mask(prob).cpu().numpy()
                    true = outputs[n].true_mask(truth).cpu().numpy()
                    scores[n].append(outputs[n].image_scores(pred, true, scoring.tolerance))
                    # the picture: patch mode the native image, resize mode the image as the network saw it
                    worst[n].offer(scores[n][-1]["dice"], row, raw if patch else x_raw[k], pred, true)
            row += 1
            bar.update()
        gallery.add(x_raw, targets, logits)
    bar.close()
    confusion = {n: m.pairs() for n, m in native.metrics.items() if isinstance(m, ClassCounts)}
    # pooled over pixels, as the network saw them: beside the pooled figures at the label maps' size
    pooled = {f"{k}_pooled": v for k, v in resized.compute().items()} if not patch else {}
    result = Evaluation(native.compute(), pooled, gallery, confusion)
    if scoring:
        result.rows = {n: {c: np.asarray([r[c] for r in rs]) for c in rs[0]} for n, rs in scores.items() if rs}
        result.worst = worst
    if criterion is not None:
        per = (losses / max(row, 1)).tolist()
        weighted = sum(criterion.weights[n] * v for n, v in zip(outputs, per))
        result.losses = {"loss": weighted, **{f"{n}/loss": v for n, v in zip(outputs, per)}}
    return result
