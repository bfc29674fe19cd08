"""`model.weights`: where a timm encoder's starting weights come from, and the normalisation they expect.

    state, note = pretrained_state("resnet18", 1, "weights/resnet18.safetensors")   # or "pretrained"
    encoder.body.load_state_dict(state)     # note: "... conv1 adapted from 3 to 1 input channel ..." or ""
    mean, std = pretrained_normalisation("resnet18", [1])    # per channel of the stacked inputs

`pretrained` is timm's default source (the Hugging Face hub, or its cache when offline); a path
is a `.pth`/`.safetensors` file of the model's state dict, read by timm (`pretrained_cfg_overlay`).
Only the start of training reads weights (docs/encoders.md); a model file holds them all.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import torch

from cnn_factory.encoders import create, timm_module
from cnn_factory.errors import UserError, listing

NONE, PRETRAINED = "none", "pretrained"
KEY = "params.yaml: model.weights"
LISTED = 4  # tensor names in an error, then "and N more"


def pretrained_state(name: str, in_channels: int, weights: str) -> tuple[dict[str, torch.Tensor], str]:
    """The feature pyramid's state dict with `weights` loaded (adapted to `in_channels`), and a line
    for train's log when the first convolution was adapted ('' otherwise)."""
    if weights != PRETRAINED and not Path(weights).is_file():
        raise UserError(
            f"{KEY}: {weights}: no such file; give a .pth or .safetensors file of {name}'s weights, "
            "pretrained (timm's download or cache) or none"
        )
    overlay = {} if weights == PRETRAINED else {"pretrained_cfg_overlay": {"file": str(weights)}}
    adapted = _Adaptations()
    logger = logging.getLogger("timm.models._builder")
    level = logger.level
    logger.addHandler(adapted)
    logger.setLevel(logging.INFO)  # timm says so at INFO
    try:
        with torch.random.fork_rng():  # the weights replace the random ones: the run's random stream is unchanged
            body = create(name, in_channels, pretrained=True, **overlay)
    except UserError:
        raise
    except Exception as err:  # timm and the hub raise many types: the first line says what happened
        raise UserError(_failure(name, weights, err)) from None
    finally:
        logger.removeHandler(adapted)
        logger.setLevel(level)
    if weights != PRETRAINED:
        _check_complete(name, weights, body.state_dict())
    note = ""
    if adapted.lines:
        how = "summed over RGB" if in_channels == 1 else "RGB cycled, scaled by 3/N"
        note = f"train: {name}'s {', '.join(adapted.lines)} adapted from 3 to {in_channels} input channels ({how})"
    return body.state_dict(), note


class _Adaptations(logging.Handler):
    """Collects the first convolutions timm adapted to another number of input channels."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = re.match(r"Converted input conv (\S+) pretrained weights", record.getMessage())
        if found:
            self.lines.append(found.group(1))


def _check_complete(name: str, weights: str, loaded: dict[str, torch.Tensor]) -> None:
    """timm loads a feature pyramid leniently (its pruned head's tensors would be missing): a file
    that lacks any of the pyramid's own tensors is an error here. The pyramid may name a module
    `stem_0` where the whole model has `stem.0`, so names are compared with `_` read as `.`."""
    there = {k.replace("_", ".") for k in timm_module().models.load_state_dict(weights)}
    missing = [k for k in loaded if k.replace("_", ".") not in there and not k.endswith("num_batches_tracked")]
    if missing:
        raise UserError(
            f"{KEY}: {weights} does not fit {name} (missing {listing(missing, LISTED)}); "
            f"give weights saved from timm's {name}"
        )


def _failure(name: str, weights: str, err: Exception) -> str:
    """One line for a weights source that could not be loaded: which tensors do not fit, or why."""
    text = str(err)
    if weights != PRETRAINED:
        missing = re.findall(r'"([^"]+)"', text.partition("Unexpected key(s)")[0].partition("size mismatch")[0])
        unexpected = re.findall(r'"([^"]+)"', text.partition("Unexpected key(s)")[2])
        shapes = re.findall(
            r"size mismatch for (\S+): copying a param with shape torch.Size\((\[.*?\])\) from "
            r"checkpoint, the shape in current model is torch.Size\((\[.*?\])\)",
            text,
        )
        parts = []
        if "Missing key(s)" in text:
            parts.append(f"missing {listing(missing, LISTED)}")
        if unexpected:
            parts.append(f"not in {name}: {listing(unexpected, LISTED)}")
        if shapes:
            parts.append("shapes differ: " + listing([f"{k} {a} in the file, {b} here" for k, a, b in shapes], LISTED))
        detail = "; ".join(parts) or f"{type(err).__name__}: {(text.strip().splitlines() or [''])[0]}"
        return f"{KEY}: {weights} does not fit {name} ({detail}); give weights saved from timm's {name}"
    first = (text.strip().splitlines() or [""])[0][:200]
    return (
        f"{KEY}: pretrained: timm could not fetch {name}'s weights ({type(err).__name__}: {first}); without "
        f"network, give a file instead (model.weights: path/to/{name}.safetensors) or fill timm's cache "
        "(docs/encoders.md)"
    )


def pretrained_normalisation(name: str, channels: list[int]) -> tuple[list[float], list[float]]:
    """The mean and std (of pixels / 255) the pretrained weights expect, per channel of the stacked
    inputs: RGB as timm gives them; a one-channel input gets their average (the summed filters see
    one grey value where they saw three alike); more channels cycle through R, G, B."""
    cfg = timm_module().get_pretrained_cfg(name)

    def per_channel(rgb: list[float]) -> list[float]:
        values: list[float] = []
        for count in channels:
            values += [sum(rgb) / 3] if count == 1 else [rgb[i % 3] for i in range(count)]
        return [float(v) for v in values]

    return per_channel(list(cfg.mean)), per_channel(list(cfg.std))


def weights_source(weights: str) -> dict[str, str]:
    """What the model file and the checkpoint's key record of model.weights: the word, or a file's
    path and the sha256 of its bytes (other bytes under the same path start another run)."""
    if weights in (NONE, PRETRAINED) or not Path(weights).is_file():  # a missing file: train's start says so
        return {"weights": weights}
    with open(weights, "rb") as file:
        return {"weights": weights, "sha256": hashlib.file_digest(file, "sha256").hexdigest()}


def pretrained_cached(name: str) -> bool:
    """Whether timm's default weights for `name` are already on this machine (the Hugging Face
    cache timm downloads into), found without asking the network."""
    hub = getattr(timm_module().get_pretrained_cfg(name), "hf_hub_id", None)
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(hub, str) and any(
        isinstance(try_to_load_from_cache(hub, file), str) for file in ("model.safetensors", "pytorch_model.bin")
    )
