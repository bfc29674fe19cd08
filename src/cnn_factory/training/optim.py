"""Optimisers, learning-rate schedules (with warm-up), early stopping and its default metric, by their params names.

optimizer = make_optimizer("sgd", model.parameters(), lr=0.01, momentum=0.9, weight_decay=0)
schedule = Schedule("cosine", optimizer, lr=0.01, epochs=30, steps_per_epoch=27, step_epochs=10,
                    warmup_epochs=2, mode="min")
... schedule.batch_end() after each optimiser step, schedule.epoch_end(val_metric) after each epoch
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch
from torch.optim import lr_scheduler

from cnn_factory.model import MultiOutputNet


def parameter_groups(model: MultiOutputNet, lr: float, encoder_lr: float) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: all in one, or (train.encoder_lr != 1) the rest, then the
    encoder's at lr * encoder_lr (the first group's rate is the one train logs)."""
    if encoder_lr == 1:
        return [{"params": list(model.parameters())}]
    own = {id(p) for p in model.encoder.parameters()}
    rest = [p for p in model.parameters() if id(p) not in own]
    return [{"params": rest}, {"params": list(model.encoder.parameters()), "lr": lr * encoder_lr}]


def make_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter] | list[dict[str, Any]],
    lr: float,
    momentum: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    """One of cnn_factory.config.OPTIMIZERS; momentum applies to sgd and rmsprop; `params` may be
    parameter groups (a group's own "lr" overrides `lr`)."""
    cls: Any = {
        "sgd": torch.optim.SGD,
        "rmsprop": torch.optim.RMSprop,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "adadelta": torch.optim.Adadelta,
        "adagrad": torch.optim.Adagrad,
        "adamax": torch.optim.Adamax,
        "nadam": torch.optim.NAdam,
    }[name]
    extra = {"momentum": momentum} if name in ("sgd", "rmsprop") else {}
    return cls(params, lr=lr, weight_decay=weight_decay, **extra)


class Schedule:
    """none | step (halve every step_epochs) | cosine | plateau (halve after step_epochs without
    improvement) | onecycle (per batch); all but onecycle may start with a linear warm-up from lr/10."""

    def __init__(
        self,
        name: str,
        optimizer: torch.optim.Optimizer,
        lr: float,
        epochs: int,
        steps_per_epoch: int,
        step_epochs: int,
        warmup_epochs: int,
        mode: Literal["min", "max"] = "min",
    ):
        self.name, self.warmup, self.epoch = name, warmup_epochs if name != "onecycle" else 0, 0
        warm = lambda e: 0.1 + 0.9 * e / self.warmup if e < self.warmup else 1.0  # noqa: E731
        self.sched: Any
        self.warm: lr_scheduler.LambdaLR | None = None
        if name == "onecycle":
            peaks = [group.get("lr", lr) for group in optimizer.param_groups]  # one per group: encoder_lr's
            self.sched = lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=epochs * steps_per_epoch)
        elif name == "plateau":
            self.sched = lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.5, patience=step_epochs)
            self.warm = lr_scheduler.LambdaLR(optimizer, warm) if self.warmup else None
        else:
            base = {
                "none": lambda e: 1.0,
                "step": lambda e: 0.5 ** (e // step_epochs),
                "cosine": lambda e: 0.5 * (1 + math.cos(math.pi * min(e, epochs) / epochs)),
            }[name]
            self.sched = lr_scheduler.LambdaLR(optimizer, lambda e: warm(e) * base(e))

    def batch_end(self) -> None:
        if self.name == "onecycle":
            self.sched.step()

    def epoch_end(self, metric: float | None) -> None:
        """After every epoch, with the early-stopping metric (None: not validated; plateau waits)."""
        self.epoch += 1
        if self.name == "plateau":
            if self.warm is not None and self.epoch <= self.warmup:
                self.warm.step()
            elif metric is not None:
                self.sched.step(metric)
        elif self.name != "onecycle":
            self.sched.step()

    def state_dict(self) -> dict:
        warm = self.warm.state_dict() if self.warm else None
        return {"epoch": self.epoch, "sched": self.sched.state_dict(), "warm": warm}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self.sched.load_state_dict(state["sched"])
        if state["warm"] is not None:
            assert self.warm is not None  # saved by a plateau schedule with warm-up, as this one
            self.warm.load_state_dict(state["warm"])


class EarlyStopping:
    """Tracks the best value of a metric's moving average; `stop` once `patience` values in a row
    brought no improvement (why, as measured: docs/volumes.md, "The saved epoch").

    Each validation moves the average by `1 - smoothing` of the way to its value (the first sets it;
    smoothing 0: the values themselves), as nnU-Net picks its best checkpoint, so that a lucky dip
    in one output's loss does not save an epoch the others had not finished with. From the third
    validation on, the value that moves the average is the median of it and the two before it, so
    that one stray validation does not lift the average for the rest of the run; a value over
    twice that median (mode max: under half of it) is a stray one, and its epoch is never the best."""

    STRAY = 2.0  # a value this many times worse than the median of three is a stray one

    def __init__(self, mode: str, patience: int, smoothing: float = 0.0):
        self.mode, self.patience, self.smoothing = mode, patience, smoothing
        self.best: float | None = None
        self.average: float | None = None
        self.recent: list[float] = []  # the last three values (smoothing > 0)
        self.stray: float | None = None  # the median of three the last value was a stray one against
        self.best_epoch, self.bad_epochs = 0, 0

    def update(self, value: float, epoch: int) -> bool:
        """Records an epoch's value; True when the average is the best so far (a NaN leaves it as it was
        and is never best)."""
        if math.isnan(value):
            self.bad_epochs += 1
            return False
        s, last, stray = self.smoothing, self.average, False
        if s:
            self.recent = [*self.recent[-2:], value]
            median = sorted(self.recent)[1] if len(self.recent) == 3 else value
            stray = median > 0 and (value > self.STRAY * median if self.mode == "min" else value < median / self.STRAY)
            value, self.stray = median, median if stray else None
        average = self.average = value if last is None else s * last + (1 - s) * value
        better = self.best is None or (average < self.best if self.mode == "min" else average > self.best)
        if better and not stray:
            self.best, self.best_epoch, self.bad_epochs = average, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("best", "average", "recent", "best_epoch", "bad_epochs")}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.average, self.recent = state["best"], state["average"], state.get("recent", [])
        self.best_epoch, self.bad_epochs = state["best_epoch"], state["bad_epochs"]


def relative_loss(stats: Mapping[str, float], reference: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """The outputs' validation errors, each over its own at the first validation, averaged with the
    outputs' weights: 1.0 at the first validation, lower as every output improves, no output's
    scale deciding for the others. An output's error is its loss, a mask's 1 - its dice, what
    evaluate scores (its loss keeps falling after the thresholded masks stop improving:
    docs/large-images.md, "The saved epoch"); a mask whose first validation scored dice 1 (no
    foreground, none predicted), or a reference without the dice (an earlier version's
    checkpoint), keeps its loss."""

    def error(figures: Mapping[str, float], name: str) -> float:
        by_dice = reference.get(f"{name}/dice", 1.0) < 1
        return 1 - figures[f"{name}/dice"] if by_dice else figures[f"{name}/loss"]

    total = sum(weights.values())
    return sum(w * error(stats, n) / max(error(reference, n), 1e-12) for n, w in weights.items()) / total
