"""What every output kind provides: its params, and what differs between kinds along the flow.

An output kind is a pydantic model (its keys in params.yaml, checked) with methods for each
place the kinds differ: what a CSV cell or label map decodes to, what prepare stores and
reports, the model head, the loss, the metrics, what predict writes, what export records.
The rest of the code walks `{name: output}` dicts and calls these; it never asks for a kind.

A model file keeps each output's definition (`describe()`) and head arguments (`head_args()`),
so predict and export rebuild the same output objects from it without params.yaml.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
from pydantic import Field, PrivateAttr

from cnn_factory.params import Strict

if TYPE_CHECKING:  # the kinds import torch where they use it: reading params needs no torch
    import torch
    from torch import nn

    from cnn_factory.accumulators import Metric
    from cnn_factory.losses import LossFn


class Output(Strict):
    """Fields every output has; each kind adds its own and a `type: Literal[...]` tag."""

    kind: ClassVar[str]  # its name in KINDS (outputs/__init__.py): what a model file and an export call it
    losses: ClassVar[tuple[str, ...]]  # get_args of the kind's `loss` Literal; the first is the default
    metric_names: ClassVar[tuple[str, ...]]  # what Metric.compute() returns; the first is the headline
    curves: ClassVar[str]  # folder of its validation curves under dvclive/plots/curves/ (one per kind)
    activation: ClassVar[str]  # what turns logits into predictions (export's sidecar says it)
    reads_label_map: ClassVar[bool] = False  # its CSV column names a label-map file, not a value
    spatial: ClassVar[bool] = False  # a mask moving with the image: augmented, drawn, tiled alike
    training_only: ClassVar[frozenset[str]] = frozenset({"loss", "weight"})  # fields no array depends on
    interval_metrics: ClassVar[tuple[str, ...]] = ()  # test figures given a bootstrap interval
    # the test figures `cnn-factory summary` prints: (key in eval/metrics.json, label, format spec)
    summary_figures: ClassVar[tuple[tuple[str, str, str], ...]] = ()

    type: str
    column: str = Field("", min_length=1, description="CSV column (default: the output's name)")
    loss: str | None = None  # each kind narrows it to a Literal of its loss names
    weight: float = Field(1.0, ge=0, description="weight of this output's loss in the total")
    _name: str = PrivateAttr("")

    @property
    def name(self) -> str:
        return self._name

    @property
    def headline(self) -> str:
        return self.metric_names[0]

    def named(self, name: str, input_size: tuple[int, ...]) -> Self:
        """This output with its name set and the defaults that depend on it filled in."""
        filled = self.model_copy(update={"column": self.column or name, "loss": self.loss or self.losses[0]})
        filled._name = name
        return filled

    def describe(self) -> dict[str, Any]:
        """The definition as plain types, for the model file (and back through `from_definition`)."""
        return {**self.model_dump(mode="json"), "labels": list(self.label_values)}

    # --- data: a row's cell or label map -> the array prepare stores ---
    def array_field(self) -> tuple:
        """(dtype, shape) of this output in one prepared row."""
        raise NotImplementedError

    def decode(self, cell: str, label_map: np.ndarray | None) -> np.ndarray:
        """The stored value of one row; ValueError says what is wrong with the cell."""
        raise NotImplementedError

    @property
    def label_values(self) -> tuple[int, ...]:
        """The label-map values this output looks for (none unless it reads a label map)."""
        return ()

    @property
    def colour_table(self) -> dict[str, int] | None:
        """(label-map kinds) `#rrggbb` -> label value, for label maps coded in colours; None: they hold values."""
        return None

    def mask(self, label_map: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
        """(spatial kinds) This output's uint8 mask of a label map, (H, W) or (D, H, W) at `size` (nearest)."""
        raise NotImplementedError

    def lacks_labels(self, label_map: np.ndarray) -> bool:
        """True when a label map holds none of `label_values` (a warning in prepare; an error in every row)."""
        return False

    def statistics(self, train: np.ndarray) -> dict[str, float]:
        """Figures of the training split the model needs (kept in the manifest and the model file)."""
        return {}

    def summary(self, values: dict[str, np.ndarray]) -> dict:
        """This output's line in prepare's report, from its arrays per split."""
        raise NotImplementedError

    def column_report(self, values: np.ndarray) -> tuple[str, list[str]]:
        """(image-level kinds) What `cnn-factory plan` says of this output's decoded column, every
        row's value: one line, and warnings about what would make its head hard to train."""
        return "", []

    # --- model and training ---
    def head_args(self, stats: dict[str, float]) -> dict[str, Any]:
        """Plain arguments of `build_head`, kept in the model file."""
        return {"type": self.type, **stats}

    @classmethod
    def build_head(cls, args: dict[str, Any], channels: list[int], options: dict[str, Any]) -> nn.Module:
        """The head: encoder features (full resolution first) -> this output's logits."""
        raise NotImplementedError

    def make_loss(self, stats: dict[str, float]) -> LossFn:
        raise NotImplementedError

    def new_metric(self, device: torch.device | str) -> Metric:
        raise NotImplementedError

    # --- evaluation (evaluate.py and scores/): one row per test image, figures over the rows ---
    def predicted_mask(self, probabilities: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        """(spatial kinds) The mask predict writes and evaluate scores, from `probabilities()` of one
        image or a batch (e.g. thresholded, or the most probable class per pixel)."""
        raise NotImplementedError

    def true_mask(self, target: torch.Tensor) -> torch.Tensor:
        """(spatial kinds) A stored or loaded target (uint8, or float on the device) as the same kind
        of mask as `predicted_mask` gives."""
        raise NotImplementedError

    def picture_legend(self) -> str:
        """(spatial kinds) What the colours of its pictures mean: the worst cases' caption says it."""
        return "image | truth, yellow outline | prediction, magenta outline"

    def image_scores(
        self, prediction: np.ndarray, truth: np.ndarray, tolerance: float, spacing: tuple[float, ...] | None = None
    ) -> dict[str, Any]:
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

    def image_values(self, columns: dict[str, np.ndarray], figure: str) -> np.ndarray | None:
        """Per-image values whose mean over the images where they are defined (not NaN) is `summarise`'s
        `figure` (a mask's dice, a category's accuracy), so that resampled figures are means of rows;
        None for a figure that is no such mean (pooled ones, F1, R^2)."""
        return None

    def table_columns(self, cells: dict[str, list[str]]) -> dict[str, np.ndarray]:
        """`table_cells` read back from eval/per_image.csv's text: the columns `summarise` takes, so
        that `cnn-factory compare` recomputes a run's figures from its table alone. KeyError names a
        column the table lacks (written by another version)."""
        return {k: cell_floats(v) for k, v in cells.items()}

    def plots(self, columns: dict[str, np.ndarray]) -> dict[str, list[dict[str, Any]]]:
        """Data points per plot folder under eval/plots/ (dvc.yaml says how each folder is drawn)."""
        return {}

    def confusion(self, metric: Metric) -> tuple[list[str], list[str]] | None:
        """(true, predicted) class names, one pair per image counted by `metric` (from `new_metric`),
        for a confusion matrix; None for kinds without one class per image."""
        return None

    # --- predict and export ---
    @staticmethod
    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        """What predict averages and thresholds: probabilities, or the value itself."""
        return logits

    @staticmethod
    def to_logits(probabilities: torch.Tensor) -> torch.Tensor:
        """(spatial kinds) Logits whose `probabilities()` are these: blended sliding-window
        probabilities go back to the losses and metrics, which take logits."""
        raise NotImplementedError

    def logits_shape(self) -> list:
        """Shape of the exported logits, `batch` first."""
        raise NotImplementedError

    def prediction_columns(self) -> list[str]:
        """Columns of predictions.csv for this output."""
        return [self.name]

    def write_prediction(
        self,
        value: np.ndarray,
        out: Path,
        stem: str,
        size: tuple[int, ...],
        threshold: float,
        affine: np.ndarray | None = None,
    ) -> list[str]:
        """predictions.csv cells for one image (and any file they name, under `out`); a volume's
        masks (`size` (D, H, W)) are written as NIfTI on the scan's grid, placed by its `affine`."""
        return [f"{float(value):.6g}"]

    def prediction_file(
        self, value: np.ndarray, size: tuple[int, ...], threshold: float, affine: np.ndarray | None = None
    ) -> bytes | None:
        """(spatial kinds) The mask file predict writes for one image, as bytes: a PNG, or a scan's
        .nii.gz on its grid, placed by its `affine`; None for the others."""
        return None

    def answer(
        self, value: np.ndarray, size: tuple[int, ...], threshold: float, affine: np.ndarray | None = None
    ) -> dict[str, Any]:
        """`cnn-factory serve`'s JSON for one image (a scan, with its `affine`): the value here; a mask
        kind gives its file (`mask_answer`), a category its label and probabilities."""
        return {"value": float(value)}


def cell_floats(cells: list[str]) -> np.ndarray:
    """A column of eval/per_image.csv as floats; an empty cell (an undefined score) is NaN."""
    return np.asarray([float(c) if c != "" else np.nan for c in cells], np.float64)


def mask_columns(cells: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """A mask's per-image cells (dice, iou, hd95, nsd, truth_px, pred_px, tp) as the columns of its
    scores (scores/masks.py's MASK_COLUMNS): the false positives and negatives follow from the counts."""
    columns = {k: cell_floats(v) for k, v in cells.items()}
    columns["fp"], columns["fn"] = columns["pred_px"] - columns["tp"], columns["truth_px"] - columns["tp"]
    return columns


def mask_answer(
    file: bytes, counts: dict[str, int], affine: np.ndarray | None = None, middle: bytes | None = None
) -> dict[str, Any]:
    """A mask kind's `answer`: the file predict writes, base64-encoded, and its pixels per class. A
    scan's (placed by `affine`): its voxels per class, their volume in mL (the voxel's from the
    scan's spacing), and `slice`, its `middle` slice as the PNG an image's mask would be."""
    encoded = base64.b64encode(file).decode("ascii")
    if affine is None:
        return {"mask": encoded, "pixels": counts}
    from cnn_factory.volumes import affine_spacing

    ml = float(np.prod(affine_spacing(affine))) / 1000  # a voxel's mm^3, in mL
    assert middle is not None
    return {
        "mask": encoded,
        "voxels": counts,
        "ml": {c: n * ml for c, n in counts.items()},
        "slice": base64.b64encode(middle).decode("ascii"),
    }
