"""Which change helped: runs side by side, each output's headline test figure, and its paired
difference from a reference run on the same test images (`cnn-factory compare`).

    cnn-factory compare                       # the workspace, the commit (HEAD) and its experiments
    cnn-factory compare dropout-0.2 lr-0.001 --against main
    cnn-factory compare --json                # the same, for scripts

Each run's figures are computed again from its eval/per_image.csv (the table evaluate writes, one
row per test image) by the output kind's own `summarise`, so they equal eval/figures.json's. For
each run and output, the difference from the reference is bootstrapped over the test images, the
same images drawn for both runs (a paired bootstrap): an interval that excludes 0 marks the run
better or worse, one across 0 says the test set gives no evidence either way. Runs are read
through DVC (`Repo.experiments.show`, and the per-image table from each revision's DVC cache): no
checkout, nothing written. Runs scored on other test images (another split or CSV) cannot be
paired; `--unpaired` then compares each run's own interval with the reference's.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnn_factory.errors import UserError
from cnn_factory.outputs import Output, make_output
from cnn_factory.scores.bootstrap import percentile_bounds, resample_indices

TABLE = "eval/per_image.csv"
WORKSPACE = "workspace"
LOWER_IS_BETTER = frozenset({"hd95", "mae", "rmse", "ece"})  # every other figure: higher is better
WIDTH = 100  # the table's width on a terminal


@dataclass
class Run:
    """One revision to compare: its name in `dvc exp show`, its commit and its params.yaml."""

    name: str
    rev: str  # a commit's full SHA, or WORKSPACE
    params: dict[str, Any]
    baseline: str | None = None  # an experiment's: the commit it was run from
    outs: dict[str, str] = field(default_factory=dict)  # the pipeline's outputs: path -> DVC's hash
    table: dict[str, list[str]] = field(default_factory=dict)  # eval/per_image.csv's columns, read later


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


# --- finding the runs through DVC ---
def collect_runs(repo: Any, names: list[str]) -> list[Run]:
    """The runs named (experiment names, branches, tags, commits, `workspace`), or by default the
    workspace, HEAD and HEAD's experiments that finished. UserError names a revision DVC lacks."""
    from dvc.repo.experiments.utils import resolve_name

    scm = repo.scm
    wanted: dict[str, str | None] = {}  # name as given -> its commit (None: the workspace)
    baselines = {scm.get_rev()}
    exp_refs = resolve_name(scm, [n for n in names if n != WORKSPACE]) if names else {}
    for name in names:
        if name == WORKSPACE:
            wanted[name] = None
        elif (ref := exp_refs.get(name)) is not None:
            wanted[name] = scm.get_ref(str(ref))
            baselines.add(ref.baseline_sha)
        else:
            try:
                commit = scm.resolve_rev(name)
            except Exception:  # scmrepo raises its own RevError; any failure means the same to a user
                raise UserError(
                    f"{name}: no experiment, branch, tag or commit of that name here; `dvc exp show` lists "
                    "them (`dvc exp pull origin` first for experiments run on another machine)"
                ) from None
            wanted[name] = commit
            baselines.add(commit)
    states = [s.dumpd() for s in repo.experiments.show(revs=sorted(baselines), hide_queued=True, hide_failed=True)]
    found = {run.rev: run for run in _runs(states)}
    if not names:
        head = scm.get_rev()
        return [r for r in found.values() if head in (r.rev, r.baseline) or r.rev == WORKSPACE]
    runs = []
    for name, rev in wanted.items():
        run = found.get(rev or WORKSPACE)
        if run is None:
            raise UserError(f"{name}: no params.yaml there; it is no run of this pipeline")
        runs.append(Run(name, run.rev, run.params, run.baseline, run.outs))
    return runs


def _runs(states: list[dict]) -> list[Run]:
    """Every row of `dvc exp show --json`'s structure that has params, baselines before their experiments."""
    runs = []
    for state in states:
        data = state.get("data") or {}
        if data.get("params"):
            name = WORKSPACE if state["rev"] == WORKSPACE else state.get("name") or state["rev"][:7]
            runs.append(Run(name, state["rev"], _params(data), outs=_outs(data)))
        for exp in state.get("experiments") or []:
            for rev in exp.get("revs") or []:
                exp_data = rev.get("data") or {}
                if exp_data.get("params") and not rev.get("error"):
                    name = rev.get("name") or exp.get("name") or rev["rev"][:7]
                    runs.append(Run(name, rev["rev"], _params(exp_data), state["rev"], _outs(exp_data)))
    return runs


def _params(data: dict) -> dict[str, Any]:
    return ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}


def _outs(data: dict) -> dict[str, str]:
    return {path: out["hash"] for path, out in (data.get("outs") or {}).items() if out.get("hash")}


def read_table(repo: Any, run: Run) -> dict[str, list[str]]:
    """The run's eval/per_image.csv as {column: cells}: the workspace's file, or a revision's from the
    local DVC cache by the hash its dvc.lock records (else through DVC, which may fetch it from the
    remote). UserError when the run has none (not evaluated, or its outputs not pulled)."""
    try:
        if run.rev == WORKSPACE:
            text = (Path(repo.root_dir) / TABLE).read_text()
        elif TABLE in run.outs and Path(cached := repo.cache.local.oid_to_path(run.outs[TABLE])).is_file():
            text = Path(cached).read_text()
        else:
            with repo.switch(run.rev), repo.dvcfs.open(TABLE, mode="r") as f:
                text = f.read()
    except (FileNotFoundError, OSError) as err:
        raise UserError(
            f"{run.name}: no {TABLE} ({type(err).__name__}): it has no evaluation here; run the pipeline there "
            "(dvc repro or dvc exp run), or bring its outputs with `dvc exp pull` / `dvc pull`"
        ) from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    rows = list(reader)
    return {name: [row[i] if i < len(row) else "" for row in rows] for i, name in enumerate(header)}


# --- computing ---
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


def columns_of(run: Run, name: str, output: Output) -> dict[str, np.ndarray]:
    prefix = f"{name}/"
    cells = {k[len(prefix) :]: v for k, v in run.table.items() if k.startswith(prefix)}
    try:
        return output.table_columns(cells)
    except (KeyError, ValueError) as err:
        raise UserError(
            f"{run.name}: {TABLE} lacks what output {name!r} needs ({type(err).__name__}: {err}): written by "
            "another cnn-factory version; run its evaluate stage again (dvc exp run) to compare it"
        ) from None


def image_keys(run: Run) -> list[tuple[str, str]]:
    """Each test image's identity: its file and CSV row."""
    return list(zip(run.table.get("image", []), run.table.get("csv_row", [])))


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

    output: Output
    columns: dict[str, np.ndarray]

    def figure(self, name: str) -> float:
        return self.output.summarise(self.columns).get(name, math.nan)

    def resampled(self, name: str, indices: np.ndarray) -> np.ndarray:
        """The figure on each resample (a row of `indices`): a figure that is a mean of per-image values
        (`Output.image_values`) is averaged for all resamples at once, any other summarised on each."""
        values = self.output.image_values(self.columns, name)
        if values is None:
            rows = ({k: v[idx] for k, v in self.columns.items()} for idx in indices)
            return np.asarray([self.output.summarise(r).get(name, math.nan) for r in rows], np.float64)
        picked = values[indices]
        defined = ~np.isnan(picked)
        counts = defined.sum(1)
        sums = np.where(defined, picked, 0.0).sum(1)
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


class Comparer:
    """Compares runs with one reference on the same bootstrap resamples of its test images."""

    def __init__(self, reference: Run, resamples: int, seed: int, unpaired: bool):
        self.reference, self.resamples, self.seed, self.unpaired = reference, resamples, seed, unpaired
        self.outputs = outputs_of(reference)
        self.scores = {n: Scores(o, columns_of(reference, n, o)) for n, o in self.outputs.items()}
        self.indices = resample_indices(len(image_keys(reference)), resamples, seed)
        self.drawn: dict[str, np.ndarray] = {}  # the reference's figure per output on every resample

    def figures(self, run: Run) -> list[Figure]:
        """The run's value of the headline figure of each of the reference's outputs it has, compared."""
        if run is self.reference:
            return [Figure(n, o.headline, self.scores[n].figure(o.headline)) for n, o in self.outputs.items()]
        ours = outputs_of(run)
        order = None if self.unpaired else aligned(run, self.reference)
        figures = []
        for name in [n for n in self.outputs if n in ours]:
            columns = columns_of(run, name, ours[name])
            scores = Scores(ours[name], columns if order is None else {k: v[order] for k, v in columns.items()})
            figures.append(self._unpaired(name, scores) if self.unpaired else self._paired(name, scores))
        return figures

    def _paired(self, name: str, scores: Scores) -> Figure:
        figure, reference = self.outputs[name].headline, self.scores[name]
        if name not in self.drawn:
            self.drawn[name] = reference.resampled(figure, self.indices)
        result = Figure(name, figure, scores.figure(figure))
        result.difference = result.value - reference.figure(figure)
        bounds = percentile_bounds(scores.resampled(figure, self.indices) - self.drawn[name])
        if bounds is not None:
            result.low, result.high = bounds
            result.verdict = _verdict(figure, result.low > 0, result.high < 0, "no evidence")
        return result

    def _unpaired(self, name: str, scores: Scores) -> Figure:
        figure, reference = self.outputs[name].headline, self.scores[name]
        result = Figure(name, figure, scores.figure(figure))
        theirs = percentile_bounds(reference.resampled(figure, self.indices))
        mine = percentile_bounds(
            scores.resampled(
                figure, resample_indices(len(next(iter(scores.columns.values()))), self.resamples, self.seed)
            )
        )
        if mine is not None and theirs is not None:
            result.low, result.high = mine
            result.verdict = _verdict(figure, mine[0] > theirs[1], mine[1] < theirs[0], "overlap")
        return result


def _verdict(figure: str, above: bool, below: bool, otherwise: str) -> str:
    if not (above or below):
        return otherwise
    return "better" if above != (figure in LOWER_IS_BETTER) else "worse"


def changed_params(run: Run, reference: Run) -> dict[str, Any]:
    """The params.yaml keys whose values differ from the reference's, dotted (`train.lr`)."""
    mine, theirs = _flat(run.params), _flat(reference.params)
    return {k: mine.get(k) for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)}


def _flat(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# --- the command ---
@dataclass
class Comparison:
    reference: Run
    runs: list[Run]
    figures: dict[str, list[Figure]]  # per run name
    changed: dict[str, dict[str, Any]]  # per run name: the params it changed against the reference
    images: int
    unpaired: bool
    skipped: list[str] = field(default_factory=list)  # runs of the default set without an evaluation


def compare(
    root: str | Path,
    names: list[str],
    against: str | None = None,
    resamples: int = 1000,
    seed: int = 0,
    unpaired: bool = False,
) -> Comparison:
    """Reads the runs (see `collect_runs`) and the reference (`against`, else the commit the
    workspace is on) through DVC, and compares each run's figures with the reference's."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    if resamples < 1:
        raise UserError(f"--resamples: expected an integer >= 1, got {resamples}")
    try:
        repo = Repo(str(root))
    except NotDvcRepoError:
        raise UserError(
            f"{root}: not in a DVC repository; run cnn-factory compare in the pipeline's repository"
        ) from None
    with repo:
        if repo.scm.no_commits:
            raise UserError("no commit here yet: commit the pipeline and its results, run experiments, then compare")
        head = repo.scm.get_rev()
        runs = collect_runs(repo, names)
        candidates = collect_runs(repo, [against]) if against else collect_runs(repo, []) if names else runs
        reference = next((r for r in candidates if against or r.rev == head), None)
        if reference is None:
            raise UserError("the commit has no params.yaml: name a run to compare against with --against")
        reference.table = read_table(repo, reference)
        skipped = []
        for run in [r for r in runs if r.rev != reference.rev]:
            try:
                run.table = read_table(repo, run)
            except UserError:
                if names:  # a run asked for by name must have its evaluation
                    raise
                skipped.append(run.name)  # by default: queued, running, failed or not pulled
    runs = [r for r in runs if r.table and r.rev != reference.rev]
    if not names:  # the workspace as committed is the commit's run again
        runs = [
            r for r in runs if not (r.rev == WORKSPACE and (r.table, r.params) == (reference.table, reference.params))
        ]
    comparer = Comparer(reference, resamples, seed, unpaired)
    figures = {r.name: comparer.figures(r) for r in [reference, *runs]}
    changed = {r.name: changed_params(r, reference) for r in runs}
    skipped = [n for n in skipped if n != WORKSPACE]  # a workspace never evaluated is no run yet
    return Comparison(reference, runs, figures, changed, len(image_keys(reference)), unpaired, skipped)


def report_lines(result: Comparison, width: int = WIDTH) -> list[str]:
    """The table `cnn-factory compare` prints, at most `width` columns: per run a line per output,
    its name on the first and the params it changed (`key=value`) on the lines below."""
    ref = result.reference
    what = "each run's own 95% interval (unpaired)" if result.unpaired else "difference [95% paired bootstrap interval]"
    lines = [f"test figures of {len(result.runs)} run(s) against {ref.name}, {result.images} test images: {what}"]
    header = ["run, params changed", "output", "figure", "value", "interval" if result.unpaired else "difference", ""]
    rows: list[list[str]] = [header]
    digits = {f.output: _decimals(f.value) for f in result.figures[ref.name]}  # one precision per output
    for run in [ref, *result.runs]:
        names = [f"{run.name} (reference)" if run is ref else run.name]
        names += [f"  {k}={_value(v)}" for k, v in result.changed.get(run.name, {}).items()]
        cells = [_cells(f, result.unpaired, digits.get(f.output, 3)) for f in result.figures[run.name]]
        for i in range(max(len(cells), len(names))):
            rows.append([names[i] if i < len(names) else "", *(cells[i] if i < len(cells) else [""] * 5)])
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    widths[0] = max(len(header[0]), min(widths[0], width - sum(widths[1:]) - 2 * (len(header) - 1)))
    for row in rows:
        cut = [_cut(cell, w) for cell, w in zip(row, widths)]
        lines.append(
            "  ".join(c.rjust(w) if i in (3, 4) else c.ljust(w) for i, (c, w) in enumerate(zip(cut, widths))).rstrip()
        )
    if len(result.runs) > 3 and not result.unpaired:
        lines.append("with many runs, expect about 1 in 20 intervals to exclude 0 by chance alone")
    if result.skipped:
        lines.append(_cut(f"not evaluated (running, failed or not pulled): {', '.join(result.skipped)}", width))
    return lines


def _cells(figure: Figure, unpaired: bool, digits: int) -> list[str]:
    """output, figure, value, difference [interval] (or the interval alone), verdict."""
    value = _number(figure.value, digits)
    if math.isnan(figure.low):
        return [figure.output, figure.figure, value, "", figure.verdict]
    sign = "" if unpaired else "+"
    span = f"[{_number(figure.low, digits, sign)}, {_number(figure.high, digits, sign)}]"
    if not unpaired:
        span = f"{_number(figure.difference or 0.0, digits, sign)} {span}"
    return [figure.output, figure.figure, value, span, figure.verdict]


def _decimals(value: float) -> int:
    """Decimals that show a figure to about 3 significant digits (at least 1 for a large one)."""
    if not math.isfinite(value) or value == 0:
        return 3
    return int(min(4, max(1, 2 - math.floor(math.log10(abs(value))))))


def _number(value: float, decimals: int, sign: str = "") -> str:
    return f"{value:{sign}.{decimals}f}" if math.isfinite(value) else "n/a"


def report_json(result: Comparison) -> dict[str, Any]:
    """`cnn-factory compare --json`: the same as the table, with every number unrounded."""

    def number(value: float | None) -> float | None:
        return None if value is None or not math.isfinite(value) else value

    return {
        "reference": {"name": result.reference.name, "rev": result.reference.rev},
        "images": result.images,
        "paired": not result.unpaired,
        "skipped": result.skipped,
        "runs": [
            {
                "name": run.name,
                "rev": run.rev,
                "changed": result.changed.get(run.name, {}),
                "outputs": {
                    f.output: {
                        "figure": f.figure,
                        "value": number(f.value),
                        "difference": number(f.difference),
                        "low": number(f.low),
                        "high": number(f.high),
                        "verdict": f.verdict,
                    }
                    for f in result.figures[run.name]
                },
            }
            for run in [result.reference, *result.runs]
        ],
    }


def print_comparison(result: Comparison, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report_json(result), indent=1))
    else:
        print("\n".join(report_lines(result)))


def _value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"
