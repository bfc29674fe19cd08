"""K-fold cross-validation of a built-in example against its single split (docs/small-data.md).

    python -m benchmarks.folds [--volumes] [--epochs N] [--folds 5] [--size 32] [--keep DIR]

Builds the example (600 images of 64x64, params.yaml as shipped; with --volumes the volume
example, 60 scans, examples/volumes/params.yaml) in a temporary git + DVC repository, with
`train.epochs` cut to --epochs if given (and with --size N the 2-D example's images, the input
and the masks N x N pixels instead of 64 x 64: a quarter of the compute at 32), and runs, timing
each and sampling the machine's load average:
1. `dvc repro`: the single split (train, val, test), its test figures with 95% intervals;
2. `data.split.folds: 5`, `cnn-factory folds`, `dvc repro folds/dvc.yaml`: the out-of-fold
   figures over every image outside the test split, and the folds' ensemble on the test split,
   which is the single split's test split (the same rows: checked);
3. `cnn-factory evaluate models/folds/K.pt` on those test rows, for every fold: each fold's
   model alone.
Prints, per output and its headline figure, the single split's test figure and interval beside
the out-of-fold one (the intervals' widths as a ratio), and on the same test images the single
split's model, fold 0's, the folds' models alone (mean and range) and the folds' ensemble.
Writes benchmarks/folds.json (git-ignored), one entry per example.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from cnn_factory.config import parse_params

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"2d": "params.yaml", "volumes": "examples/volumes/params.yaml"}  # each example's params
GIT = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
LOAD_EVERY = 15  # seconds between samples of the load average while a command runs


def build(repo: Path, example: str, epochs: int | None, size: int | None = None) -> dict:
    """The repository with this project's code and the example's params; returns the params."""
    for folder in ("stages", "src"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    params = yaml.safe_load((ROOT / EXAMPLES[example]).read_text())
    if epochs:
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
            subprocess.run(["dvc", "init", "-q"], cwd=repo, env=environment(repo), check=True, capture_output=True)
    return params


def environment(repo: Path) -> dict[str, str]:
    """The venv's tools first on PATH, and the repository's own copy of the library imported: edits
    to the working tree during a run cannot reach it."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, **GIT, "PATH": path, "PYTHONPATH": str(repo / "src"), "DVC_NO_ANALYTICS": "1"}


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


class Runner:
    """Runs `dvc` and `cnn-factory` commands in the repository, sampling the 1-minute load average
    every LOAD_EVERY seconds while they run (the machine may be shared: the times depend on it)."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.loads: list[float] = []

    def dvc(self, *args: str) -> float:
        """Seconds one `dvc` command takes."""
        return self._timed(["dvc", *args])

    def command(self, *args: str) -> float:
        """Seconds one `cnn-factory` command takes."""
        return self._timed([sys.executable, "-m", "cnn_factory", *args])

    def _timed(self, cmd: list[str]) -> float:
        start = time.perf_counter()
        env = environment(self.repo)
        proc = subprocess.Popen(cmd, cwd=self.repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while True:
            self.loads.append(os.getloadavg()[0])
            try:
                out, err = proc.communicate(timeout=LOAD_EVERY)
                break
            except subprocess.TimeoutExpired:
                continue
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out}\n{err}")
        return time.perf_counter() - start

    def load(self) -> dict[str, float]:
        """The load averages sampled since the last call: lowest, median, highest."""
        loads, self.loads = self.loads, []
        return {"low": round(min(loads), 1), "median": round(statistics.median(loads), 1), "high": round(max(loads), 1)}


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


def read_figures(path: Path, section: str) -> dict:
    return json.loads(path.read_text())[section]


def run(repo: Path, example: str, epochs: int | None, folds: int, size: int | None = None) -> dict:
    """Both pipelines and every fold's model on the test rows; the figures side by side (`compare`)."""
    started = datetime.now(UTC)
    params = build(repo, example, epochs, size)
    runner = Runner(repo)
    print(f"folds benchmark: the single split, dvc repro ({params['train']['epochs']} epochs) in {repo}", flush=True)
    seconds = {"single_split": runner.dvc("repro")}
    load = {"single_split": runner.load()}
    params["data"]["split"]["folds"] = folds
    write_params(repo, params)
    runner.command("folds")
    print(f"folds benchmark: {folds} folds, dvc repro folds/dvc.yaml", flush=True)
    seconds["folds"] = runner.dvc("repro", "folds/dvc.yaml")
    members = json.loads((repo / "data/prepared/manifest.json").read_text())["members"]
    if scored_rows(repo / "eval/per_image.csv") != sorted(members["test"]):
        raise RuntimeError("the folds' test split is not the single split's")
    test_csv, root = test_rows_csv(repo, params, members["test"]), params["data"]["root"]
    for k in map(str, range(folds)):  # each fold's model alone, on the same test rows
        runner.command(
            "evaluate", f"models/folds/{k}.pt", str(test_csv), "--root", root, "--out", f"eval/fold-{k}-test"
        )
    load["folds"] = runner.load()
    images = read_figures(repo / "eval/folds/figures.json", "images")
    return {
        "example": example,
        "started": started.isoformat(timespec="minutes"),
        "finished": datetime.now(UTC).isoformat(timespec="minutes"),
        "size": params["example"]["size"],
        "epochs": params["train"]["epochs"],
        "folds": folds,
        "images": {"test": len(members["test"]), "out_of_fold": sum(images.values())},
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "load_average": load,
        "outputs": compare(repo, params, folds),
    }


def compare(repo: Path, params: dict, folds: int) -> dict[str, dict]:
    """Per output, its headline figure (the kind's, as eval/metrics.json gives it) from each report."""
    single = read_figures(repo / "eval/figures.json", "test")
    pooled = read_figures(repo / "eval/folds/figures.json", "out_of_fold")
    ensemble = read_figures(repo / "eval/folds/test/figures.json", "test")
    each = [read_figures(repo / f"eval/fold-{k}-test/figures.json", "test") for k in range(folds)]
    rows = {}
    for name, output in parse_params(params).outputs.items():
        figure = output.headline
        row = {
            "figure": figure,
            "single_split_test": headline(single, name, figure),
            "out_of_fold": headline(pooled, name, figure),
            "one_fold_test": headline(each[0], name, figure),
            "each_fold_test": [each[k][name][figure] for k in range(folds)],
            "ensemble_test": headline(ensemble, name, figure),
        }
        widths = [row[k]["high"] - row[k]["low"] for k in ("single_split_test", "out_of_fold")]
        row["interval_width_ratio"] = widths[1] / widths[0] if widths[0] else None
        rows[name] = row
    return rows


def show(result: dict) -> None:
    def cell(f: dict) -> str:
        return f"{f['value']:.3f} [{f['low']:.3f}, {f['high']:.3f}]" if f["low"] is not None else f"{f['value']:.3f}"

    n, seconds, load = result["images"], result["seconds"], result["load_average"]
    print(
        f"\n{result['example']} example, {result['epochs']} epochs, {result['started']} to {result['finished']}: "
        f"single split {seconds['single_split']} s (load {load['single_split']}), "
        f"{result['folds']} folds {seconds['folds']} s (load {load['folds']})"
    )
    print(f"| output | single split, test ({n['test']}) | out-of-fold ({n['out_of_fold']}) | width ratio |")
    print("| --- | --- | --- | --- |")
    for name, row in result["outputs"].items():
        ratio = f"{row['interval_width_ratio']:.2f}" if row["interval_width_ratio"] else "-"
        print(f"| {name} {row['figure']} | {cell(row['single_split_test'])} | {cell(row['out_of_fold'])} | {ratio} |")
    print(
        f"\n| output (the same {n['test']} test images) | the single split's model | fold 0's model "
        "| each fold's model: mean (lowest-highest) | the folds' ensemble |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name, row in result["outputs"].items():
        alone = row["each_fold_test"]
        folds = f"{statistics.mean(alone):.3f} ({min(alone):.3f}-{max(alone):.3f})"
        cells = [cell(row["single_split_test"]), cell(row["one_fold_test"]), folds, cell(row["ensemble_test"])]
        print(f"| {name} {row['figure']} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", action="store_true", help="the volume example (60 scans) instead of the 2-D one")
    parser.add_argument("--epochs", type=int, default=None, help="train.epochs of every run (default: the params')")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--size", type=int, default=None, help="the 2-D example's side in pixels (default: 64)")
    parser.add_argument("--keep", type=Path, default=None, help="build in this folder and keep it")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "folds.json")
    args = parser.parse_args()
    if args.volumes and args.size:
        parser.error("--size is the 2-D example's side; the volume example keeps its scans' sizes")
    example = "volumes" if args.volumes else "2d"
    with tempfile.TemporaryDirectory(prefix="cnn-factory-folds-") as tmp:
        repo = args.keep or Path(tmp) / "repo"
        repo.mkdir(parents=True, exist_ok=True)
        result = run(repo, example, args.epochs, args.folds, args.size)
    show(result)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    previous[example] = result
    args.out.write_text(json.dumps(previous, indent=2) + "\n")


if __name__ == "__main__":
    main()
