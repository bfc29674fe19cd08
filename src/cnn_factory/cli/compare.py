"""`cnn-factory compare`: runs side by side with paired differences on the same test images
(cnn_factory/compare/; docs/checkpoints-and-sweeps.md#comparing-runs)."""

from __future__ import annotations

import argparse


def compare(args: argparse.Namespace) -> None:
    from cnn_factory.compare import compare as compare_runs
    from cnn_factory.compare import print_comparison

    result = compare_runs(".", args.revs, args.against, args.resamples, args.seed, args.unpaired, args.folds)
    print_comparison(result, args.json)


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "compare",
        parents=[common],
        help="compare runs' test figures, with paired differences on the same test images",
        description="Each run's headline test figure per output and its difference from a reference run, "
        "bootstrapped over the same test images; runs are DVC experiments, branches, tags or commits.",
    )
    p.add_argument(
        "revs",
        nargs="*",
        metavar="REV",
        help="experiment names, branches, tags, commits or 'workspace' (default: the commit, its experiments "
        "and the workspace when it holds a run of its own)",
    )
    p.add_argument("--against", metavar="REV", help="the reference run (default: the commit, HEAD)")
    p.add_argument("--unpaired", action="store_true", help="runs on other test images: compare their own intervals")
    p.add_argument(
        "--folds",
        action="store_true",
        help="compare the runs' out-of-fold figures (dvc exp run folds/dvc.yaml): every image outside the test split",
    )
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples of the test images")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling: the same seed, the same intervals")
    p.add_argument("--json", action="store_true", help="print JSON for scripts instead of the table")
