"""Benchmarks of the data path against the compute limit: prints a table, writes benchmarks/results.json.

    python -m benchmarks.run            # full sizes: ~13 min on 2 CPU cores
    python -m benchmarks.run --quick    # tiny sizes, a smoke run (tests/test_benchmarks.py)

Runs on CUDA when present (params.yaml `train.device: auto`), else on the CPU, in a temporary
folder; only the results file is written here. Every figure is a ratio of two rates measured
in the same run, so a busy or different machine moves both sides:

1. training efficiency: images/s of `python -m stages.train` end to end (startup, loading,
   augmenting, validation, logging, checkpoints) over images/s of the bare optimiser step on
   a batch already on the device, with num_augs 0 and 4, and validating every 5th epoch
2. the training loader against decoding the PNGs on every access (what the original cnn-factory did each epoch)
3. prepare at 1 and 2 workers on generated 256x256 images, and an incremental re-run after
   adding rows; the time of `dvc repro` and `dvc status` on that data
4. peak RSS of training on 10x the rows over 1x
5. evaluate (prepared arrays) and predict (PNG files) images/s
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from benchmarks import measure
from cnn_factory.config import parse_params
from cnn_factory.data.example import make_example
from cnn_factory.data.prepare import default_workers, prepare
from cnn_factory.device import pick_device
from cnn_factory.runtime import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
FULL = {"prepare_rows": 2000, "prepare_size": 256, "added": 20, "factor": 10, "seconds": 10.0, "memory_epochs": 1}
QUICK = {"prepare_rows": 40, "prepare_size": 32, "added": 4, "factor": 10, "seconds": 0.2, "memory_epochs": 1}


def base_params(quick: bool) -> dict:
    """params.yaml as it is; for --quick shrunk to 16x16 images, a tiny model and 2 epochs."""
    params = yaml.safe_load((measure.CODE / "params.yaml").read_text())
    if quick:
        params["example"].update(rows=24, size=[16, 16])
        params["inputs"]["image"]["size"] = [16, 16]
        for out in params["outputs"].values():
            if out["type"] == "segmentation":
                out["size"] = [16, 16]
        params["model"].update(depth=2, filters=4)
        params["train"].update(epochs=2, batch_size=8)
    return params


def with_data(params: dict, csv: Path, root: Path, **train) -> dict:
    params = copy.deepcopy(params)
    params["data"].update(csv=str(csv), root=str(root))
    params["train"].update(train)
    return params


def attempt(fn, *args):
    """fn(*args), or the error as text: one broken measurement does not lose the others."""
    try:
        return fn(*args)
    except Exception as err:  # reported in the table and the results file
        print(f"warning: {fn.__name__} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return f"failed: {type(err).__name__}"


def timed(fn, *args):
    """(seconds, result) of fn(*args), its printing (prepare's report and warnings) swallowed."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        result = fn(*args)
    return time.perf_counter() - start, result


def add_rows(folder: Path, count: int, size: int, scratch: Path) -> None:
    """Appends `count` newly generated rows (new files) to folder/data.csv."""
    make_example(scratch, count, (size, size), seed=1)
    lines = (scratch / "data.csv").read_text().splitlines()[1:]
    for sub in ("images", "labels"):
        for path in (scratch / sub).glob("*.png"):
            shutil.copy(path, folder / sub / f"new-{path.name}")
    with open(folder / "data.csv", "a") as f:
        f.writelines(line.replace("images/", "images/new-").replace("labels/", "labels/new-") + "\n" for line in lines)


def training(work: Path, base: dict, sizes: dict, device: torch.device) -> dict:
    """Items 1, 2, 4 and 5, on the built-in example (params.yaml `example`)."""
    ex = parse_params(base).example
    make_example(work / "example", ex.rows, ex.size, ex.seed)
    params = with_data(base, work / "example" / "data.csv", work / "example")
    cfg, prepared = parse_params(params), work / "prepared"
    timed(prepare, cfg, prepared, work / "cache", default_workers())
    r: dict = {"example_rows": ex.rows, "example_size": list(ex.size), "factor": sizes["factor"]}
    seconds, epochs = sizes["seconds"], cfg.train.epochs
    augs4 = with_data(base, work / "example" / "data.csv", work / "example", num_augs=4, epochs=max(1, epochs // 5))
    every5 = with_data(base, work / "example" / "data.csv", work / "example", val_every=5)
    runs = {"train_augs0": params, "train_augs4": augs4, "train_val_every5": every5}
    with measure.Contention() as busy:  # the bare step before, between and after the runs of the stage
        pure = [measure.pure_step_rate(cfg, prepared, device, seconds)]
        for name, run_params in runs.items():
            r[name] = measure.train_end_to_end(work / name, run_params, prepared)
            pure.append(measure.pure_step_rate(cfg, prepared, device, seconds))
    r["pure_step"], r["other_cores_training"] = pure, busy.cores
    for k, name in enumerate(runs):  # each run over the mean of the bare step just before and after it
        r[name]["bare_step_around"] = (pure[k] + pure[k + 1]) / 2
        r[name.replace("train_", "efficiency_")] = r[name]["images_per_s"] / r[name]["bare_step_around"]

    r["loader"] = measure.loader_vs_decoding(cfg, prepared, seconds / 2)
    model = work / "train_augs0" / "models" / f"{cfg.model.name}.pt"
    r["evaluate_images_per_s"] = attempt(measure.evaluate_rate, cfg, prepared, model, device, seconds / 2)
    r["predict_images_per_s"] = attempt(measure.predict_rate, model, work / "example" / "images", work / "predict", 64)

    lines = (work / "example" / "data.csv").read_text().splitlines()
    (work / "example" / "data10.csv").write_text("\n".join(lines[:1] + lines[1:] * sizes["factor"]) + "\n")
    many = with_data(base, work / "example" / "data10.csv", work / "example", epochs=sizes["memory_epochs"])
    timed(prepare, parse_params(many), work / "prepared10", work / "cache", default_workers())  # repeats: cache hits
    one = with_data(params, work / "example" / "data.csv", work / "example", epochs=sizes["memory_epochs"])
    r["memory_1x"] = measure.train_end_to_end(work / "memory1", one, prepared)["peak_rss"]
    r["memory_10x"] = measure.train_end_to_end(work / "memory10", many, work / "prepared10")["peak_rss"]
    return r


def preparing(work: Path, base: dict, sizes: dict) -> dict:
    """Item 3 and `dvc status`, on `prepare_rows` generated images of prepare_size^2."""
    n, size, repo = sizes["prepare_rows"], sizes["prepare_size"], work / "repo"
    measure.dvc_repo(repo, with_data(base, Path("data/raw/data.csv"), Path("data/raw")))
    raw = repo / "data" / "raw"
    make_example(raw, n, (size, size), seed=0)
    cfg = parse_params(with_data(base, raw / "data.csv", raw))
    r: dict = {"rows": n, "size": size}
    with measure.Contention() as busy:
        r["one_worker_s"], _ = timed(prepare, cfg, work / "w1" / "prepared", work / "w1" / "cache", 1)
        r["two_workers_s"], _ = timed(prepare, cfg, repo / "data" / "prepared", repo / "data" / "cache", 2)
    r["other_cores_prepare"] = busy.cores
    same = [p.relative_to(repo / "data") for p in sorted((repo / "data" / "prepared").rglob("*.npy"))]
    r["identical"] = all((work / "w1" / p).read_bytes() == (repo / "data" / p).read_bytes() for p in same)
    r["dvc_repro_cached_s"] = measure.dvc(repo, "repro", "prepare")  # the stage finds every row in data/cache
    add_rows(raw, sizes["added"], size, work / "more")
    shutil.copytree(repo / "data" / "cache", work / "inc" / "cache")  # the same start for the in-process re-run
    r["incremental_s"], (_, rows) = timed(prepare, cfg, work / "inc" / "prepared", work / "inc" / "cache", 2)
    r["added"], r["incremental_decoded"] = sizes["added"], rows.decoded
    r["dvc_repro_added_s"] = measure.dvc(repo, "repro", "prepare")  # decodes the added rows in the stage
    r["dvc_status_s"] = measure.dvc(repo, "status")
    r["dvc_files"] = sum(1 for d in ("prepared", "cache") for f in (repo / "data" / d).rglob("*") if f.is_file())
    return r


def table(r: dict) -> list[dict]:
    """The rows of the results table: what, value, unit, target."""
    t, p = r["training"], r["prepare"]
    mib, k, n = 1 << 20, r["training"]["factor"], p["rows"] + p["added"]
    loop0 = t["train_augs0"]  # its efficiency is the product of the two rows after its loop's
    rows = [
        ("training efficiency, num_augs 0", t["efficiency_augs0"], "ratio", ">= 0.90"),
        ("training efficiency, num_augs 4", t["efficiency_augs4"], "ratio", ""),
        ("training efficiency, num_augs 0, val_every 5", t["efficiency_val_every5"], "ratio", ""),
        ("other processes' CPU use during those runs", t["other_cores_training"], "cores", "0"),
        ("stages.train end to end, num_augs 0", t["train_augs0"]["images_per_s"], "img/s", ""),
        ("stages.train end to end, num_augs 4", t["train_augs4"]["images_per_s"], "img/s", ""),
        ("its training loop alone, num_augs 0", t["train_augs0"]["loop_images_per_s"], "img/s", ""),
        ("its training loop alone, num_augs 4", t["train_augs4"]["loop_images_per_s"], "img/s", ""),
        (
            "end to end over its own loop, num_augs 0 (same window)",
            loop0["images_per_s"] / loop0["loop_images_per_s"],
            "ratio",
            "",
        ),
        (
            "its loop over the bare step, num_augs 0 (minutes apart)",
            loop0["loop_images_per_s"] / loop0["bare_step_around"],
            "ratio",
            "",
        ),
        ("bare step on a device batch (mean)", sum(t["pure_step"]) / len(t["pure_step"]), "img/s", ""),
        ("loader vs decoding every access", t["loader"]["ratio"], "ratio", ">= 5"),
        ("training loader", t["loader"]["loader"], "samples/s", ""),
        ("decoding PNGs on every access", t["loader"]["decode_every_access"], "samples/s", ""),
        (f"prepare {p['rows']} rows of {p['size']}px, 1 worker", p["rows"] / p["one_worker_s"], "img/s", ""),
        (f"prepare {p['rows']} rows of {p['size']}px, 2 workers", p["rows"] / p["two_workers_s"], "img/s", ""),
        ("prepare speed-up, 2 workers over 1", p["one_worker_s"] / p["two_workers_s"], "ratio", ">= 1.7"),
        ("arrays of 2 workers byte-identical to 1 worker's", "yes" if p["identical"] else "NO", "", "yes"),
        ("other processes' CPU use while preparing", p["other_cores_prepare"], "cores", "0"),
        (
            f"prepare after adding {p['added']} rows, over first run",
            p["incremental_s"] / p["two_workers_s"],
            "ratio",
            "<= 0.10",
        ),
        ("rows decoded by that re-run", p["incremental_decoded"], "rows", f"{p['added']}"),
        (f"dvc status, {n} rows, up to date", p["dvc_status_s"], "s", ""),
        ("dvc repro prepare, every row cached", p["dvc_repro_cached_s"], "s", ""),
        (f"dvc repro prepare after adding {p['added']} rows", p["dvc_repro_added_s"], "s", ""),
        ("files in data/prepared and data/cache", p["dvc_files"], "files", ""),
        (f"peak RSS of training, {k}x rows over 1x", t["memory_10x"] / t["memory_1x"], "ratio", "<= 1.25"),
        (f"peak RSS, 1x rows ({t['example_rows']})", t["memory_1x"] / mib, "MiB", ""),
        (f"peak RSS, {k}x rows ({k * t['example_rows']})", t["memory_10x"] / mib, "MiB", ""),
        ("evaluate (prepared arrays)", t["evaluate_images_per_s"], "img/s", ""),
        ("predict (PNG files, masks written)", t["predict_images_per_s"], "img/s", ""),
    ]
    return [{"what": w, "value": v, "unit": u, "target": g} for w, v, u, g in rows]


def markdown(rows: list[dict]) -> str:
    lines = ["| measurement | value | unit | target |", "| --- | ---: | --- | --- |"]
    for row in rows:
        v = row["value"]
        text = f"{v:.2f}" if isinstance(v, float) and abs(v) < 100 else f"{v:.0f}" if isinstance(v, float) else str(v)
        lines.append(f"| {row['what']} | {text} | {row['unit']} | {row['target']} |")
    return "\n".join(lines)


def environment(device: torch.device) -> dict:
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cores": default_workers(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_start": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, figures mean nothing")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"), help="results file")
    args = parser.parse_args()
    # the bare step and the in-process rates run with the allocator settings every stage gets
    allocator = keep_freed_memory()
    if args.quick:  # one thread: tiny ops on threads that wait for each other crawl on a busy machine
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="cnn-factory-bench-") as tmp:
        measure.snapshot(Path(tmp) / "code")
        base = base_params(args.quick)
        sizes = QUICK if args.quick else FULL
        device = pick_device(parse_params(base).train.device)
        results = {"quick": args.quick, "environment": {**environment(device), "allocator_tuned": allocator}}
        start = time.perf_counter()
        results["training"] = training(Path(tmp) / "training", base, sizes, device)
        results["prepare"] = preparing(Path(tmp) / "prepare", base, sizes)
    results["environment"]["load_average_end"] = os.getloadavg()
    results["environment"]["seconds"] = round(time.perf_counter() - start)
    results["table"] = table(results)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    env = results["environment"]
    print(
        f"{env['device']}, {env['cores']} cores, torch {env['torch']}; load average {env['load_average_start']} "
        f"-> {env['load_average_end']}; {env['seconds']} s"
    )
    print(markdown(results["table"]))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
