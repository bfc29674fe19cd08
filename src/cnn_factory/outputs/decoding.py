"""What prepare makes of each output kind: the array a row's cell or label map decodes to, the
training split's statistics, and the kind's line in prepare's report. Each kind's class
(outputs/<kind>.py) takes these methods from its mixin here.

They live apart from the kinds' losses, metrics, heads, pictures and prediction writers so that
prepare depends on what decodes and nothing else: dvc.yaml lists this file, not the kinds'
modules, among prepare's dependencies, and the row cache's key (data/rows.py) hashes it. An edit
to a loss or a plot re-runs train and evaluate, never prepare; an edit here re-runs prepare and
decodes every row again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np


class CellError(ValueError):
    """A cell of another column than the output's `column` is wrong: prepare names `column`."""

    def __init__(self, message: str, column: str):
        super().__init__(message)
        self.column = column


IGNORE = 255  # a stored mask's value where the label map holds one of the output's `ignore` values


def scored(mask: np.ndarray) -> np.ndarray:
    """Where a stored mask counts (not IGNORE): losses, metrics and scores leave the rest out."""
    return mask != IGNORE


def foreground(mask: np.ndarray) -> np.ndarray:
    """A stored mask's object pixels (any class), IGNORE left out."""
    return (mask > 0) & scored(mask)


class MaskRows:
    """What the label-map kinds share: a mask of `size` from the row's label map, nearest neighbour,
    IGNORE where the map holds one of the output's `ignore` values."""

    if TYPE_CHECKING:  # fields of the kind's params model
        size: tuple[int, ...] | None
        ignore: tuple[int, ...]

        @property
        def label_values(self) -> tuple[int, ...]: ...

        def mask(self, label_map: np.ndarray, size: tuple[int, ...]) -> np.ndarray: ...

    def array_field(self) -> tuple:
        return (np.uint8, self.size)

    def decode(self, cell: str, label_map: np.ndarray | None) -> np.ndarray:
        """(H, W) or (D, H, W) uint8 mask (a segmentation's 0/1, a class mask's class indices) at `size`."""
        assert label_map is not None and self.size is not None  # reads_label_map: the row's map is given
        return self.mask(label_map, self.size)

    def ignoring(self, mask: np.ndarray, label_map: np.ndarray) -> np.ndarray:
        """`mask` (at the label map's size) with IGNORE where the map holds an `ignore` value."""
        return np.where(np.isin(label_map, self.ignore), np.uint8(IGNORE), mask) if self.ignore else mask


def nearest(mask: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """`mask` at `size` (nearest neighbour), in its own dtype."""
    if mask.shape == tuple(size):
        return mask
    from skimage.transform import resize  # here: it loads scipy (0.3 s), which a prepare of cached rows skips

    return resize(mask, size, order=0, preserve_range=True, anti_aliasing=False).astype(mask.dtype)


class SegmentationRows(MaskRows):
    """What prepare makes of a Segmentation output (outputs/segmentation.py)."""

    def mask(self, label_map: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
        """0/1: any of the label values in `label` (IGNORE: any of `ignore`)."""
        return nearest(self.ignoring(np.isin(label_map, self.label_values).astype(np.uint8), label_map), size)

    def summary(self, values: dict[str, np.ndarray]) -> dict:
        """Per split, the mask's share of the pixels that count (not IGNORE)."""
        return {f"coverage_{s}": round(float(c[1] / max(c[:2].sum(), 1)), 4) for s, c in value_counts(values).items()}


class ClassMaskRows(MaskRows):
    """What prepare makes of a ClassMask output (outputs/class_mask.py)."""

    if TYPE_CHECKING:  # fields of the kind's params model
        labels: dict[str, tuple[int, ...]]

        @property
        def classes(self) -> tuple[str, ...]: ...

    def mask(self, label_map: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
        """Class indices: k for the k-th class's label values, 0 for the rest (IGNORE: `ignore`'s)."""
        values = np.asarray(self.label_values)
        index = np.asarray([k for k, vs in enumerate(self.labels.values(), 1) for _ in vs], np.uint8)
        order = np.argsort(values)
        values, index = values[order], index[order]
        # one pass: each pixel's value looked up among the sorted label values; no match is background
        at = np.minimum(np.searchsorted(values, label_map), len(values) - 1)
        return nearest(self.ignoring(np.where(values[at] == label_map, index[at], 0).astype(np.uint8), label_map), size)

    def summary(self, values: dict[str, np.ndarray]) -> dict:
        """Per split, each class's share of the pixels that count (not IGNORE)."""
        report = {}
        for split, counts in value_counts(values).items():
            counts = counts[: len(self.classes) + 1]
            shares = counts[1:] / max(int(counts.sum()), 1)
            report[f"coverage_{split}"] = {c: round(float(s), 4) for c, s in zip(self.classes, shares)}
        return report


def value_counts(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per split, how many of its masks' pixels hold each value 0 to 255."""
    counted = {}
    for split, masks in values.items():
        counts = np.zeros(256, np.int64)
        for start in range(0, len(masks), 256):  # a block of rows at a time: memory stays flat
            counts += np.bincount(np.asarray(masks[start : start + 256]).ravel(), minlength=256)
        counted[split] = counts
    return counted


class CategoryRows:
    """What prepare makes of a Category output (outputs/category.py)."""

    if TYPE_CHECKING:  # fields of the kind's params model
        name: str

        @property
        def class_names(self) -> tuple[str, ...]: ...

    def array_field(self) -> tuple:
        return (np.int64,)

    def decode(self, cell: str, label_map: np.ndarray | None) -> np.ndarray:
        if not cell:
            raise ValueError(f"empty cell; expected a value for outputs.{self.name}")
        if cell not in self.class_names:
            raise ValueError(f"{cell!r} is not a known class; expected one of {', '.join(self.class_names)}")
        return np.asarray(self.class_names.index(cell), np.int64)

    def summary(self, values: dict[str, np.ndarray]) -> dict:
        return {
            f"counts_{s}": dict(zip(self.class_names, np.bincount(v, minlength=len(self.class_names)).tolist()))
            for s, v in values.items()
        }


def number(cell: str, what: str = "") -> float:
    """A cell's finite number; ValueError says what it is not (and `what` was expected)."""
    expected = f"; expected {what}" if what else ""
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(f"{cell!r} is not a number{expected}") from None
    if not math.isfinite(value):
        raise ValueError(f"{cell!r} is not a finite number{expected}")
    return value


class NumberRows:
    """What prepare makes of a Numeric output (outputs/numeric.py)."""

    if TYPE_CHECKING:  # fields of the kind's params model
        name: str

    def array_field(self) -> tuple:
        return (np.float32,)

    def decode(self, cell: str, label_map: np.ndarray | None) -> np.ndarray:
        if not cell:
            raise ValueError(f"empty cell; expected a value for outputs.{self.name}")
        return np.asarray(number(cell), np.float32)

    def statistics(self, train: np.ndarray) -> dict[str, float]:
        return {"mean": float(train.mean()), "std": float(max(train.std(), 1e-6))}

    def summary(self, values: dict[str, np.ndarray]) -> dict:
        return {f"mean_{s}": round(float(v.mean()), 4) for s, v in values.items()}


class MeasureRows:
    """What prepare makes of a Measure output (outputs/measure.py): (truth, spacing) per row, float32,
    NaN where there is none (no `column`, an empty truth cell; no `spacing_column`)."""

    if TYPE_CHECKING:  # fields of the kind's params model
        name: str
        column: str
        spacing_column: str | None

    def array_field(self) -> tuple:
        return (np.float32, (2,))

    def decode(self, cell: str, label_map: np.ndarray | None) -> np.ndarray:
        """The truth of one row (an empty cell: none, NaN) with no spacing."""
        truth = number(cell, f"the true value of outputs.{self.name}") if cell else math.nan
        return np.asarray([truth, math.nan], np.float32)

    def decode_row(self, row: Mapping[str, str], label_map: np.ndarray | None) -> np.ndarray:
        values = self.decode(row[self.column] if self.column else "", None)
        if self.spacing_column:
            values[1] = self.spacing(row[self.spacing_column])
        return values

    def spacing(self, cell: str) -> float:
        """A `spacing_column` cell's mm per pixel (prepare's, and predict's given a CSV with the
        column); a CellError says what is wrong with it."""
        assert self.spacing_column
        what = f"mm per pixel for outputs.{self.name}.spacing_column"
        try:
            spacing = number(cell, what) if cell else -1.0
        except ValueError as err:
            raise CellError(str(err), self.spacing_column) from None
        if not spacing > 0:
            shown = "empty cell" if not cell else f"{cell!r} is not positive"
            raise CellError(f"{shown}; expected {what} (a number > 0)", self.spacing_column)
        return spacing

    def summary(self, values: dict[str, np.ndarray]) -> dict:
        """Per split, the rows with a true value."""
        return {f"with_truth_{s}": int(np.count_nonzero(~np.isnan(v[:, 0]))) for s, v in values.items()}
