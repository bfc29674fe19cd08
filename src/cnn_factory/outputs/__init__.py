"""Output kinds, one module each, registered here by their `type` tag.

To add a kind: write `outputs/<kind>.py` with a subclass of `Output` (base.py) whose `type` is
`Literal["<kind>"]` and which implements its methods, then add the class to `KINDS` below.
params.yaml checking, prepare, the model, training, evaluate, predict and export take it from there.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field

from cnn_factory.outputs.base import LossFn, Metric, Output
from cnn_factory.outputs.category import CategoryOutput
from cnn_factory.outputs.numeric import NumericOutput
from cnn_factory.outputs.segmentation import SegmentationOutput

KINDS: dict[str, type[Output]] = {
    "segmentation": SegmentationOutput,
    "category": CategoryOutput,
    "numeric": NumericOutput,
}

# their code decides what a CSV row decodes to: part of the row cache's key
KIND_MODULES = tuple(sys.modules[cls.__module__] for cls in (Output, *KINDS.values()))

# an output definition in params.yaml: the `type` key picks the kind's model
if TYPE_CHECKING:
    OutputDefinition = Output
else:
    OutputDefinition = Annotated[Union[tuple(KINDS.values())], Field(discriminator="type")]  # noqa: UP007


def kind(tag: str) -> type[Output]:
    return KINDS[tag]


def make_output(name: str, input_size: tuple[int, int] = (1, 1), **definition: Any) -> Output:
    """An output from its params.yaml definition (checked), named and with its defaults filled in."""
    return KINDS[definition["type"]].model_validate(definition).named(name, input_size)


def from_definition(name: str, definition: dict[str, Any]) -> Output:
    """An output as a model file describes it (`Output.describe()`); unknown keys are dropped."""
    cls = KINDS[definition["type"]]
    known = {k: v for k, v in definition.items() if k in cls.model_fields and v is not None}
    size = (
        tuple(definition["size"])
        if isinstance(definition.get("size"), list) and len(definition["size"]) == 2
        else (1, 1)
    )
    return cls.model_validate(known).named(name, size)


__all__ = [
    "KINDS",
    "KIND_MODULES",
    "LossFn",
    "Metric",
    "Output",
    "OutputDefinition",
    "from_definition",
    "kind",
    "make_output",
]
