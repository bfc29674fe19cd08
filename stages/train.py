"""Stage `train`: fits the multi-output CNN on data/prepared, logging every epoch with dvclive.

    python -m stages.train
    torchrun --nproc_per_node=N -m stages.train      # DistributedDataParallel, one process per GPU

Reads params.yaml (`inputs`, `outputs`, `model`, `train`, `augment`) and data/prepared/. Writes
models/<model.name>.pt (the best validated epoch), checkpoints/<model.name>.ckpt after every epoch
(an interrupted run resumes from it) and dvclive/ (curves, pictures). The run itself is
cnn_factory.training.fit.fit.
"""

from cnn_factory import runtime

if __name__ == "__main__":  # this process is the stage: tuned before the imports below (cnn_factory/runtime.py)
    runtime.before_stage_imports()

from cnn_factory.config import load_params
from cnn_factory.errors import run_stage
from cnn_factory.training.fit import fit


def main() -> None:
    fit(load_params())


if __name__ == "__main__":
    run_stage(main, restore="train")
