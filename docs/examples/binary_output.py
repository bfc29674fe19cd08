"""A new output kind, as docs/output-kinds.md walks through it: yes or no per image, from a CSV
column holding 0 or 1.

    defect: {type: binary}

In the library its parts go to three files: `BinaryRows` (what prepare makes of a row) into
`src/cnn_factory/outputs/decoding.py`, so that prepare's dependencies and the row cache cover it;
`Agreement` into `src/cnn_factory/accumulators.py`; the core `BinaryOutput` and its adapters
`BinaryScorer` (evaluation) and `BinaryWriter` (predict) into `src/cnn_factory/outputs/binary.py`,
the core registered in `KINDS` (where the kinds import torch inside their methods, so that reading
params.yaml stays fast). It needs no serve or export code of its own: `Writer`'s defaults answer
with the value and export its shape.
tests/test_output_kinds.py imports this file, registers the kind and trains it for an epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import numpy as np
import torch

from cnn_factory.accumulators import Metric
from cnn_factory.outputs.base import Output
from cnn_factory.outputs.scoring import Scorer
from cnn_factory.outputs.writing import Writer

if TYPE_CHECKING:
    from torch import nn

    from cnn_factory.losses import LossFn

Loss = Literal["binary_crossentropy"]


class BinaryRows:
    """outputs/decoding.py: the stored value of a row, and prepare's report line."""

    if TYPE_CHECKING:
        name: str

    def array_field(self) -> tuple:
        return (np.float32,)

    def decode(self, cell: str, label_map: np.ndarray | None) -> np.ndarray:
        if cell not in ("0", "1"):
            raise ValueError(f"{cell!r} is not 0 or 1; expected one of 0, 1 for outputs.{self.name}")
        return np.asarray(float(cell), np.float32)

    def summary(self, values: dict[str, np.ndarray]) -> dict:
        return {f"share_{s}": round(float(v.mean()), 4) for s, v in values.items()}


class Agreement(Metric):
    """accumulators.py: the share of images whose answer is right, counted on the device."""

    def __init__(self, device: torch.device | str):
        self.counts = torch.zeros(2, device=device)  # right, total

    def state(self) -> list[torch.Tensor]:
        return [self.counts]  # sums over images: added up over ranks under torchrun

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.counts[0] += ((logits > 0) == (target > 0.5)).sum()
        self.counts[1] += target.numel()

    def compute(self) -> dict[str, float]:
        right, total = self.counts.tolist()
        return {"accuracy": right / max(total, 1)}


class BinaryOutput(BinaryRows, Output):
    """outputs/binary.py, the core: its params, head, loss and training metric."""

    kind: ClassVar[str] = "binary"  # its name in KINDS
    losses: ClassVar[tuple[str, ...]] = get_args(Loss)
    metric_names: ClassVar[tuple[str, ...]] = ("accuracy",)
    headline: ClassVar[str] = "accuracy"  # eval/metrics.json's figure
    curves: ClassVar[str] = "binary"  # dvclive/plots/curves/binary/<output>.tsv
    activation: ClassVar[str] = "sigmoid"

    type: Literal["binary"]
    loss: Loss | None = None

    @classmethod
    def build_head(cls, args: dict[str, Any], channels: list[int], options: dict[str, Any]) -> nn.Module:
        from torch import nn

        from cnn_factory.heads import ClassHead

        return nn.Sequential(ClassHead(channels[-1], 1, options["dropout"]), nn.Flatten(0))  # (B,)

    def make_loss(self, stats: dict[str, float]) -> LossFn:
        from cnn_factory.losses import bce_loss

        return bce_loss

    def new_metric(self, device: torch.device | str) -> Metric:
        return Agreement(device)

    @staticmethod
    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        return logits.sigmoid()


class BinaryScorer(Scorer[BinaryOutput], of=BinaryOutput):
    """outputs/binary.py: one row per test image, then the figures over the rows."""

    interval_metrics: ClassVar[tuple[str, ...]] = ("accuracy",)

    def image_scores(self, prediction: np.ndarray, truth: np.ndarray, tolerance: float) -> dict[str, Any]:
        return {"true": int(truth > 0.5), "predicted": int(prediction > 0.5)}

    def summarise(self, columns: dict[str, np.ndarray]) -> dict[str, float]:
        return {"accuracy": float(np.mean(columns["true"] == columns["predicted"]))}


class BinaryWriter(Writer[BinaryOutput], of=BinaryOutput):
    """outputs/binary.py: predictions.csv's cell."""

    def write_prediction(
        self, value: np.ndarray, out: Path, stem: str, size: tuple[int, int], threshold: float
    ) -> list[str]:
        return ["1" if float(value) > threshold else "0"]
