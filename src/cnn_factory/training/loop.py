"""The training loop, in the open: one epoch of training, one pass of validation.

    stats = train_one_epoch(model, criterion, optimizer, schedule, loader, device, stats, augmenter, outputs, ...)
    val = validation_pass(model, criterion, loader, device, stats, outputs)

Losses and metrics stay on the device until the end of the pass (one host sync per epoch).
"""

from __future__ import annotations

import random
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from cnn_factory.data.dataset import to_device
from cnn_factory.outputs import Output
from cnn_factory.training.distributed import SINGLE, Dist, all_sum
from cnn_factory.training.metrics import OutputMetrics


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


def train_one_epoch(
    model,
    criterion,
    optimizer,
    schedule,
    loader,
    device,
    stats,
    augmenter,
    outputs,
    *,
    amp: torch.dtype | None,
    scaler,
    grad_clip: float,
    accumulate: int,
    epoch: int,
    ranks: Dist = SINGLE,
) -> dict:
    """One pass over the loader; returns mean losses per output (one host sync, at the end).

    Under DDP the means are over every rank's images, not only this rank's."""
    model.train()
    sums = torch.zeros(len(outputs) + 1, device=device)
    seen, start, steps = 0, time.perf_counter(), len(loader)
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False, disable=None, file=sys.stdout)
    for i, (x, targets, flags, *rest) in enumerate(bar):
        x, targets = to_device(x, targets, device, *stats)
        x, targets = augmenter(x, targets, flags, outputs, *stats)
        views = None
        if rest:  # patch mode: the whole images, resized, for the image-level outputs
            views, _ = to_device(rest[0], {}, device, *stats)
            views, _ = augmenter(views, {}, flags, {}, *stats)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            preds = model(x, views)
        loss, parts = criterion({k: v.float() for k, v in preds.items()}, targets)
        scaler.scale(loss / accumulate).backward()
        if (i + 1) % accumulate == 0 or i + 1 == steps:  # gradients of `accumulate` batches per step
            if grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            schedule.batch_end()
        sums += torch.stack([loss.detach(), *(p.detach() for p in parts.values())]) * len(x)
        seen += len(x)
        if not bar.disable and i % 10 == 0:  # a terminal is watching: .item() now and then only
            bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{seen / (time.perf_counter() - start):.0f}")
    if ranks.enabled:
        totals = all_sum(torch.cat([sums, sums.new_tensor([seen])]), ranks)
        sums, seen = totals[:-1], round(totals[-1].item())
    means = (sums / max(seen, 1)).tolist()
    result = {"loss": means[0], **{f"{name}/loss": v for name, v in zip(outputs, means[1:])}}
    return {**result, "images_per_s": seen / (time.perf_counter() - start)}


@torch.inference_mode()
def validation_pass(
    model, criterion, loader, device, stats, outputs: dict[str, Output], amp=None, gallery=None
) -> dict:
    """Mean losses and metrics per output over a split; the first images go to `gallery` if given."""
    model.eval()
    metrics = OutputMetrics(outputs, device)
    sums, seen = torch.zeros(len(outputs) + 1, device=device), 0
    for x_raw, targets, _ in loader:
        x, targets = to_device(x_raw, targets, device, *stats)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            preds = {k: v.float() for k, v in model(x).items()}
        loss, parts = criterion(preds, targets)
        sums += torch.stack([loss, *parts.values()]) * len(x)
        seen += len(x)
        metrics.update(preds, targets)
        if gallery is not None:
            gallery.add(x_raw, targets, preds)
    means = (sums / max(seen, 1)).tolist()
    result = {"loss": means[0], **{f"{name}/loss": v for name, v in zip(outputs, means[1:])}}
    return {**result, **metrics.compute()}
