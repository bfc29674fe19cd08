"""The runs `cnn-factory compare` reads through DVC: `dvc exp show`'s data (params, the hash of each
output) and each run's eval/per_image.csv, from the workspace or the DVC cache, else the remote."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnn_factory.errors import UserError
from cnn_factory.params import read_yaml

TABLE = "eval/per_image.csv"
FOLDS_TABLE = "eval/folds/per_image.csv"  # the cross-validation's out-of-fold table (folds/dvc.yaml)
# the lock files and stages (None: all of its stages) whose run wrote each table
WRITERS = {
    TABLE: (("dvc.lock", ("prepare", "train", "evaluate")),),
    FOLDS_TABLE: (("dvc.lock", ("prepare",)), ("folds/dvc.lock", None)),
}
WORKSPACE = "workspace"


@dataclass
class Run:
    """One revision to compare: its name in `dvc exp show`, its commit and its params.yaml."""

    name: str
    rev: str  # a commit's full SHA, or WORKSPACE
    params: dict[str, Any]
    baseline: str | None = None  # an experiment's: the commit it was run from
    outs: dict[str, str] = field(default_factory=dict)  # the pipeline's outputs: path -> DVC's hash
    table: dict[str, list[str]] = field(default_factory=dict)  # eval/per_image.csv's columns, read later


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


def read_table(repo: Any, run: Run, path: str = TABLE) -> dict[str, list[str]]:
    """The run's per-image table (`path`: eval/per_image.csv, or FOLDS_TABLE) as {column: cells}: the
    workspace's file, or a revision's from the local DVC cache by the hash its dvc.lock records (else
    through DVC, which may fetch it from the remote). UserError when the run has none (not
    evaluated, or its outputs not pulled, or written with other params than its own)."""
    pipeline = " folds/dvc.yaml" if path == FOLDS_TABLE else ""
    if (why := unrun_param(repo, run, path)) is not None:
        raise UserError(
            f"{run.name}: its {path} was not written with its params ({why}): its pipeline did not run there; "
            f"run it (dvc exp run{pipeline}) to compare it"
        )
    try:
        if run.rev == WORKSPACE:
            data = (Path(repo.root_dir) / path).read_bytes()
            text = data.decode()
            if path in run.outs and hashlib.md5(data).hexdigest() != run.outs[path]:  # DVC's hash of the file
                raise UserError(
                    f"workspace: its {path} is not the one its dvc.lock records (another run's outputs are there, or "
                    "it was changed): `dvc checkout` puts the locked one back, `dvc repro` writes it again"
                )
        elif path in run.outs and Path(cached := repo.cache.local.oid_to_path(run.outs[path])).is_file():
            text = Path(cached).read_text()
        else:
            with repo.switch(run.rev), repo.dvcfs.open(path, mode="r") as f:
                text = f.read()
    except (FileNotFoundError, OSError) as err:
        raise UserError(
            f"{run.name}: no {path} ({type(err).__name__}): it has no evaluation here; run the pipeline there "
            f"(dvc repro{pipeline} or dvc exp run{pipeline}), or bring its outputs with `dvc exp pull` / `dvc pull`"
        ) from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, [])
    rows = list(reader)
    return {name: [row[i] if i < len(row) else "" for row in rows] for i, name in enumerate(header)}


def unrun_param(repo: Any, run: Run, path: str) -> str | None:
    """The first param whose value in the run's params.yaml differs from the one the stages that
    wrote `path` ran with, as their lock file records it (an experiment of another pipeline, or
    params edited after the last run); None when they agree or nothing is locked yet."""
    mine = flat_params(run.params)
    for lock_file, stages in WRITERS[path]:
        lock = read_yaml(_text_at(repo, run.rev, lock_file) or "") or {}  # as DVC reads it: 1e-05 is a number
        for stage, entry in (lock.get("stages") or {}).items():
            if stages is not None and stage not in stages:
                continue
            for key, value in flat_params((entry.get("params") or {}).get("params.yaml") or {}).items():
                if mine.get(key) != value:
                    return f"{key} is {mine.get(key)!r} in its params.yaml, {value!r} in {lock_file}'s {stage} stage"
    return None


def _text_at(repo: Any, rev: str, path: str) -> str | None:
    """A file Git tracks, as the revision holds it (the workspace: on disk); None where it has none."""
    if rev == WORKSPACE:
        file = Path(repo.root_dir) / path
        return file.read_text() if file.is_file() else None
    fs = repo.scm.get_fs(rev)
    return fs.read_text(path) if fs.exists(path) else None


def flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """params by dotted key (`train.lr`), down to values that are no (non-empty) mapping."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping) and value:
            flat.update(flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
