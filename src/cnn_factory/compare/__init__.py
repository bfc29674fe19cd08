"""Which change helped: runs side by side, each output's headline test figure, and its paired
difference from a reference run on the same test images (`cnn-factory compare`).

    cnn-factory compare                       # the workspace, the commit (HEAD) and its experiments
    cnn-factory compare dropout-0.2 lr-0.001 --against main
    cnn-factory compare --json                # the same, for scripts
    cnn-factory compare --folds               # the cross-validations' out-of-fold tables instead

Each run's figures are computed again from its eval/per_image.csv (the table evaluate writes, one
row per test image) by the output kind's own `summarise`, so they equal eval/figures.json's. For
each run and output, the difference from the reference is bootstrapped over the test images, the
same images drawn for both runs (a paired bootstrap): an interval that excludes 0 marks the run
better or worse, one across 0 says the test set gives no evidence either way. Runs are read
through DVC (`Repo.experiments.show`, and the per-image table from each revision's DVC cache): no
checkout, nothing written. Runs scored on other test images (another split or CSV) cannot be
paired; `--unpaired` then compares each run's own interval with the reference's. With `folds`,
each run's out-of-fold table (eval/folds/per_image.csv, folds/dvc.yaml's) is compared instead: every
image outside the test split, each scored by the fold's model that did not train on it.
"""

from __future__ import annotations

from pathlib import Path

from cnn_factory.compare.pairing import Comparer, Comparison, changed_params, image_keys
from cnn_factory.compare.runs import FOLDS_TABLE, TABLE, WORKSPACE, collect_runs, read_table
from cnn_factory.compare.table import print_comparison
from cnn_factory.errors import UserError


def compare(
    root: str | Path,
    names: list[str],
    against: str | None = None,
    resamples: int = 1000,
    seed: int = 0,
    unpaired: bool = False,
    folds: bool = False,
) -> Comparison:
    """Reads the runs (see `collect_runs`) and the reference (`against`, else the commit the
    workspace is on) through DVC, and compares each run's figures with the reference's: their
    test splits', or with `folds` their out-of-fold figures."""
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
        source = FOLDS_TABLE if folds else TABLE
        try:
            reference.table = read_table(repo, reference, source)
        except UserError as err:
            hint = "; its cross-validation compares with --folds" if not folds and FOLDS_TABLE in reference.outs else ""
            raise UserError(f"{err}{hint}") from None
        skipped = []
        for run in [r for r in runs if r.rev != reference.rev]:
            try:
                run.table = read_table(repo, run, source)
            except UserError:
                if names:  # a run asked for by name must have its evaluation
                    raise
                skipped.append(run.name)  # by default: running, failed, not pulled, or its pipeline not run
    runs = [r for r in runs if r.table and r.rev != reference.rev]
    if not names:  # the workspace as committed, or as `dvc exp run` left it, is that run again
        kept = [(r.table, r.params) for r in [reference, *runs] if r.rev != WORKSPACE]
        runs = [r for r in runs if not (r.rev == WORKSPACE and (r.table, r.params) in kept)]
    comparer = Comparer(reference, resamples, seed, unpaired, source)
    figures = {r.name: comparer.figures(r) for r in [reference, *runs]}
    changed = {r.name: changed_params(r, reference) for r in runs}
    skipped = [n for n in skipped if n != WORKSPACE]  # a workspace never evaluated is no run yet
    return Comparison(reference, runs, figures, changed, len(image_keys(reference)), unpaired, skipped, folds)


__all__ = ["compare", "print_comparison"]
