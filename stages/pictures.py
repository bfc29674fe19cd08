"""Pictures people look at instead of numbers: images with their true and predicted masks.

Used by evaluate (test predictions) and train (validation overlays every few epochs, `log_pictures`).
"""

from __future__ import annotations

import numpy as np
import torch
from dvclive import Live

from stages.dataset import PreparedSplit, to_device

SHOWN = 4  # validation images in each picture train logs


def overlay_grid(images: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Rows of [image | truth | prediction] as one uint8 RGB picture.

    images (N, C, H, W) uint8; truth and pred (N, h, w) bool at the mask's size.
    The truth is drawn green and the prediction magenta over the image.
    """
    rows = []
    for img, t, p in zip(images, truth, pred):
        rgb = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img[:3]
        rgb = rgb.transpose(1, 2, 0).astype(np.float32)
        if t.shape != rgb.shape[:2]:  # masks of another size: nearest-neighbour to the image
            ys = np.arange(rgb.shape[0]) * t.shape[0] // rgb.shape[0]
            xs = np.arange(rgb.shape[1]) * t.shape[1] // rgb.shape[1]
            t, p = t[ys][:, xs], p[ys][:, xs]
        tint = [_tint(rgb, t, (0, 255, 0)), _tint(rgb, p, (255, 0, 255))]
        gap = np.full((rgb.shape[0], 2, 3), 255, np.float32)
        rows.append(np.concatenate([rgb, gap, tint[0], gap, tint[1]], axis=1))
        rows.append(np.full((2, rows[-1].shape[1], 3), 255, np.float32))
    grid = np.concatenate(rows[:-1], axis=0)
    scale = max(1, 256 // images.shape[-1])  # small images are enlarged so the masks can be seen
    return np.kron(grid, np.ones((scale, scale, 1), np.float32)).round().astype(np.uint8)


def _tint(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    out = rgb.copy()
    out[mask] = 0.45 * out[mask] + 0.55 * np.asarray(colour, np.float32)
    return out


@torch.no_grad()
def log_pictures(live: Live, model, split: PreparedSplit, device, norm, outputs, epoch: int) -> None:
    """Validation images with true and predicted masks, one picture per output and epoch."""
    model.eval()
    x_raw, targets, _ = split[list(range(min(SHOWN, len(split))))]
    x, targets = to_device(x_raw, targets, device, *norm)
    preds = model(x)
    for name, spec in outputs.items():
        if spec.type == "segmentation":
            picture = overlay_grid(x_raw.numpy(), targets[name].cpu().numpy() > 0.5, (preds[name] > 0).cpu().numpy())
            live.log_image(f"{name}/{epoch}.png", picture)
