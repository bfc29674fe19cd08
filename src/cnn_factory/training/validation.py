"""Validation, picked once per run by the input mode (`make_validation`):

- resize mode: one pass over the validation split at the input size (`ResizedValidation`);
- patch mode: the whole validation images at their own resolution, masks from sliding windows,
  as evaluate and predict score them (`NativeValidation`, over native.py's pass).

Either returns the mean losses (`loss`, `<output>/loss`) and the metrics per output
(`<output>/<metric>`) as plain floats, and fills a Gallery with the first images when given one.
Under torchrun every rank scores its own share of the images and the sums are added up over
the ranks, so no rank waits while another validates alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from cnn_factory.data.dataset import PreparedSplit, rows_loader, share, to_device
from cnn_factory.model import ModelFile, MultiOutputNet
from cnn_factory.native import SplitPass, predict_split
from cnn_factory.outputs import Output
from cnn_factory.training.distributed import SINGLE, Dist, all_sum
from cnn_factory.training.losses import Criterion
from cnn_factory.training.metrics import OutputMetrics
from cnn_factory.training.pictures import Gallery


class Sums:
    """Losses summed over images on the device; metrics accumulated beside them; one sync in `means`."""

    def __init__(self, outputs: Mapping[str, Output], device: torch.device):
        self.outputs = list(outputs)
        self.losses = torch.zeros(len(outputs) + 1, device=device)  # total, then per output
        self.metrics = OutputMetrics(outputs, device)
        self.seen = 0

    def means(self, ranks: Dist, weights: Mapping[str, float] | None = None) -> dict[str, float]:
        if ranks.enabled:  # every rank scored its own images: add up the sums, then take the means
            totals = all_sum(torch.cat([self.losses, self.losses.new_tensor([self.seen])]), ranks)
            self.losses, self.seen = totals[:-1], round(totals[-1].item())
            for metric in self.metrics.metrics.values():
                for state in metric.state():
                    all_sum(state, ranks)
        per = (self.losses / max(self.seen, 1)).tolist()
        if weights is not None:  # a pass that sums each output's loss alone: the total from their means
            per[0] = sum(weights[n] * v for n, v in zip(self.outputs, per[1:]))
        return {"loss": per[0], **{f"{n}/loss": v for n, v in zip(self.outputs, per[1:])}, **self.metrics.compute()}


class ResizedValidation:
    """Resize mode: losses and metrics of the validation split at the input size."""

    def __init__(
        self,
        split: PreparedSplit,
        outputs: Mapping[str, Output],
        batch_size: int,
        stats: tuple[torch.Tensor, torch.Tensor],
        amp: torch.dtype | None = None,
        ranks: Dist = SINGLE,
    ):
        self.split, self.outputs, self.batch_size = split, outputs, batch_size
        self.stats, self.amp, self.ranks = stats, amp, ranks
        self.rows = share(len(split), ranks.rank, ranks.world)

    @torch.inference_mode()
    def __call__(
        self, model: MultiOutputNet, criterion: Criterion, device: torch.device, gallery: Gallery | None = None
    ) -> dict[str, float]:
        model.eval()
        sums = Sums(self.outputs, device)
        for x_raw, targets, _ in rows_loader(self.split, self.rows, self.batch_size):
            x, targets = to_device(x_raw, targets, device, *self.stats)
            with torch.autocast(device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                preds = {k: v.float() for k, v in model(x).items()}
            loss, parts = criterion(preds, targets)
            sums.losses += torch.stack([loss, *parts.values()]) * len(x)
            sums.seen += len(x)
            sums.metrics.update(preds, targets)
            if gallery is not None:
                gallery.add(x_raw, targets, preds)
        return sums.means(self.ranks)


class NativeValidation:
    """Patch mode: losses and metrics of the whole validation images at their own resolution (the
    masks' losses at the scale the network trained on, their metrics at the label maps' size)."""

    def __init__(
        self, model_file: ModelFile, outputs: Mapping[str, Output], folder: Path, batch_size: int, ranks: Dist
    ):
        self.model_file, self.outputs, self.batch_size, self.ranks = model_file, outputs, batch_size, ranks
        self.split = SplitPass(model_file, outputs, folder, share=(ranks.rank, ranks.world))

    @torch.inference_mode()
    def __call__(
        self, model: MultiOutputNet, criterion: Criterion, device: torch.device, gallery: Gallery | None = None
    ) -> dict[str, float]:
        sums, outputs = Sums(self.outputs, device), self.outputs
        index = {n: k for k, n in enumerate(outputs, 1)}
        for batch in predict_split(model, self.model_file, outputs, self.split, self.batch_size, device):
            image_level = {n: v for n, v in batch.logits.items() if n not in self.split.spatial}
            sums.metrics.update(image_level, batch.targets)
            for n, logits in image_level.items():
                sums.losses[index[n]] += criterion.losses[n](logits, batch.targets[n]) * len(batch.x)
            for image in batch.images:
                for n in self.split.spatial:
                    prob, mask = image.windows[n]
                    sums.losses[index[n]] += criterion.losses[n](outputs[n].to_logits(prob)[None], mask[None].float())
                    truth = image.truth[n]
                    sums.metrics.update(
                        {n: outputs[n].to_logits(image.probabilities[n])[None]}, {n: truth[None].float()}
                    )
            sums.seen += len(batch.x)
            if gallery is not None:
                gallery.add(batch.x, batch.targets, batch.logits)
        return sums.means(self.ranks, criterion.weights)


def make_validation(
    model_file: ModelFile,
    outputs: Mapping[str, Output],
    folder: Path,
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None,
    ranks: Dist,
) -> ResizedValidation | NativeValidation:
    """The run's validation, by the inputs' mode."""
    if model_file.patch:  # sliding windows over the whole images, scored at their own size
        return NativeValidation(model_file, outputs, folder, batch_size, ranks)
    split = PreparedSplit(folder, list(model_file.inputs), outputs)
    return ResizedValidation(split, outputs, batch_size, model_file.normalisation(device), amp, ranks)
