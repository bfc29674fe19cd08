"""The training loop, in the open: one epoch of training.

    step = Step(session=session, net=net, criterion=criterion, placement=Placement(device=device, stats=stats))
    stats = train_one_epoch(step, loader, epoch)    # {"loss": ..., "<output>/loss": ..., "images_per_s": ...}

Validation is training/validation.py's.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cnn_factory.data.dataset import to_device
from cnn_factory.training.checkpoint import Session
from cnn_factory.training.distributed import SINGLE, Dist, all_sum
from cnn_factory.training.losses import Criterion


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None for fp32; CPU runs stay fp32 unless asked; CUDA prefers bf16 where supported."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where a batch meets the network: the device, the inputs' (mean, std) there, shaped
    (1, C, 1, 1[, 1]), and autocast's dtype (None: fp32)."""

    device: torch.device
    stats: tuple[torch.Tensor, torch.Tensor]
    amp: torch.dtype | None = None

    def put(self, x: torch.Tensor, targets: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A uint8 batch normalised on the device (data/dataset.py's to_device)."""
        return to_device(x, targets, self.device, *self.stats)

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None)


@dataclass(kw_only=True)
class Step:
    """What an optimisation step needs, fixed for a run: the session's model learns through `net`
    (the model itself, or its DistributedDataParallel wrapper under torchrun), with the session's
    optimiser, schedule, scaler and augmenter."""

    session: Session
    net: torch.nn.Module
    criterion: Criterion  # its outputs are the step's
    placement: Placement
    grad_clip: float = 0.0
    accumulate: int = 1  # batches per optimiser step
    ranks: Dist = SINGLE

    def forward_backward(self, batch: tuple, sync: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
        """One batch's losses, their gradients added to the parameters'. `sync` False under DDP: the
        gradients stay on this rank (no all-reduce) until the last batch of an accumulated step."""
        x, targets, flags, *rest = batch
        place, augment = self.placement, self.session.augmenter
        x, targets = place.put(x, targets)
        x, targets = augment(x, targets, flags, self.criterion.outputs, *place.stats)
        views = rest[0] if rest else None  # patch mode: whole images, resized, for the image-level outputs
        if views is not None:
            views, _ = place.put(views, {})
            views, _ = augment(views, {}, flags[: len(views)], {}, *place.stats)
        ddp: Any = self.net  # DistributedDataParallel under torchrun: its no_sync() skips the all-reduce
        quiet = ddp.no_sync() if not sync and self.ranks.enabled else contextlib.nullcontext()
        with quiet:
            with place.autocast():
                preds = self.net(x, views)
            loss, parts = self.criterion({k: v.float() for k, v in preds.items()}, targets)
            self.session.scaler.scale(loss / self.accumulate).backward()
        return loss, parts, len(x)

    def update(self) -> None:
        """The optimiser's step from the gradients added up since the last one."""
        session = self.session
        if self.grad_clip:
            session.scaler.unscale_(session.optimizer)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        session.scaler.step(session.optimizer)
        session.scaler.update()
        session.optimizer.zero_grad(set_to_none=True)
        session.schedule.batch_end()


def train_one_epoch(step: Step, loader: Any, epoch: int) -> dict[str, float]:
    """One pass over the loader; returns mean losses per output, under DDP over every rank's images
    (the losses stay on the device until then: one host sync per epoch)."""
    step.net.train()
    outputs = step.criterion.outputs
    sums = torch.zeros(len(outputs) + 1, device=step.placement.device)
    seen, start, steps = 0, time.perf_counter(), len(loader)
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False, disable=None, file=sys.stdout)
    for i, batch in enumerate(bar):
        last = (i + 1) % step.accumulate == 0 or i + 1 == steps  # gradients of `accumulate` batches per step
        loss, parts, count = step.forward_backward(batch, sync=last)
        if last:
            step.update()
        sums += torch.stack([loss.detach(), *(p.detach() for p in parts.values())]) * count
        seen += count
        if not bar.disable and i % 10 == 0:  # a terminal is watching: .item() now and then only
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{seen / (time.perf_counter() - start):.0f}")
    if step.ranks.enabled:
        totals = all_sum(torch.cat([sums, sums.new_tensor([seen])]), step.ranks)
        sums, seen = totals[:-1], round(totals[-1].item())
    means = (sums / max(seen, 1)).tolist()
    result = {"loss": means[0], **{f"{name}/loss": v for name, v in zip(outputs, means[1:])}}
    return {**result, "images_per_s": seen / (time.perf_counter() - start)}
