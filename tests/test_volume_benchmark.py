"""benchmarks/volumes.py's paired comparison of two tools on the same test scans."""

from __future__ import annotations

import numpy as np

from benchmarks.volumes import paired_dice


def scans(tp: list[float], truth: list[float], pred: list[float], names: list[str]) -> list[dict]:
    return [{"image": n, "tp": a, "truth_px": b, "pred_px": c} for n, a, b, c in zip(names, tp, truth, pred)]


def test_paired_dice_pairs_scans_by_name_and_bounds_the_difference():
    names = [f"images/{i:04d}.nii.gz" for i in range(12)]
    rng = np.random.default_rng(1)
    truth = rng.integers(500, 3000, 12).astype(float)
    theirs = scans(list(0.90 * truth), list(truth), list(truth), names)
    ours = scans(list(0.95 * truth), list(truth), list(truth), names)
    same = paired_dice(ours, ours)
    assert same == (0.0, 0.0, 0.0)
    # the other tool's rows in another order: paired by name, ours 0.05 better on every scan
    difference, low, high = paired_dice(ours, theirs[::-1])
    assert np.isclose(difference, 0.05) and np.isclose(low, 0.05) and np.isclose(high, 0.05)
    # better on half the scans, worse on the other half by as much: an interval around 0
    mixed = scans([t * (0.99 if i % 2 else 0.81) for i, t in enumerate(truth)], list(truth), list(truth), names)
    difference, low, high = paired_dice(mixed, theirs)
    assert low < 0 < high and low < difference < high
