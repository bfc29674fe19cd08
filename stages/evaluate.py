"""Stage `evaluate`: scores models/<model.name>.pt on the test split with dvclive.

    python -m stages.evaluate

Writes eval/metrics.json with `test/<output>/<metric>` per output (dice and iou, accuracy and
f1_macro, mae), masks scored at each label map's own size as predict writes them; in resize mode
also `test/<output>/<metric>_resized`, the masks at the input size the network saw. Plus a
confusion matrix per category output (eval/plots/sklearn/<output>.json, shown by `dvc plots
show`) and per segmentation output a picture of test images with their true and predicted masks
(eval/plots/images/<output>.png).
"""

from cnn_factory.config import PREPARED, load_params
from cnn_factory.data.dataset import pick_device, read_manifest
from cnn_factory.errors import run_stage
from cnn_factory.evaluate import evaluate_split
from cnn_factory.model import load_model
from cnn_factory.training.live import AtomicLive


def main() -> None:
    cfg = load_params()
    read_manifest(PREPARED, cfg)
    device = pick_device(cfg.train.device)
    model, meta = load_model(cfg.model.path, device)
    outputs = {n: s for n, s in cfg.outputs.items() if n in meta["outputs"]}
    result = evaluate_split(model, meta, outputs, PREPARED / "test", cfg.train.batch_size, device)
    with AtomicLive("eval", save_dvc_exp=False, dvcyaml=None) as live:
        for key, value in result.metrics.items():
            live.log_metric(f"test/{key}", value, plot=False)
        for key, value in result.resized.items():
            live.log_metric(f"test/{key}_resized", value, plot=False)
        for name, (truth, predicted) in result.confusion.items():
            classes = meta["outputs"][name]["classes"]
            live.log_sklearn_plot(
                "confusion_matrix",
                [classes[i] for i in truth],
                [classes[i] for i in predicted],
                name=f"{name}.json",
                title=f"{name}: confusion matrix (test split)",
            )
        result.gallery.log(live, "{output}.png")
    for key, value in result.metrics.items():
        resized = result.resized.get(key)
        print(f"test/{key}: {value:.4f}" + (f"  (at the input size: {resized:.4f})" if resized is not None else ""))


if __name__ == "__main__":
    run_stage(main)
