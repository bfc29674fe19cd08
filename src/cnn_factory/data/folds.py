"""The folds of a cross-validation (`data.split.folds: K`): each CSV row's fold, "0" to "K-1", or
"test" for the held-out test split, which stays outside the folds.

    folds = assign_folds(table, cfg.data)          # ["0", "test", "2", "1", ...]
    fold_splits(folds, "1")                        # fold 1's run: ["train", "test", "train", "val", ...]

The test split is the single split's own (the same rows, the same seed), so a single split's
model and the folds' ensemble are scored on the same images. The rest are dealt into K folds,
seeded by `data.split.seed`:
- with `group`, whole groups, largest first, each to the fold furthest below its share
  (`splits.deal_groups`, the split's own rule): no group spans two folds;
- with `stratify` alone, each class's rows, shuffled, dealt round the folds in turn, each class
  starting where the last one stopped: every fold holds each class within one row of its share,
  and the folds' sizes differ by one row at most;
- else the rows, shuffled, dealt round the folds in turn.
Fold k's run trains on the other folds, and picks its epoch on fold k, which it is then scored
on, as nnU-Net's folds do (docs/small-data.md says what that costs).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnn_factory.config import PREPARED, DataConfig
from cnn_factory.data.splits import cells, deal_groups, drawn_splits
from cnn_factory.data.table import Table
from cnn_factory.errors import UserError

TEST = "test"
MODELS = Path("models/folds")  # <k>.pt: each fold's model; together, the folds' ensemble
EVAL = Path("eval/folds")  # <k>/: each fold's out-of-fold report; the aggregate's files; test/: the ensemble's


@dataclass(frozen=True)
class FoldPlaces:
    """Where fold k's run reads and writes (folds/dvc.yaml lists the same paths)."""

    prepared: Path  # data/prepared/folds/<k>: its train (the other folds), val (its own) and test splits
    model: Path  # models/folds/<k>.pt
    live: Path  # dvclive/folds/<k>
    checkpoint: str  # checkpoints/fold-<k>.ckpt
    eval: Path  # eval/folds/<k>: its out-of-fold report


def checked_fold(data: DataConfig, fold: str | None) -> str | None:
    """A stage's --fold, checked against data.split.folds (None: the single split's run)."""
    if fold is not None and fold not in data.split.fold_names:
        raise UserError(
            f"--fold {fold}: not a fold of data.split.folds ({data.split.folds}); run `cnn-factory folds` "
            "to write folds/dvc.yaml for it again"
        )
    return fold


def fold_places(fold: str) -> FoldPlaces:
    return FoldPlaces(
        prepared=PREPARED / "folds" / fold,
        model=MODELS / f"{fold}.pt",
        live=Path("dvclive/folds") / fold,
        checkpoint=f"fold-{fold}",
        eval=EVAL / fold,
    )


def assign_folds(table: Table, data: DataConfig) -> list[str]:
    """Each row's fold name, or "test" (see the module's docstring); UserError where K folds cannot
    all hold a group, a row, or every class of `stratify`."""
    split = data.split
    k = split.folds or 0
    held = [name == TEST for name in drawn_splits(table, data)]  # the test split as without folds
    pool = [i for i in range(len(table.rows)) if not held[i]]
    stratify = split.stratify
    classes = []
    if stratify:
        classes = [c for i, c in enumerate(cells(table, stratify, "data.split.stratify")) if not held[i]]
    if split.group:
        groups = [g for i, g in enumerate(cells(table, split.group, "data.split.group")) if not held[i]]
        if len(set(groups)) < k:
            raise UserError(
                f"data.split.folds: {k} folds, but column '{split.group}' (data.split.group) has "
                f"{len(set(groups))} groups outside the test split; lower data.split.folds to at most that"
            )
    elif len(pool) < k:
        raise UserError(f"data.split.folds: {k} folds, but {len(pool)} rows outside the test split; lower it")
    for name, count in sorted(Counter(classes).items()):
        if count < k:
            raise UserError(
                f"data.split.stratify: class {name!r} of column '{stratify}' has {count} rows outside the test "
                f"split, fewer than data.split.folds ({k}): a fold would lack it; lower data.split.folds or "
                "merge the class into another"
            )
    names = split.fold_names
    rng = np.random.default_rng([split.seed, k])  # a stream of its own: the test split's draw stays as it is
    if split.group:
        dealt = deal_groups(groups, classes or ["all"] * len(pool), dict.fromkeys(names, 1 / k), split.seed)
    else:
        dealt = _round_robin(classes or ["all"] * len(pool), names, rng)
    folds = [TEST] * len(table.rows)
    for i, name in zip(pool, dealt):
        folds[i] = name
    return folds


def _round_robin(classes: list[str], names: list[str], rng: np.random.Generator) -> list[str]:
    """Each class's rows, in one seeded shuffle, dealt round the folds (the module's docstring)."""
    order = rng.permutation(len(classes)).tolist()
    dealt, turn = [names[0]] * len(classes), 0
    for c in sorted(set(classes)):
        for i in (i for i in order if classes[i] == c):
            dealt[i] = names[turn % len(names)]
            turn += 1
    return dealt


def fold_splits(folds: list[str], fold: str) -> list[str]:
    """The train/val/test split of each row in fold `fold`'s run: its fold validates, the others train."""
    return [TEST if f == TEST else "val" if f == fold else "train" for f in folds]
