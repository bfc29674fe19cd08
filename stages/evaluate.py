"""Stage `evaluate`: scores models/<model.name>.pt on the test split with dvclive.

    python -m stages.evaluate

Writes eval/metrics.json with `test/<output>/dice` and `test/<output>/iou` (segmentation),
`test/<output>/accuracy` and `test/<output>/f1_macro` (category), `test/<output>/mae`
(numeric); a confusion matrix per category output (eval/plots/sklearn/<output>.json,
shown by `dvc plots show`), and per segmentation output an image of a few test images
with their true and predicted masks (eval/plots/images/<output>.png).
"""

from __future__ import annotations

import torch

from stages.config import PREPARED, load_params
from stages.dataset import PreparedSplit, make_loader, normalisation, pick_device, read_manifest, to_device
from stages.errors import run_stage
from stages.live import AtomicLive
from stages.metrics import OutputMetrics
from stages.model import load_model
from stages.pictures import Gallery

SHOWN = 6  # test images drawn in each prediction picture


def main() -> None:
    cfg = load_params()
    read_manifest(PREPARED, cfg)
    device = pick_device(cfg.train.device)
    model, meta = load_model(cfg.model.path, device)
    outputs = {n: s for n, s in cfg.outputs.items() if n in meta["outputs"]}
    test = PreparedSplit(PREPARED / "test", list(meta["inputs"]), outputs)
    norm = normalisation(meta["inputs"], device)
    metrics = OutputMetrics(outputs, device)
    gallery = Gallery(outputs, SHOWN)
    truth_ids: dict[str, list[int]] = {n: [] for n, s in outputs.items() if s.type == "category"}
    pred_ids: dict[str, list[int]] = {n: [] for n in truth_ids}
    with torch.no_grad():
        for x_raw, targets, _ in make_loader(test, cfg.train.batch_size, shuffle=False):
            x, targets = to_device(x_raw, targets, device, *norm)
            preds = model(x)
            metrics.update(preds, targets)
            for name in truth_ids:
                truth_ids[name] += targets[name].tolist()
                pred_ids[name] += preds[name].argmax(1).tolist()
            gallery.add(x_raw, targets, preds)
    results = metrics.compute()
    with AtomicLive("eval", save_dvc_exp=False, dvcyaml=None) as live:
        for key, value in results.items():
            live.log_metric(f"test/{key}", value, plot=False)
        for name in truth_ids:
            classes = meta["outputs"][name]["classes"]
            live.log_sklearn_plot(
                "confusion_matrix",
                [classes[i] for i in truth_ids[name]],
                [classes[i] for i in pred_ids[name]],
                name=f"{name}.json",
                title=f"{name}: confusion matrix (test split)",
            )
        gallery.log(live, "{output}.png")
    for key, value in results.items():
        print(f"test/{key}: {value:.4f}")


if __name__ == "__main__":
    run_stage(main)
