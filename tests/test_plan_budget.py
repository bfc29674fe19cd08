"""`cnn-factory plan`'s training budget: the batch, its learning rate and the steps that go with
it (plan/budget.py), the time it expects (plan/timing.py), and the `-S` line as DVC applies it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from dvc.utils.hydra import apply_overrides

from benchmarks.cells import make_cells
from cnn_factory.config import load_params, parse_params
from cnn_factory.plan import run_plan
from cnn_factory.plan.budget import STEPS, Training
from cnn_factory.plan.fingerprint import Fingerprint, Grids, Masks
from cnn_factory.plan.propose import propose
from cnn_factory.plan.timing import work
from tests.conftest import ROOT, cell_params

MASK = {"m": type("Mask", (), {"spatial": True})()}
TRAIN = load_params(ROOT / "params.yaml").train  # epochs 30, batch 16, Adam at 0.003


def _fingerprint(shape: tuple[int, ...], spacing: tuple[float, ...], rows: int = 100) -> Fingerprint:
    shapes = np.full((10, len(shape)), shape)
    return Fingerprint(
        rows=rows,
        read=10,
        channels=1,
        grids=Grids.of(shapes, np.full(shapes.shape, spacing)),
        intensity=(0.0, 128.0, 255.0),
        masks=Masks(foreground={"m": 0.01}, objects={"m": 10.0}),
    )


def run_steps(rows: dict, training: Training) -> int:
    """Optimiser steps of the proposed run, as the train stage counts them."""
    t = training.train.model_copy(update={k.split(".")[1]: v for k, v in rows.items() if k.startswith("train.")})
    patched = rows.get("inputs.*.mode", "patch") == "patch"
    items = (t.patches_per_epoch if patched else None) or training.rows
    return t.epochs * math.ceil(math.ceil(items * (1 + t.num_augs) / t.batch_size) / t.accumulate)


SHAPES = [((1024, 1024), (1.0, 1.0)), ((48, 48), (1.0, 1.0)), ((60, 256, 256), (3.0, 0.8, 0.8))]
TRAINS = [  # params.yaml's; a hand-written patch run; one of few steps; one of very many; SGD, accumulated
    {},
    {"epochs": 30, "batch_size": 8, "patches_per_epoch": 128},
    {"epochs": 2, "batch_size": 64, "patches_per_epoch": 64},
    {"epochs": 400, "batch_size": 2, "patches_per_epoch": 512},
    {"optimizer": "sgd", "accumulate": 2, "batch_size": 4},
]


@pytest.mark.parametrize("shape, spacing", SHAPES)
@pytest.mark.parametrize("changes", TRAINS)
def test_the_steps_stay_in_range_whatever_the_budget(shape, spacing, changes):
    """From a hundredth of a GiB to a GPU's 64, the proposed run takes STEPS[0] to STEPS[1]
    optimiser steps: the params' own count where it lies in that range, more where memory forces
    a smaller batch (as many patches), never fewer for a larger one."""
    training = Training(train=TRAIN.model_copy(update=changes), rows=70, val=15)
    t = training.train
    asked = t.epochs * math.ceil(math.ceil((t.patches_per_epoch or 70) / t.batch_size) / t.accumulate)
    for gib in (0.01, 0.5, 4, 16, 64):
        rows = {k: v for k, v, _ in propose(_fingerprint(shape, spacing), gib * 2**30, MASK, training=training)}
        steps = run_steps(rows, training)
        assert STEPS[0] <= steps <= STEPS[1], (gib, rows)
        batch = rows["train.batch_size"]
        wanted = asked * max(1, t.batch_size / batch)  # a smaller batch: as many patches in more steps
        if STEPS[0] <= wanted <= STEPS[1] and rows.get("inputs.*.mode") != "resize":
            assert abs(steps - wanted) <= t.epochs, (gib, steps, asked)  # a larger batch is not fewer steps
        ratio = batch / t.batch_size
        power = 1.0 if t.optimizer == "sgd" else 0.5
        assert rows["train.lr"] == pytest.approx(t.lr * ratio**power, rel=0.03)


def test_a_cpu_keeps_the_params_batch_and_a_gpu_scales_the_rate():
    """The issue a memory-sized batch makes: 64 patches a step left 60 steps of a 480-step run."""
    fp = _fingerprint((512, 512), (1.0, 1.0), rows=40)
    training = Training(train=TRAIN.model_copy(update={"batch_size": 8, "patches_per_epoch": 128}), rows=28, val=6)
    cpu = {k: (v, why) for k, v, why in propose(fp, 6 * 2**30, MASK, training=training)}
    assert cpu["train.batch_size"][0] == 8 and "64 would fit" in cpu["train.batch_size"][1]
    assert cpu["train.lr"][0] == 0.003 and cpu["train.patches_per_epoch"][0] == 128
    gpu = {k: (v, why) for k, v, why in propose(fp, 48 * 2**30, MASK, training=training)}
    batch = gpu["train.batch_size"][0]
    assert batch > 8 and gpu["train.patches_per_epoch"][0] == 128 * batch // 8  # 480 steps still
    assert gpu["train.lr"][0] == pytest.approx(0.003 * (batch / 8) ** 0.5, rel=0.03)
    assert "square root, Adam's rule" in gpu["train.lr"][1]
    tight = {k: v for k, v, _ in propose(fp, 0.05 * 2**30, MASK, training=training)}
    assert tight["train.batch_size"] < 8 and run_steps(tight, training) == 480 * 8 // tight["train.batch_size"]


def test_on_a_cpu_no_side_of_the_patch_is_larger_than_the_params():
    """The volume example's case: the whole median scan (24x48x48) against the params' 16x32x32.
    On a CPU a step's time follows the patch's voxels, so the plan keeps the params' sides (and
    their steps); a GPU-sized budget, or params without a patch, get the whole scan."""
    fp = _fingerprint((24, 48, 48), (3.0, 1.0, 1.0), rows=60)
    changes = {"epochs": 30, "batch_size": 8, "patches_per_epoch": 96}
    training = Training(train=TRAIN.model_copy(update=changes), rows=42, val=9, patch=(16, 32, 32))
    cpu = {k: (v, why) for k, v, why in propose(fp, 6 * 2**30, MASK, training=training)}
    assert cpu["inputs.*.size"][0] == [16, 32, 32] and "no side over the params' 16x32x32" in cpu["inputs.*.size"][1]
    assert cpu["train.batch_size"][0] == 8 and run_steps({k: v for k, (v, _) in cpu.items()}, training) == 360
    gpu = {k: v for k, v, _ in propose(fp, 48 * 2**30, MASK, training=training)}
    assert gpu["inputs.*.size"] == [24, 48, 48]
    unknown = Training(train=training.train, rows=42, val=9)
    assert {k: v for k, v, _ in propose(fp, 6 * 2**30, MASK, training=unknown)}["inputs.*.size"] == [24, 48, 48]
    smaller = Training(train=training.train, rows=42, val=9, patch=(32, 64, 64))  # a proposal under the params' stays
    assert {k: v for k, v, _ in propose(fp, 6 * 2**30, MASK, training=smaller)}["inputs.*.size"] == [24, 48, 48]


def test_whole_images_get_epochs_for_their_steps():
    """Resize mode: an epoch is the training rows, so the steps come from the number of epochs."""
    fp = _fingerprint((48, 48), (1.0, 1.0), rows=60)
    training = Training(train=TRAIN.model_copy(update={"epochs": 5}), rows=42, val=9)  # 5 x 3 = 15 steps
    rows = {k: (v, why) for k, v, why in propose(fp, 2**30, MASK, training=training)}
    assert rows["inputs.*.mode"][0] == "resize" and "patches_per_epoch" not in str(rows)
    assert rows["train.epochs"][0] == math.ceil(STEPS[0] / 3) and "brought into" in rows["train.epochs"][1]


def test_the_run_is_counted_as_the_train_stage_runs_it(tmp_path):
    cfg = parse_params(cell_params(tmp_path, epochs=10, patches_per_epoch=40, val_patches=8, val_every=3))
    run = work(cfg, train_rows=20, val_rows=4, windows=6.0)
    assert run.steps == 10 * 10 and run.epochs == 10  # batch 4
    # validations at epochs 3, 6, 9 and the last: 8 patches and 4 views each; then 4 whole images of 6 windows
    assert run.forwards == 4 * (8 + 4) + 4 * 6


@pytest.mark.slow
def test_the_dvc_line_applies_cleanly_and_its_keys_validate(tmp_path):
    """The printed `-S` line through DVC's own override parser (what `dvc exp run -S` calls) on
    the params file: every key exists there, and the result is valid params."""
    make_cells(tmp_path / "cells", rows=12, sizes=(300, 360), seed=0)
    params = cell_params(tmp_path / "cells", size=[96, 96], epochs=30, patches_per_epoch=128)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    text = run_plan(parse_params(params), 6, 4)
    line = text.splitlines()[-1]
    assert "expected: the train stage ~" in text and "steps of" in text
    sets = [s for s in line.removeprefix("dvc exp run ").split(" -S ") if s]
    sets[0] = sets[0].removeprefix("-S ")
    keys = [s.split("=")[0] for s in sets]
    assert {"train.batch_size", "train.lr", "train.patches_per_epoch"} <= set(keys)
    apply_overrides(tmp_path / "params.yaml", sets)
    cfg = load_params(tmp_path / "params.yaml")
    for key, value in (s.split("=", 1) for s in sets):
        section, *path, last = key.split(".")
        where = getattr(cfg, section)
        for part in path:
            where = where[part]
        got = getattr(where, last)
        assert (list(got) if isinstance(got, tuple) else got) == yaml.safe_load(value), key
