"""Each run's headline figures recomputed from its per-image table, and their paired differences
from the reference's on the same bootstrap resamples of the same test images."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnn_factory.compare.runs import TABLE, Run, flat_params
from cnn_factory.errors import UserError
from cnn_factory.outputs import Output, Scorer, make_output
from cnn_factory.scores.bootstrap import Resamples, percentile_bounds, resample_indices

LOWER_IS_BETTER = frozenset({"hd95", "mae", "rmse", "ece"})  # every other figure: higher is better


@dataclass
class Figure:
    """One output's headline figure of a run, and its comparison with the reference's."""

    output: str
    figure: str
    value: float
    difference: float | None = None  # paired: run minus reference; unpaired: None
    low: float = math.nan  # the 95% interval: of the difference (paired) or of the value (unpaired)
    high: float = math.nan
    verdict: str = ""  # better | worse | no evidence (paired); better | worse | overlap (unpaired)


def outputs_of(run: Run) -> dict[str, Output]:
    """The run's outputs as its params.yaml defines them; UserError when they do not parse here."""
    try:
        return {n: make_output(n, **d) for n, d in (run.params.get("outputs") or {}).items()}
    except Exception as err:  # pydantic's ValidationError, or a definition of no known kind
        first = str(err).splitlines()[0]
        raise UserError(
            f"{run.name}: its params.yaml outputs do not read with this cnn-factory ({first}): a run of another "
            "pipeline version; compare runs of one version"
        ) from None


def columns_of(run: Run, name: str, output: Output, source: str = TABLE) -> dict[str, np.ndarray]:
    prefix = f"{name}/"
    cells = {k[len(prefix) :]: v for k, v in run.table.items() if k.startswith(prefix)}
    try:
        return Scorer.of(output).table_columns(cells)
    except (KeyError, ValueError) as err:
        raise UserError(
            f"{run.name}: {source} lacks what output {name!r} needs ({type(err).__name__}: {err}): written for "
            "other outputs or by another cnn-factory version; run its evaluate stage again (dvc exp run) to compare it"
        ) from None


def image_keys(run: Run) -> list[tuple[str, str]]:
    """Each test image's identity: its file and CSV row."""
    return list(zip(run.table.get("image", []), run.table.get("csv_row", [])))


def groups_of(run: Run) -> list[str] | None:
    """Each test image's group (`data.split.group`, e.g. its patient), drawn whole by the bootstrap;
    None for a run without groups."""
    return run.table.get("group")


def aligned(run: Run, reference: Run) -> np.ndarray:
    """Row indices of `run`'s table in the reference's order; UserError when the test images differ."""
    mine, theirs = image_keys(run), image_keys(reference)
    if sorted(mine) != sorted(theirs):
        common = len(set(mine) & set(theirs))
        raise UserError(
            f"{run.name} and {reference.name} were scored on different test images ({len(mine)} and {len(theirs)}, "
            f"{common} in common: another split or CSV), so they cannot be paired; --unpaired compares their "
            "intervals only"
        )
    where = {key: i for i, key in enumerate(mine)}
    return np.asarray([where[key] for key in theirs], np.int64)


@dataclass
class Scores:
    """One run's per-image scores of one output (`summarise`'s columns), rows in a fixed image order."""

    scorer: Scorer
    columns: dict[str, np.ndarray]

    def figure(self, name: str) -> float:
        return self.scorer.summarise(self.columns).get(name, math.nan)

    def resampled(self, name: str, indices: Resamples) -> np.ndarray:
        """The figure on each resample (a row of `indices`): a figure that is a mean of per-image values
        (`Scorer.image_values`) is averaged for all resamples at once, any other summarised on each."""
        values = self.scorer.image_values(self.columns, name)
        if values is None:
            rows = ({k: v[idx] for k, v in self.columns.items()} for idx in indices)
            return np.asarray([self.scorer.summarise(r).get(name, math.nan) for r in rows], np.float64)
        if not isinstance(indices, np.ndarray):  # whole groups drawn: resamples of their own lengths
            return np.asarray([_means(values[idx][None])[0] for idx in indices], np.float64)
        return _means(values[indices])


def _means(picked: np.ndarray) -> np.ndarray:
    """Each row's mean over its defined (not NaN) values; NaN for a row with none."""
    defined = ~np.isnan(picked)
    counts = defined.sum(1)
    sums = np.where(defined, picked, 0.0).sum(1)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


class Comparer:
    """Compares runs with one reference on the same bootstrap resamples of its test images."""

    def __init__(self, reference: Run, resamples: int, seed: int, unpaired: bool, source: str = TABLE):
        self.reference, self.resamples, self.seed, self.unpaired = reference, resamples, seed, unpaired
        self.source = source  # the per-image table the runs were read from
        self.outputs = outputs_of(reference)
        self.scores = {n: Scores(Scorer.of(o), columns_of(reference, n, o, source)) for n, o in self.outputs.items()}
        self.indices = resample_indices(len(image_keys(reference)), resamples, seed, groups_of(reference))
        self.drawn: dict[str, np.ndarray] = {}  # the reference's figure per output on every resample

    def figures(self, run: Run) -> list[Figure]:
        """The run's value of the headline figure of each of the reference's outputs it has, compared."""
        if run is self.reference:
            return [Figure(n, o.headline, self.scores[n].figure(o.headline)) for n, o in self.outputs.items()]
        ours = outputs_of(run)
        order = None if self.unpaired else aligned(run, self.reference)
        figures = []
        for name in [n for n in self.outputs if n in ours]:
            columns = columns_of(run, name, ours[name], self.source)
            if order is not None:
                columns = {k: v[order] for k, v in columns.items()}
            figures.append(self._compared(name, Scores(Scorer.of(ours[name]), columns), groups_of(run)))
        return figures

    def _drawn(self, name: str) -> np.ndarray:
        """The reference's headline figure of `name` on every resample, drawn once for all runs."""
        if name not in self.drawn:
            self.drawn[name] = self.scores[name].resampled(self.outputs[name].headline, self.indices)
        return self.drawn[name]

    def _compared(self, name: str, scores: Scores, groups: list[str] | None) -> Figure:
        """Paired: the difference from the reference on the same resamples; unpaired: the run's own
        interval (over its `groups`, where it has them) against the reference's."""
        figure = self.outputs[name].headline
        result = Figure(name, figure, scores.figure(figure))
        if self.unpaired:
            images = len(next(iter(scores.columns.values())))
            drawn = resample_indices(images, self.resamples, self.seed, groups)
            mine = percentile_bounds(scores.resampled(figure, drawn))
            theirs = percentile_bounds(self._drawn(name))
            if mine is not None and theirs is not None:
                result.low, result.high = mine
                result.verdict = _verdict(figure, mine[0] > theirs[1], mine[1] < theirs[0], "overlap")
            return result
        result.difference = result.value - self.scores[name].figure(figure)
        bounds = percentile_bounds(scores.resampled(figure, self.indices) - self._drawn(name))
        if bounds is not None:
            result.low, result.high = bounds
            result.verdict = _verdict(figure, result.low > 0, result.high < 0, "no evidence")
        return result


def _verdict(figure: str, above: bool, below: bool, otherwise: str) -> str:
    if not (above or below):
        return otherwise
    return "better" if above != (figure in LOWER_IS_BETTER) else "worse"


def changed_params(run: Run, reference: Run) -> dict[str, Any]:
    """The params.yaml keys whose values differ from the reference's, dotted (`train.lr`)."""
    mine, theirs = flat_params(run.params), flat_params(reference.params)
    return {k: mine.get(k) for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)}


@dataclass
class Comparison:
    reference: Run
    runs: list[Run]
    figures: dict[str, list[Figure]]  # per run name
    changed: dict[str, dict[str, Any]]  # per run name: the params it changed against the reference
    images: int
    unpaired: bool
    skipped: list[str] = field(default_factory=list)  # runs of the default set without an evaluation
    folds: bool = False  # the runs' out-of-fold tables (FOLDS_TABLE) compared, not their test splits'

    @property
    def groups(self) -> int:
        """The reference's images' groups (data.split.group), drawn whole; 0 without groups."""
        return len(set(groups_of(self.reference) or ()))
