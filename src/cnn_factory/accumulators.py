"""Metric accumulators over plain tensors: counted on the device over batches, read once at the end.

Each output kind picks its accumulator (`Output.new_metric`); training/metrics.py's
`OutputMetrics` walks the output dict with them.
"""

from __future__ import annotations

import torch


class Metric:
    """Accumulates one output's metrics on the device over batches; `compute()` syncs once."""

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def state(self) -> list[torch.Tensor]:
        """The tensors it counts in, each a sum over images: added up over ranks under torchrun."""
        raise NotImplementedError


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


class OverlapCounts(Metric):
    """Masks: true positives, false positives and false negatives over all pixels; pooled dice and IoU."""

    def __init__(self, device: torch.device | str):
        self.counts = torch.zeros(3, device=device)

    def state(self) -> list[torch.Tensor]:
        return [self.counts]

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        pred, truth = logits > 0, target > 0.5
        self.counts += torch.stack([(pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()])

    def compute(self) -> dict[str, float]:
        tp, fp, fn = self.counts.tolist()
        # an output absent from every image and never predicted is segmented perfectly
        return {
            "dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
            "iou": tp / (tp + fp + fn) if tp + fp + fn else 1.0,
        }


class ClassOverlapCounts(Metric):
    """Class masks: a confusion matrix of pixels over the K + 1 indices (background first), from the
    most probable class per pixel; per class its dice and IoU over all pixels (`dice_<class>`; a class
    neither present nor predicted anywhere scores 1, as OverlapCounts), and their means over the
    classes, background left out (`dice`, `iou`)."""

    def __init__(self, classes: tuple[str, ...], device: torch.device | str):
        self.classes = classes
        self.matrix = ConfusionMatrix(len(classes) + 1, device)

    def state(self) -> list[torch.Tensor]:
        return [self.matrix.mat]

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        # logits (B, K + 1, H, W), target (B, H, W) class indices (as float on the device)
        self.matrix.update(target.long().flatten(), logits.argmax(1).flatten())

    def compute(self) -> dict[str, float]:
        mat = self.matrix.mat.double()
        tp = mat.diag()[1:]
        tp, fp, fn = torch.stack([tp, mat.sum(0)[1:] - tp, mat.sum(1)[1:] - tp]).tolist()
        dice = [2 * t / (2 * t + p + n) if t + p + n else 1.0 for t, p, n in zip(tp, fp, fn)]
        iou = [t / (t + p + n) if t + p + n else 1.0 for t, p, n in zip(tp, fp, fn)]
        return {
            "dice": sum(dice) / len(dice),
            "iou": sum(iou) / len(iou),
            **{f"dice_{c}": d for c, d in zip(self.classes, dice)},
            **{f"iou_{c}": v for c, v in zip(self.classes, iou)},
        }


class ClassCounts(Metric):
    """Classes: accuracy and macro F1 from a confusion matrix; `pairs()` gives it back for a plot."""

    def __init__(self, num_classes: int, device: torch.device | str):
        self.matrix = ConfusionMatrix(num_classes, device)

    def state(self) -> list[torch.Tensor]:
        return [self.matrix.mat]

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.matrix.update(target, logits.argmax(1))

    def compute(self) -> dict[str, float]:
        return self.matrix.compute()

    def pairs(self) -> tuple[list[int], list[int]]:
        """(true, predicted) class ids, one pair per counted image."""
        counts = self.matrix.mat.cpu()
        truth, pred = torch.meshgrid(torch.arange(self.matrix.n), torch.arange(self.matrix.n), indexing="ij")
        repeats = counts.flatten()
        return truth.flatten().repeat_interleave(repeats).tolist(), pred.flatten().repeat_interleave(repeats).tolist()


class AbsoluteError(Metric):
    """Numbers: the mean absolute error, in the target's units."""

    def __init__(self, device: torch.device | str):
        self.sums = torch.zeros(2, device=device)  # total absolute error, count

    def state(self) -> list[torch.Tensor]:
        return [self.sums]

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        diff = (logits - target).abs()
        self.sums += torch.stack([diff.sum(), diff.new_tensor(float(diff.numel()))])

    def compute(self) -> dict[str, float]:
        total, count = self.sums.tolist()
        return {"mae": total / max(count, 1)}
