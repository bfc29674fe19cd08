"""`cnn-factory compare` over many experiments of the built-in example: how long it takes.

    python -m benchmarks.compare [--experiments 10] [--epochs 1] [--repeat 5] [--keep DIR]

Builds the example (600 images of 64x64, default params.yaml, `train.epochs` cut to --epochs)
in a temporary git + DVC repository, runs `dvc repro`, commits, then runs --experiments
experiments through DVC's queue (`dvc exp run --queue -S train.seed=1,...` and `dvc queue start`),
each trained and evaluated on the same 90 test images. Then times `cnn-factory compare` as a user
runs it (a fresh process: imports, `dvc exp show`'s data, each run's per-image table, 1,000 paired
resamples per run and output), the median of --repeat runs, and `dvc exp show --json` beside it
as what DVC alone takes to list the same runs. Writes benchmarks/compare.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.measure import dvc

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path) -> float:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": ""}
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - start


def build(repo: Path, experiments: int, epochs: int) -> None:
    for folder in ("stages", "src"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["epochs"] = epochs
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    os.environ.update(git)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q")
    print(f"compare benchmark: dvc repro of the example ({epochs} epoch(s)) in {repo}", flush=True)
    dvc(repo, "repro")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "baseline"], cwd=repo, check=True)
    seeds = ",".join(str(s) for s in range(1, experiments + 1))
    dvc(repo, "exp", "run", "--queue", "-S", f"train.seed={seeds}")
    print(f"compare benchmark: {experiments} queued experiments running one at a time", flush=True)
    dvc(repo, "queue", "start", "-j", "1")
    while (
        "Queued"
        in (status := subprocess.run(["dvc", "queue", "status"], cwd=repo, capture_output=True, text=True).stdout)
        or "Running" in status
    ):
        time.sleep(5)
    if "Failed" in status:
        raise RuntimeError(f"an experiment failed:\n{status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of each run (the figures do not matter)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each command; the median is kept")
    parser.add_argument("--keep", type=Path, default=None, help="build the repository here and keep it")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "compare.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnn-factory-compare-") as tmp:
        repo = args.keep or Path(tmp) / "repo"
        if not (repo / "dvc.lock").is_file():
            repo.mkdir(parents=True, exist_ok=True)
            build(repo, args.experiments, args.epochs)
        show = [timed([sys.executable, "-m", "dvc", "exp", "show", "--json"], repo) for _ in range(args.repeat)]
        compare = [timed([sys.executable, "-m", "cnn_factory", "compare"], repo) for _ in range(args.repeat)]
        table = subprocess.run(
            [sys.executable, "-m", "cnn_factory", "compare"], cwd=repo, capture_output=True, text=True
        )
    result = {
        "experiments": args.experiments,
        "compare_s": statistics.median(compare),
        "dvc_exp_show_json_s": statistics.median(show),
        "compare_runs_s": compare,
        "table": table.stdout.splitlines(),
        "cpu_count": os.cpu_count(),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("\n".join(result["table"]))
    print(
        f"cnn-factory compare over {args.experiments} experiments: {result['compare_s']:.2f} s "
        f"(median of {args.repeat}); dvc exp show --json: {result['dvc_exp_show_json_s']:.2f} s"
    )


if __name__ == "__main__":
    main()
