"""The training budget that goes with the proposed batch: the batch itself (the params' own,
where the learning rate is tuned, unless memory forces a smaller one or a GPU makes a larger
one cheap), the learning rate that fits it, and `train.patches_per_epoch` (patch mode) or
`train.epochs` (whole images) so that the run takes a sensible number of optimiser steps: the
params' own count (times the batch's shrinking, for as many patches), kept within STEPS.
nnU-Net fixes its iterations per epoch (250) and epochs (1000) for the same reason: a larger
batch must not mean fewer steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cnn_factory.config import TrainConfig

# optimiser steps a proposed run takes: at least nnU-Net's one epoch (fewer leave Adam and the
# schedule little room: 60 steps instead of 480 cost 0.02 dice on microscopy patches), at most
# what a CPU trains in about an hour at the sizes `plan` proposes there
STEPS = (250, 4000)


@dataclass(frozen=True, kw_only=True)
class Training:
    """What the params say about the run the plan is for."""

    train: TrainConfig
    rows: int  # training rows: the split's share of the CSV
    val: int  # validation rows
    patch: Sequence[int] | None = None  # the params' patch (patch mode): on a CPU no side is proposed larger


def optimiser_steps(items: int, batch: int, train: TrainConfig) -> int:
    """Optimiser steps in an epoch of `items` (each seen 1 + num_augs times), as the train stage counts them."""
    return math.ceil(math.ceil(items * (1 + train.num_augs) / batch) / train.accumulate)


def budget_rows(memory: tuple, training: Training, patched: bool, gpu: bool) -> tuple[list[tuple], int]:
    """(params key, value, reason) rows for the batch, the learning rate and the steps; and the
    items (patches or rows) of a proposed epoch. `memory`: the batch row of the memory budget."""
    t = training.train
    batch, why = batch_choice(memory[1], t.batch_size, gpu)
    rows = [("train.batch_size", batch, f"{memory[2]}; {why}"), lr_row(t, batch)]
    items = (t.patches_per_epoch if patched else None) or training.rows  # patches (else one a training row) or rows
    before = t.epochs * optimiser_steps(items, t.batch_size, t)
    # a larger batch keeps the steps (more patches, about the same time on a GPU); a smaller one
    # keeps the patches (the same time on a CPU), in more steps
    wanted = before * max(1.0, t.batch_size / batch)
    target = round(min(max(wanted, STEPS[0]), STEPS[1]))
    said = f"the params' {before} optimiser steps at batch {t.batch_size}"
    said += f", times {t.batch_size}/{batch} for as many patches" if batch < t.batch_size else ""
    said += f", brought into {STEPS[0]}-{STEPS[1]}" if target != round(wanted) else ""
    if patched:  # the steps per epoch from the patches an epoch draws
        per_epoch = times(target, t.epochs)
        patches = math.ceil(per_epoch * batch * t.accumulate / (1 + t.num_augs))
        steps = t.epochs * optimiser_steps(patches, batch, t)
        why = f"{t.epochs} epochs x {patches} patches: {steps} steps of {batch}"
        return [*rows, ("train.patches_per_epoch", patches, f"{why}, as {said}")], patches
    per_epoch = optimiser_steps(training.rows, batch, t)  # an epoch is the training rows
    epochs = times(target, per_epoch)
    why = f"{epochs} epochs of {per_epoch} steps of {batch} ({training.rows} rows): {epochs * per_epoch} steps"
    return [*rows, ("train.epochs", epochs, f"{why}, as {said}")], training.rows


def times(target: int, each: int) -> int:
    """How many of `each` steps come nearest `target` with their product in STEPS (at least one)."""
    return min(max(round(target / each), math.ceil(STEPS[0] / each)), max(STEPS[1] // each, 1))


def batch_choice(fits: int, tuned: int, gpu: bool) -> tuple[int, str]:
    """The params' batch where the memory holds it: on a CPU a step's time grows with its batch,
    so a larger one buys no speed; on a GPU a larger batch costs little more a step."""
    if fits < tuned:
        return fits, f"under the params' {tuned}: lr follows it"
    if gpu and fits > tuned:
        return fits, f"{fits} fit the memory budget, and on a GPU a larger batch usually costs little more a step"
    why = f"the params' batch, where their lr is tuned ({fits} would fit"
    return tuned, why + (
        "; on a CPU a larger batch costs as much more a step and only takes steps away)" if fits > tuned else ")"
    )


def lr_row(train: TrainConfig, batch: int) -> tuple:
    """The learning rate for `batch`: the params' at their batch, scaled by the batch ratio for SGD
    (the linear rule) and by its square root for the adaptive optimisers (Adam's rule)."""
    if batch == train.batch_size:
        return ("train.lr", train.lr, f"the params' lr, tuned at batch {train.batch_size}")
    power, rule = (1.0, "linear, SGD's rule") if train.optimizer == "sgd" else (0.5, "square root, Adam's rule")
    lr = float(f"{train.lr * (batch / train.batch_size) ** power:.3g}")
    return ("train.lr", lr, f"the params' {train.lr:g} at batch {train.batch_size}, scaled to batch {batch} ({rule})")
