"""Per-output losses by the seed's names, and the weighted total over the output dict.

All take logits (never probabilities) so the cross entropies stay numerically stable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cnn_factory.config import OutputSpec

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft dice per image, averaged; logits and target (B, H, W)."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    intersection = (prob * target).sum(1)
    return (1 - (2 * intersection + eps) / (prob.sum(1) + target.sum(1) + eps)).mean()


def soft_jaccard_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft intersection over union per image, averaged; logits and target (B, H, W)."""
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    intersection = (prob * target).sum(1)
    union = prob.sum(1) + target.sum(1) - intersection
    return (1 - (intersection + eps) / (union + eps)).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss (Lin et al. 2017): BCE down-weighted by (1 - p_t)^gamma on easy pixels."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)  # the probability given to the true class, from the stable BCE
    return ((1 - p_t) ** gamma * bce).mean()


def _bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target)


def _bce_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return _bce(logits, target) + soft_dice_loss(logits, target)


def _scaled(fn: Callable, scale: float) -> LossFn:
    # numeric targets are compared in units of the training split's std, so the loss
    # has the same magnitude whatever the target's units
    return lambda pred, target: fn(pred / scale, target / scale)


def _cross_entropy(spec: OutputSpec) -> LossFn:
    weight = torch.tensor(spec.class_weights) if spec.class_weights else None

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = weight.to(logits.device) if weight is not None else None
        return F.cross_entropy(logits, target, weight=w, label_smoothing=spec.label_smoothing)

    return loss


def make_loss(spec: OutputSpec, scale: float = 1.0) -> LossFn:
    """The loss function named by spec.loss (checked against spec.type by config)."""
    table: dict[str, LossFn] = {
        "binary_crossentropy": _bce,
        "dice": soft_dice_loss,
        "bce_dice": _bce_dice,
        "jaccard": soft_jaccard_loss,
        "focal": focal_loss,
        "categorical_crossentropy": _cross_entropy(spec),
        "mse": _scaled(F.mse_loss, scale),
        "mae": _scaled(F.l1_loss, scale),
    }
    return table[spec.loss]


class Criterion:
    """Total loss = sum of weight x per-output loss over the `{name: logits}` dict."""

    def __init__(self, outputs: dict[str, OutputSpec], scales: dict[str, float]):
        self.weights = {name: spec.weight for name, spec in outputs.items()}
        self.losses = {name: make_loss(spec, scales.get(name, 1.0)) for name, spec in outputs.items()}

    def __call__(
        self, preds: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: fn(preds[name], targets[name]) for name, fn in self.losses.items()}
        total = sum(self.weights[name] * loss for name, loss in parts.items())
        return total, parts
