"""Metrics per output on hand-made predictions."""

from __future__ import annotations

import pytest
import torch

from cnn_factory.accumulators import ClassCounts
from cnn_factory.outputs import make_output
from cnn_factory.training.metrics import OutputMetrics


def test_confusion_matrix_accuracy_and_macro_f1():
    cm = ClassCounts(3)
    cm.update(torch.eye(3)[[0, 1, 1, 2]], torch.tensor([0, 0, 1, 2]))  # logits: predicted 0, 1, 1, 2
    result = cm.compute()
    assert result["accuracy"] == pytest.approx(0.75)
    # per class F1: class 0: p=1, r=.5 -> 2/3; class 1: p=.5, r=1 -> 2/3; class 2: 1
    assert result["f1_macro"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_dice_iou_and_mae_pooled_over_batches():
    outputs = {
        "m": make_output("m", type="segmentation", column="m", loss="dice", size=[1, 4], label=1),
        "v": make_output("v", type="numeric", column="v", loss="mae"),
    }
    metrics = OutputMetrics(outputs)
    # logits > 0 means foreground: prediction [1, 1, 0, 0] against truth [1, 0, 1, 0]
    metrics.update(
        {"m": torch.tensor([[[1.0, 1.0, -1.0, -1.0]]]), "v": torch.tensor([1.0])},
        {"m": torch.tensor([[[1.0, 0.0, 1.0, 0.0]]]), "v": torch.tensor([3.0])},
    )
    metrics.update(
        {"m": torch.tensor([[[-1.0, -1.0, -1.0, -1.0]]]), "v": torch.tensor([0.0])},
        {"m": torch.tensor([[[0.0, 0.0, 0.0, 0.0]]]), "v": torch.tensor([0.0])},
    )
    result = metrics.compute()
    assert result["m/dice"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    assert result["m/iou"] == pytest.approx(1 / 3)
    assert result["v/mae"] == pytest.approx(1.0)
