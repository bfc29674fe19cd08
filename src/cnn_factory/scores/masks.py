"""Per-image mask scores at the label map's own resolution: overlap and boundary.

Boundaries are the mask pixels with a 4-neighbour outside the mask (the image's edge counts as
outside), as MONAI's `get_mask_edges`; distances are Euclidean, in pixels, from each boundary
pixel of one mask to the nearest boundary pixel of the other. HD95 is the larger of the two
directions' 95th percentiles (MONAI's `compute_hausdorff_distance(percentile=95)`); normalised
surface dice is the share of both boundaries within `tolerance` pixels of the other
(Nikolov et al. 2021; MONAI's `compute_surface_dice`).

Class masks (one class index per pixel) are scored class by class on each class's boolean masks,
`<score>_<class>`; their figures over images are each class's, then the mean over the classes.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import binary_erosion, distance_transform_edt

MASK_COLUMNS = ("dice", "iou", "hd95", "nsd", "truth_px", "pred_px", "tp", "fp", "fn")
CLASS_MEANS = ("dice", "iou", "hd95", "nsd", "dice_pooled", "iou_pooled")  # class masks: means over classes


def boundary(mask: np.ndarray) -> np.ndarray:
    return mask & ~binary_erosion(mask, border_value=0)


def _crop(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to the bounding box of their union (distances between them do not change)."""
    ys, xs = np.nonzero(pred | truth)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    return pred[box], truth[box]


def surface_distances(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each boundary pixel of `pred` to `truth`'s boundary, and the other way; both non-empty."""
    edge_p, edge_t = boundary(pred), boundary(truth)
    to_truth = distance_transform_edt(~edge_t)
    to_pred = distance_transform_edt(~edge_p)
    return to_truth[edge_p], to_pred[edge_t]


def mask_scores(pred: np.ndarray, truth: np.ndarray, tolerance: float) -> dict[str, float]:
    """Scores of one (H, W) boolean prediction against its (H, W) boolean truth."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    tp = int(np.count_nonzero(pred & truth))
    fp, fn = int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(truth)) - tp
    counts = {"truth_px": float(tp + fn), "pred_px": float(tp + fp), "tp": float(tp), "fp": float(fp), "fn": float(fn)}
    if tp + fp + fn == 0:  # both empty: nothing to score (left out of the means, and counted)
        return {"dice": math.nan, "iou": math.nan, "hd95": math.nan, "nsd": math.nan, **counts}
    dice, iou = 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)
    if tp + fp == 0 or tp + fn == 0:  # one of them empty: the worst boundary scores
        return {"dice": dice, "iou": iou, "hd95": math.hypot(*pred.shape), "nsd": 0.0, **counts}
    to_truth, to_pred = surface_distances(*_crop(pred, truth))
    hd95 = max(float(np.percentile(to_truth, 95)), float(np.percentile(to_pred, 95)))
    nsd = (np.count_nonzero(to_truth <= tolerance) + np.count_nonzero(to_pred <= tolerance)) / (
        len(to_truth) + len(to_pred)
    )
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


def class_mask_scores(pred: np.ndarray, truth: np.ndarray, classes: tuple[str, ...], tolerance: float) -> dict:
    """Scores of one (H, W) class-index prediction against its truth (index k is the k-th class, 0
    background): mask_scores of each class's boolean masks as `<score>_<class>`, and `dice`, the
    image's mean dice over the classes it scores (NaN when every class is absent from both)."""
    row: dict[str, float] = {}
    for k, name in enumerate(classes, 1):
        row.update({f"{key}_{name}": v for key, v in mask_scores(pred == k, truth == k, tolerance).items()})
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
