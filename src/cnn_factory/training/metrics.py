"""Metrics per output, accumulated on the device over batches and read once at the end.

metrics = OutputMetrics(outputs, device)
metrics.update(preds, targets)         # per batch, no host sync
metrics.compute()                      # {"round/dice": 0.93, "majority/accuracy": 0.95, ...}
"""

from __future__ import annotations

import torch

from cnn_factory.config import OutputSpec

HEADLINE = {"segmentation": "dice", "category": "accuracy", "numeric": "mae"}


class ConfusionMatrix:
    """Counts (true, predicted) pairs; accuracy and macro F1 from the counts."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.n = num_classes
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, target: torch.Tensor, pred: torch.Tensor) -> None:
        self.mat += torch.bincount(target * self.n + pred, minlength=self.n**2).reshape(self.n, self.n)

    def compute(self) -> dict[str, float]:
        mat = self.mat.double()
        tp = mat.diag()
        precision = tp / mat.sum(0).clamp(min=1)
        recall = tp / mat.sum(1).clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        present = (mat.sum(0) + mat.sum(1)) > 0  # classes never seen nor predicted don't count
        return {
            "accuracy": (tp.sum() / mat.sum().clamp(min=1)).item(),
            "f1_macro": f1[present].mean().item() if present.any() else 0.0,
        }


class OutputMetrics:
    """dice/iou (segmentation, pooled over all pixels), accuracy/f1_macro (category), mae (numeric)."""

    def __init__(self, outputs: dict[str, OutputSpec], device: torch.device | str = "cpu"):
        self.outputs = outputs
        self.counts = {n: torch.zeros(3, device=device) for n, s in outputs.items() if s.type == "segmentation"}
        self.confusion = {n: ConfusionMatrix(s.num_classes, device) for n, s in outputs.items() if s.type == "category"}
        self.abs_error = {n: torch.zeros(2, device=device) for n, s in outputs.items() if s.type == "numeric"}

    @torch.no_grad()
    def update(self, preds: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> None:
        for name, counts in self.counts.items():
            pred, target = preds[name] > 0, targets[name] > 0.5
            counts += torch.stack([(pred & target).sum(), (pred & ~target).sum(), (~pred & target).sum()])
        for name, confusion in self.confusion.items():
            confusion.update(targets[name], preds[name].argmax(1))
        for name, err in self.abs_error.items():
            diff = (preds[name] - targets[name]).abs()
            err += torch.stack([diff.sum(), diff.new_tensor(float(diff.numel()))])

    def compute(self) -> dict[str, float]:
        result = {}
        for name, counts in self.counts.items():
            tp, fp, fn = counts.tolist()
            # an output absent from every image and never predicted is segmented perfectly
            result[f"{name}/dice"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
            result[f"{name}/iou"] = tp / (tp + fp + fn) if tp + fp + fn else 1.0
        for name, confusion in self.confusion.items():
            result.update({f"{name}/{k}": v for k, v in confusion.compute().items()})
        for name, err in self.abs_error.items():
            total, count = err.tolist()
            result[f"{name}/mae"] = total / max(count, 1)
        return result
