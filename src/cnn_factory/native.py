"""One pass of a model over a prepared split at the label maps' own resolution: what a user of
predict gets. Patch-mode validation (training/validation.py) and evaluate (evaluate.py) both
consume it, so the masks they score are the same masks.

    split = SplitPass(model_file, outputs, PREPARED / "val")   # the split's arrays, opened once
    for batch in predict_split(model, model_file, outputs, split, batch_size=16, device=device):
        batch.logits       # {output: logits} of the whole images at the input size (see `SplitBatch`)
        batch.images[k]    # per image: each mask's probabilities at its label map's size, with the truth

Every mask is predicted as `cnn-factory predict` predicts it (inference.py): in resize mode the
whole image at the input size, in patch mode sliding windows over the image at `inputs.*.scale`
times its size, Gaussian-blended; its probabilities are brought to the label map's own size
(bilinear), where its kind makes it a mask (`predicted_mask`). Image-level outputs (category,
numeric) are predicted from the whole image resized to the input size. An `Ensemble` of several
model files of one model (`load_models`) is run the same way (inference.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from cnn_factory.data.dataset import PreparedSplit, rows_loader, to_device
from cnn_factory.data.dataset import share as rows_share
from cnn_factory.data.ragged import RaggedArray
from cnn_factory.errors import UserError
from cnn_factory.inference import Ensemble, predict_batch, predict_tiled, upsample
from cnn_factory.model import ModelFile, MultiOutputNet
from cnn_factory.outputs import Output, Outputs

Network = MultiOutputNet | Ensemble  # one model file's network, or several's predicting as one

OVERLAP = 0.5  # sliding windows' share of a window with its neighbour, as predict's default


@dataclass
class NativeImage:
    """One image of the split, its masks at the label maps' own size."""

    row: int  # in the split
    picture: torch.Tensor | np.ndarray  # what a worst-case panel shows: the native image (patch), the input (resize)
    probabilities: dict[str, torch.Tensor] = field(default_factory=dict)  # per mask output, (.., H, W) of its truth
    truth: dict[str, torch.Tensor] = field(default_factory=dict)  # per mask output, (H, W) or (D, H, W) stored values
    windows: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    # patch mode, per mask output: (blended probabilities, mask) at the scale the network trained on
    spacing: tuple[float, ...] | None = None  # a volume's own mm per (D, H, W) axis: the scores' units


@dataclass
class SplitBatch:
    x: torch.Tensor  # (B, C, h, w) uint8, the whole images at the input size
    targets: dict[str, torch.Tensor]  # at the input size, on the device
    logits: dict[str, torch.Tensor]  # image-level outputs: the network's; masks: what the pictures show
    images: list[NativeImage]
    probabilities: dict[str, torch.Tensor] | None = None  # an ensemble's averaged image-level probabilities


class SplitPass:
    """The arrays of a prepared split that a native pass reads, opened once."""

    def __init__(
        self, model_file: ModelFile, outputs: Mapping[str, Output], folder: Path, share: tuple[int, int] = (0, 1)
    ):
        """share: (rank, world), this process's contiguous block of the rows under torchrun."""
        self.patch, self.window = model_file.patch, model_file.first.size
        self.inputs = list(model_file.inputs)
        self.spatial = Outputs(outputs).spatial
        self.split = PreparedSplit(folder, self.inputs, outputs)  # whole images at the input size
        self.truths = {n: RaggedArray(folder, f"{n}.truth", masks=True) for n in self.spatial}
        native = self.patch  # patch mode: the images and masks at the scale the network trained on
        self.natives = {n: RaggedArray(folder, f"{n}.native") for n in self.inputs} if native else {}
        self.native_masks = {n: RaggedArray(folder, f"{n}.native", masks=True) for n in self.spatial} if native else {}
        self.rows = rows_share(len(self.split), *share)
        spacing = folder / "spacing.npy"  # volumes: each scan's own mm per axis
        self.spacings = np.load(spacing).tolist() if spacing.is_file() else None

    def __len__(self) -> int:
        return len(self.rows)


@torch.inference_mode()
def predict_split(
    model: Network,
    model_file: ModelFile,
    outputs: Mapping[str, Output],
    split: SplitPass,
    batch_size: int,
    device: torch.device,
) -> Iterator[SplitBatch]:
    """Runs the model over every image of a prepared split once, a batch at a time (`split`: its
    SplitPass of `model_file` and `outputs`)."""
    model.eval()
    stats = model_file.normalisation(device)
    row = split.rows.start
    for x_raw, targets, _ in rows_loader(split.split, split.rows, batch_size):
        x, targets = to_device(x_raw, targets, device, *stats)
        probs = None
        if isinstance(model, Ensemble):  # averaged probabilities; logits for the metrics and pictures
            probs = predict_batch(model, x, False, dict(outputs))
            logits = {k: outputs[k].to_logits(v).float() for k, v in probs.items()}
        else:
            logits = {k: v.float() for k, v in model(x).items()}
        images = []
        for k in range(len(x)):
            image = NativeImage(row, x_raw[k], spacing=tuple(split.spacings[row]) if split.spacings else None)
            if split.patch:
                raw = torch.cat([torch.from_numpy(split.natives[n][row].copy()) for n in split.inputs])
                native, _ = to_device(raw[None], {}, device, *stats)  # sliding windows over it, blended
                window_probs = predict_tiled(model, native, split.window, OVERLAP, False, batch_size, dict(outputs))
                image.picture = raw
            for n in split.spatial:
                truth = torch.from_numpy(split.truths[n][row].copy()).to(device)
                if split.patch:
                    prob = window_probs[n][0]
                    image.windows[n] = (prob, torch.from_numpy(split.native_masks[n][row].copy()).to(device))
                    at = tuple(logits[n].shape[-len(split.window) :])  # the picture: the blended mask at its size
                    logits[n][k] = split.spatial[n].to_logits(upsample(prob, at))
                else:
                    prob = probs[n][k] if probs else outputs[n].probabilities(logits[n][k : k + 1])[0]
                image.probabilities[n] = upsample(prob, tuple(int(s) for s in truth.shape))
                image.truth[n] = truth
            images.append(image)
            row += 1
        image_level = {n: p for n, p in probs.items() if n not in split.spatial} if probs else None
        yield SplitBatch(x_raw, targets, logits, images, image_level)


def load_models(files: list[Path], device: torch.device | str) -> tuple[Network, ModelFile]:
    """The network of one model file, or of several of one model (the same inputs and outputs, each
    keeping its own normalisation) as one Ensemble, with the first file's ModelFile (its saved
    epoch only where every file's is that one); UserError names a file of another model."""
    loaded = [ModelFile.load(f, device) for f in files]
    first = loaded[0][1]
    if len(loaded) == 1:
        return loaded[0][0], first
    mean, std = first.normalisation(device)
    shifts = []
    for path, (_, model_file) in zip(files, loaded):
        for what, mine, theirs in (
            ("inputs", model_file.input_specs(), first.input_specs()),
            ("outputs", {n: o.describe() for n, o in model_file.outputs.items()},
             {n: o.describe() for n, o in first.outputs.items()}),
        ):  # fmt: skip
            if mine != theirs:
                raise UserError(
                    f"{path}: its {what} differ from {files[0]}'s; an ensemble takes model files of one model "
                    "(e.g. the folds of one cross-validation)"
                )
        own_mean, own_std = model_file.normalisation(device)
        same = torch.equal(own_mean, mean) and torch.equal(own_std, std)
        shifts.append(None if same else (std / own_std, (mean - own_mean) / own_std))
    epochs = {model_file.epoch for _, model_file in loaded}
    return Ensemble([m for m, _ in loaded], shifts), first if len(epochs) == 1 else replace(first, epoch=None)
