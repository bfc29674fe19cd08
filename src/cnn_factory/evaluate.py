"""Scores a model file on a prepared split: metrics per output, confusion pairs, prediction pictures.

    result = evaluate_split(model, meta, outputs, PREPARED / "test", batch_size=16, device=device)
    result.metrics        # {"round/dice": 0.95, "majority/accuracy": 0.94, ...}

The evaluate stage (stages/evaluate.py) logs what this returns with dvclive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cnn_factory.data.dataset import PreparedSplit, make_loader, normalisation, to_device
from cnn_factory.model import MultiOutputNet
from cnn_factory.outputs import Output
from cnn_factory.training.metrics import ClassCounts, OutputMetrics
from cnn_factory.training.pictures import Gallery

SHOWN = 6  # test images drawn in each prediction picture


@dataclass
class Evaluation:
    metrics: dict[str, float]
    gallery: Gallery
    # per category output: (true class ids, predicted class ids), for confusion matrices
    confusion: dict[str, tuple[list[int], list[int]]]


@torch.no_grad()
def evaluate_split(
    model: MultiOutputNet,
    meta: dict,
    outputs: dict[str, Output],
    folder: Path,
    batch_size: int,
    device: torch.device,
) -> Evaluation:
    """Runs the model over every image of a prepared split once; metrics on the device, one sync."""
    split = PreparedSplit(folder, list(meta["inputs"]), outputs)
    stats = normalisation(meta["inputs"], device)
    metrics = OutputMetrics(outputs, device)
    gallery = Gallery(outputs, SHOWN)
    for x_raw, targets, _ in make_loader(split, batch_size, shuffle=False):
        x, targets = to_device(x_raw, targets, device, *stats)
        preds = model(x)
        metrics.update(preds, targets)
        gallery.add(x_raw, targets, preds)
    confusion = {n: m.pairs() for n, m in metrics.metrics.items() if isinstance(m, ClassCounts)}
    return Evaluation(metrics.compute(), gallery, confusion)
