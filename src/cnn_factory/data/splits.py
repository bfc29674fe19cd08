"""Which split each CSV row belongs to: from `data.split.column`, or drawn at random (seeded) by
the fractions `data.split.val` and `data.split.test`, keeping together the rows that share a
`data.split.group` value (a patient's images) and following the class shares of a
`data.split.stratify` column in every split.

    splits = assign_splits(table, cfg.data)     # ["train", "val", "test", "train", ...]
    split_report(table, cfg.data, splits)        # rows, groups and class counts per split

Drawn without group or stratify, a split is a seeded permutation cut at the fractions, as it
always was (the same seed, the same rows). With `stratify` alone each class is cut so, within one
row of its share in every split (`_quotas`); with `group`, whole groups are dealt out
(`deal_groups`): the shares are then as close as the groups' sizes allow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from cnn_factory.config import SPLITS, DataConfig
from cnn_factory.data.table import Table
from cnn_factory.errors import UserError


def assign_splits(table: Table, data: DataConfig) -> list[str]:
    """train/val/test per row, from data.split.column or drawn (see the module's docstring)."""
    names = drawn_splits(table, data)
    for name in SPLITS:
        if name not in names:
            raise UserError(f"{table.path}: the {name} split is empty ({_why_empty(table, data, name)}); {_fix(data)}")
    return names


def drawn_splits(table: Table, data: DataConfig) -> list[str]:
    """assign_splits' names, before its check that no split is empty (folds hold out its test split)."""
    split = data.split
    if split.column:
        names = from_column(table, split.column)
    elif split.group:
        names = _by_groups(table, data)
    elif split.stratify:
        names = _stratified(cells(table, split.stratify, "data.split.stratify"), data)
    else:
        n = len(table.rows)
        n_val, n_test = round(n * split.val), round(n * split.test)
        order = np.random.default_rng(split.seed).permutation(n)
        names = ["train"] * n
        for k, i in enumerate(order):
            names[i] = "val" if k < n_val else "test" if k < n_val + n_test else "train"
    return names


def from_column(table: Table, column: str) -> list[str]:
    names, problems = [], []
    for i, row in enumerate(table.rows):
        value = row[column].lower()
        if value not in SPLITS:
            problems.append(f"{table.where(i, column)}: unknown split {row[column]!r}; expected train, val or test")
        names.append(value)
    if problems:
        raise UserError("\n".join(problems))
    return names


def cells(table: Table, column: str, key: str) -> list[str]:
    """A group or stratify column's cells; every row needs one."""
    problems = [
        f"{table.where(i, column)}: empty; every row needs a value in the {key} column"
        for i, row in enumerate(table.rows)
        if not row[column]
    ]
    if problems:
        raise UserError("\n".join(problems))
    return [row[column] for row in table.rows]


def _targets(n: int, data: DataConfig) -> dict[str, int]:
    val, test = round(n * data.split.val), round(n * data.split.test)
    return {"val": val, "test": test, "train": n - val - test}


def _stratified(classes: list[str], data: DataConfig) -> list[str]:
    """Each class's rows, in one seeded shuffle, cut at the fractions (`_quotas`)."""
    n = len(classes)
    order = np.random.default_rng(data.split.seed).permutation(n).tolist()
    rows_of = {c: [i for i in order if classes[i] == c] for c in sorted(set(classes))}
    names, used = ["train"] * n, dict.fromkeys(rows_of, 0)
    for split in ("val", "test"):
        left = {c: len(rows) - used[c] for c, rows in rows_of.items()}
        for c, k in _quotas({c: len(r) for c, r in rows_of.items()}, left, _targets(n, data)[split]).items():
            for i in rows_of[c][used[c] : used[c] + k]:
                names[i] = split
            used[c] += k
    return names


def _quotas(counts: dict[str, int], left: dict[str, int], share: int) -> dict[str, int]:
    """Rows of each class for a split of `share` rows: each class's exact share (of its rows in
    the whole table) rounded down, then one more for the largest remainders (ties: the larger
    class) until the split has `share` rows; never more than a class has left."""
    n = sum(counts.values())
    exact = {c: m * share / n for c, m in counts.items()}
    quota = {c: min(int(e), left[c]) for c, e in exact.items()}
    for c in sorted(counts, key=lambda c: (-(exact[c] - int(exact[c])), -counts[c], c)):
        if sum(quota.values()) >= share:
            break
        if quota[c] < left[c]:
            quota[c] += 1
    return quota


def _by_groups(table: Table, data: DataConfig) -> list[str]:
    """Whole groups dealt out, largest first, each to the split furthest below its target."""
    groups = cells(table, data.split.group or "", "data.split.group")
    stratify = data.split.stratify
    classes = cells(table, stratify, "data.split.stratify") if stratify else ["all"] * len(groups)
    val, test = data.split.val, data.split.test  # filled in this order: ties go to the split named first
    return deal_groups(groups, classes, {"val": val, "test": test, "train": 1 - val - test}, data.split.seed)


def deal_groups(groups: list[str], classes: list[str], fractions: dict[str, float], seed: int) -> list[str]:
    """Each row's part (a split, or a fold): whole groups dealt out, largest first (shuffled by the
    seed among equal sizes), each to the part furthest below its share of the group's class (its
    rows' most common one), then of all rows. Parts of no share get no group; ties go to the part
    named first."""
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    n, counts = len(groups), Counter(classes)
    parts = [s for s, f in fractions.items() if f > 0]
    filled: dict[str, Counter[str]] = {s: Counter() for s in parts}
    totals = dict.fromkeys(parts, 0)
    shuffled = [list(members)[k] for k in np.random.default_rng(seed).permutation(len(members))]
    names = [parts[-1]] * n
    for g in sorted(shuffled, key=lambda g: -len(members[g])):  # stable: the shuffle breaks ties
        c = Counter(classes[i] for i in members[g]).most_common(1)[0][0]

        def deficit(s: str, c: str = c) -> tuple[float, float]:
            return counts[c] * fractions[s] - filled[s][c], n * fractions[s] - totals[s]

        best = max(parts, key=deficit)
        for i in members[g]:
            names[i] = best
            filled[best][classes[i]] += 1
        totals[best] += len(members[g])
    return names


def _why_empty(table: Table, data: DataConfig, name: str) -> str:
    split, n = data.split, len(table.rows)
    if split.column:
        return f"column '{split.column}' names no {name} row"
    if split.group:
        groups = len({row[split.group] for row in table.rows})
        return f"{groups} groups in column '{split.group}' for {n} rows: too few, or too unequal, to fill every split"
    return f"data.split fractions leave it empty with {n} rows"


def _fix(data: DataConfig) -> str:
    return "add rows or groups, or raise data.split.val / test" if data.split.group else "add rows or change data.split"


def split_report(table: Table, data: DataConfig, splits: list[str], parts: Sequence[str] = SPLITS) -> dict:
    """What the manifest records of a group or stratify split: groups and class counts per split,
    or per fold and the test split with `parts` (empty without either)."""
    report: dict = {}
    if column := data.split.group:
        report["group"] = column
        report["groups"] = {s: len({r[column] for r, t in zip(table.rows, splits) if t == s}) for s in parts}
    if column := data.split.stratify:
        report["stratify"] = column
        report["classes"] = {
            s: dict(sorted(Counter(r[column] for r, t in zip(table.rows, splits) if t == s).items())) for s in parts
        }
    return report
