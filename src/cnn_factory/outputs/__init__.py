"""Output kinds, one module each, registered here by name.

To add a kind: write `outputs/<kind>.py` with its core, a subclass of `Output` (base.py; of
`MaskOutput` for a mask read from a label map) whose `kind` is its name and whose `type` is
`Literal["<kind>"]`, and the adapters it needs beside it: its `Scorer` (scoring.py: evaluation)
and `Writer` (writing.py: predict, serve, export), whose defaults fit an image-level number.
Then add the core to `KINDS` below (docs/output-kinds.md walks through one). params.yaml
checking, prepare, the model, training, evaluate, predict and export take it from there. An
output's `type` in params.yaml names its kind, but for a class mask's (`kind_name`).

The kinds import what only their adapters run (scores/, palette.py, volumes.py, torch) inside the
functions that run it: the example, prepare and train stages import the kinds to read params.yaml,
and dvc.yaml leaves evaluation code out of their deps, so that an edit to it re-runs evaluate only
(tests/test_pipeline.py checks each stage's imports against its deps).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Union

import numpy as np
from pydantic import Discriminator, GetCoreSchemaHandler, Tag
from pydantic_core import core_schema

from cnn_factory.outputs.base import MaskOutput, Output
from cnn_factory.outputs.category import CategoryOutput
from cnn_factory.outputs.class_mask import ClassMaskOutput
from cnn_factory.outputs.measure import MeasureOutput
from cnn_factory.outputs.numeric import NumericOutput
from cnn_factory.outputs.planning import ColumnReport
from cnn_factory.outputs.scoring import Scorer
from cnn_factory.outputs.segmentation import SegmentationOutput
from cnn_factory.outputs.writing import Writer

KINDS: dict[str, type[Output]] = {
    cls.kind: cls for cls in (SegmentationOutput, ClassMaskOutput, CategoryOutput, NumericOutput, MeasureOutput)
}


def kind_name(definition: Any) -> str | None:
    """The KINDS name of an output definition: a params.yaml mapping, a model file's description or
    head arguments, or an Output. Its `type`, except that a segmentation whose `labels` maps class
    names to label values is a class mask. None when it is no mapping or has no `type`."""
    if isinstance(definition, Mapping):
        tag, labels = definition.get("type"), definition.get("labels")
    elif isinstance(definition, Output):
        tag, labels = definition.type, getattr(definition, "labels", None)
    else:
        return None
    if tag == "segmentation" and isinstance(labels, Mapping):
        return "class_mask"
    return tag if isinstance(tag, str) else None


# an output definition in params.yaml: `kind_name` picks the kind's model, which checks its keys
if TYPE_CHECKING:
    OutputDefinition = Output
else:
    OutputDefinition = Annotated[
        Union[tuple(Annotated[cls, Tag(name)] for name, cls in KINDS.items())],  # noqa: UP007
        Discriminator(kind_name),
    ]


def kind(definition: Mapping[str, Any]) -> type[Output]:
    """The kind of a definition or of a model file's head arguments (see `kind_name`)."""
    return KINDS[kind_name(definition) or ""]


class Outputs(dict[str, Output]):
    """A model's outputs by name, in params.yaml's order: `.spatial` the masks (moving with the
    image: augmented, tiled, drawn, resized back), `.whole` the other outputs the network predicts
    (one value per image), `.trained` both: the outputs with a head, a loss and a training metric
    (the rest, such as measures, are computed from them)."""

    value_type: ClassVar[Any] = OutputDefinition  # what params.py's messages walk into

    @property
    def spatial(self) -> dict[str, MaskOutput]:
        return {n: o for n, o in self.items() if isinstance(o, MaskOutput)}

    @property
    def whole(self) -> dict[str, Output]:
        return {n: o for n, o in self.items() if not isinstance(o, MaskOutput) and o.trained}

    @property
    def trained(self) -> Outputs:
        return Outputs({n: o for n, o in self.items() if o.trained})

    def label_values(self, column: str) -> tuple[int, ...]:
        """0 and every label value the masks reading `column` look for or ignore: what a lossy (JPEG)
        label map's pixels are snapped to (data/label_maps.py)."""
        found = {v for o in self.spatial.values() if o.column == column for v in (*o.label_values, *o.ignore)}
        return tuple(sorted(found | {0}))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        # checked as a mapping of at least one definition (`OutputDefinition`), then kept as Outputs
        mapping: Any = handler(dict[str, OutputDefinition])
        return core_schema.no_info_after_validator_function(cls, {**mapping, "min_length": 1})


def computed_values(
    values: dict[str, np.ndarray],
    outputs: Outputs,
    threshold: float,
    spacing: tuple[float, ...] | None,
    image: np.ndarray | None = None,
    row_spacing: Mapping[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """One image's `values` (per trained output, masks' probabilities at the image's own size) with
    the outputs without a head (measures) added, measured on the masks predicted at `threshold`:
    in mm given a measure's `row_spacing` (mm per pixel, its spacing column's cell) or else the
    image's `spacing` (mm per axis: a scan's, a DICOM image's), else in pixels; a measure's value is
    (value, 1 where in mm else 0). `image`: (C, *spatial)."""
    computed = [n for n, o in outputs.items() if not o.trained]
    if not computed:
        return values
    import torch

    masks = {
        n: Scorer.of(o).predicted_mask(torch.from_numpy(np.asarray(values[n])), threshold).numpy()
        for n, o in outputs.spatial.items()
    }
    row_spacing = row_spacing or {}
    measured = {}
    for n in computed:
        stored = np.asarray([np.nan, row_spacing.get(n, np.nan)])  # no truth; the row's spacing first
        value = Scorer.of(outputs[n]).measured(masks, outputs, stored, spacing, image)
        spaced = spacing is not None or n in row_spacing
        measured[n] = np.asarray([value, float(spaced and getattr(outputs[n], "unit", None) == "mm")])
    return {**values, **measured}


def make_output(name: str, input_size: tuple[int, ...] = (1, 1), **definition: Any) -> Output:
    """An output from its params.yaml definition (checked), named and with its defaults filled in."""
    return kind(definition).model_validate(definition).named(name, input_size)


def from_definition(name: str, definition: dict[str, Any]) -> Output:
    """An output as a model file describes it (`Output.describe()`); unknown keys are dropped."""
    cls = kind(definition)
    known = {k: v for k, v in definition.items() if k in cls.model_fields and v is not None}
    return cls.model_validate(known).named(name, ())  # a mask's definition holds its size


__all__ = [
    "KINDS",
    "ColumnReport",
    "MaskOutput",
    "MeasureOutput",
    "Output",
    "OutputDefinition",
    "Outputs",
    "Scorer",
    "Writer",
    "computed_values",
    "from_definition",
    "kind",
    "kind_name",
    "make_output",
]
