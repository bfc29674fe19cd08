"""Encoders compared on the built-in example: the UNet and timm encoders, all from random weights.

    python -m benchmarks.encoders              # ~10 min on 2 CPU cores: a table, benchmarks/encoders.json
    python -m benchmarks.encoders --quick      # tiny sizes and the tiniest timm model: a smoke run

Per encoder: its parameters (the whole network with the example's two masks and category); the
training step's time per image (forward, backward and Adam's step on a batch already in memory;
the median step)
at the example's 64x64 and on 256x256 patches; the peak resident memory of the process doing
those steps (through benchmarks/peak.py, torch's own ~0.4 GiB included); and the test figures
(`python -m stages.evaluate`) after training each for the same wall-clock budget with the real
stage: the epochs that fit, from the measured 64 px step time. No pretrained weights are used:
the machine has no network.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from benchmarks import measure
from cnn_factory.config import parse_params
from cnn_factory.data.example import make_example
from cnn_factory.data.prepare import prepare
from cnn_factory.model import MultiOutputNet, model_args
from cnn_factory.training.losses import Criterion

ROOT = Path(__file__).resolve().parents[1]
FULL = {"encoders": ["unet", "resnet18", "efficientnet_b0", "convnext_atto"], "sizes": [64, 256], "batch": [16, 8],
        "seconds": 6.0, "budget": 120.0, "rows": 600}  # fmt: skip
QUICK = {"encoders": ["unet", "test_efficientnet"], "sizes": [32, 64], "batch": [4, 2], "seconds": 0.2,
         "budget": 1.0, "rows": 24}  # fmt: skip


def params_for(encoder: str, size: int, rows: int) -> dict:
    """params.yaml as it is, with `encoder`, at `size` px (the example's 64 in the full run)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["example"].update(rows=rows, size=[size, size])
    params["inputs"]["image"]["size"] = [size, size]
    for out in params["outputs"].values():
        if out["type"] == "segmentation":
            out["size"] = [size, size]
    params["model"]["encoder"] = encoder
    params["train"].update(log_images_every=0)
    return params


def step_seconds(encoder: str, size: int, batch: int, seconds: float) -> tuple[float, int]:
    """Seconds per image of a training step at `size` px, and the parameters of the network."""
    cfg = parse_params(params_for(encoder, size, 24))
    torch.manual_seed(0)
    model = (
        MultiOutputNet.from_args(model_args(cfg.model, cfg.inputs, cfg.outputs, {"outputs": {}}))
        .to(memory_format=torch.channels_last)
        .train()
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = Criterion(cfg.outputs, {})
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last)
    targets = {
        n: (torch.rand(batch, size, size, generator=g) > 0.5).float() for n, o in cfg.outputs.items() if o.spatial
    }
    targets.update({n: torch.randint(0, 3, (batch,), generator=g) for n, o in cfg.outputs.items() if not o.spatial})

    def step() -> None:
        loss, _ = criterion(model(x), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):  # warm-up: the allocator, oneDNN's kernel choice
        step()
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    # the median step: on a shared machine other work comes in bursts, which the mean would carry
    return float(np.median(times)) / batch, sum(p.numel() for p in model.parameters())


def steps_in_child(encoder: str, sizes: dict, folder: Path) -> dict:
    """step_seconds at each size in a process of its own, whose peak memory the kernel reports."""
    folder.mkdir(parents=True, exist_ok=True)
    out, peak = folder / "steps.json", folder / "peak_rss"
    command = [sys.executable, str(ROOT / "benchmarks" / "peak.py"), str(peak), sys.executable, "-m",
               "benchmarks.encoders", "--steps", encoder, "--sizes", json.dumps(sizes), "--out", str(out)]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True)
    return {**json.loads(out.read_text()), "peak_rss_mib": int(peak.read_text()) / 2**20}


def trained_figures(base: dict, encoder: str, budget: float, prepared: Path, folder: Path, per_image: float) -> dict:
    """The real train stage for the epochs that fit the budget, then evaluate's test figures."""
    n_train = len(np.load(prepared / "train" / "image.npy", mmap_mode="r"))
    epochs = max(1, round(budget / (per_image * n_train * 1.15)))  # ~15% for validation and logging
    params = copy.deepcopy(base)
    params["model"]["encoder"] = encoder
    params["train"].update(epochs=epochs)
    trained = measure.train_end_to_end(folder, params, prepared)
    measure.run_stage_timed(folder, "stages.evaluate")
    metrics = json.loads((folder / "eval" / "figures.json").read_text())
    return {"epochs": epochs, "train_wall_s": trained["wall_s"], "test": metrics}


def figure(metrics: dict, *keys: str) -> float | None:
    for key in keys:
        metrics = metrics.get(key, {}) if isinstance(metrics, dict) else {}
    return metrics if isinstance(metrics, (int, float)) else None


def markdown(results: dict) -> str:
    small, large = results["sizes"]["sizes"]
    lines = [
        f"| encoder | parameters | step ms/image, {small} px | step ms/image, {large} px | peak RSS (MiB) "
        "| epochs in the budget | test dice round | test dice angular | test accuracy majority |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results["encoders"].items():
        test = r.get("test", {})
        cells = [
            figure(test, "test", n, m) for n, m in (("round", "dice"), ("angular", "dice"), ("majority", "accuracy"))
        ]
        shown = " | ".join(f"{c:.3f}" if c is not None else "-" for c in cells)
        lines.append(
            f"| {name} | {r['parameters'] / 1e6:.2f} M | {r['ms'][0]:.2f} | {r['ms'][1]:.2f} | {r['peak_rss_mib']:.0f} "
            f"| {r.get('epochs', '-')} | {shown} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, figures mean nothing")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "encoders.json"), help="results file")
    parser.add_argument("--steps", help=argparse.SUPPRESS)  # the child: step times of one encoder
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps:
        sizes = json.loads(args.sizes)
        timed = [step_seconds(args.steps, s, b, sizes["seconds"]) for s, b in zip(sizes["sizes"], sizes["batch"])]
        Path(args.out).write_text(json.dumps({"ms": [1000 * t for t, _ in timed], "parameters": timed[0][1]}))
        return
    sizes = QUICK if args.quick else FULL
    results: dict = {"sizes": sizes, "load_average_start": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M")}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cnn-factory-encoders-") as tmp:
        work = Path(tmp)
        measure.snapshot(work / "code")
        base = params_for("unet", sizes["sizes"][0], sizes["rows"])
        make_example(work / "example", sizes["rows"], (sizes["sizes"][0],) * 2, seed=0)
        base["data"].update(csv=str(work / "example" / "data.csv"), root=str(work / "example"))
        prepare(parse_params(base), work / "prepared", None, workers=os.cpu_count() or 1)
        results["encoders"] = {}
        for encoder in sizes["encoders"]:
            with measure.Contention() as busy:
                r = steps_in_child(encoder, sizes, work / encoder / "steps")
                per_image = r["ms"][0] / 1000
                r.update(
                    trained_figures(
                        base, encoder, sizes["budget"], work / "prepared", work / encoder / "run", per_image
                    )
                )
            r["other_load_cores"] = busy.cores
            results["encoders"][encoder] = r
            print(f"{encoder}: {json.dumps({k: v for k, v in r.items() if k != 'test'})}", flush=True)
    results["seconds"] = round(time.perf_counter() - start)
    results["load_average_end"] = os.getloadavg()
    results["table"] = markdown(results)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"{results['seconds']} s; load average {results['load_average_start']} -> {results['load_average_end']}")
    print(results["table"])


if __name__ == "__main__":
    main()
