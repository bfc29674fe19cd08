"""Whether to cross-validate: `cnn-factory plan` proposes K folds for a small table, with the reason
and what the K trainings cost against the single split's one.

    lines = folds_lines(rows=120, split=cfg.data.split, seconds=600, test=18)   # [] for a large table or folds set

Under SMALL rows the test split holds a few dozen images at most, so its figures' intervals are
wide and move with the split's seed; K folds score every image outside the test split once (and
their ensemble predicts). Fold k trains on (K-1)/K of those rows where the single split trains on
its train rows, and validates on the other 1/K: each fold's run costs about the single split's
times that ratio of training rows, K of them in all.
"""

from __future__ import annotations

from cnn_factory.config import SplitConfig

SMALL = 300  # rows under which one held-out split is too few images to compare runs by
FOLDS = 5  # nnU-Net's number: each fold trains on 80% of the rows outside the test split


def fold_cost(split: SplitConfig, folds: int = FOLDS) -> float:
    """K folds' training time as a multiple of the single split's training (the rows each trains on)."""
    single = 1 - split.val - split.test
    each = (1 - split.test) * (folds - 1) / folds
    return folds * each / single


def group_lines(rows: int, split: SplitConfig, owners: dict[str, int]) -> list[str]:
    """A note per column that names whose image a row is and repeats, while no group is set: rows of
    one patient in two splits let the test figures score images like those trained on."""
    if split.group or split.column:
        return []
    return [
        f"  note: column '{column}' repeats its values ({rows} rows, {distinct} values): if it says whose image "
        f"a row is, set data.split.group: {column}, so that rows sharing a value stay in one split (none both "
        "trained on and tested on) and the intervals resample them whole (docs/small-data.md)"
        for column, distinct in owners.items()
    ]


def folds_lines(rows: int, split: SplitConfig, seconds: float | None = None, test: int | None = None) -> list[str]:
    """The proposal's lines: none when the table is large, or folds or a split column are set.
    `test`: the rows of the test split as prepare draws it (by default, rows x its fraction)."""
    if rows >= SMALL or split.folds or split.column:
        return []
    test = round(rows * split.test) if test is None else test
    pool = rows - test
    cost = fold_cost(split)
    took = f": ~{seconds * cost / 60:.0f} min here" if seconds else ""
    return [
        f"  note: {rows} rows: a test split of {test} images leaves its figures wide intervals; cross-validation "
        f"scores all {pool} others once. Set data.split.folds: {FOLDS}, run `cnn-factory folds`, then "
        "`dvc repro folds/dvc.yaml` (docs/small-data.md)",
        f"  note: {FOLDS} folds train {FOLDS} models on ~{round(pool * (FOLDS - 1) / FOLDS)} rows each: "
        f"{cost:.1f}x the single split's training{took}",
    ]
