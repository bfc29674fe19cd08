"""Bootstrap confidence intervals over test images (percentile method).

The test images are resampled with replacement `resamples` times (a seeded generator: the same
seed gives the same intervals); each figure is recomputed on every resample by the same function
that computed it on the test set, and its 2.5th and 97.5th percentiles bound the 95% interval.
A resample on which a figure is undefined (e.g. ROC AUC with one class drawn) is left out.
`cnn-factory compare` draws the same resamples (`resample_indices`) for two runs' scores of the
same images: the interval of the difference between them (a paired bootstrap).

With `groups` (each image's group: its patient, from `data.split.group`) whole groups are drawn
instead, as many as there are groups (a cluster bootstrap): a patient's images resemble each
other, so they are one draw, not several independent ones, and the intervals widen to match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Columns = dict[str, np.ndarray]  # per-image values, one row per image (2-D for e.g. class probabilities)
Resamples = np.ndarray | list[np.ndarray]  # (resamples, n) row indices; by groups, a list of index arrays


def intervals(
    columns: Columns,
    summarise: Callable[[Columns], dict[str, float]],
    names: tuple[str, ...],
    resamples: int,
    seed: int = 0,
    groups: Sequence[str] | None = None,
) -> dict[str, tuple[float, float]]:
    """{name: (low, high)}, the 95% interval of each of `names` that summarise() returns; empty with
    no images or resamples. `groups`: each image's group, drawn whole (see the module's docstring)."""
    n = len(next(iter(columns.values()))) if columns else 0
    draws: dict[str, list[float]] = {name: [] for name in names}
    for idx in resample_indices(n, resamples, seed, groups):
        figures = summarise({k: v[idx] for k, v in columns.items()})
        for name in names:
            if name in figures:
                draws[name].append(figures[name])
    return {name: bounds for name, values in draws.items() if (bounds := percentile_bounds(values))}


def resample_indices(n: int, resamples: int, seed: int = 0, groups: Sequence[str] | None = None) -> Resamples:
    """(resamples, n) row indices drawn with replacement from a generator seeded with `seed`, the same
    for every figure and run (the module's docstring says why); empty with no images or resamples.
    With `groups` (one per row), a list of index arrays: each the rows of as many groups as there
    are, drawn with replacement (groups in the order they first appear: one row each draws as none)."""
    if n <= 0 or resamples <= 0:
        return np.zeros((0, max(n, 0)), np.int64)
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.integers(0, n, (resamples, n))
    labels = np.asarray(groups)
    members = [np.flatnonzero(labels == g) for g in dict.fromkeys(groups)]  # in the order they first appear
    drawn = rng.integers(0, len(members), (resamples, len(members)))  # each resample: as many groups as there are
    return [np.concatenate([members[k] for k in row]) for row in drawn]


def percentile_bounds(values, level: float = 0.95) -> tuple[float, float] | None:
    """The central `level` percentile interval of the finite values; None when there are none."""
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    if not len(finite):
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)
