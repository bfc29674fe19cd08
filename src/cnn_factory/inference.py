"""Running a model over images: one batch at its input size, or sliding windows over an image of any size.

    probs = predict_batch(model, x, tta=False, outputs=outputs)              # x (B, C, H, W) at the input size
    probs = predict_tiled(model, x, (128, 128), 0.5, False, 16, outputs)      # x (1, C, H, W), any size
    mask = upsample(probs["round"][0], (1024, 768)) > 0.5                      # back to the label map's size

Probabilities, not logits: sigmoid masks, softmax class masks and classes, numbers as they are.
Predict, evaluate and patch-mode validation all go through these, so the figures evaluate reports
are what predict writes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnn_factory.outputs import Output


@torch.no_grad()
def predict_batch(model, x: torch.Tensor, tta: bool, outputs: dict[str, Output]) -> dict[str, torch.Tensor]:
    """Probabilities per output: sigmoid (B, H, W) masks, softmax (B, K + 1, H, W) class masks,
    softmax (B, K) classes, (B,) numbers.

    With tta the image and its horizontal, vertical and double flips are averaged, each
    mask flipped back first.
    """
    flips = [(), (-1,), (-2,), (-2, -1)] if tta else [()]
    sums: dict[str, torch.Tensor] = {}
    for dims in flips:
        logits = model(x.flip(dims) if dims else x)
        for name, value in logits.items():
            value = outputs[name].probabilities(value)
            if dims and outputs[name].spatial:  # a mask of the flipped image, flipped back
                value = value.flip(dims)
            sums[name] = sums.get(name, 0) + value
    return {name: value / len(flips) for name, value in sums.items()}


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows covering 0..length with at least `overlap` of a window shared."""
    last = max(length - window, 0)
    stride = max(1, int(window * (1 - overlap)))
    starts = list(range(0, last + 1, stride))
    return starts if starts[-1] == last else [*starts, last]


def gaussian_weights(h: int, w: int) -> torch.Tensor:
    """(h, w) importance of each window pixel: centres count most, edges least (as nnU-Net blends)."""
    ys = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
    weights = torch.exp(-(ys[:, None] ** 2) / (2 * (h / 8) ** 2) - xs[None] ** 2 / (2 * (w / 8) ** 2))
    return weights.clamp(min=1e-3)  # every pixel keeps some weight, so no covered pixel divides by 0


@torch.no_grad()
def predict_tiled(
    model,
    x: torch.Tensor,
    window: tuple[int, int],
    overlap: float,
    tta: bool,
    batch_size: int,
    outputs: dict[str, Output],
) -> dict[str, torch.Tensor]:
    """Sliding-window prediction of one normalised image x (1, C, H, W) of any size.

    Windows of the model's input size overlap by `overlap`; mask probabilities are blended
    with Gaussian weights into (H, W) maps ((K + 1, H, W) for a class mask, channel by channel),
    category and numeric outputs averaged over windows.
    """
    (h, w), (height, width) = window, x.shape[-2:]
    pad = (0, max(w - width, 0), 0, max(h - height, 0))  # images smaller than a window: pad at the end
    x = F.pad(x, pad)
    corners = [(y, z) for y in window_starts(x.shape[-2], h, overlap) for z in window_starts(x.shape[-1], w, overlap)]
    weight = gaussian_weights(h, w).to(x.device)
    sums: dict[str, torch.Tensor] = {}
    coverage = torch.zeros(x.shape[-2:], device=x.device)  # the weights added up at each pixel
    for start in range(0, len(corners), batch_size):
        batch = corners[start : start + batch_size]
        crops = torch.cat([x[..., y : y + h, z : z + w] for y, z in batch])  # (n, C, h, w)
        probs = predict_batch(model, crops, tta, outputs)
        for k, (y, z) in enumerate(batch):
            coverage[y : y + h, z : z + w] += weight
            for name, p in probs.items():
                if outputs[name].spatial:
                    mask = upsample(p[k], (h, w))  # masks of another size than the input: to the window's
                    total = sums.setdefault(name, torch.zeros((*mask.shape[:-2], *x.shape[-2:]), device=x.device))
                    total[..., y : y + h, z : z + w] += mask * weight
                else:
                    sums[name] = sums.get(name, 0) + p[k] / len(corners)
    result = {}
    for name, value in sums.items():
        if outputs[name].spatial:
            value = (value / coverage)[..., :height, :width]
        result[name] = value[None]  # batch of one, as predict_batch returns
    return result


def upsample(prob: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """An (h, w) probability map, or (C, h, w) maps, brought to `size` (bilinear), e.g. to a label
    map's own size."""
    if tuple(prob.shape[-2:]) == tuple(size):
        return prob
    maps = prob.reshape(1, -1, *prob.shape[-2:]).float()  # (1, C, h, w)
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False).reshape(*prob.shape[:-2], *size)
