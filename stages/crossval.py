"""Stage `crossval` of folds/dvc.yaml: the cross-validation's figures over every fold's images.

    python -m stages.crossval

Reads params.yaml (`outputs`, `evaluate`, `data.split.folds`) and each fold's eval/folds/K/per_image.csv;
writes eval/folds/figures.json (the out-of-fold figures with 95% bootstrap intervals over images,
and each fold's), eval/folds/metrics.json (each output's headline out-of-fold figure) and
eval/folds/per_image.csv (every fold's table, with its fold). The work is cnn_factory.crossval.
"""

from cnn_factory import runtime

if __name__ == "__main__":  # this process is the stage: tuned before the imports below (cnn_factory/runtime.py)
    runtime.before_stage_imports()

from cnn_factory.config import load_params
from cnn_factory.crossval import cross_validate, summary_lines
from cnn_factory.data.folds import EVAL
from cnn_factory.errors import UserError, run_stage


def main() -> None:
    cfg = load_params()
    folds = cfg.data.split.fold_names
    if not folds:
        raise UserError("data.split.folds is null: there are no folds to pool; set it to K (e.g. 5)")
    result = cross_validate(EVAL, cfg.outputs, folds, cfg.evaluate.bootstrap, cfg.evaluate.seed)
    print("\n".join(summary_lines(result, cfg.outputs)))
    print(f"crossval: every figure in {EVAL / 'figures.json'}, the rows in {EVAL / 'per_image.csv'}")


if __name__ == "__main__":
    run_stage(main)
