"""Pictures people look at instead of numbers: images with their true and predicted masks.

Used by evaluate (test predictions) and train (validation overlays every few epochs), both
through a Gallery filled from the predictions their loops make anyway; evaluate also draws each
mask's worst test images (WorstCases), where users find label errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from cnn_factory.outputs import Output
from cnn_factory.palette import class_colours


def overlay_grid(images: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Rows of [image | truth | prediction] as one uint8 RGB picture.

    images (N, C, H, W) uint8; truth and pred (N, h, w) at the mask's size: bool masks (the truth
    drawn green, the prediction magenta over the image) or class indices (uint8, each class k drawn
    in its `class_colours` colour, 0 the background left as it is).
    """
    rows = []
    for img, t, p in zip(images, truth, pred):
        rgb = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img[:3]
        rgb = rgb.transpose(1, 2, 0).astype(np.float32)
        if t.shape != rgb.shape[:2]:  # masks of another size: nearest-neighbour to the image
            ys = np.arange(rgb.shape[0]) * t.shape[0] // rgb.shape[0]
            xs = np.arange(rgb.shape[1]) * t.shape[1] // rgb.shape[1]
            t, p = t[ys][:, xs], p[ys][:, xs]
        if t.dtype == bool:
            tint = [_tint(rgb, t, (0, 255, 0)), _tint(rgb, p, (255, 0, 255))]
        else:
            tint = [_tint_classes(rgb, t), _tint_classes(rgb, p)]
        gap = np.full((rgb.shape[0], 2, 3), 255, np.float32)
        rows.append(np.concatenate([rgb, gap, tint[0], gap, tint[1]], axis=1))
        rows.append(np.full((2, rows[-1].shape[1], 3), 255, np.float32))
    grid = np.concatenate(rows[:-1], axis=0)
    scale = max(1, 256 // images.shape[-1])  # small images are enlarged so the masks can be seen
    return grid.round().astype(np.uint8).repeat(scale, axis=0).repeat(scale, axis=1)


def _tint(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    out = rgb.copy()
    out[mask] = 0.45 * out[mask] + 0.55 * np.asarray(colour, np.float32)
    return out


def _tint_classes(rgb: np.ndarray, index: np.ndarray) -> np.ndarray:
    colours = class_colours(int(index.max(initial=0))).astype(np.float32)
    shown = index > 0
    out = rgb.copy()
    out[shown] = 0.45 * out[shown] + 0.55 * colours[index[shown]]
    return out


class Gallery:
    """The first `limit` images of a split with their true and predicted masks, per segmentation
    output, kept from the batches a loop computes anyway: the pictures cost no forward pass."""

    def __init__(self, outputs: Mapping[str, Output], limit: int):
        self.limit, self.count = limit, 0
        self.images: list[np.ndarray] = []
        self.outputs = {n: s for n, s in outputs.items() if s.spatial}
        self.masks: dict[str, tuple[list, list]] = {n: ([], []) for n in self.outputs}

    def add(self, images: torch.Tensor, targets: dict[str, torch.Tensor], preds: dict[str, torch.Tensor]) -> None:
        """images: the uint8 batch as loaded; targets and logits as the loss sees them."""
        take = self.limit - self.count
        if take <= 0 or not self.masks:
            return
        self.images.append(images[:take].numpy())
        for name, (truth, pred) in self.masks.items():
            output = self.outputs[name]
            truth.append(output.true_mask(targets[name][:take]).cpu().numpy())
            pred.append(output.predicted_mask(output.probabilities(preds[name][:take])).cpu().numpy())
        self.count += len(self.images[-1])

    def log(self, live: Any, path: str) -> None:
        """One picture per segmentation output, logged as `path` with {output} filled in."""
        if not self.images:
            return
        images = np.concatenate(self.images)
        for name, (truth, pred) in self.masks.items():
            live.log_image(path.format(output=name), overlay_grid(images, np.concatenate(truth), np.concatenate(pred)))


PANEL = 256  # longest side of a worst case's panels, in pixels (larger masks are shown subsampled)


def panel(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """[image | truth | prediction] of one image at its mask's size, subsampled to PANEL pixels at most.

    image (C, h, w) uint8 at any size (brought to the mask's size, nearest); truth, pred (H, W) bool."""
    step = max(1, math.ceil(max(truth.shape) / PANEL))
    ys, xs = np.arange(0, truth.shape[0], step), np.arange(0, truth.shape[1], step)
    picture = image[:, ys * image.shape[1] // truth.shape[0]][:, :, xs * image.shape[2] // truth.shape[1]]
    return overlay_grid(picture[None], truth[ys][:, xs][None], pred[ys][:, xs][None])


class WorstCases:
    """The `limit` images with the lowest score seen so far, kept as panels while a loop runs
    (a panel is drawn only for an image that enters the list); unscored (NaN) images never do."""

    def __init__(self, limit: int):
        self.limit = limit
        self.items: list[tuple[float, int, np.ndarray]] = []  # (score, row in the split, panel), lowest first

    def offer(self, score: float, row: int, image: torch.Tensor | np.ndarray, pred: np.ndarray, truth: np.ndarray):
        if self.limit <= 0 or math.isnan(score):
            return
        if len(self.items) == self.limit and score >= self.items[-1][0]:
            return
        self.items.append((score, row, panel(np.asarray(image), truth, pred)))
        self.items.sort(key=lambda item: item[0])
        del self.items[self.limit :]

    def picture(self, captions: list[str]) -> np.ndarray | None:
        """The panels stacked lowest score first, each under its caption line; None when empty."""
        if not self.items:
            return None
        from PIL import Image, ImageDraw

        rows = []
        for (_, _, drawn), caption in zip(self.items, captions):
            strip = Image.new("RGB", (drawn.shape[1], 16), "white")
            ImageDraw.Draw(strip).text((2, 2), caption, fill="black")
            rows.append(np.concatenate([np.asarray(strip), drawn]))
        width = max(r.shape[1] for r in rows)
        padded = [np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
        return np.concatenate(padded)
