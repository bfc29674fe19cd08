"""Numeric output: one number per image, from a CSV column.

    area: {type: numeric, loss: mae}

prepare stores float32 values and the training split's mean and std; the head predicts a
z-score rescaled to the target's units; losses compare in units of that std; the metric is
the mean absolute error; predict writes the value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import numpy as np

from cnn_factory.outputs.base import Output, Spacing
from cnn_factory.outputs.decoding import NumberRows
from cnn_factory.outputs.planning import ColumnReport
from cnn_factory.outputs.scoring import Figures, Row, Scorer

if TYPE_CHECKING:  # torch loads when first used: reading params does not need it
    import torch
    from torch import nn

    from cnn_factory.accumulators import Metric
    from cnn_factory.losses import LossFn

Loss = Literal["mse", "mae"]


class NumericOutput(NumberRows, Output):
    kind: ClassVar[str] = "numeric"
    losses: ClassVar[tuple[str, ...]] = get_args(Loss)
    metric_names: ClassVar[tuple[str, ...]] = ("mae",)
    headline: ClassVar[str] = "mae"
    curves: ClassVar[str] = "numbers"
    activation: ClassVar[str] = "none"

    type: Literal["numeric"]
    loss: Loss | None = None

    def head_args(self, stats: dict[str, float]) -> dict[str, Any]:
        return {"type": self.type, "mean": stats.get("mean", 0.0), "std": stats.get("std", 1.0)}

    @classmethod
    def build_head(cls, args: dict[str, Any], channels: list[int], options: dict[str, Any]) -> nn.Module:
        from cnn_factory.heads import NumericHead

        return NumericHead(
            channels[-1], args.get("mean", 0.0), args.get("std", 1.0), options["dropout"], options.get("dims", 2)
        )

    def make_loss(self, stats: dict[str, float]) -> LossFn:
        from cnn_factory.losses import scaled_loss

        # compared in units of the training split's std: the same magnitude whatever the target's units
        return scaled_loss(self.loss or self.losses[0], stats.get("std", 1.0))

    def new_metric(self, device: torch.device | str) -> Metric:
        from cnn_factory.accumulators import AbsoluteError

        return AbsoluteError(device)


class NumericScorer(Scorer[NumericOutput], of=NumericOutput):
    interval_metrics: ClassVar[tuple[str, ...]] = ("mae", "rmse", "r2")
    summary_figures: ClassVar[Figures] = (("mae", "MAE", ".4g"), ("r2", "R^2", ".3f"))

    def image_scores(self, prediction: np.ndarray, truth: np.ndarray, tolerance: float, spacing: Spacing = None) -> Row:
        return {"true": float(truth), "predicted": float(prediction)}

    def summarise(self, columns: dict[str, np.ndarray]) -> dict[str, float]:
        from cnn_factory.scores.numbers import number_summary

        return number_summary(columns["true"], columns["predicted"])

    def table_cells(self, columns: dict[str, np.ndarray]) -> dict[str, list]:
        error = columns["predicted"] - columns["true"]
        return {k: [round(float(v), 6) for v in values] for k, values in {**columns, "error": error}.items()}

    def image_values(self, columns: dict[str, np.ndarray], figure: str) -> np.ndarray | None:
        return np.abs(columns["predicted"].astype(np.float64) - columns["true"]) if figure == "mae" else None

    def plots(self, columns: dict[str, np.ndarray]) -> dict[str, list[dict[str, Any]]]:
        pairs = zip(columns["true"], columns["predicted"])
        return {"values": [{"truth": round(float(t), 6), "prediction": round(float(p), 6)} for t, p in pairs]}


class NumericColumn(ColumnReport[NumericOutput], of=NumericOutput):
    def report(self, values: np.ndarray) -> tuple[str, list[str]]:
        low, median, high = np.percentile(values, [0, 50, 100]).tolist()
        line = (
            f"{low:.4g} to {high:.4g}, median {median:.4g}, mean {values.mean():.4g}, std {values.std():.4g}, "
            f"{len(np.unique(values))} distinct value(s)"
        )
        warnings = []
        if low == high:
            warnings.append(
                f"every row holds {low:.4g}: the head has nothing to learn and R^2 is undefined; check the CSV column"
            )
        elif len(np.unique(values)) <= 3:
            warnings.append(f"only {len(np.unique(values))} distinct values: a category output may fit better")
        return line, warnings
