"""The core of every output kind: its params, what a row decodes to, its head, loss and training metric.

An output kind is a pydantic model (its keys in params.yaml, checked) with the methods that
prepare, the model and training call. What the later stages need of a kind lives in its
adapters, one per stage family, each in the kind's module beside the core: `Scorer`
(outputs/scoring.py: evaluate's per-image scores, figures and tables, plots and pictures) and
`Writer` (outputs/writing.py: predict's files and columns, serve's answers, export's shapes).
A kind writes the halves it needs; the adapters' defaults fit an image-level number. The rest
of the code walks `Outputs` (outputs/__init__.py) and calls these; it never asks for a kind.

A model file keeps each output's definition (`describe()`) and head arguments (`head_args()`),
so predict and export rebuild the same output objects from it without params.yaml.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self

import numpy as np
from pydantic import Field, PrivateAttr
from typing_extensions import TypeVar  # its `default` (PEP 696; typing's from Python 3.13)

from cnn_factory.params import Strict

Spacing = tuple[float, ...] | None  # mm per spatial axis; None: in pixels

if TYPE_CHECKING:  # the kinds import torch where they use it: reading params needs no torch
    import torch
    from torch import nn

    from cnn_factory.accumulators import Metric
    from cnn_factory.losses import LossFn


class Output(Strict):
    """Fields every output has; each kind adds its own and a `type: Literal[...]` tag."""

    kind: ClassVar[str]  # its name in KINDS (outputs/__init__.py): what a model file and an export call it
    losses: ClassVar[tuple[str, ...]]  # get_args of the kind's `loss` Literal; the first is the default
    metric_names: ClassVar[tuple[str, ...]]  # what Metric.compute() returns
    headline: ClassVar[str]  # the figure eval/metrics.json and `dvc exp show` give it, first of metric_names
    curves: ClassVar[str]  # folder of its validation curves under dvclive/plots/curves/ (one per kind)
    activation: ClassVar[str]  # what turns logits into predictions (export's sidecar says it)
    reads_label_map: ClassVar[bool] = False  # its CSV column names a label-map file, not a value
    spatial: ClassVar[bool] = False  # a mask moving with the image: augmented, drawn, tiled alike
    training_only: ClassVar[frozenset[str]] = frozenset({"loss", "weight"})  # fields no array depends on
    trained: ClassVar[bool] = True  # has a head, a loss and a training metric; False: computed from others
    column_keys: ClassVar[tuple[str, ...]] = ("column",)  # its fields naming CSV columns (`csv_columns`)

    type: str
    column: str = Field("", min_length=1, description="CSV column (default: the output's name)")
    loss: str | None = None  # each kind narrows it to a Literal of its loss names
    weight: float = Field(1.0, ge=0, description="weight of this output's loss in the total")
    _name: str = PrivateAttr("")

    @property
    def name(self) -> str:
        return self._name

    def named(self, name: str, input_size: tuple[int, ...]) -> Self:
        """This output with its name set and the defaults that depend on it filled in."""
        filled = self.model_copy(update={"column": self.column or name, "loss": self.loss or self.losses[0]})
        filled._name = name
        return filled

    def describe(self) -> dict[str, Any]:
        """The definition as plain types, for the model file (and back through `from_definition`)."""
        return {**self.model_dump(mode="json"), "labels": []}

    def problems_among(self, key: str, outputs: Mapping[str, Output], axes: int) -> list[str]:
        """What is wrong with this output (params.yaml's `key`) beside the others (`axes`: the inputs'
        spatial axes), one line per problem naming its key; checked when params are read."""
        return []

    # --- data: a row's cell or label map -> the array prepare stores ---
    def array_field(self) -> tuple:
        """(dtype, shape) of this output in one prepared row."""
        raise NotImplementedError

    def decode(self, cell: str, label_map: np.ndarray | None) -> np.ndarray:
        """The stored value of one row; ValueError says what is wrong with the cell."""
        raise NotImplementedError

    def decode_row(self, row: Mapping[str, str], label_map: np.ndarray | None) -> np.ndarray:
        return self.decode(row[self.column], label_map)

    def statistics(self, train: np.ndarray) -> dict[str, float]:
        """Figures of the training split the model needs (kept in the manifest and the model file)."""
        return {}

    def summary(self, values: dict[str, np.ndarray]) -> dict:
        """This output's line in prepare's report, from its arrays per split."""
        raise NotImplementedError

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

    @staticmethod
    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        """What predict averages and thresholds: probabilities, or the value itself."""
        return logits

    @staticmethod
    def to_logits(probabilities: torch.Tensor) -> torch.Tensor:
        """Logits whose `probabilities()` are these: blended sliding-window probabilities, and an
        ensemble's averaged ones, go back to the losses and metrics, which take logits. A kind whose
        `probabilities` are not the value itself overrides both."""
        return probabilities


def csv_columns(output: Output) -> tuple[str, ...]:
    """The CSV columns an output reads, which prepare checks the header for: those its `column_keys` name."""
    return tuple(c for key in output.column_keys if (c := getattr(output, key)))


class MaskOutput(Output):
    """The core of a kind whose CSV column names a label map, decoded to a mask that moves with the
    image (augmented, drawn and tiled alike): what prepare, the model and training need besides
    `Output`'s. Each such kind takes the decoding from its mixin in outputs/decoding.py."""

    reads_label_map: ClassVar[bool] = True
    spatial: ClassVar[bool] = True
    if TYPE_CHECKING:  # fields of every mask kind: its mask's size, its label maps' colour table, values it ignores
        size: tuple[int, ...] | None
        colours: dict[str, int] | None
        ignore: tuple[int, ...]

    _size_given: bool = PrivateAttr(True)  # False: `size` was left out and follows the input's

    def named(self, name: str, input_size: tuple[int, ...]) -> Self:
        """A mask is stored at the input's size unless its `size` says otherwise."""
        filled = super().named(name, input_size).model_copy(update={"size": self.size or input_size})
        filled._size_given = self.size is not None
        return filled

    @property
    def size_given(self) -> bool:
        """Whether params.yaml gives this mask's `size` (a size left out follows the input's)."""
        return self._size_given

    def describe(self) -> dict[str, Any]:
        return {**self.model_dump(mode="json"), "labels": list(self.label_values)}

    @property
    def label_values(self) -> tuple[int, ...]:
        """The label-map values this output looks for."""
        raise NotImplementedError

    @property
    def colour_table(self) -> dict[str, int] | None:
        """`#rrggbb` -> label value, for label maps coded in colours; None: they hold values."""
        return self.colours

    def mask(self, label_map: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
        """This output's uint8 mask of a label map, (H, W) or (D, H, W) at `size` (nearest)."""
        raise NotImplementedError

    def lacks_labels(self, label_map: np.ndarray) -> bool:
        """True when a label map holds none of `label_values` (a warning in prepare; an error in every row)."""
        return not np.isin(self.label_values, label_map).any()

    @staticmethod
    def to_logits(probabilities: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # a mask's probabilities are never its logits


Kind = TypeVar("Kind", bound=Output, default=Output)  # an adapter of any kind: Scorer means Scorer[Output]


class Adapter(Generic[Kind]):
    """What a family of stages needs of every kind (`Scorer`, `Writer`): a class per kind, holding
    its core as `self.output`, named by `of=` (`class SegmentationScorer(Scorer[SegmentationOutput],
    of=SegmentationOutput)`); `Scorer.of(output)` gives an output's, or the family's defaults. A class
    deriving from Adapter itself starts a family; one between a family and its kinds (`MaskWriter`) shares."""

    kinds: ClassVar[dict[type[Output], type[Adapter[Any]]]]

    def __init_subclass__(cls, of: type[Output] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if Adapter in cls.__bases__:  # a family of its own
            cls.kinds = {}
        if of is not None:
            cls.kinds[of] = cls

    def __init__(self, output: Kind):
        self.output = output

    @classmethod
    def of(cls, output: Output) -> Self:
        """The adapter of `output`'s kind in this family."""
        return cls.kinds.get(type(output), cls)(output)  # type: ignore[return-value]
