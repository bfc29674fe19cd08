"""`cnn-factory folds`: writes folds/dvc.yaml, the pipeline of a K-fold cross-validation.

    cnn-factory folds                 # K from params.yaml's data.split.folds
    dvc repro folds/dvc.yaml          # prepare (dvc.yaml's), then every fold, the pooled figures, the ensemble

dvc.yaml stays the single split's pipeline; folds/dvc.yaml holds, for the K folds that
`data.split.folds` names, dvc.yaml's own train and evaluate stages once per fold (a `foreach`
over the folds: `train@0`, `evaluate@0`, ...), their deps and params as dvc.yaml lists them, each
fold's outputs its own (cnn_factory/data/folds.py), so each fold is cached and resumed on its
own. Then `crossval`, the figures over all folds' images, and (with a test split) `ensemble`,
the folds' models averaged on it. Its plots are dvc.yaml's, once per fold on the fold's files
(and those of eval/ once more on the ensemble's), so `dvc plots show` draws them beside the
single split's. DVC's `foreach` takes a list, not a count, so the file is written for one K:
change data.split.folds, and run this command again.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from cnn_factory.atomic import replace_file
from cnn_factory.config import PREPARED, load_params
from cnn_factory.data.folds import EVAL, MODELS, TEST
from cnn_factory.errors import UserError
from cnn_factory.params import read_yaml

PIPELINE = Path("folds/dvc.yaml")
ITEM = "${item}"  # DVC's name for the fold in a foreach stage
HEADER = """\
# The K-fold cross-validation's pipeline, written by `cnn-factory folds` for data.split.folds: {k}
# from dvc.yaml's train and evaluate stages and its plots (write it again after changing them, or the folds).
# Run: dvc repro folds/dvc.yaml  (docs/small-data.md). Its stages run in the project's root (wdir).
"""


def fold_pipeline(stages: dict[str, Any], folds: list[str], test: bool, plots: Sequence[Any] = ()) -> dict[str, Any]:
    """folds/dvc.yaml's contents from dvc.yaml's `stages` and `plots`: train and evaluate per fold,
    crossval, with `test` the ensemble's evaluation, and the plots of each (`fold_plots`)."""
    for name in ("train", "evaluate"):
        if name not in stages:
            raise UserError(f"dvc.yaml: no {name} stage to run per fold; restore it from the project's dvc.yaml")
    train, evaluate = stages["train"], stages["evaluate"]
    fold = f"{PREPARED}/folds/{ITEM}"
    library = _deps(evaluate)  # the code evaluate runs: crossval's too (report.py, scores/, outputs/)
    pipeline: dict[str, Any] = {
        "train": _each(
            folds,
            desc="Train fold ${item}'s model: the other folds train, fold ${item} validates",
            cmd=f"python -m stages.train --fold {ITEM}",
            deps=[*_deps(train), fold],
            params=train.get("params", []),
            outs=[f"{MODELS}/{ITEM}.pt", f"dvclive/folds/{ITEM}/plots", f"dvclive/folds/{ITEM}/metrics.json"],
        ),
        "evaluate": _each(
            folds,
            desc="Score fold ${item}'s model on fold ${item}, the images it did not train on",
            cmd=f"python -m stages.evaluate --fold {ITEM}",
            deps=[*library, fold, f"{MODELS}/{ITEM}.pt"],
            params=evaluate.get("params", []),
            # each fold's metrics.json is no DVC metrics file: `dvc exp show` lists the pooled and
            # the ensemble's headline figures, not K more of each
            outs=[f"{EVAL}/{ITEM}/{name}" for name in ("plots", "per_image.csv", "figures.json", "metrics.json")],
        ),
        "crossval": {
            "desc": "Out-of-fold figures over every fold's images, with bootstrap intervals",
            "wdir": "..",
            "cmd": "python -m stages.crossval",
            "deps": ["stages/crossval.py", "src/cnn_factory/crossval.py", *library]
            + [f"{EVAL}/{k}/per_image.csv" for k in folds],
            "params": ["outputs", "evaluate", "data.split.folds"],
            "outs": [f"{EVAL}/per_image.csv", f"{EVAL}/figures.json"],
            "metrics": [{f"{EVAL}/metrics.json": {"cache": False}}],
        },
    }
    if test:
        pipeline["ensemble"] = {
            "desc": "Score the folds' models, their probabilities averaged, on the held-out test split",
            "wdir": "..",
            "cmd": "python -m stages.evaluate --ensemble",
            "deps": [*library, f"{PREPARED}/folds/{folds[0]}", *(f"{MODELS}/{k}.pt" for k in folds)],
            "params": [*evaluate.get("params", []), "data.split.folds"],
            "outs": [f"{EVAL}/{TEST}/plots", f"{EVAL}/{TEST}/per_image.csv", f"{EVAL}/{TEST}/figures.json"],
            "metrics": [{f"{EVAL}/{TEST}/metrics.json": {"cache": False}}],
        }
    moved = fold_plots(plots, folds, test)
    return {"stages": pipeline, **({"plots": moved} if moved else {})}


# dvc.yaml's train and evaluate write under these; each fold's run, and the ensemble, under its own
PLACES = {"dvclive/": "dvclive/folds/{}/", "eval/": f"{EVAL}/{{}}/"}


def fold_plots(plots: Sequence[Any], folds: list[str], test: bool) -> list[Any]:
    """dvc.yaml's plots on the folds' files: each definition whose files are all under dvclive/ or
    eval/ once per fold (dvclive/folds/<k>/..., eval/folds/<k>/...), and those of eval/ alone once
    more for the ensemble (eval/folds/test/...) with `test`. A plot named by its title (its files
    in `y`) is named "<name>: fold <k>" and titled "<title> (fold <k>)"; the paths are relative to
    folds/, as DVC reads them there. Definitions of other files are left to dvc.yaml."""
    moved: list[Any] = []
    for entry in plots:
        key, props = next(iter(entry.items())) if isinstance(entry, dict) else (entry, None)
        props = dict(props or {})
        titled = isinstance(props.get("y"), dict)
        tops = {_top(f) for f in (props["y"] if titled else [key])}
        if None in tops:
            continue
        for place in [*folds, *([TEST] if test and tops == {"eval/"} else [])]:
            if titled:
                moved.append(_titled(key, props, place))
            else:
                moved.append({_at(key, place): copy.deepcopy(props)} if props else _at(key, place))  # no YAML anchors
    return moved


def _top(file: str) -> str | None:
    return next((top for top in PLACES if file.startswith(top)), None)


def _at(file: str, place: str) -> str:
    """A file of dvc.yaml's plots at `place`'s (a fold, or the ensemble's report), from folds/."""
    top = _top(file) or ""
    return "../" + PLACES[top].format(place) + file[len(top) :]


def _titled(name: str, props: dict[str, Any], place: str) -> dict[str, Any]:
    """A plot named by its title, its files at `place`'s."""
    which = "the folds' ensemble" if place == TEST else f"fold {place}"
    props = {**copy.deepcopy(props), "y": {_at(f, place): field for f, field in props["y"].items()}}
    if "title" in props:
        props["title"] = f"{props['title']} ({which})"
    return {f"{name}: {which}": props}


def _deps(stage: dict[str, Any]) -> list[str]:
    """A stage's code deps: its paths that are neither the prepared data nor a params-named file."""
    deps = [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]
    return [d for d in deps if "${" not in d and not d.startswith(str(PREPARED))]


def _each(folds: list[str], **stage: Any) -> dict[str, Any]:
    return {"foreach": [int(k) for k in folds], "do": {"wdir": "..", **stage}}


def write_fold_pipeline(params: str, dvc_yaml: Path = Path("dvc.yaml"), out: Path = PIPELINE) -> str:
    """Writes `out` for params' data.split.folds from `dvc_yaml`; returns what to run next."""
    split = load_params(params).data.split
    if not split.folds:
        raise UserError(f"{params}: data.split.folds is null; set it to the number of folds (e.g. 5) first")
    try:
        shipped = read_yaml(dvc_yaml.read_text())
        stages, plots = shipped["stages"], shipped.get("plots") or []
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{dvc_yaml}: cannot read its stages ({type(err).__name__}); run this in the project") from None
    test = bool(split.column) or split.test > 0  # a split column names its test rows itself
    text = HEADER.format(k=split.folds) + yaml.safe_dump(
        fold_pipeline(stages, split.fold_names, test, plots), sort_keys=False, width=120
    )
    replace_file(out, lambda tmp: tmp.write_text(text))
    return f"folds: wrote {out} for {split.folds} folds; run `dvc repro {out}`"


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "folds", parents=[common], help="write folds/dvc.yaml: train and evaluate per fold (data.split.folds)"
    )
    p.add_argument("--params", default="params.yaml", help="params file with data.split.folds")


def folds(args: argparse.Namespace) -> None:
    print(write_fold_pipeline(args.params))
