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

from cnn_factory.outputs import Output, Outputs, Scorer
from cnn_factory.outputs.decoding import IGNORE
from cnn_factory.palette import class_colours

TRUTH = (255, 255, 0)  # yellow: the true mask's outline
PREDICTION = (255, 0, 255)  # magenta: the predicted mask's outline
LINE = 3  # outline width in pixels of the picture; a one-pixel black rim outside keeps it visible on any image
HEADING = 16  # height of the strip over the panels that says what each one shows
GREY = np.uint8(128)  # what the truth panel blends its ignored pixels with, half and half


def overlay_grid(
    images: np.ndarray, truth: np.ndarray, pred: np.ndarray, ignored: np.ndarray | None = None
) -> np.ndarray:
    """Rows of [image | truth | prediction] as one uint8 RGB picture, under a heading strip.

    images (N, C, H, W) uint8; truth and pred (N, h, w) at the mask's size: bool masks (the truth
    outlined in yellow, the prediction in magenta, over the image) or class indices (uint8, each
    class k outlined in its `class_colours` colour, 0 the background left as it is), each outline
    with a black rim (`_outline`). ignored (N, h, w) bool: the pixels an output's `ignore` leaves
    out, greyed in the truth panel. Volumes (N, C, D, H, W) with (N, d, h, w) masks are drawn at
    one slice each (`at_slice`)."""
    ignored = np.zeros(truth.shape, bool) if ignored is None else ignored
    if images.ndim == 5:  # each volume at its own slice (N of each), stacked again into four arrays
        images, truth, pred, ignored = map(np.stack, zip(*map(at_slice, images, truth, pred, ignored)))
    scale = max(1, 256 // images.shape[-1])  # small images are enlarged so the masks can be seen
    colours = (TRUTH, PREDICTION) if truth.dtype == bool else (None, None)  # class indices: a colour per class
    rows = []
    for img, t, p, ig in zip(images, truth, pred, ignored):
        # the first three channels as RGB; one or two (two single-channel inputs stacked): the first in grey
        rgb = img[:3] if img.shape[0] >= 3 else np.repeat(img[:1], 3, axis=0)
        rgb = rgb.transpose(1, 2, 0).repeat(scale, axis=0).repeat(scale, axis=1)
        ys = np.arange(rgb.shape[0]) * t.shape[0] // rgb.shape[0]  # masks of another size: nearest
        xs = np.arange(rgb.shape[1]) * t.shape[1] // rgb.shape[1]
        t, p, ig = t[ys][:, xs], p[ys][:, xs], ig[ys][:, xs]
        drawn = [_outline(rgb, t, colours[0]), _outline(rgb, p, colours[1])]
        drawn[0][ig] = drawn[0][ig] // 2 + GREY // 2
        gap = np.full((rgb.shape[0], 2 * scale, 3), 255, np.uint8)
        rows.append(np.concatenate([rgb, gap, drawn[0], gap, drawn[1]], axis=1))
        rows.append(np.full((2 * scale, rows[-1].shape[1], 3), 255, np.uint8))
    grid = np.concatenate(rows[:-1], axis=0)
    truth_title = "truth, ignored pixels grey" if ignored.any() else "truth"
    titles = [("image", None), (truth_title, colours[0]), ("prediction", colours[1])]
    return np.concatenate([heading(titles, rgb.shape[1], 2 * scale, grid.shape[1]), grid])


def at_slice(image: np.ndarray, truth: np.ndarray, *masks: np.ndarray) -> tuple[np.ndarray, ...]:
    """A volume's image (C, d, h, w), truth and other masks (D, H, W) at the slice (along depth) its
    picture shows: the one with the most true voxels, else the most predicted ones (the first of
    `masks`), else the middle one."""
    areas = [(np.asarray(mask) > 0).reshape(len(mask), -1).sum(1) for mask in (truth, *masks[:1])]
    z = next((int(area.argmax()) for area in areas if area.any()), len(truth) // 2)
    return image[:, z * image.shape[1] // truth.shape[0]], truth[z], *(mask[z] for mask in masks)


def heading(titles: list[tuple[str, tuple[int, int, int] | None]], panel: int, gap: int, width: int) -> np.ndarray:
    """A white strip naming each panel (`panel` pixels wide, `gap` apart), with a swatch of its
    outline colour where it has one: the pictures' legend."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (width, HEADING), "white")
    draw = ImageDraw.Draw(strip)
    for i, (title, colour) in enumerate(titles):
        x = i * (panel + gap) + 2
        if colour is not None:
            draw.rectangle((x, 3, x + 11, 12), outline="black", fill=colour)
            x += 15
        draw.text((x, 2), title, fill="black")
    return np.asarray(strip)


def _outline(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] | None) -> np.ndarray:
    """The image with a bool mask's edge drawn in `colour`, or (colour None) each class k > 0 of an
    index mask's in its `class_colours` colour: LINE pixels inside, black just outside; every rim
    first, then every line, so that neighbouring classes keep their lines."""
    from scipy.ndimage import binary_dilation, binary_erosion

    index = mask.astype(np.uint8)
    colours = class_colours(int(index.max(initial=0))) if colour is None else np.asarray([(0, 0, 0), colour], np.uint8)
    masks = [(k, index == k) for k in np.unique(index[index > 0])]
    out = rgb.copy()
    for _, mask in masks:
        out[binary_dilation(mask) & ~mask] = 0
    for k, mask in masks:
        out[mask & ~binary_erosion(mask, iterations=LINE)] = colours[k]
    return out


class Gallery:
    """The first `limit` images of a split with their true and predicted masks, per segmentation
    output, kept from the batches a loop computes anyway: the pictures cost no forward pass."""

    def __init__(self, outputs: Mapping[str, Output], limit: int):
        self.limit, self.count = limit, 0
        self.images: list[np.ndarray] = []
        self.scorers = {n: Scorer.of(o) for n, o in Outputs(outputs).spatial.items()}
        self.masks: dict[str, tuple[list, list, list]] = {n: ([], [], []) for n in self.scorers}  # truth, pred, ignored

    def add(self, images: torch.Tensor, targets: dict[str, torch.Tensor], preds: dict[str, torch.Tensor]) -> None:
        """images: the uint8 batch as loaded; targets and logits as the loss sees them."""
        take = self.limit - self.count
        if take <= 0 or not self.masks:
            return
        self.images.append(images[:take].numpy())
        for name, (truth, pred, ignored) in self.masks.items():
            scorer = self.scorers[name]
            truth.append(scorer.true_mask(targets[name][:take]).cpu().numpy())
            pred.append(scorer.predicted_mask(scorer.output.probabilities(preds[name][:take])).cpu().numpy())
            ignored.append((targets[name][:take] == IGNORE).cpu().numpy())
        self.count += len(self.images[-1])

    def log(self, live: Any, path: str) -> None:
        """One picture per segmentation output, logged as `path` with {output} filled in."""
        if not self.images:
            return
        images = np.concatenate(self.images)
        for name, masks in self.masks.items():
            live.log_image(path.format(output=name), overlay_grid(images, *map(np.concatenate, masks)))


PANEL = 256  # longest side of a worst case's panels, in pixels (larger masks are shown subsampled)


def panel(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, ignored: np.ndarray) -> np.ndarray:
    """[image | truth | prediction] of one image at its mask's size, subsampled to PANEL pixels at most.

    image (C, h, w) uint8 at any size (brought to the mask's size, nearest); truth, pred (H, W) bool
    or class indices, ignored (H, W) bool. A volume (C, d, h, w) with (D, H, W) masks is drawn at
    the slice `at_slice` picks."""
    if truth.ndim == 3:
        image, truth, pred, ignored = at_slice(image, truth, pred, ignored)
    step = max(1, math.ceil(max(truth.shape) / PANEL))
    ys, xs = np.arange(0, truth.shape[0], step), np.arange(0, truth.shape[1], step)
    picture = image[:, ys * image.shape[1] // truth.shape[0]][:, :, xs * image.shape[2] // truth.shape[1]]
    return overlay_grid(picture[None], *(mask[ys][:, xs][None] for mask in (truth, pred, ignored)))


class WorstCases:
    """The `limit` images with the lowest score seen so far, kept as panels while a loop runs
    (a panel is drawn only for an image that enters the list); unscored (NaN) images never do."""

    def __init__(self, limit: int):
        self.limit = limit
        self.items: list[tuple[float, int, np.ndarray]] = []  # (score, row in the split, panel), lowest first

    def offer(
        self,
        score: float,
        row: int,
        image: torch.Tensor | np.ndarray,
        pred: np.ndarray,
        truth: np.ndarray,
        ignored: np.ndarray | None = None,
    ):
        if self.limit <= 0 or math.isnan(score) or (len(self.items) == self.limit and score >= self.items[-1][0]):
            return  # none kept, unscored, or not lower than the highest kept score
        ignored = np.zeros(truth.shape, bool) if ignored is None else ignored
        self.items.append((score, row, panel(np.asarray(image), truth, pred, ignored)))
        self.items.sort(key=lambda item: item[0])
        del self.items[self.limit :]

    def picture(self, captions: list[str]) -> np.ndarray | None:
        """The panels stacked lowest score first, each under its caption line; None when empty."""
        if not self.items:
            return None
        rows = [
            np.concatenate([heading([(caption, None)], drawn.shape[1], 0, drawn.shape[1]), drawn])
            for (_, _, drawn), caption in zip(self.items, captions)
        ]
        width = max(r.shape[1] for r in rows)
        return np.concatenate([np.pad(r, ((0, 6), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
