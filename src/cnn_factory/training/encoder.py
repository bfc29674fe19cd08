"""A timm encoder at the start of a training run: its settings checked before anything else, and
its starting weights (`model.weights`) loaded into the network.

    check_encoder(cfg.model, cfg.inputs)             # UserError: an unknown name, levels or sizes that do not fit
    load_encoder_weights(cfg.model, network, print)  # none: nothing; pretrained or a file: loaded, and said
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from cnn_factory.config import InputSpec, ModelConfig
from cnn_factory.encoder_weights import NONE, pretrained_state
from cnn_factory.encoders import TimmEncoder, strides_error
from cnn_factory.errors import UserError
from cnn_factory.model import MultiOutputNet


def check_encoder(model: ModelConfig, inputs: Mapping[str, InputSpec]) -> None:
    """A timm encoder's name, levels and largest stride (it must divide each input's size), before
    anything else: one line per problem."""
    if model.timm:
        largest = TimmEncoder(model.encoder, sum(s.channels for s in inputs.values())).strides[-1]
        lines = [strides_error(model.encoder, s.size, largest, f"inputs.{n}.size") for n, s in inputs.items()]
        if any(lines):
            raise UserError("\n".join(line for line in lines if line))


def load_encoder_weights(model: ModelConfig, network: MultiOutputNet, say: Callable[..., Any]) -> None:
    """model.weights into a timm encoder at the start of a run (a resumed run's checkpoint has them)."""
    if model.weights == NONE:
        return
    state, note = pretrained_state(model.encoder, network.shape.in_channels, model.weights)
    network.encoder.body.load_state_dict(state)  # type: ignore[union-attr]
    say(f"train: {model.encoder} starts from {model.weights} weights")
    if note:
        say(note)
