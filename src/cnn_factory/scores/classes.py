"""Category scores over images, from each image's true class and softmax probabilities.

Precision, recall and F1 per class; macro F1 over the classes seen or predicted (as the training
metric); balanced accuracy: the mean recall over the classes present in the truth (scikit-learn's
`balanced_accuracy_score`); ROC AUC (two classes: the second class's probability ranks the images,
ties counting half); expected calibration error: the gap between confidence (the top probability)
and accuracy, averaged over 15 equal-width confidence bins weighted by their images (Guo et al. 2017).
"""

from __future__ import annotations

import math

import numpy as np

BINS = 15  # confidence bins of the calibration error and its reliability plot


def confusion(true: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts: rows the true class, columns the predicted one."""
    return np.bincount(true * k + predicted, minlength=k * k).reshape(k, k)


def roc_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Probability that a random positive image scores above a random negative one (ties: half)."""
    pos, neg = np.sort(score[positive]), np.sort(score[~positive])
    if not len(pos) or not len(neg):
        return math.nan
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below.sum() + 0.5 * ties.sum()) / (len(pos) * len(neg)))


def reliability(correct: np.ndarray, confidence: np.ndarray) -> list[dict[str, float]]:
    """Per non-empty confidence bin: its mean confidence, accuracy and number of images."""
    bins = np.minimum((confidence * BINS).astype(int), BINS - 1)
    return [
        {"confidence": float(confidence[at].mean()), "accuracy": float(correct[at].mean()), "images": int(at.sum())}
        for at in bins == np.unique(bins)[:, None]  # a row per non-empty bin: where its images are
    ]


def calibration_error(correct: np.ndarray, confidence: np.ndarray) -> float:
    if not len(correct):
        return math.nan
    bins = np.minimum((confidence * BINS).astype(int), BINS - 1)
    counts = np.bincount(bins, minlength=BINS)
    gap = np.bincount(bins, weights=correct - confidence, minlength=BINS)  # per bin: n * (accuracy - confidence)
    return float(np.abs(gap).sum() / counts.sum())


def class_summary(true: np.ndarray, probs: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    """true (N,) class ids, probs (N, K) softmax: headline figures, then `<class>/<precision|recall|f1>`."""
    k = len(names)
    predicted = probs.argmax(1)
    mat = confusion(true, predicted, k).astype(np.float64)
    tp, as_true, as_pred = np.diag(mat), mat.sum(1), mat.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(as_pred > 0, tp / as_pred, 0.0)
        recall = np.where(as_true > 0, tp / as_true, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    seen = (as_true + as_pred) > 0
    correct = (predicted == true).astype(np.float64)
    summary = {
        "accuracy": float(correct.mean()) if len(true) else math.nan,
        "balanced_accuracy": float(recall[as_true > 0].mean()) if (as_true > 0).any() else math.nan,
        "f1_macro": float(f1[seen].mean()) if seen.any() else math.nan,
        "ece": calibration_error(correct, probs.max(1)),
    }
    if k == 2:
        summary["roc_auc"] = roc_auc(true == 1, probs[:, 1])
    for i, name in enumerate(names):
        summary.update({f"{name}/precision": precision[i], f"{name}/recall": recall[i], f"{name}/f1": f1[i]})
    return {key: float(value) for key, value in summary.items()}
