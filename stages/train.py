"""Stage `train`: fits the multi-output CNN on data/prepared, logging every epoch with dvclive.

    python -m stages.train
    python -m stages.train --fold K                  # fold K of a cross-validation (folds/dvc.yaml)
    torchrun --nproc_per_node=N -m stages.train      # DistributedDataParallel, one process per GPU

Reads params.yaml (`inputs`, `outputs`, `model`, `train`, `augment`) and data/prepared/. Writes
models/<model.name>.pt (the best validated epoch), checkpoints/<model.name>.ckpt after every epoch
(an interrupted run resumes from it) and dvclive/ (curves, pictures). A fold's run reads
data/prepared/folds/K/ and writes models/folds/K.pt, checkpoints/fold-K.ckpt and dvclive/folds/K/
(cnn_factory/data/folds.py). The run itself is cnn_factory.training.fit.fit.
"""

from cnn_factory import runtime

if __name__ == "__main__":  # this process is the stage: tuned before the imports below (cnn_factory/runtime.py)
    runtime.before_stage_imports()

import argparse
import sys

from cnn_factory.config import load_params
from cnn_factory.data.folds import checked_fold
from cnn_factory.errors import run_stage
from cnn_factory.training.fit import Places, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fold", default=None, help="a fold of data.split.folds (folds/dvc.yaml runs each)")
    args = parser.parse_args()
    cfg = load_params()
    fit(cfg, Places.of(cfg, checked_fold(cfg.data, args.fold)))


if __name__ == "__main__":
    fold = any(a.startswith("--fold") for a in sys.argv)  # a stage of folds/dvc.yaml
    run_stage(main, restore=None if fold else "train")  # restore.py reads dvc.lock, not folds/dvc.lock
