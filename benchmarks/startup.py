"""Start-up time of the stages and the command, for this checkout and an earlier revision, side by side.

    python -m benchmarks.startup [--before REV] [--repeat 7]

Each stage runs as DVC runs it (`python -m stages.<name>`) in an empty folder holding only
params.yaml, so it imports what it imports, parses params.yaml and stops at its first missing
input with a one-line error: the wall time of that run is the stage's fixed cost before any work
(imports, params, exit). `make_example` runs with --help (it would otherwise generate the data).
The earlier revision is checked out into a temporary git worktree and run with the same Python,
alternating runs of the two so that a change in the machine's speed hits both alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = {  # what runs, and the arguments that make it stop before any work
    "stages.make_example": ["--help"],
    "stages.prepare": [],
    "stages.train": [],
    "stages.evaluate": [],
    "cli --help": ["--help"],
}


def command(checkout: Path, name: str) -> list[str]:
    if name.startswith("cli"):
        module = "cnn_factory" if (checkout / "src" / "cnn_factory").is_dir() else "stages.cli"
        return [sys.executable, "-m", module, *RUNS[name]]
    return [sys.executable, "-m", name, *RUNS[name]]


def time_once(checkout: Path, name: str, work: Path) -> float:
    env = {**os.environ, "PYTHONPATH": f"{checkout}{os.pathsep}{checkout / 'src'}"}
    start = time.perf_counter()
    subprocess.run(command(checkout, name), cwd=work, env=env, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="e448c99", help="git revision to compare with (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each, the median is shown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnn-factory-startup-") as tmp:
        before, work = Path(tmp) / "before", Path(tmp) / "work"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(before), args.before], cwd=ROOT, check=True)
        try:
            work.mkdir()
            shutil.copy(ROOT / "params.yaml", work / "params.yaml")
            times: dict[str, dict[str, list[float]]] = {n: {"before": [], "after": []} for n in RUNS}
            for _ in range(args.repeat):
                for name in RUNS:
                    times[name]["before"].append(time_once(before, name, work))
                    times[name]["after"].append(time_once(ROOT, name, work))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)
    print(f"median of {args.repeat} runs, seconds; before = {args.before}, after = this checkout")
    print(f"{'run':<22} {'before':>7} {'after':>7} {'after/before':>13}")
    for name, t in times.items():
        b, a = statistics.median(t["before"]), statistics.median(t["after"])
        print(f"{name:<22} {b:7.2f} {a:7.2f} {a / b:13.2f}")


if __name__ == "__main__":
    main()
