"""The plain MONAI pipeline benchmarks/large.py, volumes.py and real.py train, 2-D and 3-D alike.

    model, seen, seconds = train_unet(2, loader, patches=7680, batch=16, lr=3e-3, target=lambda item: item["label"])
    logits = infer(model, image[None], roi, batch=16)    # (1, 2, *spatial): background and foreground

As MONAI's segmentation tutorials build it, in 2-D and 3-D alike (`spatial_dims`): a UNet of 16-128
channels with two residual units per level, background and foreground channels with DiceCELoss
(softmax, labels one-hot), Adam with a cosine schedule over the run's steps; inference by
sliding_window_inference with an overlap of 0.5 and Gaussian blending. What differs between the
two benchmarks, their files' loading and their scoring, stays with each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch


def train_unet(
    spatial_dims: int,
    loader: Iterable[dict],
    patches: int,
    batch: int,
    lr: float,
    target: Callable[[dict], torch.Tensor],
    in_channels: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[torch.nn.Module, int, float]:
    """A MONAI UNet of `in_channels` input channels trained on `patches` patches from `loader`
    (epochs repeat until then), `target` giving a batch's (B, 1, *spatial) label; returns the
    model, the patches seen and the seconds taken by `clock` (wall; `time.process_time`: the
    process's CPU seconds, all threads)."""
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    model = UNet(spatial_dims, in_channels, 2, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(model.parameters(), lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, patches // batch))
    seen, start = 0, clock()
    model.train()
    while seen < patches:
        for item in loader:
            image = item["image"]
            loss = loss_fn(model(image), target(item))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            seen += len(image)
            if seen >= patches:
                break
    return model, seen, clock() - start


def infer(model: torch.nn.Module, image: torch.Tensor, roi: tuple[int, ...], batch: int) -> torch.Tensor:
    """A (1, C, *spatial) image's logits through windows of `roi`, `batch` windows a pass."""
    from monai.inferers import sliding_window_inference

    return sliding_window_inference(image, roi, batch, model, overlap=0.5, mode="gaussian")
