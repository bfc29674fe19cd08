"""Loss functions over plain tensors; each output kind picks its own by name (`Output.make_loss`,
the names of the original cnn-factory). All take logits (never probabilities) so the cross
entropies stay stable. The weighted total over the output dict is training/losses.py's `Criterion`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

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


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target)


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return bce_loss(logits, target) + soft_dice_loss(logits, target)


def class_cross_entropy_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross entropy of each pixel's K + 1 class logits (B, K + 1, H, W) against its index (B, H, W)."""
    return F.cross_entropy(logits, target.long())


def class_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft dice per image and class, averaged over the K classes (background left out) and the
    images; logits (B, K + 1, *spatial), target (B, *spatial) class indices."""
    prob = logits.softmax(1)[:, 1:].flatten(2)  # (B, K, H * W)
    classes = torch.arange(1, logits.shape[1], device=target.device).view(1, -1, *[1] * (target.ndim - 1))
    truth = (target[:, None] == classes).flatten(2).to(prob.dtype)  # one-hot of the classes, (B, K, H * W)
    intersection = (prob * truth).sum(2)
    return (1 - (2 * intersection + eps) / (prob.sum(2) + truth.sum(2) + eps)).mean()


def class_ce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return class_cross_entropy_loss(logits, target) + class_dice_loss(logits, target)


PIXEL_MEANS: set[LossFn] = {bce_loss, focal_loss, class_cross_entropy_loss}  # means over every pixel of the batch
PARTS: dict[LossFn, tuple[LossFn, ...]] = {  # the sums of two losses
    bce_dice_loss: (bce_loss, soft_dice_loss),
    class_ce_dice_loss: (class_cross_entropy_loss, class_dice_loss),
}
SURE = 30.0  # a logit whose sigmoid (or softmax against -SURE) is 1 to within 1e-13


def neutral(logits: torch.Tensor, target: torch.Tensor, value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and target with each pixel whose target is `value` made a sure background, predicted
    and true: its terms in every mask loss are 0 to within 1e-13, with no gradient, and a count of
    overlaps holds nothing of it. Logits (B, *spatial), or (B, K + 1, *spatial) over classes."""
    ignored = target == value
    if logits.ndim == target.ndim:
        return logits.masked_fill(ignored, -SURE), target.masked_fill(ignored, 0)
    sure = torch.full((logits.shape[1],), -SURE, dtype=logits.dtype, device=logits.device)
    sure[0] = SURE  # the background's channel
    sure = sure.view(1, -1, *[1] * (target.ndim - 1))
    return torch.where(ignored.unsqueeze(1), sure, logits), target.masked_fill(ignored, 0)


def ignoring(loss: LossFn, value: int) -> LossFn:
    """`loss` over the pixels whose target is not `value`, as if the others were not there: they are
    made `neutral`, and a mean over pixels is taken over the counted ones (as nnU-Net's ignore
    label: with sparse labels the cross entropy keeps its weight beside the dice)."""
    parts = PARTS.get(loss, (loss,))

    def masked(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        share = (target != value).sum().clamp(min=1) / target.numel()  # on the device: no sync
        logits, target = neutral(logits, target, value)
        return torch.stack([p(logits, target) / share if p in PIXEL_MEANS else p(logits, target) for p in parts]).sum()

    return masked


def cross_entropy_loss(class_weights: list[float] | None, label_smoothing: float) -> LossFn:
    """Cross entropy over class logits (B, K) and ids (B,), with per-class weights and smoothing."""
    weight = torch.tensor(class_weights) if class_weights else None

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = weight.to(logits.device) if weight is not None else None
        return F.cross_entropy(logits, target, weight=w, label_smoothing=label_smoothing)

    return loss


def scaled_loss(name: str, scale: float) -> LossFn:
    """mse or mae in units of `scale` (a numeric target's std): the same magnitude whatever its units."""
    fn = F.mse_loss if name == "mse" else F.l1_loss
    return lambda pred, target: fn(pred / scale, target / scale)
