"""Where a run's network starts: a timm encoder's `model.weights`, and `train.init_from`, another
model file's weights (fine-tuning, more epochs of a finished run, a new output on a trained encoder).

    check_encoder(cfg.model, cfg.inputs)             # UserError: an unknown name, levels or sizes that do not fit
    load_encoder_weights(cfg.model, network, print)  # none: nothing; pretrained or a file: loaded, and said
    source = init_source("weights/start.pt", "models/example.pt")   # {"path", "sha256"}; None for a null path
    print(initialise(model, source).summary())  # copies every tensor whose name and shape fit

With train.init_from only weights travel (docs/checkpoints-and-sweeps.md): the optimiser, schedule
and early stopping start afresh, and the new model file records `source` as its `init_from`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnn_factory.config import InputSpec, ModelConfig
from cnn_factory.encoder_weights import NONE, pretrained_state
from cnn_factory.encoders import TimmEncoder
from cnn_factory.errors import UserError, listing
from cnn_factory.model import MultiOutputNet, read_model_file

KEY = "train.init_from"
LISTED = 6  # names per line of the summary, then "and N more"


def check_encoder(model: ModelConfig, inputs: Mapping[str, InputSpec]) -> None:
    """A timm encoder's name, levels and largest stride (it must divide each input's size), before
    anything else: one line per problem."""
    if model.timm:
        largest = TimmEncoder(model.encoder, sum(s.channels for s in inputs.values())).strides[-1]
        lines = [
            f"params.yaml: inputs.{n}.size: {list(s.size)} must be divisible by {model.encoder}'s largest stride "
            f"{largest} (model.encoder); change the size or pick another encoder"
            for n, s in inputs.items()
            if s.size[0] % largest or s.size[1] % largest
        ]
        if lines:
            raise UserError("\n".join(lines))


def load_encoder_weights(model: ModelConfig, network: MultiOutputNet, say: Callable[..., Any]) -> None:
    """model.weights into a timm encoder at the start of a run (a resumed run's checkpoint has them)."""
    if model.weights == NONE:
        return
    state, note = pretrained_state(model.encoder, network.shape.in_channels, model.weights)
    network.encoder.body.load_state_dict(state)  # type: ignore[union-attr]
    say(f"train: {model.encoder} starts from {model.weights} weights")
    if note:
        say(note)


def init_source(path: str | None, own: str | None = None) -> dict | None:
    """The file's path and the sha256 of its bytes (recorded in the new model file and in the
    checkpoint's key), or None when training starts from random weights. `own`: the model file
    this run writes (DVC deletes it before running train: it cannot be the starting point)."""
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
    except FileNotFoundError:
        if own is not None and Path(path) == Path(own):
            raise UserError(
                f"{KEY}: {path}: no such file: it is the train stage's own output, which DVC deletes before "
                f"it runs train; copy it first (e.g. `mkdir -p weights && cp {path} weights/`) and name the copy"
            ) from None
        raise UserError(
            f"{KEY}: {path}: no such file; give a model file written by the train stage "
            "(models/<name>.pt, or one fetched with `dvc artifacts get`), or null"
        ) from None
    except OSError as err:
        raise UserError(f"{KEY}: {path}: cannot be read ({err.strerror or type(err).__name__})") from None
    return {"path": str(path), "sha256": digest}


@dataclass
class Transfer:
    """What initialise() copied: tensor names of the network (`here`) and of the file (`there`)."""

    path: str
    here: list[str]
    there: list[str]
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)  # in the network, not in the file
    skipped: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)  # name: (file's shape, here)
    unused: list[str] = field(default_factory=list)  # in the file, not in the network

    def summary(self) -> str:
        """A few lines for the train stage's log, naming whole modules where all their tensors agree."""
        if len(self.loaded) == len(self.here) and not self.unused:
            return f"train: initialised from {self.path}: all {len(self.here)} tensors loaded"
        lines = [
            f"train: initialised from {self.path}: {len(self.loaded)} of {len(self.here)} tensors loaded",
            f"  loaded: {listing(modules(self.loaded, self.here), LISTED)}",
        ]
        if self.new:
            lines.append(f"  new, freshly initialised: {listing(modules(self.new, self.here), LISTED)}")
        if self.skipped:
            layers: dict[str, str] = {}  # a layer once, with its first tensor whose shape differs
            for name, (there, here) in self.skipped.items():
                layer, _, tensor = name.rpartition(".")
                layers.setdefault(layer, f"{layer} ({tensor} {there} in the file, {here} here)")
            lines.append(f"  skipped, shapes differ: {listing(layers.values(), LISTED)}")
        if self.unused:
            lines.append(f"  not in this network: {listing(modules(self.unused, self.there), LISTED)}")
        return "\n".join(lines)


def initialise(model: torch.nn.Module, source: dict) -> Transfer:
    """Copies into `model` every tensor of the model file whose name and shape match (in place:
    an optimiser made on `model.parameters()` trains the loaded weights). The network's other
    tensors (the head of a new output, a category head with another number of classes) keep their
    fresh initialisation; the file's tensors the network lacks are left out."""
    try:
        state = read_model_file(source["path"])["state_dict"]
    except UserError as err:
        raise UserError(f"{KEY}: {err}") from None
    own = model.state_dict()
    transfer = Transfer(source["path"], list(own), list(state))
    for name, tensor in own.items():
        if name not in state:
            transfer.new.append(name)
        elif state[name].shape != tensor.shape:
            transfer.skipped[name] = (list(state[name].shape), list(tensor.shape))
        else:
            transfer.loaded.append(name)
    transfer.unused = [name for name in state if name not in own]
    if not transfer.loaded:
        raise UserError(
            f"{KEY}: {source['path']}: none of its weights fits this network (names or shapes differ "
            "everywhere: another model.depth, model.filters or number of input channels?)"
        )
    model.load_state_dict({name: state[name] for name in transfer.loaded}, strict=False)
    return transfer


def modules(names: list[str], universe: list[str]) -> list[str]:
    """The fewest dotted prefixes that cover `names` exactly: a module is named whole when every
    tensor of `universe` below it is in `names` (e.g. "heads.angular" rather than its tensors)."""
    chosen = set(names)
    found: dict[str, None] = {}  # an ordered set
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if all(u in chosen for u in universe if u == prefix or u.startswith(prefix + ".")):
                found[prefix] = None
                break
    return list(found)
