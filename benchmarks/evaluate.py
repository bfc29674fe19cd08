"""Evaluate on the built-in example's test split: wall time of the stage, and our boundary scores beside MONAI's.

    python -m benchmarks.evaluate [--epochs 5] [--quick]

Generates the example as params.yaml sets it (600 images of 64x64; 90 in the test split),
prepares it, trains `--epochs` epochs (the figures' quality does not matter here, their cost
does), then:

1. `python -m stages.evaluate` end to end (process start-up, loading, forward passes at the
   label maps' size, per-image dice/IoU/HD95/surface dice, 1,000 bootstrap resamples, the table,
   plots and pictures), the median of 3 runs; and again with `evaluate.bootstrap: 0`.
2. the per-image boundary figures alone on the same 180 predicted masks (two segmentation outputs):
   `cnn_factory.scores.masks.mask_scores` against MONAI's `compute_dice`,
   `compute_hausdorff_distance(percentile=95)` and `compute_surface_dice` on each image, as a
   user scoring with MONAI would call them.

Prints a table; writes benchmarks/evaluate.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from benchmarks.measure import Contention, run_stage_timed, write_params
from cnn_factory.config import parse_params
from cnn_factory.data.dataset import PreparedSplit, to_device
from cnn_factory.data.example import make_example
from cnn_factory.data.prepare import prepare
from cnn_factory.model import ModelFile
from cnn_factory.scores.masks import mask_scores

ROOT = Path(__file__).resolve().parents[1]


def predicted_masks(work: Path, cfg) -> list[tuple[np.ndarray, np.ndarray]]:
    """(prediction, truth) boolean masks of every test image and segmentation output."""
    model, model_file = ModelFile.load(work / cfg.model.path, "cpu")
    spatial = [n for n, o in cfg.outputs.items() if o.spatial]
    split = PreparedSplit(work / "data" / "prepared" / "test", list(cfg.inputs), cfg.outputs)
    x, targets, _ = split[list(range(len(split)))]
    x, _ = to_device(x, {}, torch.device("cpu"), *model_file.normalisation("cpu"))
    with torch.inference_mode():
        logits = model(x)
    return [(logits[n][i].numpy() > 0, targets[n][i].numpy() > 0) for n in spatial for i in range(len(x))]


def ours_per_image(masks: list, tolerance: float) -> float:
    start = time.perf_counter()
    for pred, truth in masks:
        mask_scores(pred, truth, tolerance)
    return time.perf_counter() - start


def monai_per_image(masks: list, tolerance: float) -> float:
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    start = time.perf_counter()
    for pred, truth in masks:
        p, t = (torch.from_numpy(np.stack([~m, m])[None]).float() for m in (pred, truth))
        compute_dice(p, t, include_background=False)
        compute_hausdorff_distance(p, t, percentile=95)
        compute_surface_dice(p, t, class_thresholds=[tolerance])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a tiny example: the smoke run")
    args = parser.parse_args()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(epochs=args.epochs, log_images_every=0)
    if args.quick:
        params["example"]["rows"], params["train"]["epochs"] = 60, 1
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="cnn-factory-evaluate-") as tmp:
        work = Path(tmp)
        write_params(work, params)
        cfg = parse_params(params)
        make_example(work / "data" / "example", params["example"]["rows"], tuple(params["example"]["size"]), 0)
        with_data = {
            **params,
            "data": {**params["data"], "csv": str(work / "data/example/data.csv"), "root": str(work / "data/example")},
        }
        write_params(work, with_data)
        prepare(parse_params(with_data), work / "data" / "prepared", None, workers=2)
        run_stage_timed(work, "stages.train")
        with Contention() as busy:  # cores other processes kept busy meanwhile: 0 on a quiet machine
            runs = [run_stage_timed(work, "stages.evaluate")[0] for _ in range(3)]
        results["evaluate_s"], results["other_busy_cores"] = statistics.median(runs), busy.cores
        results["test_images"] = len((work / "eval" / "per_image.csv").read_text().splitlines()) - 1
        write_params(work, {**with_data, "evaluate": {**params["evaluate"], "bootstrap": 0}})
        results["evaluate_no_bootstrap_s"] = statistics.median(
            run_stage_timed(work, "stages.evaluate")[0] for _ in range(3)
        )
        masks = predicted_masks(work, cfg)
        tolerance = params["evaluate"]["tolerance"]
        ours_per_image(masks[:5], tolerance), monai_per_image(masks[:5], tolerance)  # warm-up: imports, caches
        results["masks"] = len(masks)
        results["ours_scores_s"] = min(ours_per_image(masks, tolerance) for _ in range(3))
        results["monai_scores_s"] = min(monai_per_image(masks, tolerance) for _ in range(3))
    results["conditions"] = {
        "epochs": args.epochs,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    (ROOT / "benchmarks" / "evaluate.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"evaluate stage, {results['test_images']} test images, end to end: {results['evaluate_s']:.2f} s "
        f"({results['evaluate_no_bootstrap_s']:.2f} s without the bootstrap)"
    )
    print(
        f"per-image dice + HD95 + surface dice on {results['masks']} masks: ours {results['ours_scores_s']:.3f} s, "
        f"MONAI {results['monai_scores_s']:.3f} s ({results['monai_scores_s'] / results['ours_scores_s']:.1f}x)"
    )


if __name__ == "__main__":
    sys.exit(main())
