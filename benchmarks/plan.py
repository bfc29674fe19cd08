"""`cnn-factory plan`'s line against params.yaml's defaults, and its time estimate against the run.

    python -m benchmarks.plan [--only example|cells|volumes] [--out FILE]

For each data set the defaults are trained (the train and evaluate stages as DVC runs them, in a
folder of their own), then `make_plan` reads the data set under those params, its `-S` line is
applied to the params file with DVC's own override parser (what `dvc exp run -S` does), and the
result is trained the same way. Both runs are scored by evaluate on the same test split. Recorded:
test dice, train stage wall time, the plan's expected time (measured just before its run), and
the ratios. When the line sets exactly the defaults' values, one run serves both.

- example: the built-in example (600 images of 64x64, two masks and a category), params.yaml as is.
- volumes: the built-in volume example (60 scans of about 24x48x48 at 3x1x1 mm; organ, tumour and
  cyst masks, a grade and a volume per scan), examples/volumes/params.yaml as is.
- cells: 60 generated cell images of 256-384 px (benchmarks/cells.py), a mask only, patch mode,
  with a hand-written training section as a new user writes one: 96 px patches, 30 epochs of
  128 patches, batch 8 (params.yaml's network: depth 3, 16 filters).

Writes benchmarks/plan.json (git-ignored) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import yaml
from dvc.utils.hydra import apply_overrides

from benchmarks.cells import make_cells
from benchmarks.large import run_stage
from benchmarks.measure import Contention
from cnn_factory.config import load_params, parse_params
from cnn_factory.data.example import make_example
from cnn_factory.data.prepare import prepare
from cnn_factory.data.volumes_example import make_volume_example
from cnn_factory.plan.run import make_plan, text

ROOT = Path(__file__).resolve().parents[1]


def example_params(data: Path) -> dict:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    make_example(data, p["example"]["rows"], tuple(p["example"]["size"]), p["example"]["seed"])
    p["data"].update(csv=str(data / "data.csv"), root=str(data))
    return p


def cells_params(data: Path) -> dict:
    make_cells(data, rows=60, sizes=(256, 384), seed=0)
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"].update(csv=str(data / "data.csv"), root=str(data))
    p["inputs"] = {"image": {"type": "image", "size": [96, 96], "channels": 1, "mode": "patch"}}
    p["outputs"] = {"cells": {"type": "segmentation", "column": "labels", "label": 1, "loss": "bce_dice"}}
    p["train"].update(epochs=30, batch_size=8, patches_per_epoch=128, log_images_every=0)
    return p


def volumes_params(data: Path) -> dict:
    p = yaml.safe_load((ROOT / "examples" / "volumes" / "params.yaml").read_text())
    make_volume_example(data, p["example"]["rows"], tuple(p["example"]["size"]), p["example"]["seed"])
    p["data"].update(csv=str(data / "data.csv"), root=str(data))
    return p


def trained(work: Path, params: Path) -> dict:
    """The train and evaluate stages in `work` on `params`: train wall time and the test figures."""
    work.mkdir(parents=True)
    shutil.copy(params, work / "params.yaml")
    prepare(load_params(work / "params.yaml"), work / "data" / "prepared", None, workers=2)
    with Contention() as busy:
        seconds, _ = run_stage(work, "train")
    run_stage(work, "evaluate")
    test = json.loads((work / "eval" / "figures.json").read_text())["test"]
    scores = {name: figures.get("dice", figures.get("accuracy")) for name, figures in test.items()}
    scores = {name: value for name, value in scores.items() if value is not None}  # a number's MAE: not a score
    return {"train_s": seconds, "test": scores, "other_cores": busy.cores}


def compare(name: str, params: dict, tmp: Path) -> dict:
    """Defaults, then the plan's line on them: each trained and scored; the plan's estimate beside."""
    defaults = tmp / f"{name}-defaults.yaml"
    defaults.write_text(yaml.safe_dump(params, sort_keys=False))
    before = trained(tmp / f"{name}-defaults", defaults)
    start = time.perf_counter()
    plan = make_plan(parse_params(params), 50, None)
    plan_s = time.perf_counter() - start
    planned = tmp / f"{name}-plan.yaml"
    shutil.copy(defaults, planned)
    apply_overrides(planned, [f"{key}={text(value)}" for key, value in plan.sets])
    same = load_params(planned) == load_params(defaults)
    after = before if same else trained(tmp / f"{name}-plan", planned)
    result = {
        "line": " ".join(f"-S {key}={text(value)}" for key, value in plan.sets),
        "plan_s": plan_s,
        "same_params": same,
        "defaults": before,
        "plan": after,
        "expected_s": plan.expected_s,
        "time_ratio": after["train_s"] / before["train_s"],
        "expected_over_measured": plan.expected_s / after["train_s"],
    }
    fits = re.search(r"\((\d+) would fit", dict((k, why) for k, _, why in plan.rows)["train.batch_size"])
    if fits:  # the batch the memory alone would allow, on the plan's line: what plan proposed before its budget
        memory = tmp / f"{name}-memory.yaml"
        shutil.copy(planned, memory)
        apply_overrides(memory, [f"train.batch_size={fits[1]}"])
        result["memory_batch"] = {"batch": int(fits[1]), **trained(tmp / f"{name}-memory", memory)}
    return result


def table(results: dict) -> str:
    lines = [
        "| data set | defaults: test dice (accuracy), train s | plan's line: the same | time ratio "
        "| plan's estimate / measured |"
    ]
    lines.append("| --- | --- | --- | --- | --- |")
    for name, r in results.items():
        d, p = r["defaults"], r["plan"]
        dice = [", ".join(f"{k} {v:.3f}" for k, v in x["test"].items()) for x in (d, p)]
        lines.append(
            f"| {name} | {dice[0]}; {d['train_s']:.0f} s | {dice[1]}; {p['train_s']:.0f} s | {r['time_ratio']:.2f} | "
            f"{r['expected_s']:.0f} s / {p['train_s']:.0f} s = {r['expected_over_measured']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("example", "cells", "volumes"), default=None)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("plan.json"))
    args = parser.parse_args()
    makers = {"example": example_params, "cells": cells_params, "volumes": volumes_params}
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-plan-") as folder:
        tmp = Path(folder)
        for name, make in makers.items():
            if args.only in (None, name):
                results[name] = compare(name, make(tmp / f"{name}-data"), tmp)
                args.out.write_text(json.dumps(results, indent=2))
    print(table(results))
    for name, r in results.items():
        print(f"{name}: dvc exp run {r['line']}")
        if "memory_batch" in r:
            m = r["memory_batch"]
            scores = ", ".join(f"{k} {v:.3f}" for k, v in m["test"].items())
            print(f"{name}, the line with batch {m['batch']} (memory alone): {scores}; {m['train_s']:.0f} s")


if __name__ == "__main__":
    main()
