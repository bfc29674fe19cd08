"""Optimisers by name, learning-rate schedules with warm-up, early stopping."""

from __future__ import annotations

import math

import pytest
import torch

from cnn_factory.config import OPTIMIZERS, SCHEDULERS
from cnn_factory.training.optim import EarlyStopping, Schedule, make_optimizer


def _params():
    return [torch.nn.Parameter(torch.ones(2))]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_steps(name):
    params = _params()
    optimizer = make_optimizer(name, params, lr=0.1, momentum=0.9, weight_decay=0.01)
    params[0].sum().backward()
    optimizer.step()
    assert not torch.equal(params[0].detach(), torch.ones(2))


def _lrs(name: str, epochs: int = 6, steps: int = 2, warmup: int = 0, metrics=None) -> list[float]:
    optimizer = make_optimizer("sgd", _params(), lr=1.0, momentum=0.0, weight_decay=0.0)
    schedule = Schedule(
        name, optimizer, lr=1.0, epochs=epochs, steps_per_epoch=steps, step_epochs=2, warmup_epochs=warmup
    )
    lrs = []
    for epoch in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        for _ in range(steps):
            optimizer.step()
            schedule.batch_end()
        schedule.epoch_end(metrics[epoch] if metrics else 0.0)
    return lrs


def test_step_halves_every_step_epochs():
    assert _lrs("step") == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_cosine_decays_to_zero():
    lrs = _lrs("cosine", epochs=4)
    assert lrs == pytest.approx([0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)])


def test_linear_warmup_then_schedule():
    assert _lrs("none", warmup=2)[:3] == pytest.approx([0.1, 0.55, 1.0])


def test_plateau_halves_after_patience():
    lrs = _lrs("plateau", epochs=7, metrics=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert lrs[0] == 1.0 and lrs[-1] < 1.0  # no improvement for more than step_epochs epochs


def test_plateau_patience_counts_validations_only():
    # step_epochs 2: halves after the 3rd value without improvement; None: an epoch not validated
    assert _lrs("plateau", epochs=9, metrics=[1.0] * 9)[4] == 0.5
    lrs = _lrs("plateau", epochs=9, metrics=[1.0, None] * 4 + [1.0])
    assert lrs[:7] == [1.0] * 7 and lrs[7] == 0.5


def test_onecycle_steps_per_batch():
    lrs = _lrs("onecycle", epochs=4, steps=5)
    assert max(lrs) <= 1.0 and lrs[0] < lrs[1]  # rises from a small start towards the peak


@pytest.mark.parametrize("name", SCHEDULERS)
def test_schedule_state_round_trips(name):
    optimizer = make_optimizer("adam", _params(), lr=1.0, momentum=0.9, weight_decay=0.0)
    a = Schedule(name, optimizer, 1.0, 5, 3, 2, warmup_epochs=1)
    for _ in range(2):
        optimizer.step()
        a.batch_end()
        a.epoch_end(1.0)
    b = Schedule(name, optimizer, 1.0, 5, 3, 2, warmup_epochs=1)
    b.load_state_dict(a.state_dict())
    assert b.state_dict()["epoch"] == 2


def test_early_stopping_min_and_max():
    es = EarlyStopping("min", patience=2)
    assert es.update(1.0, 1) and not es.update(1.5, 2) and not es.stop
    assert not es.update(float("nan"), 3) and es.stop and es.best_epoch == 1
    es = EarlyStopping("max", patience=0)
    assert es.update(0.5, 1) and es.update(0.7, 2) and not es.update(0.6, 3)
    assert es.best == 0.7 and not es.stop  # patience 0: never stops


def test_early_stopping_saves_by_the_moving_average_not_a_single_lucky_validation():
    values = [1.0, 0.5, 0.2, 0.45, 0.4, 0.35, 0.3, 0.28, 0.27, 0.26, 0.25]  # a dip at epoch 3, then steady gains
    raw, smoothed = EarlyStopping("min", 0), EarlyStopping("min", 0, smoothing=0.5)
    for epoch, value in enumerate(values, 1):
        raw.update(value, epoch)
        smoothed.update(value, epoch)
    assert raw.best_epoch == 3 and raw.best == 0.2
    assert smoothed.best_epoch == len(values) and smoothed.best == pytest.approx(0.27576, abs=1e-5)
    nan = EarlyStopping("max", 1, smoothing=0.9)
    assert nan.update(0.5, 1) and not nan.update(float("nan"), 2) and nan.average == 0.5 and nan.stop
    resumed = EarlyStopping("max", 1, smoothing=0.9)
    resumed.load_state_dict(nan.state_dict())
    assert resumed.update(0.6, 3) and resumed.best == pytest.approx(0.51)


def test_one_stray_validation_does_not_hold_the_saved_epoch_back():
    """A number's loss 20 times its usual at one validation lifted a plain moving average for the
    rest of the run: the median of three keeps it out, and its epoch is never the one saved."""
    values = [1.0, 0.6, 0.5, 0.45, 0.42, 0.4, 8.0, 0.38, 0.37, 0.36, 0.35, 0.34, 0.33, 0.33, 0.32]
    plain, average, best = None, None, 0
    for epoch, value in enumerate(values, 1):  # the moving average without the median, by hand
        plain = value if plain is None else 0.9 * plain + 0.1 * value
        best, average = (epoch, plain) if average is None or plain < average else (best, average)
    assert best == 6  # the epoch before the stray one: the later gains never made up for it
    es = EarlyStopping("min", 0, smoothing=0.9)
    for epoch, value in enumerate(values, 1):
        es.update(value, epoch)
    assert es.best_epoch == len(values)
    last = EarlyStopping("min", 0, smoothing=0.9)  # a stray one is never saved: its weights gave it
    for epoch, value in enumerate([*values[:6], 8.0], 1):
        assert last.update(value, epoch) == (epoch < 7)
    assert last.best_epoch == 6 and last.average < last.best  # its median, 0.42, lowered the average
    assert last.stray == pytest.approx(0.42)  # what train's line says it was a stray one against
    two = EarlyStopping("min", 2, smoothing=0.5)  # two in a row are the run's: they lift the average
    for epoch, value in enumerate([1.0, 0.5, 0.4, 8.0, 9.0, 0.3], 1):
        two.update(value, epoch)
    assert two.best_epoch == 3 and two.stop and two.average > 4
    high = EarlyStopping("max", 0, smoothing=0.9)  # mode max: a value under half the median is stray
    assert [high.update(v, e) for e, v in enumerate([0.3, 0.6, 0.8, 0.2], 1)] == [True, True, True, False]
