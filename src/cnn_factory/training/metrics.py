"""Metrics per output, accumulated on the device over batches and read once at the end.

metrics = OutputMetrics(outputs, device)
metrics.update(preds, targets)         # per batch, no host sync
metrics.compute()                      # {"round/dice": 0.93, "majority/accuracy": 0.95, ...}
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from cnn_factory.accumulators import Metric
from cnn_factory.outputs import Output, Outputs


class OutputMetrics:
    """Each output's own metrics (its kind's `new_metric`), keyed `<output>/<metric>`."""

    def __init__(self, outputs: Mapping[str, Output], device: torch.device | str = "cpu"):
        trained = Outputs(outputs).trained  # a measure has no training metric: its figures are evaluate's
        self.metrics: dict[str, Metric] = {name: spec.new_metric(device) for name, spec in trained.items()}

    @torch.no_grad()
    def update(self, preds: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]) -> None:
        for name, metric in self.metrics.items():
            if name in preds:  # a pass may score some outputs at a time (evaluate.py)
                metric.update(preds[name], targets[name])

    def compute(self) -> dict[str, float]:
        return {f"{name}/{k}": v for name, metric in self.metrics.items() for k, v in metric.compute().items()}
