"""The training loss, from each output's own (`Output.make_loss`: cnn_factory/losses.py)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from cnn_factory.losses import LossFn
from cnn_factory.outputs import Output


class Criterion:
    """Total loss = sum of weight x per-output loss over the `{name: logits}` dict."""

    def __init__(self, outputs: Mapping[str, Output], stats: Mapping[str, dict[str, float]]):
        """stats: per output, the training split's figures its loss needs (a number's std)."""
        self.outputs = dict(outputs)
        self.weights = {name: spec.weight for name, spec in outputs.items()}
        self.losses: dict[str, LossFn] = {name: spec.make_loss(stats.get(name, {})) for name, spec in outputs.items()}

    def __call__(
        self, preds: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: fn(preds[name], targets[name]) for name, fn in self.losses.items()}
        total = torch.stack([self.weights[name] * loss for name, loss in parts.items()]).sum()
        return total, parts
