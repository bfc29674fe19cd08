"""Stage `evaluate`: scores models/<model.name>.pt on the test split (docs/evaluation.md).

    python -m stages.evaluate

Writes eval/figures.json with `test/<output>/<figure>` per output and its 95% bootstrap interval
(`_ci_low`, `_ci_high`), and eval/metrics.json, DVC's metrics file, with each output's headline
figure and the saved epoch (`dvc exp show`'s columns). Masks are scored at each label map's own
size as predict writes them (in resize mode also `<figure>_pooled_resized`, the masks at the input
size the network saw); eval/per_image.csv, one row per test image; plots (confusion matrices, dice
per image, calibration, predicted against true values) and pictures (test images with their masks,
the worst ones) under eval/plots/. The same code runs `cnn-factory evaluate MODEL CSV`.
"""

from cnn_factory import runtime

if __name__ == "__main__":  # this process is the stage: tuned before the imports below (cnn_factory/runtime.py)
    runtime.before_stage_imports()

from pathlib import Path

from cnn_factory.config import PREPARED, load_params
from cnn_factory.data.dataset import read_manifest
from cnn_factory.device import pick_device
from cnn_factory.errors import run_stage
from cnn_factory.model import ModelFile
from cnn_factory.report import evaluate_and_report


def main() -> None:
    cfg = load_params()
    manifest = read_manifest(PREPARED, cfg.inputs, cfg.outputs)
    device = pick_device(cfg.train.device)
    model, model_file = ModelFile.load(cfg.model.path, device)
    outputs = {n: s for n, s in cfg.outputs.items() if n in model_file.outputs}
    test = PREPARED / "test"
    evaluate_and_report(
        Path("eval"),
        model,
        model_file,
        outputs,
        test,
        manifest["splits"]["test"],
        cfg.train.batch_size,
        device,
        cfg.evaluate,
    )


if __name__ == "__main__":
    run_stage(main, restore="evaluate")
