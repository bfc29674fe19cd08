"""Segmentation output: a boolean mask picked from a label map by its `label` value(s).

    round: {type: segmentation, column: labels, label: 1, loss: bce_dice}
    round: {type: segmentation, column: masks, label: 1, colours: {"#800000": 1, "#008000": 2}}

With `colours`, its label maps are RGB images coded in colours, mapped to label values first
(data/label_maps.py).

prepare stores uint8 0/1 masks at `size` ((H, W), or a volume's (D, H, W); 255 where the label
map holds a value of `ignore`, left out of losses, metrics and scores); the head is a UNet
decoder fed from every encoder level; losses take logits; metrics are dice and IoU pooled over
all pixels; predict writes a 0/255 PNG per image at the image's own size, or a 0/1 NIfTI per
scan on its own grid.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self, get_args

import numpy as np
from pydantic import BeforeValidator, Field, WithJsonSchema, model_validator

from cnn_factory.images import encode_png
from cnn_factory.outputs.base import MaskOutput, Spacing
from cnn_factory.outputs.decoding import IGNORE, SegmentationRows, nearest
from cnn_factory.outputs.scoring import MASK_SCORES, MaskScorer, Row, mask_cells, mask_columns
from cnn_factory.outputs.writing import Affine, MaskWriter, Size
from cnn_factory.params import Shape, custom, show

if TYPE_CHECKING:  # torch and scikit-image load when first used: reading params needs neither
    import torch
    from torch import nn

    from cnn_factory.accumulators import Metric
    from cnn_factory.losses import LossFn

Loss = Literal["binary_crossentropy", "dice", "bce_dice", "jaccard", "focal"]


def _labels(value: Any) -> tuple[int, ...]:
    values = value if isinstance(value, list) else [value]
    if values and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        return tuple(values)
    raise custom("label", f"expected a label value (integer >= 0) or a list of them, got {show(value)}")


HEX = r"#[0-9a-fA-F]{6}"  # a colour as image editors and annotation tools write it


def _colours(value: Any) -> dict[str, int]:
    if not isinstance(value, dict) or not value:
        raise custom("colours", f"expected a mapping of '#rrggbb' colours to label values, got {show(value)}")
    table: dict[str, int] = {}
    written: dict[str, str] = {}  # each colour as params.yaml spells it, for the message
    for colour, label in value.items():
        if not (isinstance(colour, str) and re.fullmatch(HEX, colour)):
            raise custom(
                "colours", f"{colour!r} is not a colour; expected '#rrggbb' in hex, quoted (in YAML # starts a comment)"
            )
        if not (isinstance(label, int) and not isinstance(label, bool) and label >= 0):
            raise custom("colours", f"'{colour}': expected a label value (integer >= 0), got {show(label)}")
        if colour.lower() in table:
            raise custom("colours", f"'{colour}' and '{written[colour.lower()]}' are one colour; list each colour once")
        table[colour.lower()], written[colour.lower()] = label, colour
    return table


# '#rrggbb' -> label value; the code gets lower-case colours. The schema lets editors flag a key
# that is not a colour (pydantic's own would leave other keys unchecked).
COLOURS_SCHEMA = {
    "type": "object",
    "patternProperties": {f"^{HEX}$": {"type": "integer", "minimum": 0}},
    "additionalProperties": False,
    "minProperties": 1,
}
Colours = Annotated[
    dict[str, int],
    BeforeValidator(_colours, json_schema_input_type=Annotated[dict[str, int], WithJsonSchema(COLOURS_SCHEMA)]),
]

LabelValue = Annotated[int, Field(ge=0)]
LabelValues = LabelValue | list[LabelValue]  # as params.yaml gives them: one or a list; the code gets a tuple
Labels = Annotated[tuple[LabelValue, ...], BeforeValidator(_labels, json_schema_input_type=LabelValues)]

# label values whose pixels count for nothing; [] (what a model file without any holds) is none
Ignored = Annotated[
    tuple[LabelValue, ...],
    BeforeValidator(lambda value: () if value in ([], ()) else _labels(value), json_schema_input_type=LabelValues),
]
IGNORE_HELP = (
    "label-map value, or a list of values, whose pixels count for nothing: no loss, no training metric, no "
    "test score (e.g. 255, the unlabelled borders of Pascal VOC's maps; default: none)"
)


def refuse_ignored(ignore: tuple[int, ...], labels: dict[str, tuple[int, ...]]) -> None:
    """A value both ignored and among an output's labels is an error naming the key that holds it."""
    for key, values in labels.items():
        if both := sorted(set(ignore) & set(values)):
            raise custom(
                "ignore",
                f"label value {both[0]} is in both ignore and {key}; a value is one or the other",
                key="ignore",
            )


class SegmentationOutput(SegmentationRows, MaskOutput):
    kind: ClassVar[str] = "segmentation"
    losses: ClassVar[tuple[str, ...]] = get_args(Loss)
    metric_names: ClassVar[tuple[str, ...]] = ("dice", "iou")
    headline: ClassVar[str] = "dice"
    curves: ClassVar[str] = "masks"
    activation: ClassVar[str] = "sigmoid"

    type: Literal["segmentation"]
    label: Labels = Field(description="label-map value, or a list of values merged into one mask")
    size: Shape | None = Field(
        None, description="[height, width] of the mask, [depth, height, width] of a volume's (default: the input size)"
    )
    colours: Colours | None = Field(
        None, description="'#rrggbb' -> label value, for RGB label maps coded in colours (default: none)"
    )
    ignore: Ignored = Field((), description=IGNORE_HELP)
    loss: Loss | None = None

    @model_validator(mode="after")
    def _ignore_apart(self) -> Self:
        refuse_ignored(self.ignore, {"label": self.label})
        return self

    @property
    def label_values(self) -> tuple[int, ...]:
        return self.label

    def head_args(self, stats: dict[str, float]) -> dict[str, Any]:
        return {"type": self.type, "size": list(self.size or ())}

    @classmethod
    def build_head(cls, args: dict[str, Any], channels: list[int], options: dict[str, Any]) -> nn.Module:
        from cnn_factory.heads import UNetDecoder

        return UNetDecoder.from_options(channels, args["size"], options)

    def make_loss(self, stats: dict[str, float]) -> LossFn:
        from cnn_factory import losses

        loss = {
            "binary_crossentropy": losses.bce_loss,
            "dice": losses.soft_dice_loss,
            "bce_dice": losses.bce_dice_loss,
            "jaccard": losses.soft_jaccard_loss,
            "focal": losses.focal_loss,
        }[self.loss or self.losses[0]]
        return losses.ignoring(loss, IGNORE) if self.ignore else loss

    def new_metric(self, device: torch.device | str) -> Metric:
        from cnn_factory.accumulators import OverlapCounts

        return OverlapCounts(device, IGNORE if self.ignore else None)

    @staticmethod
    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid()

    @staticmethod
    def to_logits(probabilities: torch.Tensor) -> torch.Tensor:
        import torch

        p = probabilities.clamp(1e-6, 1 - 1e-6)
        return torch.log(p) - torch.log1p(-p)  # > 0 where p > 0.5


class SegmentationScorer(MaskScorer[SegmentationOutput], of=SegmentationOutput):
    def predicted_mask(self, probabilities: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
        return probabilities > threshold

    def true_mask(self, target: torch.Tensor) -> torch.Tensor:
        return (target > 0.5) & (target != IGNORE)

    def image_scores(self, prediction: np.ndarray, truth: np.ndarray, tolerance: float, spacing: Spacing = None) -> Row:
        from cnn_factory.scores.masks import mask_scores

        return mask_scores(prediction, truth, tolerance, spacing)

    def summarise(self, columns: dict[str, np.ndarray]) -> dict[str, float]:
        from cnn_factory.scores.masks import mask_summary

        return mask_summary(columns)

    def table_cells(self, columns: dict[str, np.ndarray]) -> dict[str, list]:
        return mask_cells(columns)

    def image_values(self, columns: dict[str, np.ndarray], figure: str) -> np.ndarray | None:
        return columns[figure] if figure in MASK_SCORES else None  # means over scored images

    def table_columns(self, cells: dict[str, list[str]]) -> dict[str, np.ndarray]:
        return mask_columns(cells)

    def plots(self, columns: dict[str, np.ndarray]) -> dict[str, list[dict[str, Any]]]:
        points = [
            {"image": i, "truth_px": int(t), "dice": round(float(d), 4)}
            for i, (t, d) in enumerate(zip(columns["truth_px"], columns["dice"]))
            if not np.isnan(d)
        ]
        return {"dice": points}  # dice against the truth's size: where small objects fail


class SegmentationWriter(MaskWriter[SegmentationOutput], of=SegmentationOutput):
    def logits_shape(self) -> list:
        return ["batch", *(self.output.size or ())]

    def prediction_columns(self) -> list[str]:
        return [f"{self.output.name}_mask", f"{self.output.name}_coverage"]

    def predicted_image(self, value: np.ndarray, size: Size, threshold: float) -> np.ndarray:
        """255 where the probability is above `threshold`."""
        return nearest(value > threshold, size).astype(np.uint8) * 255

    def mask_file(self, mask: np.ndarray, affine: Affine) -> bytes:
        """The PNG of a 0/255 mask, or a scan's .nii.gz placed by `affine`: 1 the mask, 0 the rest."""
        if affine is None:
            return encode_png(mask)
        from cnn_factory.volumes import volume_bytes

        return volume_bytes((mask > 0).astype(np.uint8), affine)

    def pixel_counts(self, mask: np.ndarray) -> dict[str, int]:
        on = int(np.count_nonzero(mask))
        return {"background": mask.size - on, "foreground": on}
