"""Category output: one class per image, named in a CSV column.

    majority: {type: category, classes: [disc, square, triangle], loss: categorical_crossentropy}

prepare stores the class index (int64); the head pools the deepest encoder feature into a
linear layer; the loss is cross entropy (label smoothing, class weights); metrics are accuracy
and macro F1 from a confusion matrix; predict writes the class name and its probability.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, get_args

import numpy as np
from pydantic import Field, model_validator

from cnn_factory.outputs.base import Output, Spacing
from cnn_factory.outputs.decoding import CategoryRows
from cnn_factory.outputs.planning import ColumnReport
from cnn_factory.outputs.scoring import Figures, Row, Scorer, cell_floats
from cnn_factory.outputs.writing import Affine, Size, Writer
from cnn_factory.params import custom, show

if TYPE_CHECKING:  # torch loads when first used: reading params does not need it
    import torch
    from torch import nn

    from cnn_factory.accumulators import Metric
    from cnn_factory.losses import LossFn

Loss = Literal["categorical_crossentropy"]


FEW_ROWS = 10  # `cnn-factory plan` warns about a class with fewer rows
IMBALANCE = 10  # ... and about a largest class with more than this many times the rows of the smallest


class CategoryOutput(CategoryRows, Output):
    kind: ClassVar[str] = "category"
    losses: ClassVar[tuple[str, ...]] = get_args(Loss)
    metric_names: ClassVar[tuple[str, ...]] = ("accuracy", "f1_macro")
    headline: ClassVar[str] = "accuracy"
    curves: ClassVar[str] = "classes"
    activation: ClassVar[str] = "softmax"
    training_only: ClassVar[frozenset[str]] = frozenset({"loss", "weight", "label_smoothing", "class_weights"})

    type: Literal["category"]
    size: int | None = Field(None, ge=2, description="number of classes (may be left out when classes is given)")
    classes: list[str | int] | None = Field(None, description="class names as written in the CSV (default: ids)")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="share of the target spread over all classes")
    class_weights: list[float] | None = Field(None, description="one loss weight >= 0 per class")
    loss: Loss | None = None

    @model_validator(mode="after")
    def _classes_agree(self) -> Self:
        if self.classes is None and self.size is None:
            raise custom("size", f"expected the number of classes (integer >= 2), got {show(None)}", key="size")
        if self.classes is not None:
            names = [str(c) for c in self.classes]
            if not names or len(set(names)) != len(names):
                raise custom(
                    "classes", f"expected a list of distinct class names, got {show(self.classes)}", key="classes"
                )
            if self.size is not None and self.size != len(names):
                raise custom(
                    "size", f"is {self.size} but classes lists {len(names)} names; make them agree", key="size"
                )
        n = len(self.class_names)
        weights = self.class_weights
        if weights is not None and (len(weights) != n or any(w < 0 for w in weights)):
            raise custom(
                "class_weights", f"expected {n} numbers >= 0, one per class, got {show(weights)}", key="class_weights"
            )
        return self

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "classes": list(self.class_names)}

    @property
    def class_names(self) -> tuple[str, ...]:
        if self.classes is not None:
            return tuple(str(c) for c in self.classes)
        return tuple(str(i) for i in range(self.size or 0))

    def head_args(self, stats: dict[str, float]) -> dict[str, Any]:
        return {"type": self.type, "classes": list(self.class_names)}

    @classmethod
    def build_head(cls, args: dict[str, Any], channels: list[int], options: dict[str, Any]) -> nn.Module:
        from cnn_factory.heads import ClassHead

        return ClassHead(channels[-1], len(args["classes"]), options["dropout"], options.get("dims", 2))

    def make_loss(self, stats: dict[str, float]) -> LossFn:
        from cnn_factory.losses import cross_entropy_loss

        return cross_entropy_loss(self.class_weights, self.label_smoothing)

    def new_metric(self, device: torch.device | str) -> Metric:
        from cnn_factory.accumulators import ClassCounts

        return ClassCounts(len(self.class_names), device)

    @staticmethod
    def probabilities(logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(dim=1)

    @staticmethod
    def to_logits(probabilities: torch.Tensor) -> torch.Tensor:
        return probabilities.clamp(min=1e-6).log()  # softmax of log p is p


class CategoryScorer(Scorer[CategoryOutput], of=CategoryOutput):
    interval_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc")
    summary_figures: ClassVar[Figures] = (("accuracy", "accuracy", ".3f"), ("f1_macro", "macro F1", ".3f"))

    def image_scores(self, prediction: np.ndarray, truth: np.ndarray, tolerance: float, spacing: Spacing = None) -> Row:
        return {"true": int(truth), "predicted": int(prediction.argmax()), "probs": prediction.astype(np.float64)}

    def summarise(self, columns: dict[str, np.ndarray]) -> dict[str, float]:
        from cnn_factory.scores.classes import class_summary

        return class_summary(columns["true"], columns["probs"], self.output.class_names)

    def table_cells(self, columns: dict[str, np.ndarray]) -> dict[str, list]:
        names, probs = self.output.class_names, columns["probs"]
        cells = {k: [names[i] for i in columns[k]] for k in ("true", "predicted")}
        cells["confidence"] = [round(float(p), 6) for p in probs.max(1)]
        return cells | {f"p_{c}": [round(float(p), 6) for p in probs[:, i]] for i, c in enumerate(names)}

    def image_values(self, columns: dict[str, np.ndarray], figure: str) -> np.ndarray | None:
        correct = (columns["probs"].argmax(1) == columns["true"]).astype(np.float64)
        return correct if figure == "accuracy" else None

    def table_columns(self, cells: dict[str, list[str]]) -> dict[str, np.ndarray]:
        ids = {c: i for i, c in enumerate(self.output.class_names)}
        probs = np.stack([cell_floats(cells[f"p_{c}"]) for c in self.output.class_names], axis=1)
        return {"true": np.asarray([ids[c] for c in cells["true"]], np.int64), "probs": probs}

    def plots(self, columns: dict[str, np.ndarray]) -> dict[str, list[dict[str, Any]]]:
        from cnn_factory.scores.classes import reliability

        probs = columns["probs"]
        return {"calibration": reliability((probs.argmax(1) == columns["true"]).astype(float), probs.max(1))}

    def confusion(self, metric: Metric) -> tuple[list[str], list[str]] | None:
        from cnn_factory.accumulators import ClassCounts

        assert isinstance(metric, ClassCounts)  # this kind's own accumulator (new_metric)
        truth, predicted = metric.pairs()
        return [self.output.class_names[i] for i in truth], [self.output.class_names[i] for i in predicted]


class CategoryWriter(Writer[CategoryOutput], of=CategoryOutput):
    def logits_shape(self) -> list:
        return ["batch", len(self.output.class_names)]

    def prediction_columns(self) -> list[str]:
        return [self.output.name, f"{self.output.name}_probability"]

    def write_prediction(
        self, value: np.ndarray, out: Path, stem: str, size: Size, threshold: float, affine: Affine = None
    ) -> list[str]:
        return [self.output.class_names[int(value.argmax())], f"{value.max():.4f}"]

    def answer(self, value: np.ndarray, size: Size, threshold: float, affine: Affine = None) -> dict[str, Any]:
        probabilities = {c: round(float(p), 6) for c, p in zip(self.output.class_names, value)}
        return {"label": self.output.class_names[int(value.argmax())], "probabilities": probabilities}


class CategoryColumn(ColumnReport[CategoryOutput], of=CategoryOutput):
    def report(self, values: np.ndarray) -> tuple[str, list[str]]:
        counts = np.bincount(values, minlength=len(self.output.class_names))
        shares = counts / max(len(values), 1)
        line = ", ".join(f"{c} {n} ({s:.0%})" for c, n, s in zip(self.output.class_names, counts.tolist(), shares))
        warnings = [
            f"class '{c}' has {n} row(s): too few for the head to learn it or the test split to score it; "
            "add rows or merge it into another class"
            for c, n in zip(self.output.class_names, counts.tolist())
            if n < FEW_ROWS
        ]
        common, rare = int(counts.max()), int(counts.min())
        if rare >= FEW_ROWS and common > IMBALANCE * rare:
            warnings.append(
                f"the largest class has {common // rare}x the rows of the smallest: "
                f"consider outputs.{self.output.name}.class_weights"
            )
        return line, warnings
