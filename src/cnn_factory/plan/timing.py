"""How long the proposed run is expected to take on this machine: the proposed network's
training step (forward, backward, the optimiser) and its forward pass timed here on random data
of the proposed batch and size, times the steps and validations the proposal makes, plus the
train stage's fixed costs. A second or two of measuring; nothing is written.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cnn_factory.config import Config
from cnn_factory.device import pick_device
from cnn_factory.layers import SPATIAL
from cnn_factory.model import MultiOutputNet, model_args
from cnn_factory.training.loop import autocast_dtype
from cnn_factory.training.optim import make_optimizer

START_S = 4.0  # the train stage's start-up and end: imports, params, the prepared arrays, exit (benchmarks/README.md)
EPOCH_S = 0.05  # a checkpoint after every epoch
LOOP = 0.92  # the training loop's rate over the bare step: sampling, reading, augmenting (benchmarks/README.md)
MEASURE_S = 1.0  # time spent timing each of the step and the forward pass


@dataclass(frozen=True, kw_only=True)
class Rates:
    step_s: float  # one training step of the proposed batch
    forward_s: float  # one patch or image through the network, no gradients (validation)


@dataclass(frozen=True, kw_only=True)
class Work:
    """What a run does, counted: optimiser steps and forward passes of single patches or images."""

    steps: int
    forwards: float
    epochs: int


def measure(cfg: Config, spacing: list[float] | None) -> Rates:
    """The proposed network (cfg: the params with the plan applied) timed on this machine."""
    device, t = pick_device(cfg.train.device), cfg.train
    args = model_args(cfg.model, cfg.inputs, cfg.outputs, {"outputs": {}, "spacing": spacing})
    layout = SPATIAL[args.get("dims", 2)].memory_format
    model = MultiOutputNet.from_args(args).to(device, memory_format=layout)  # type: ignore[call-overload]
    optimizer = make_optimizer(t.optimizer, model.parameters(), t.lr, t.momentum, t.weight_decay)
    amp = autocast_dtype(t.precision, device)
    channels = sum(s.channels for s in cfg.inputs.values())
    x = torch.randn(t.batch_size, channels, *cfg.first_input.size, device=device).contiguous(memory_format=layout)
    image_level = any(not o.spatial for o in cfg.outputs.values())
    views = x[: max(1, round(t.batch_size * t.view_share))] if cfg.patch_mode and image_level else None

    def step() -> None:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = model(x, views)
        sum(v.float().mean() for v in out.values()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def forward() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            model(x)

    step_s = timed(step, device)
    model.eval()
    return Rates(step_s=step_s, forward_s=timed(forward, device) / t.batch_size)


def timed(call: Callable[[], None], device: torch.device) -> float:
    """Seconds a call takes, after two to warm up (the allocator, oneDNN's or cuDNN's kernel choice)."""
    for _ in range(2):
        call()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < MEASURE_S:
        call()
        calls += 1
        sync()
    return (time.perf_counter() - start) / calls


def work(cfg: Config, train_rows: int, val_rows: int, windows: float) -> Work:
    """The steps and forward passes of the run cfg describes; `windows`: sliding windows per
    whole val image (patch mode)."""
    t = cfg.train
    items = (t.patches_per_epoch if cfg.patch_mode else None) or train_rows
    steps = t.epochs * math.ceil(items * (1 + t.num_augs) / t.batch_size)
    validations = len(range(t.val_every, t.epochs + 1, t.val_every)) + bool(t.epochs % t.val_every)
    if not cfg.patch_mode:
        return Work(steps=steps, forwards=validations * val_rows, epochs=t.epochs)
    image_level = any(not o.spatial for o in cfg.outputs.values())
    each = (t.val_patches or windows * val_rows) + (val_rows if image_level else 0)
    return Work(steps=steps, forwards=validations * each + windows * val_rows, epochs=t.epochs)


def expected_seconds(rates: Rates, run: Work) -> float:
    return START_S + run.epochs * EPOCH_S + run.steps * rates.step_s / LOOP + run.forwards * rates.forward_s
