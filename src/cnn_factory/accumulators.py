"""Metric accumulators over plain tensors: counted on the device over batches, read once at the end.

Each output kind picks its accumulator (`Output.new_metric`); training/metrics.py's
`OutputMetrics` walks the output dict with them.
"""

from __future__ import annotations

import torch


class Metric:
    """Accumulates one output's metrics on the device over batches in `counts`; `compute()` syncs once."""

    counts: torch.Tensor

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def state(self) -> list[torch.Tensor]:
        """The tensors it counts in, each a sum over images: added up over ranks under torchrun."""
        return [self.counts]


def overlap(tp: float, fp: float, fn: float) -> tuple[float, float]:
    """Dice and IoU of pixel counts; an output absent from every image and never predicted is segmented perfectly."""
    if not tp + fp + fn:
        return 1.0, 1.0
    return 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)


class OverlapCounts(Metric):
    """Masks: true positives, false positives and false negatives over all pixels (those whose
    target is `ignore` left out); pooled dice and IoU."""

    def __init__(self, device: torch.device | str, ignore: int | None = None):
        self.counts, self.ignore = torch.zeros(3, device=device), ignore

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        pred, truth = logits > 0, target > 0.5
        if self.ignore is not None:
            counted = target != self.ignore
            pred, truth = pred & counted, truth & counted
        self.counts += torch.stack([(pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()])

    def compute(self) -> dict[str, float]:
        dice, iou = overlap(*self.counts.tolist())
        return {"dice": dice, "iou": iou}


class ClassCounts(Metric):
    """Classes: a confusion matrix counting (true, predicted) pairs, rows the true class; accuracy and
    macro F1 from it; `pairs()` gives it back for a plot."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.n = num_classes
        self.counts = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.count(target, logits.argmax(1))

    def count(self, target: torch.Tensor, pred: torch.Tensor) -> None:
        self.counts += torch.bincount(target * self.n + pred, minlength=self.n**2).reshape(self.n, self.n)

    def compute(self) -> dict[str, float]:
        mat = self.counts.double()
        tp = mat.diag()
        precision = tp / mat.sum(0).clamp(min=1)
        recall = tp / mat.sum(1).clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        present = (mat.sum(0) + mat.sum(1)) > 0  # classes never seen nor predicted don't count
        return {
            "accuracy": (tp.sum() / mat.sum().clamp(min=1)).item(),
            "f1_macro": f1[present].mean().item() if present.any() else 0.0,
        }

    def pairs(self) -> tuple[list[int], list[int]]:
        """(true, predicted) class ids, one pair per count: an image of a category, a pixel of a class mask."""
        truth, pred = torch.meshgrid(torch.arange(self.n), torch.arange(self.n), indexing="ij")
        repeats = self.counts.cpu().flatten()
        return truth.flatten().repeat_interleave(repeats).tolist(), pred.flatten().repeat_interleave(repeats).tolist()


class ClassOverlapCounts(ClassCounts):
    """Class masks: a confusion matrix of pixels over the K + 1 indices (background first), from the
    most probable class per pixel; per class its dice and IoU over all pixels (`dice_<class>`; a class
    neither present nor predicted anywhere scores 1, as OverlapCounts), and their means over the
    classes, background left out (`dice`, `iou`). A pixel whose target is `ignore` counts as
    background predicted as background: in no class's figures."""

    def __init__(self, classes: tuple[str, ...], device: torch.device | str, ignore: int | None = None):
        super().__init__(len(classes) + 1, device)
        self.classes, self.ignore = classes, ignore

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        # logits (B, K + 1, H, W), target (B, H, W) class indices (as float on the device)
        target, pred = target.long().flatten(), logits.argmax(1).flatten()
        if self.ignore is not None:
            ignored = target == self.ignore
            target, pred = target.masked_fill(ignored, 0), pred.masked_fill(ignored, 0)
        self.count(target, pred)

    def compute(self) -> dict[str, float]:
        mat = self.counts.double()
        tp = mat.diag()[1:]
        tp, fp, fn = torch.stack([tp, mat.sum(0)[1:] - tp, mat.sum(1)[1:] - tp]).tolist()
        dice, iou = zip(*(overlap(*c) for c in zip(tp, fp, fn)))
        return {
            "dice": sum(dice) / len(dice),
            "iou": sum(iou) / len(iou),
            **{f"dice_{c}": d for c, d in zip(self.classes, dice)},
            **{f"iou_{c}": v for c, v in zip(self.classes, iou)},
        }


class AbsoluteError(Metric):
    """Numbers: the mean absolute error, in the target's units."""

    def __init__(self, device: torch.device | str):
        self.counts = torch.zeros(2, device=device)  # total absolute error, count

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        diff = (logits - target).abs()
        self.counts += torch.stack([diff.sum(), diff.new_tensor(float(diff.numel()))])

    def compute(self) -> dict[str, float]:
        total, count = self.counts.tolist()
        return {"mae": total / max(count, 1)}
