"""`cnn-factory compare`: figures read back from per-image tables, paired differences against a
direct computation, and the refusals. The runs through DVC are in tests/test_resume.py."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from cnn_factory.compare.pairing import Comparer, Comparison, changed_params
from cnn_factory.compare.runs import Run
from cnn_factory.compare.table import report_json, report_lines
from cnn_factory.errors import UserError
from cnn_factory.evaluate import Evaluation
from cnn_factory.outputs import Scorer, make_output
from cnn_factory.report import per_image_table

IMAGES = 40
DEFINITIONS = {
    "round": {"type": "segmentation", "label": 1},
    "organs": {"type": "segmentation", "labels": {"liver": 1, "kidney": 2}},
    "grade": {"type": "category", "classes": ["low", "mid", "high"]},
    "volume": {"type": "numeric"},
}
OUTPUTS = {name: make_output(name, (16, 16), **d) for name, d in DEFINITIONS.items()}
SCORERS = {name: Scorer.of(output) for name, output in OUTPUTS.items()}


def scored(seed: int, skill: float) -> dict[str, dict[str, np.ndarray]]:
    """Per-image scores as evaluate collects them, of predictions right with probability `skill`."""
    rng = np.random.default_rng(seed)
    truth_rng = np.random.default_rng(0)  # the same truths for every run: the same test images
    rows: dict[str, list[dict]] = {n: [] for n in OUTPUTS}
    for i in range(IMAGES):
        labels = truth_rng.integers(0, 3, (16, 16)) * (truth_rng.random((16, 16)) < 0.3)
        if i % 5 == 0:
            labels[:] = 0  # images holding nothing: dice undefined where nothing is predicted
        noise = rng.random((16, 16)) > skill
        predicted = np.where(noise, rng.integers(0, 3, (16, 16)), labels)
        rows["round"].append(SCORERS["round"].image_scores(predicted == 1, labels == 1, 2.0))
        rows["organs"].append(SCORERS["organs"].image_scores(predicted, labels, 2.0))
        grade = int(truth_rng.integers(0, 3))
        probs = rng.dirichlet(np.ones(3))
        if rng.random() < skill:
            probs[grade] += 1
        rows["grade"].append(SCORERS["grade"].image_scores(probs / probs.sum(), np.int64(grade), 2.0))
        value = truth_rng.normal(10, 3)
        rows["volume"].append(
            SCORERS["volume"].image_scores(np.float64(value + rng.normal(0, 4 * (1 - skill))), value, 2.0)
        )
    return {n: {c: np.asarray([r[c] for r in rs]) for c in rs[0]} for n, rs in rows.items()}


def table(columns: dict[str, dict[str, np.ndarray]], images: int = IMAGES) -> dict[str, list[str]]:
    """eval/per_image.csv as evaluate writes it, read back as compare reads it."""
    result = Evaluation({}, {}, None, {}, rows=columns)  # type: ignore[arg-type]
    split = {"files": [f"images/{i:03d}.png" for i in range(images)], "rows": list(range(2, images + 2))}
    text = per_image_table(result, OUTPUTS, split)
    header, *rows = list(csv.reader(io.StringIO(text)))
    return {name: [row[i] for row in rows] for i, name in enumerate(header)}


def run(name: str, seed: int, skill: float, **changes) -> Run:
    params = {"outputs": DEFINITIONS, "train": {"lr": 0.003, **changes}}
    return Run(name, name, params, table=table(scored(seed, skill)))


@pytest.mark.parametrize("name", list(OUTPUTS))
def test_a_table_reads_back_to_the_figures_evaluate_computed(name):
    """Each kind's `table_columns` undoes `table_cells`: every figure from the CSV's text equals the
    figure from evaluate's own columns (the CSV rounds scores to 6 digits)."""
    columns = scored(1, 0.8)[name]
    scorer = SCORERS[name]
    prefix = f"{name}/"
    cells = {k[len(prefix) :]: v for k, v in table({name: columns} | {}).items() if k.startswith(prefix)}
    expected, read = scorer.summarise(columns), scorer.summarise(scorer.table_columns(cells))
    assert set(read) == set(expected)
    for figure, value in expected.items():
        assert read[figure] == pytest.approx(value, abs=1e-5, nan_ok=True), figure


@pytest.mark.parametrize("name", list(OUTPUTS))
def test_image_values_average_to_the_headline_figure(name):
    """A figure given as per-image values (resampled as row means) is their mean where defined."""
    scorer, columns = SCORERS[name], scored(2, 0.7)[name]
    values = scorer.image_values(columns, scorer.output.headline)
    if name == "organs":  # a class mask's dice is a mean over classes of means over images: no row mean
        assert values is None
        return
    assert np.nanmean(values) == pytest.approx(scorer.summarise(columns)[scorer.output.headline], abs=1e-12)


def direct(
    a: Run, b: Run, name: str, resamples: int, seed: int, images: int = IMAGES, groups: list[str] | None = None
) -> tuple[float, float, float]:
    """The paired bootstrap by hand: the same resampled rows of both tables (in the same image
    order), each summarised whole by the output kind of `OUTPUTS[name]`; with `groups`, the rows
    of as many whole groups as there are, numbered in the order they first appear."""
    scorer = SCORERS[name]
    figure = scorer.output.headline
    prefix = f"{name}/"

    def columns(r: Run) -> dict[str, np.ndarray]:
        return scorer.table_columns({k[len(prefix) :]: v for k, v in r.table.items() if k.startswith(prefix)})

    ours, theirs = columns(a), columns(b)
    rng = np.random.default_rng(seed)
    draws = []
    members = [np.flatnonzero(np.asarray(groups) == g) for g in dict.fromkeys(groups)] if groups else []
    for _ in range(resamples):
        idx = np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))]) if groups else None
        idx = rng.integers(0, images, images) if idx is None else idx
        draws.append(
            scorer.summarise({k: v[idx] for k, v in ours.items()})[figure]
            - scorer.summarise({k: v[idx] for k, v in theirs.items()})[figure]
        )
    finite = np.asarray(draws)[np.isfinite(draws)]
    whole = scorer.summarise(ours)[figure] - scorer.summarise(theirs)[figure]
    return whole, *np.percentile(finite, [2.5, 97.5])


def test_paired_differences_equal_a_direct_computation_from_the_two_tables():
    reference, better = run("main", 1, 0.6), run("exp", 2, 0.9, lr=0.001)
    figures = {f.output: f for f in Comparer(reference, 300, 7, unpaired=False).figures(better)}
    assert set(figures) == set(OUTPUTS)
    for name, figure in figures.items():
        whole, low, high = direct(better, reference, name, 300, 7)
        assert (figure.difference, figure.low, figure.high) == pytest.approx((whole, low, high), abs=1e-9), name
        assert figure.low <= figure.difference <= figure.high
    assert figures["round"].verdict == "better" and figures["volume"].verdict == "better"  # MAE: lower is better
    assert figures["volume"].difference < 0


def test_with_groups_whole_groups_are_drawn_for_both_runs():
    """Tables with a group column (data.split.group): the pairs are drawn by whole groups, the
    reference's, whatever order the run's rows are in, and the report says how many groups."""
    reference, better = run("main", 1, 0.6), run("exp", 2, 0.9)
    groups = [f"P{i % 8}" for i in range(IMAGES)]  # 8 patients of 5 images, interleaved
    reference.table["group"] = better.table["group"] = groups
    order = np.random.default_rng(0).permutation(IMAGES)
    shuffled = Run("exp", "exp", better.params, table={k: [v[i] for i in order] for k, v in better.table.items()})
    comparer = Comparer(reference, 300, 7, unpaired=False)
    for figure in comparer.figures(shuffled):
        whole, low, high = direct(better, reference, figure.output, 300, 7, groups=groups)
        assert (figure.difference, figure.low, figure.high) == pytest.approx((whole, low, high), abs=1e-9)
    figures = {r.name: comparer.figures(r) for r in (reference, shuffled)}
    result = Comparison(reference, [shuffled], figures, {}, IMAGES, False)
    assert f"{IMAGES} test images of 8 groups" in report_lines(result)[0]


def test_a_run_against_itself_differs_by_nothing_and_rows_are_paired_by_image():
    reference = run("main", 1, 0.7)
    shuffled = Run("again", "again", reference.params, table=dict(reference.table))
    order = np.random.default_rng(0).permutation(IMAGES)
    shuffled.table = {k: [v[i] for i in order] for k, v in reference.table.items()}
    for figure in Comparer(reference, 200, 0, unpaired=False).figures(shuffled):
        assert (figure.difference, figure.low, figure.high, figure.verdict) == (0.0, 0.0, 0.0, "no evidence")


def test_runs_on_other_test_images_are_refused_unless_unpaired():
    reference, other = run("main", 1, 0.7), run("split-1", 2, 0.7)
    other.table["image"] = [f"elsewhere/{i}.png" for i in range(IMAGES)]
    with pytest.raises(UserError) as err:
        Comparer(reference, 100, 0, unpaired=False).figures(other)
    assert str(err.value) == (
        f"split-1 and main were scored on different test images ({IMAGES} and {IMAGES}, 0 in common: another "
        "split or CSV), so they cannot be paired; --unpaired compares their intervals only"
    )
    figures = Comparer(reference, 100, 0, unpaired=True).figures(other)
    assert all(f.difference is None and f.low <= f.high and f.verdict for f in figures)


def test_a_table_of_another_version_is_one_line():
    reference, old = run("main", 1, 0.7), run("old", 2, 0.7)
    del old.table["round/tp"]
    with pytest.raises(UserError) as err:
        Comparer(reference, 10, 0, unpaired=False).figures(old)
    assert str(err.value).startswith("old: eval/per_image.csv lacks what output 'round' needs (KeyError: 'tp')")
    assert "\n" not in str(err.value)


def test_outputs_this_version_cannot_read_are_one_line():
    reference = run("main", 1, 0.7)
    other = Run(
        "older", "older", {"outputs": {"round": {"type": "segmentation", "threshold": 0.4}}}, table=reference.table
    )
    with pytest.raises(UserError) as err:
        Comparer(reference, 10, 0, unpaired=False).figures(other)
    message = str(err.value)
    assert message.startswith("older: its params.yaml outputs do not read with this cnn-factory (")
    assert message.endswith("a run of another pipeline version; compare runs of one version") and "\n" not in message


def test_changed_params_are_the_dotted_keys_that_differ():
    a = Run("a", "a", {"train": {"lr": 0.001, "epochs": 30}, "model": {"filters": [8, 16]}})
    b = Run("b", "b", {"train": {"lr": 0.003, "epochs": 30}, "model": {"filters": [8, 16]}, "extra": 1})
    assert changed_params(a, b) == {"extra": None, "train.lr": 0.001}


def test_the_table_fits_100_columns_and_json_holds_every_number():
    reference = run("main", 1, 0.6)
    runs = [
        run("a-very-long-experiment-name-that-goes-on", 2, 0.9, lr=0.001, schedule="a-long-value-" * 4),
        run("b", 3, 0.6),
    ]
    comparer = Comparer(reference, 100, 0, unpaired=False)
    result = Comparison(
        reference, runs, {r.name: comparer.figures(r) for r in [reference, *runs]},
        {r.name: changed_params(r, reference) for r in runs}, IMAGES, unpaired=False,
    )  # fmt: skip
    lines = report_lines(result)
    assert max(map(len, lines)) <= 100, lines
    assert lines[0].startswith(f"test figures of 2 run(s) against main, {IMAGES} test images")
    assert sum(line.startswith("a-very-long") for line in lines) == 1 and "train.lr=0.001" in "\n".join(lines)
    data = report_json(result)
    assert [r["name"] for r in data["runs"]] == ["main", runs[0].name, "b"]
    round_ = data["runs"][1]["outputs"]["round"]
    assert round_["difference"] == pytest.approx(result.figures[runs[0].name][0].difference)
    assert data["runs"][0]["outputs"]["round"]["difference"] is None and not math.isnan(round_["low"])
