"""Validation, picked once per run by the input mode (`make_validation`):

- resize mode: one pass over the validation split at the input size (`ResizedValidation`);
- patch mode with `train.val_patches` > 0 (the default): a fixed set of validation patches,
  drawn once from the validation images as training draws its patches, for the masks, and each
  validation image's view for the image-level outputs (`SampledValidation`): its cost does not
  grow with the images' size;
- patch mode with `val_patches: 0`, and the saved model's own record in either case (a
  SampledValidation's `native`): the whole validation images at their own resolution, masks
  from sliding windows, as evaluate and predict score them (`NativeValidation`, over native.py's pass).

Each returns the mean losses (`loss`, `<output>/loss`) and the metrics per output
(`<output>/<metric>`) as plain floats, and fills a Gallery with the first images when given one.
Under torchrun each rank scores its share and the sums are added up: no rank validates alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from cnn_factory.data.dataset import PreparedSplit, rows_loader, share
from cnn_factory.data.patches import PatchBatches, PatchSplit
from cnn_factory.model import ModelFile, MultiOutputNet
from cnn_factory.native import SplitPass, predict_split
from cnn_factory.outputs import Output, Outputs
from cnn_factory.training.distributed import SINGLE, Dist, all_sum
from cnn_factory.training.loop import Placement
from cnn_factory.training.losses import Criterion
from cnn_factory.training.metrics import OutputMetrics
from cnn_factory.training.pictures import Gallery

# patch mode's validation passes take this many training batches at once: without gradients a
# patch costs a fraction of a training step's memory, and fewer, larger passes run faster (3-D
# patches of 16x48x48 on 2 CPU cores: 1.6-2x the patches a second at 16 a pass than at 4)
EVAL_BATCHES = 4


class Sums:
    """Losses summed on the device, with the images (or patches) behind each; metrics accumulated
    beside them; one sync in `means`."""

    def __init__(self, outputs: Mapping[str, Output], device: torch.device):
        self.outputs = list(outputs)
        self.sums = torch.zeros(2, len(outputs), device=device)  # per output: the losses and their counts
        self.metrics = OutputMetrics(outputs, device)

    def add(self, parts: Mapping[str, torch.Tensor], n: int) -> None:
        """Mean losses over `n` images (or patches), of some or all outputs."""
        for name, loss in parts.items():
            k = self.outputs.index(name)
            self.sums[0, k] += loss * n
            self.sums[1, k] += n

    def means(self, ranks: Dist, weights: Mapping[str, float]) -> dict[str, float]:
        """Mean losses per output, their weighted sum (`loss`) and the metrics, over every rank."""
        if ranks.enabled:  # every rank scored its own images: add up the sums, then take the means
            all_sum(self.sums, ranks)
            for metric in self.metrics.metrics.values():
                for state in metric.state():
                    all_sum(state, ranks)
        means = dict(zip(self.outputs, (self.sums[0] / self.sums[1].clamp(min=1)).tolist()))
        total = sum(weights[n] * v for n, v in means.items())
        return {"loss": total, **{f"{n}/loss": v for n, v in means.items()}, **self.metrics.compute()}


def score_batches(
    model: MultiOutputNet,
    batches: Iterable[tuple],
    names: list[str],
    sums: Sums,
    criterion: Criterion,
    placement: Placement,
    gallery: Gallery | None = None,
) -> None:
    """Each (uint8 batch, targets, ...)'s logits of the outputs `names`, their losses and metrics
    added to `sums`, and the batch to `gallery` when given."""
    for x_raw, targets, *_ in batches:
        x, truth = placement.put(x_raw, {n: targets[n] for n in names})
        with placement.autocast():
            preds = {n: v.float() for n, v in model(x, heads=names).items()}
        sums.add({n: criterion.losses[n](preds[n], truth[n]) for n in names}, len(x))
        sums.metrics.update(preds, truth)
        if gallery is not None:
            gallery.add(x_raw, targets, preds)


@dataclass(kw_only=True)
class ResizedValidation:
    """Resize mode: losses and metrics of the validation split at the input size."""

    split: PreparedSplit
    outputs: Mapping[str, Output]
    batch_size: int
    placement: Placement
    ranks: Dist = SINGLE

    @torch.inference_mode()
    def __call__(
        self, model: MultiOutputNet, criterion: Criterion, device: torch.device, gallery: Gallery | None = None
    ) -> dict[str, float]:
        model.eval()
        rows = share(len(self.split), self.ranks.rank, self.ranks.world)
        sums, batches = Sums(self.outputs, device), rows_loader(self.split, rows, self.batch_size)
        score_batches(model, batches, list(self.outputs), sums, criterion, self.placement, gallery)
        return sums.means(self.ranks, criterion.weights)


class NativeValidation:
    """Patch mode: losses and metrics of the whole validation images at their own resolution (the
    masks' losses at the scale the network trained on, their metrics at the label maps' size)."""

    def __init__(
        self, *, model_file: ModelFile, outputs: Mapping[str, Output], folder: Path, batch_size: int, ranks: Dist
    ):
        self.model_file, self.outputs, self.ranks = model_file, outputs, ranks
        self.batch_size = batch_size * EVAL_BATCHES  # images, and windows over an image, a pass
        self.split = SplitPass(model_file, outputs, folder, share=(ranks.rank, ranks.world))

    @torch.inference_mode()
    def __call__(
        self, model: MultiOutputNet, criterion: Criterion, device: torch.device, gallery: Gallery | None = None
    ) -> dict[str, float]:
        sums = Sums(self.outputs, device)
        for batch in predict_split(model, self.model_file, self.outputs, self.split, self.batch_size, device):
            image_level = {n: v for n, v in batch.logits.items() if n not in self.split.spatial}
            sums.metrics.update(image_level, batch.targets)
            sums.add({n: criterion.losses[n](v, batch.targets[n]) for n, v in image_level.items()}, len(batch.x))
            for image in batch.images:
                for n, output in self.split.spatial.items():
                    prob, mask = image.windows[n]
                    sums.add({n: criterion.losses[n](output.to_logits(prob)[None], mask[None].float())}, 1)
                    truth = image.truth[n]
                    sums.metrics.update({n: output.to_logits(image.probabilities[n])[None]}, {n: truth[None].float()})
            if gallery is not None:
                gallery.add(batch.x, batch.targets, batch.logits)
        return sums.means(self.ranks, criterion.weights)


@dataclass(frozen=True, kw_only=True)
class Sampled:
    """Patch mode's fixed validation patches: `count` of them (train.val_patches), a `foreground`
    share of each batch centred on a mask's foreground (train.foreground), drawn from `seed`."""

    count: int
    foreground: float
    seed: int = 0


class SampledValidation:
    """Patch mode: the masks' losses and metrics on `count` fixed validation patches, and the
    image-level outputs' on every validation image's view (the whole image at the input size).
    The epoch it picks is scored again by `native`, on the whole images, for the model file."""

    def __init__(
        self,
        *,
        model_file: ModelFile,
        outputs: Mapping[str, Output],
        folder: Path,
        sampled: Sampled,
        batch_size: int,
        placement: Placement,
        ranks: Dist = SINGLE,
    ):
        self.outputs, self.batch_size, self.placement, self.ranks = outputs, batch_size, placement, ranks
        kinds = Outputs(outputs)
        self.spatial, self.whole = list(kinds.spatial), list(kinds.whole)
        # the masks only: the image-level outputs are scored on every image's view below, not per patch
        patches = PatchSplit(folder, list(model_file.inputs), kinds.spatial, model_file.first.size)
        # drawn once, as training draws (foreground share included): the same patches every epoch
        batches = PatchBatches(
            rows=patches,
            samples=sampled.count,
            batch_size=batch_size,
            share=sampled.foreground,
            generator=torch.Generator().manual_seed(sampled.seed),
        )
        specs = list(batches)
        mine = share(len(specs), ranks.rank, ranks.world)  # under torchrun: a block of batches per rank
        # (uint8 patches, targets), read once; drawn a training batch at a time, scored EVAL_BATCHES at once
        self.batches = grouped([patches[specs[i]][:2] for i in mine], EVAL_BATCHES)
        self.views = PreparedSplit(folder, list(model_file.inputs), outputs) if self.whole else None
        self.rows = share(len(self.views), ranks.rank, ranks.world) if self.views is not None else range(0)
        self.native = NativeValidation(
            model_file=model_file, outputs=outputs, folder=folder, batch_size=batch_size, ranks=ranks
        )

    @torch.inference_mode()
    def __call__(
        self, model: MultiOutputNet, criterion: Criterion, device: torch.device, gallery: Gallery | None = None
    ) -> dict[str, float]:
        model.eval()
        sums = Sums(self.outputs, device)
        score_batches(model, self.batches, self.spatial, sums, criterion, self.placement, gallery)
        if self.views is not None:
            views = rows_loader(self.views, self.rows, self.batch_size * EVAL_BATCHES)
            score_batches(model, views, self.whole, sums, criterion, self.placement)
        return sums.means(self.ranks, criterion.weights)


def grouped(batches: list[tuple], n: int) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """(patches, {output: targets}) batches joined `n` at a time, in order."""
    joined = []
    for group in (batches[i : i + n] for i in range(0, len(batches), n)):
        targets = {k: torch.cat([t[k] for _, t in group]) for k in group[0][1]}
        joined.append((torch.cat([x for x, _ in group]), targets))
    return joined


Validation = ResizedValidation | NativeValidation | SampledValidation


def make_validation(
    *,
    model_file: ModelFile,
    outputs: Mapping[str, Output],
    folder: Path,
    batch_size: int,
    placement: Placement,
    ranks: Dist = SINGLE,
    sampled: Sampled | None = None,
) -> Validation:
    """The run's validation, by the inputs' mode; `sampled`: patch mode's fixed validation patches
    (None, or a count of 0: whole images)."""
    if model_file.patch and sampled is not None and sampled.count:
        return SampledValidation(
            model_file=model_file,
            outputs=outputs,
            folder=folder,
            sampled=sampled,
            batch_size=batch_size,
            placement=placement,
            ranks=ranks,
        )
    if model_file.patch:  # sliding windows over the whole images, scored at their own size
        return NativeValidation(
            model_file=model_file, outputs=outputs, folder=folder, batch_size=batch_size, ranks=ranks
        )
    split = PreparedSplit(folder, list(model_file.inputs), outputs)
    return ResizedValidation(split=split, outputs=outputs, batch_size=batch_size, placement=placement, ranks=ranks)
