"""Stage `prepare`: validates the CSV, splits label maps into masks, caches uint8 arrays.

    python -m stages.prepare [--workers N]

Reads params.yaml (`data`, `inputs`, `outputs`) and the CSV it names; decodes rows in N
processes (default: one per CPU; the result does not depend on N). Any problem in any row
stops the stage with the full list and leaves the previous `data/prepared/` untouched.
On success it replaces, atomically:

    data/prepared/<split>/<name>.npy   one array per input/output per split (memory-mapped by train)
    data/prepared/manifest.json        rows per split, source rows/files, channel mean/std
    data/prepared/report.json          rows per split, class counts, mask coverage

and keeps decoded rows in data/cache/, so a re-run decodes only new or changed rows.
"""

from cnn_factory import runtime

if __name__ == "__main__":  # this process is the stage: tuned before the imports below (cnn_factory/runtime.py)
    runtime.before_stage_imports()

import argparse

from cnn_factory.config import PREPARED, load_params
from cnn_factory.data.prepare import CACHE, default_workers, prepare, print_report
from cnn_factory.errors import UserError, run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=default_workers(), help="decoding processes (default: CPUs)")
    args = parser.parse_args()
    if args.workers < 1:
        raise UserError(f"--workers: expected an integer >= 1, got {args.workers}")
    cfg = load_params()
    report, rows = prepare(cfg, PREPARED, CACHE, args.workers)
    print_report(report)
    print(f"prepare: {rows.decoded} rows decoded, {rows.reused} taken from {CACHE}/ ({args.workers} workers)")


if __name__ == "__main__":
    run_stage(main)
