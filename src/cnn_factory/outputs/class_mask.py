"""Class-mask output: several classes that exclude each other, one class index per pixel.

    organs: {type: segmentation, column: labels, labels: {liver: 1, kidney: 2, spleen: [3, 4]}, loss: ce_dice}

A segmentation whose `labels` maps class names to label-map values (one or a list each); every
other value of the label map is background. prepare stores uint8 class indices at `size` ((H, W),
or a volume's (D, H, W); 0 background, k the k-th class of `labels`, 255 a value of `ignore`); the
head is one UNet decoder with K + 1 channels (background first) and a softmax; the losses are
cross entropy, the soft dice averaged over the classes (background left out) and their sum; the
metrics are dice and IoU per class and their mean over the classes; predict writes an index PNG
with a palette (background black), or a NIfTI of class indices per scan on its own grid.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, get_args

import numpy as np
from pydantic import Field, model_validator

from cnn_factory.errors import listing
from cnn_factory.images import encode_png
from cnn_factory.outputs.base import MaskOutput, Spacing
from cnn_factory.outputs.decoding import IGNORE, ClassMaskRows, nearest
from cnn_factory.outputs.scoring import MaskScorer, Row, cell_floats, mask_cells, mask_columns
from cnn_factory.outputs.segmentation import IGNORE_HELP, Colours, Ignored, Labels, refuse_ignored
from cnn_factory.outputs.writing import Affine, MaskWriter, Size
from cnn_factory.params import Shape, custom

if TYPE_CHECKING:  # torch and scikit-image load when first used: reading params needs neither
    import torch
    from torch import nn

    from cnn_factory.accumulators import Metric
    from cnn_factory.losses import LossFn

Loss = Literal["ce_dice", "cross_entropy", "dice"]
MAX_CLASSES = 254  # class indices are stored as uint8, 0 being the background and 255 IGNORE
CLASS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")  # they become metric keys and CSV columns
LEGEND = 8  # classes named in a picture's caption


class ClassMaskOutput(ClassMaskRows, MaskOutput):
    kind: ClassVar[str] = "class_mask"
    losses: ClassVar[tuple[str, ...]] = get_args(Loss)
    # means over the classes; compute() and the test figures add `<figure>_<class>` per class
    metric_names: ClassVar[tuple[str, ...]] = ("dice", "iou")
    headline: ClassVar[str] = "dice"
    curves: ClassVar[str] = "masks"
    activation: ClassVar[str] = "softmax"

    type: Literal["segmentation"]
    labels: dict[str, Labels] = Field(
        description="class name -> label-map value or list of values; every other value is background",
        json_schema_extra={
            "minProperties": 1,
            "maxProperties": MAX_CLASSES,
            "propertyNames": {"pattern": CLASS_NAME.pattern, "not": {"const": "background"}},
        },
    )
    size: Shape | None = Field(
        None, description="[height, width] of the mask, [depth, height, width] of a volume's (default: the input size)"
    )
    colours: Colours | None = Field(
        None, description="'#rrggbb' -> label value, for RGB label maps coded in colours (default: none)"
    )
    ignore: Ignored = Field((), description=IGNORE_HELP)
    loss: Loss | None = None

    @model_validator(mode="after")
    def _classes_apart(self) -> Self:
        if not 1 <= len(self.labels) <= MAX_CLASSES:
            raise custom("labels", f"expected 1 to {MAX_CLASSES} classes, got {len(self.labels)}", key="labels")
        for name in self.labels:
            if not CLASS_NAME.fullmatch(name) or name == "background":
                raise custom(
                    "labels",
                    f"class name {name!r}: use letters, digits, _ and - (starting with a letter or digit); "
                    "'background' is the name of index 0",
                    key="labels",
                )
        owner: dict[int, str] = {}
        for name, values in self.labels.items():
            for value in values:
                if value in owner:
                    raise custom(
                        "labels",
                        f"label value {value} is in both {owner[value]!r} and {name!r}; "
                        "each value belongs to one class",
                        key="labels",
                    )
                owner[value] = name
        refuse_ignored(self.ignore, {f"labels.{name}": values for name, values in self.labels.items()})
        return self

    def describe(self) -> dict[str, Any]:
        # the K + 1 channels in order, as predict's index PNG and export's logits hold them
        return {**self.model_dump(mode="json"), "classes": ["background", *self.classes]}

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names in index order: class k (from 1) is the k-th."""
        return tuple(self.labels)

    @property
    def label_values(self) -> tuple[int, ...]:
        return tuple(v for values in self.labels.values() for v in values)

    @property
    def class_axis(self) -> int:
        """The K + 1 class channels' axis, counted from the end: before the mask's 2 or 3 spatial axes."""
        return -1 - len(self.size or (0, 0))

    def head_args(self, stats: dict[str, float]) -> dict[str, Any]:
        labels = {c: list(v) for c, v in self.labels.items()}  # also what tells this kind from a boolean mask
        return {"type": self.type, "size": list(self.size or ()), "labels": labels}

    @classmethod
    def build_head(cls, args: dict[str, Any], channels: list[int], options: dict[str, Any]) -> nn.Module:
        from cnn_factory.heads import UNetDecoder

        return UNetDecoder.from_options(channels, args["size"], options, classes=len(args["labels"]) + 1)

    def make_loss(self, stats: dict[str, float]) -> LossFn:
        from cnn_factory import losses

        loss = {
            "ce_dice": losses.class_ce_dice_loss,
            "cross_entropy": losses.class_cross_entropy_loss,
            "dice": losses.class_dice_loss,
        }[self.loss or self.losses[0]]
        return losses.ignoring(loss, IGNORE) if self.ignore else loss

    def new_metric(self, device: torch.device | str) -> Metric:
        from cnn_factory.accumulators import ClassOverlapCounts

        return ClassOverlapCounts(self.classes, device, IGNORE if self.ignore else None)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return logits.softmax(dim=self.class_axis)  # over the K + 1 channels of (..., K + 1, *size)

    @staticmethod
    def to_logits(probabilities: torch.Tensor) -> torch.Tensor:
        return probabilities.clamp(min=1e-6).log()  # softmax of log p is p


class ClassMaskScorer(MaskScorer[ClassMaskOutput], of=ClassMaskOutput):
    def predicted_mask(self, probabilities: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        """The most probable class per pixel (`threshold` does not apply): (..., K + 1, *size) -> (..., *size)."""
        import torch

        return probabilities.argmax(self.output.class_axis).to(torch.uint8)

    def true_mask(self, target: torch.Tensor) -> torch.Tensor:
        import torch

        return target.to(torch.uint8).masked_fill(target == IGNORE, 0)

    def picture_legend(self) -> str:
        from cnn_factory.palette import colour_name

        named = (f"{c} {colour_name(k)}" for k, c in enumerate(self.output.classes, 1))
        return "image | truth | prediction: " + listing(named, LEGEND, ", ... ({} more)")

    def image_scores(self, prediction: np.ndarray, truth: np.ndarray, tolerance: float, spacing: Spacing = None) -> Row:
        from cnn_factory.scores.masks import class_mask_scores

        return class_mask_scores(prediction, truth, self.output.classes, tolerance, spacing)

    def summarise(self, columns: dict[str, np.ndarray]) -> dict[str, float]:
        from cnn_factory.scores.masks import class_mask_summary

        return class_mask_summary(columns, self.output.classes)

    def table_cells(self, columns: dict[str, np.ndarray]) -> dict[str, list]:
        cells = {"dice": [round(float(v), 6) for v in columns["dice"]]}  # the image's mean over its classes
        for c in self.output.classes:
            cells.update(mask_cells(columns, f"_{c}"))
        return cells

    def table_columns(self, cells: dict[str, list[str]]) -> dict[str, np.ndarray]:
        columns = {"dice": cell_floats(cells["dice"])}
        for c in self.output.classes:
            columns.update({f"{k}_{c}": v for k, v in mask_columns(cells, f"_{c}").items()})
        return columns

    def plots(self, columns: dict[str, np.ndarray]) -> dict[str, list[dict[str, Any]]]:
        points = [
            {"image": i, "class": c, "truth_px": int(t), "dice": round(float(d), 4)}
            for c in self.output.classes
            for i, (t, d) in enumerate(zip(columns[f"truth_px_{c}"], columns[f"dice_{c}"]))
            if not math.isnan(d)
        ]
        return {"dice": points}  # dice against the true class's size: where small objects fail


class ClassMaskWriter(MaskWriter[ClassMaskOutput], of=ClassMaskOutput):
    def logits_shape(self) -> list:
        return ["batch", len(self.output.classes) + 1, *(self.output.size or ())]

    def prediction_columns(self) -> list[str]:
        return [f"{self.output.name}_mask", *(f"{self.output.name}_{c}_coverage" for c in self.output.classes)]

    def predicted_image(self, value: np.ndarray, size: Size, threshold: float) -> np.ndarray:
        """Class indices (0 background)."""
        return nearest(value.argmax(0).astype(np.uint8), size)

    def mask_file(self, index: np.ndarray, affine: Affine) -> bytes:
        """An index PNG (mode P: pixel k is class k, 0 background; the palette colours the classes),
        or a scan's .nii.gz placed by `affine`: voxel k is class k."""
        if affine is None:
            from cnn_factory.palette import class_colours

            return encode_png(index, class_colours(len(self.output.classes)).tobytes())
        from cnn_factory.volumes import volume_bytes

        return volume_bytes(index, affine)

    def pixel_counts(self, index: np.ndarray) -> dict[str, int]:
        pixels = np.bincount(index.ravel(), minlength=len(self.output.classes) + 1)
        return dict(zip(["background", *self.output.classes], pixels.tolist()))
