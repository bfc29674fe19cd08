"""Per-image mask scores at the label map's own resolution: overlap and boundary, for 2-D images and 3-D volumes.

    mask_scores(pred, truth, tolerance=2.0)                               # (H, W): pixels
    mask_scores(pred, truth, tolerance=2.0, spacing=(3.0, 0.8, 0.8))      # (D, H, W) at mm per axis: mm

Boundaries are the mask pixels (voxels) with a face neighbour outside the mask (4-neighbours in
2-D, 6 in 3-D; the image's edge counts as outside), as MONAI's `get_mask_edges`; distances are
Euclidean from each boundary pixel of one mask to the nearest boundary pixel of the other, in
pixels, or in the units of `spacing` (one size per axis, e.g. mm) when it is given. HD95 is the
larger of the two directions' 95th percentiles (MONAI's `compute_hausdorff_distance(percentile=95)`);
normalised surface dice is the share of both boundaries within `tolerance` (same units) of the
other (Nikolov et al. 2021; MONAI's `compute_surface_dice`).

Class masks (one class index per pixel) are scored class by class on each class's boolean masks,
`<score>_<class>`; their figures over images are each class's, then the mean over the classes.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt

MASK_COLUMNS = ("dice", "iou", "hd95", "nsd", "truth_px", "pred_px", "tp", "fp", "fn")
CLASS_MEANS = ("dice", "iou", "hd95", "nsd", "dice_pooled", "iou_pooled")  # class masks: means over classes

Spacing = tuple[float, ...] | None  # size of a pixel or voxel along each axis (e.g. mm); None: 1 each


def boundary(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels with a face neighbour outside it (erosion by the cross, in any number of dimensions)."""
    return mask & ~binary_erosion(mask, border_value=0)


def _crop(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the bounding box of their union (distances between them do not change)."""
    box = tuple(slice(at.min(), at.max() + 1) for at in np.nonzero(pred | truth))
    return pred[box], truth[box]


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing: Spacing = None) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each boundary pixel of `pred` to `truth`'s boundary, and the other way (in
    the units of `spacing`); both masks non-empty."""
    edge_p, edge_t = boundary(pred), boundary(truth)
    to_truth = distance_transform_edt(~edge_t, sampling=spacing)
    to_pred = distance_transform_edt(~edge_p, sampling=spacing)
    return to_truth[edge_p], to_pred[edge_t]


def mask_scores(pred: np.ndarray, truth: np.ndarray, tolerance: float, spacing: Spacing = None) -> dict[str, float]:
    """Scores of one (H, W) or (D, H, W) boolean prediction against its boolean truth of the same
    shape; HD95 and `tolerance` in the units of `spacing` (pixels without it)."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    if spacing is not None and len(spacing) != pred.ndim:
        raise ValueError(f"spacing {spacing} does not give one size per axis of masks of shape {pred.shape}")
    tp = int(np.count_nonzero(pred & truth))
    fp, fn = int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(truth)) - tp
    counts = {"truth_px": float(tp + fn), "pred_px": float(tp + fp), "tp": float(tp), "fp": float(fp), "fn": float(fn)}
    if tp + fp + fn == 0:  # both empty: nothing to score (left out of the means, and counted)
        return {"dice": math.nan, "iou": math.nan, "hd95": math.nan, "nsd": math.nan, **counts}
    dice, iou = 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)
    if tp + fp == 0 or tp + fn == 0:  # one of them empty: the worst boundary scores, HD95 the diagonal
        extent = pred.shape if spacing is None else [n * s for n, s in zip(pred.shape, spacing)]
        return {"dice": dice, "iou": iou, "hd95": math.hypot(*extent), "nsd": 0.0, **counts}
    to_truth, to_pred = surface_distances(*_crop(pred, truth), spacing)
    hd95 = max(float(np.percentile(to_truth, 95)), float(np.percentile(to_pred, 95)))
    within = np.count_nonzero(to_truth <= tolerance) + np.count_nonzero(to_pred <= tolerance)
    nsd = within / (len(to_truth) + len(to_pred))
    return {"dice": dice, "iou": iou, "hd95": hd95, "nsd": float(nsd), **counts}


def mask_summary(columns: dict[str, np.ndarray]) -> dict[str, float]:
    """Over images: the mean of the per-image scores (images with both masks empty left out), the
    pooled dice and IoU (every test pixel counted together), and how many images were left out."""
    tp, fp, fn = (float(np.sum(columns[k])) for k in ("tp", "fp", "fn"))
    scored = ~np.isnan(columns["dice"])
    summary = {
        k: float(np.mean(columns[k][scored])) if scored.any() else math.nan for k in ("dice", "iou", "hd95", "nsd")
    }
    pooled = 2 * tp + fp + fn
    summary["dice_pooled"] = 2 * tp / pooled if pooled else math.nan
    summary["iou_pooled"] = tp / (tp + fp + fn) if pooled else math.nan
    summary["empty_images"] = float(np.count_nonzero(~scored))
    return summary


def class_mask_scores(
    pred: np.ndarray, truth: np.ndarray, classes: tuple[str, ...], tolerance: float, spacing: Spacing = None
) -> dict:
    """Scores of one (H, W) or (D, H, W) class-index prediction against its truth (index k is the
    k-th class, 0 background): mask_scores of each class's boolean masks as `<score>_<class>`, and
    `dice`, the image's mean dice over the classes it scores (NaN when every class is absent from both)."""
    row: dict[str, float] = {}
    for k, name in enumerate(classes, 1):
        scores = mask_scores(pred == k, truth == k, tolerance, spacing)
        row.update({f"{key}_{name}": v for key, v in scores.items()})
    scored = [row[f"dice_{c}"] for c in classes if not math.isnan(row[f"dice_{c}"])]
    return {"dice": sum(scored) / len(scored) if scored else math.nan, **row}


def class_mask_summary(columns: dict[str, np.ndarray], classes: tuple[str, ...]) -> dict[str, float]:
    """Each class's mask_summary as `<figure>_<class>`, and the mean over the classes of each of
    CLASS_MEANS (a class whose figure is undefined, e.g. absent from every image, is left out)."""
    per_class = {c: mask_summary({k: columns[f"{k}_{c}"] for k in MASK_COLUMNS}) for c in classes}
    summary = {}
    for figure in CLASS_MEANS:
        values = [s[figure] for s in per_class.values() if not math.isnan(s[figure])]
        summary[figure] = float(np.mean(values)) if values else math.nan
    for c, figures in per_class.items():
        summary.update({f"{figure}_{c}": value for figure, value in figures.items()})
    return summary
