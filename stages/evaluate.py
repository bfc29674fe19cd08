"""Stage `evaluate`: scores models/<model.name>.pt on the test split (docs/evaluation.md).

    python -m stages.evaluate

Writes eval/figures.json with `test/<output>/<figure>` per output and its 95% bootstrap interval
(`_ci_low`, `_ci_high`), and eval/metrics.json, DVC's metrics file, with each output's headline
figure and the saved epoch (`dvc exp show`'s columns). Masks are scored at each label map's own
size as predict writes them (in resize mode also `<figure>_pooled_resized`, the masks at the input
size the network saw); eval/per_image.csv, one row per test image; plots (confusion matrices, dice
per image, calibration, predicted against true values) and pictures (test images with their masks,
the worst ones) under eval/plots/. The same code runs `cnn-factory evaluate MODEL CSV`.

    python -m stages.evaluate --fold K       # fold K's model on fold K: eval/folds/K/, the same files
    python -m stages.evaluate --ensemble     # the folds' models averaged, on the test split: eval/folds/test/

(folds/dvc.yaml runs both; cnn_factory/data/folds.py holds their paths.)
"""

from cnn_factory import runtime

if __name__ == "__main__":  # this process is the stage: tuned before the imports below (cnn_factory/runtime.py)
    runtime.before_stage_imports()

import argparse
import sys
from pathlib import Path

from cnn_factory.config import PREPARED, Config, load_params
from cnn_factory.data.dataset import read_manifest
from cnn_factory.data.folds import EVAL, TEST, checked_fold, fold_places
from cnn_factory.device import pick_device
from cnn_factory.errors import UserError, run_stage
from cnn_factory.native import load_models
from cnn_factory.report import evaluate_and_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--fold", default=None, help="score fold K's model on its own fold (folds/dvc.yaml)")
    which.add_argument("--ensemble", action="store_true", help="score the folds' ensemble on the test split")
    args = parser.parse_args()
    cfg = load_params()
    models, prepared, split, out = what_to_score(cfg, checked_fold(cfg.data, args.fold), args.ensemble)
    manifest = read_manifest(prepared, cfg.inputs, cfg.outputs)
    device = pick_device(cfg.train.device)
    model, model_file = load_models(models, device)
    outputs = {n: s for n, s in cfg.outputs.items() if n in model_file.outputs}
    if split not in manifest["splits"]:
        raise UserError(
            f"{prepared}: no {split} split (data.split.test is 0, or the split column names no test row): "
            "the folds' ensemble has no test images to score"
        )
    evaluate_and_report(
        out,
        model,
        model_file,
        outputs,
        prepared / split,
        manifest["splits"][split],
        cfg.train.batch_size,
        device,
        cfg.evaluate,
    )


def what_to_score(cfg: Config, fold: str | None, ensemble: bool) -> tuple[list[Path], Path, str, Path]:
    """The model files, the prepared folder, its split and the report's folder: the model on the
    test split; a fold's on its own fold (its run's val split); or the folds' ensemble on the test split."""
    names = cfg.data.split.fold_names
    if ensemble:
        if not names:
            raise UserError("--ensemble: data.split.folds is null; there are no folds to average")
        return [fold_places(n).model for n in names], fold_places(names[0]).prepared, TEST, EVAL / TEST
    if fold is not None:
        where = fold_places(fold)
        return [where.model], where.prepared, "val", where.eval
    return [cfg.model.path], PREPARED, TEST, Path("eval")


if __name__ == "__main__":
    folds = any(a.startswith(("--fold", "--ensemble")) for a in sys.argv)  # folds/dvc.yaml's stages
    run_stage(main, restore=None if folds else "evaluate")  # restore.py reads dvc.lock, not folds/dvc.lock
