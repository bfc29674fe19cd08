"""Bootstrap confidence intervals over test images (percentile method).

The test images are resampled with replacement `resamples` times (a seeded generator: the same
seed gives the same intervals); each figure is recomputed on every resample by the same function
that computed it on the test set, and its 2.5th and 97.5th percentiles bound the 95% interval.
A resample on which a figure is undefined (e.g. ROC AUC with one class drawn) is left out.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Columns = dict[str, np.ndarray]  # per-image values, one row per image (2-D for e.g. class probabilities)


def intervals(
    columns: Columns,
    summarise: Callable[[Columns], dict[str, float]],
    names: tuple[str, ...],
    resamples: int,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """{name: (low, high)} for each of `names` that summarise() returns; empty with no images or resamples."""
    n = len(next(iter(columns.values()))) if columns else 0
    if not n or resamples <= 0:
        return {}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        figures = summarise({k: v[idx] for k, v in columns.items()})
        for name in names:
            if name in figures:
                draws[name].append(figures[name])
    tail = (1 - level) / 2 * 100
    result = {}
    for name, values in draws.items():
        finite = np.asarray(values, np.float64)
        finite = finite[np.isfinite(finite)]
        if len(finite):
            low, high = np.percentile(finite, [tail, 100 - tail])
            result[name] = (float(low), float(high))
    return result
