"""5-fold cross-validation of the built-in example against its single split (docs/small-data.md).

    python -m benchmarks.folds [--epochs 10] [--folds 5] [--example 2d|volumes] [--size 32] [--keep DIR]

Builds the example (2d: 600 images of 64x64, params.yaml as shipped; volumes: 60 scans,
examples/volumes/params.yaml) in a temporary git + DVC repository with `train.epochs` cut to
--epochs (and with --size N the 2-D example's images, the input and the masks N x N pixels
instead of 64 x 64: a quarter of the compute at 32), and runs, timing each:
1. `dvc repro`: the single split (train, val, test), its test figures with 95% intervals;
2. `data.split.folds: 5`, `cnn-factory folds`, `dvc repro folds/dvc.yaml`: the out-of-fold
   figures over every image outside the test split, and the folds' ensemble on the test split,
   which is the single split's test split (the same rows);
3. `cnn-factory evaluate models/folds/0.pt` on those test rows: one fold's model alone.
Prints, per output, the single split's test figure and interval beside the out-of-fold one (the
intervals' widths as a ratio), and on the same test images the single split's model, one fold's
and the folds' ensemble. Writes benchmarks/folds.json (git-ignored).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
GIT = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}


def build(repo: Path, example: str, epochs: int, size: int | None = None) -> dict:
    """The repository with this project's code and the example's params; returns the params."""
    for folder in ("stages", "src"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    source = ROOT / ("params.yaml" if example == "2d" else "examples/volumes/params.yaml")
    params = yaml.safe_load(source.read_text())
    params["train"]["epochs"] = epochs
    if size:  # the 2-D example at size x size pixels: its images, the network's input, the masks
        params["example"]["size"] = params["inputs"]["image"]["size"] = [size, size]
        for output in params["outputs"].values():
            if output["type"] == "segmentation":
                output["size"] = [size, size]
    write_params(repo, params)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "benchmark"]):
        subprocess.run(cmd, cwd=repo, env=environment(repo), check=True, capture_output=True)
        if cmd[1] == "init":
            dvc(repo, "init", "-q")
    return params


def environment(repo: Path) -> dict[str, str]:
    """The venv's tools first on PATH, and the repository's own copy of the library imported: edits
    to the working tree during a run cannot reach it."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, **GIT, "PATH": path, "PYTHONPATH": str(repo / "src"), "DVC_NO_ANALYTICS": "1"}


def dvc(repo: Path, *args: str) -> float:
    """Seconds one `dvc` command takes in `repo`."""
    start = time.perf_counter()
    result = subprocess.run(["dvc", *args], cwd=repo, env=environment(repo), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - start


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def command(repo: Path, *args: str) -> float:
    """Seconds a `cnn-factory` command takes in `repo`."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "cnn_factory", *args]
    result = subprocess.run(cmd, cwd=repo, env=environment(repo), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"cnn-factory {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - start


def headline(figures: dict, name: str, figure: str) -> dict[str, float]:
    """{value, low, high} of one output's figure in a nested figures file's section."""
    own = figures[name]
    return {"value": own[figure], "low": own.get(f"{figure}_ci_low"), "high": own.get(f"{figure}_ci_high")}


def test_rows_csv(repo: Path, params: dict, rows: list[int]) -> Path:
    """The CSV's test rows alone (`rows`: their numbers, the header being line 1)."""
    lines = (repo / params["data"]["csv"]).read_text().splitlines()
    out = repo / "test_rows.csv"
    out.write_text("\n".join([lines[0], *(lines[r - 1] for r in rows)]) + "\n")
    return out


def scored_rows(path: Path) -> list[int]:
    return sorted(int(r["csv_row"]) for r in csv.DictReader(io.StringIO(path.read_text())))


def run(repo: Path, example: str, epochs: int, folds: int, size: int | None = None) -> dict:
    params = build(repo, example, epochs, size)
    print(f"folds benchmark: the single split, dvc repro ({epochs} epochs) in {repo}", flush=True)
    single_s = dvc(repo, "repro")
    params["data"]["split"]["folds"] = folds
    write_params(repo, params)
    command(repo, "folds")
    print(f"folds benchmark: {folds} folds, dvc repro folds/dvc.yaml", flush=True)
    folds_s = dvc(repo, "repro", "folds/dvc.yaml")
    members = json.loads((repo / "data/prepared/manifest.json").read_text())["members"]
    if scored_rows(repo / "eval/per_image.csv") != sorted(members["test"]):
        raise RuntimeError("the folds' test split is not the single split's")
    test_csv = test_rows_csv(repo, params, members["test"])
    root = params["data"]["root"]
    command(repo, "evaluate", "models/folds/0.pt", str(test_csv), "--root", root, "--out", "eval/fold-0-test")
    single = json.loads((repo / "eval/figures.json").read_text())["test"]
    pooled = json.loads((repo / "eval/folds/figures.json").read_text())["out_of_fold"]
    ensemble = json.loads((repo / "eval/folds/test/figures.json").read_text())["test"]
    one_fold = json.loads((repo / "eval/fold-0-test/figures.json").read_text())["test"]
    images = json.loads((repo / "eval/folds/figures.json").read_text())["images"]
    result: dict = {
        "example": example,
        "size": params["example"]["size"],
        "epochs": epochs,
        "folds": folds,
        "images": {"test": len(members["test"]), "out_of_fold": sum(images.values())},
        "seconds": {"single_split": round(single_s, 1), "folds": round(folds_s, 1)},
        "outputs": {},
    }
    for name, spec in params["outputs"].items():
        figure = "dice" if spec["type"] == "segmentation" else "accuracy" if spec["type"] == "category" else "mae"
        row = {
            "figure": figure,
            "single_split_test": headline(single, name, figure),
            "out_of_fold": headline(pooled, name, figure),
            "one_fold_test": headline(one_fold, name, figure),
            "ensemble_test": headline(ensemble, name, figure),
        }
        widths = [row[k]["high"] - row[k]["low"] for k in ("single_split_test", "out_of_fold")]
        row["interval_width_ratio"] = widths[1] / widths[0] if widths[0] else None
        result["outputs"][name] = row
    return result


def show(result: dict) -> None:
    def cell(f: dict) -> str:
        return f"{f['value']:.3f} [{f['low']:.3f}, {f['high']:.3f}]" if f["low"] is not None else f"{f['value']:.3f}"

    n, seconds = result["images"], result["seconds"]
    print(
        f"\n{result['example']} example, {result['epochs']} epochs: single split {seconds['single_split']} s, "
        f"{result['folds']} folds {seconds['folds']} s"
    )
    print(f"| output | single split, test ({n['test']}) | out-of-fold ({n['out_of_fold']}) | width ratio |")
    print("| --- | --- | --- | --- |")
    for name, row in result["outputs"].items():
        ratio = f"{row['interval_width_ratio']:.2f}" if row["interval_width_ratio"] else "-"
        print(f"| {name} {row['figure']} | {cell(row['single_split_test'])} | {cell(row['out_of_fold'])} | {ratio} |")
    print(f"\nsame {n['test']} test images: | output | single split's model | fold 0's model | the folds' ensemble |")
    for name, row in result["outputs"].items():
        cells = [cell(row[k]) for k in ("single_split_test", "one_fold_test", "ensemble_test")]
        print(f"| {name} {row['figure']} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="train.epochs of every run (default: %(default)s)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--example", choices=("2d", "volumes"), default="2d")
    parser.add_argument("--size", type=int, default=None, help="the 2-D example's side in pixels (default: 64)")
    parser.add_argument("--keep", type=Path, default=None, help="build in this folder and keep it")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "folds.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnn-factory-folds-") as tmp:
        repo = args.keep or Path(tmp) / "repo"
        repo.mkdir(parents=True, exist_ok=True)
        result = run(repo, args.example, args.epochs, args.folds, args.size)
    show(result)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    previous[args.example] = result
    args.out.write_text(json.dumps(previous, indent=2) + "\n")


if __name__ == "__main__":
    main()
