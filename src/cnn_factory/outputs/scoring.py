"""What evaluation needs of an output kind: one row of scores per test image, the figures over the
rows, the per-image table's cells and back, plots and the pictures' masks. Each kind's module
defines its `Scorer` beside its core (base.py's `Adapter`); evaluate.py, report.py, scores/,
summary.py, compare/ and the training pictures call these; the defaults fit a kind without a mask
(no pictures, no confusion matrix).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cnn_factory.outputs.base import Adapter, Kind, Output, Spacing

Masks = Mapping[str, np.ndarray]  # an image's predicted mask per mask output
Row = dict[str, Any]  # one test image's scores by column (`image_scores`)
# test figures `cnn-factory summary` prints: (key in eval/metrics.json, label, format spec) each;
# a label's {unit} is that of distances: px for images, mm for volumes
Figures = tuple[tuple[str, str, str], ...]

if TYPE_CHECKING:
    import torch

    from cnn_factory.accumulators import Metric


class Scorer(Adapter[Kind]):
    """An output's evaluation: `self.output` is its core (params and names)."""

    interval_metrics: ClassVar[tuple[str, ...]] = ()  # test figures given a bootstrap interval
    summary_figures: ClassVar[Figures] = ()  # the figures `cnn-factory summary` prints

    def image_scores(self, prediction: np.ndarray, truth: np.ndarray, tolerance: float, spacing: Spacing = None) -> Row:
        """One test image's row: prediction as evaluate gives it (`predicted_mask` at the label map's
        size, probabilities, a value) against its truth; `tolerance` in pixels for boundaries, or in
        mm with a volume's `spacing` (mm per axis)."""
        raise NotImplementedError

    def summarise(self, columns: dict[str, np.ndarray]) -> dict[str, float]:
        """The test figures over images from the rows' columns (also run on bootstrap resamples)."""
        raise NotImplementedError

    def table_cells(self, columns: dict[str, np.ndarray]) -> dict[str, list]:
        """The columns of eval/per_image.csv, as written (e.g. class names instead of ids)."""
        return {k: v.tolist() for k, v in columns.items()}

    def table_columns(self, cells: dict[str, list[str]]) -> dict[str, np.ndarray]:
        """`table_cells` read back from eval/per_image.csv's text: the columns `summarise` takes, so
        that `cnn-factory compare` recomputes a run's figures from its table alone. KeyError names a
        column the table lacks (written by another version)."""
        return {k: cell_floats(v) for k, v in cells.items()}

    def image_values(self, columns: dict[str, np.ndarray], figure: str) -> np.ndarray | None:
        """Per-image values whose mean over the images where they are defined (not NaN) is `summarise`'s
        `figure` (a mask's dice, a category's accuracy), so that resampled figures are means of rows;
        None for a figure that is no such mean (pooled ones, F1, R^2)."""
        return None

    def plots(self, columns: dict[str, np.ndarray]) -> dict[str, list[dict[str, Any]]]:
        """Data points per plot folder under eval/plots/ (dvc.yaml says how each folder is drawn)."""
        return {}

    def measured(
        self, masks: Masks, outputs: Mapping[str, Output], stored: np.ndarray, scan: Spacing, image: Any = None
    ) -> float:
        """(kinds without a head, `trained` False) Its value for one image, as evaluate and predict
        compute it: from the predicted masks of the mask outputs among `outputs` (at the label map's
        size), what prepare stored of its row (`stored`), the scan's spacing (mm per axis) and the
        image (C, *spatial)."""
        raise NotImplementedError

    def confusion(self, metric: Metric) -> tuple[list[str], list[str]] | None:
        """(true, predicted) class names, one pair per image counted by `metric` (the core's
        `new_metric`), for a confusion matrix; None for kinds without one class per image."""
        return None

    # --- (mask kinds) the pictures and the masks scored ---
    def predicted_mask(self, probabilities: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        """The mask predict writes and evaluate scores, from `probabilities()` of one image or a batch
        (e.g. thresholded, or the most probable class per pixel)."""
        raise NotImplementedError

    def true_mask(self, target: torch.Tensor) -> torch.Tensor:
        """A stored or loaded target (uint8, or float on the device) as the same kind of mask as
        `predicted_mask` gives, its IGNORE pixels background."""
        raise NotImplementedError

    def picture_legend(self) -> str:
        """What the colours of its pictures mean: the worst cases' caption says it."""
        return "image | truth, yellow outline | prediction, magenta outline"


class MaskScorer(Scorer[Kind]):
    """A mask kind's Scorer: the figures every mask kind reports."""

    interval_metrics: ClassVar[tuple[str, ...]] = ("dice", "iou", "hd95", "nsd", "dice_pooled")
    summary_figures: ClassVar[Figures] = (("dice", "dice", ".3f"), ("hd95", "HD95 {unit}", ".1f"))


def cell_floats(cells: list[str]) -> np.ndarray:
    """A column of eval/per_image.csv as floats; an empty cell (an undefined score) is NaN."""
    return np.asarray([float(c) if c != "" else np.nan for c in cells], np.float64)


MASK_SCORES, MASK_COUNTS = ("dice", "iou", "hd95", "nsd"), ("truth_px", "pred_px", "tp")  # a mask's per-image cells


def mask_cells(columns: dict[str, np.ndarray], suffix: str = "") -> dict[str, list]:
    """A mask's per-image cells from its columns `<key><suffix>`: the scores rounded, the pixel counts whole."""
    cells = {f"{k}{suffix}": [round(float(v), 6) for v in columns[f"{k}{suffix}"]] for k in MASK_SCORES}
    return cells | {f"{k}{suffix}": columns[f"{k}{suffix}"].astype(int).tolist() for k in MASK_COUNTS}


def mask_columns(cells: dict[str, list[str]], suffix: str = "") -> dict[str, np.ndarray]:
    """A mask's per-image cells `<key><suffix>` (mask_cells') as the columns of its scores
    (scores/masks.py's MASK_COLUMNS): the false positives and negatives follow from the counts."""
    columns = {k: cell_floats(cells[f"{k}{suffix}"]) for k in (*MASK_SCORES, *MASK_COUNTS)}
    columns["fp"], columns["fn"] = columns["pred_px"] - columns["tp"], columns["truth_px"] - columns["tp"]
    return columns
