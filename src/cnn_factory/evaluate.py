"""Scores a model on a prepared split at the label maps' own resolution: what a user of predict gets.

    result = evaluate_split(model, model_file, outputs, PREPARED / "test", batch_size=16, device=device)
    result.metrics    # pooled over all pixels, as validation: {"round/dice": 0.95, "majority/accuracy": 0.94}
    result.resized    # resize mode: the masks' metrics at the input size, as the network saw them
    result.rows       # with scoring=Scoring(...): {output: {column: per-image values}} (report.py)

The masks come from native.py's pass (the same as patch-mode validation and `cnn-factory predict`):
probabilities brought to the label map's own size, made a mask there by the output's kind
(`predicted_mask`: thresholded at 0.5, or the most probable class per pixel). The evaluate stage
(stages/evaluate.py) writes the result through report.py.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cnn_factory.model import ModelFile
from cnn_factory.native import NativeImage, Network, SplitPass, predict_split
from cnn_factory.outputs import Output, Outputs, Scorer
from cnn_factory.outputs.decoding import scored
from cnn_factory.training.metrics import OutputMetrics
from cnn_factory.training.pictures import Gallery, WorstCases

SHOWN = 6  # test images drawn in each prediction picture


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
    confusion: dict[str, tuple[list[str], list[str]]]  # per category output: true and predicted class names
    rows: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # with scoring: per output, per column
    worst: dict[str, WorstCases] = field(default_factory=dict)  # with scoring: per segmentation output


@torch.inference_mode()
def evaluate_split(
    model: Network,
    model_file: ModelFile,
    outputs: Mapping[str, Output],
    folder: Path,
    batch_size: int,
    device: torch.device,
    *,
    scoring: Scoring | None = None,
) -> Evaluation:
    """Runs the model over every image of a prepared split once; metrics on the device, one sync."""
    split = SplitPass(model_file, outputs, folder)
    spatial, patch = Outputs(outputs).spatial, split.patch
    native, resized = OutputMetrics(outputs, device), OutputMetrics(spatial, device)
    gallery, table = Gallery(outputs, SHOWN), Table(outputs, scoring)
    # a bar for evaluate on a terminal (patch mode slides windows over every image: long on large ones)
    bar = tqdm(total=len(split), desc="evaluate", unit="image", disable=None if scoring else True, file=sys.stdout)
    for batch in predict_split(model, model_file, outputs, split, batch_size, device):
        image_level = {n: v for n, v in batch.logits.items() if n not in spatial}
        native.update(image_level, batch.targets)
        table.add_image_level(image_level, batch.targets, batch.probabilities)
        if not patch:  # pooled over pixels as the network saw them, beside the figures at the label maps' size
            resized.update({n: batch.logits[n] for n in spatial}, batch.targets)
        for k, image in enumerate(batch.images):
            for n, output in spatial.items():
                prob, truth = image.probabilities[n], image.truth[n]
                native.update({n: output.to_logits(prob)[None]}, {n: truth[None].float()})
                table.add_mask(n, image, prob, truth)
            table.add_measures(image, {n: t[k] for n, t in batch.targets.items()})
            bar.update()
        gallery.add(batch.x, batch.targets, batch.logits)
    bar.close()
    confusion = {n: c for n, m in native.metrics.items() if (c := Scorer.of(outputs[n]).confusion(m)) is not None}
    pooled = {f"{k}_pooled": v for k, v in resized.compute().items()} if not patch else {}
    return Evaluation(native.compute(), pooled, gallery, confusion, table.columns(), table.worst)


class Table:
    """Per-image scores (`Scorer.image_scores`) and each mask's worst images, with `scoring`; else nothing."""

    def __init__(self, outputs: Mapping[str, Output], scoring: Scoring | None):
        self.scorers, self.scoring = {n: Scorer.of(o) for n, o in outputs.items()}, scoring
        self.scores: dict[str, list[dict]] = {n: [] for n in outputs}
        self.worst = {n: WorstCases(scoring.worst) for n in Outputs(outputs).spatial} if scoring else {}
        self.outputs = Outputs(outputs)
        self.masks: dict[str, np.ndarray] = {}  # each mask output's predicted mask of the current image

    def add_image_level(
        self, logits: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], probabilities: dict | None = None
    ) -> None:
        """`probabilities`: an ensemble's averaged ones (the logits' are the network's own otherwise)."""
        if self.scoring is None:
            return
        for n, value in logits.items():
            scorer = self.scorers[n]
            prob = probabilities[n] if probabilities else scorer.output.probabilities(value)
            values, labels = prob.cpu().numpy(), targets[n].cpu().numpy()
            self.scores[n] += [scorer.image_scores(v, t, self.scoring.tolerance) for v, t in zip(values, labels)]

    def add_mask(self, name: str, image: NativeImage, prob: torch.Tensor, truth: torch.Tensor) -> None:
        if self.scoring is None:
            return
        scorer = self.scorers[name]
        pred, true = scorer.predicted_mask(prob).cpu().numpy(), scorer.true_mask(truth).cpu().numpy()
        self.masks[name] = pred  # whole, for the measures and the picture; scored where the truth counts
        counted = scored(truth.cpu().numpy())
        kept = np.where(counted, pred, np.zeros_like(pred))
        self.scores[name].append(scorer.image_scores(kept, true, self.scoring.tolerance, image.spacing))
        self.worst[name].offer(self.scores[name][-1]["dice"], image.row, image.picture, pred, true, ~counted)

    def add_measures(self, image: NativeImage, targets: dict[str, torch.Tensor]) -> None:
        """The measures of the image's predicted masks (`add_mask`'s) against their truths, as
        prepare stored them with each row's spacing (`targets`)."""
        if self.scoring is None:
            return
        for n, output in self.outputs.items():
            if output.trained:
                continue
            stored = targets[n].cpu().numpy()
            value = self.scorers[n].measured(self.masks, self.outputs, stored, image.spacing, np.asarray(image.picture))
            self.scores[n].append(self.scorers[n].image_scores(np.asarray(value), stored[0], self.scoring.tolerance))

    def columns(self) -> dict[str, dict[str, np.ndarray]]:
        return {n: {c: np.asarray([r[c] for r in rs]) for c in rs[0]} for n, rs in self.scores.items() if rs}
