"""The Docker image's set-up: the pipeline commands run in a clone of the image's repository under /out.

The image sets CNN_FACTORY_HOME=/app (its repository), CNN_FACTORY_WORKDIR=/out/work,
CNN_FACTORY_DATA=/data, and HOME, TMPDIR and every cache under /out, so a container started with
`-u $(id -u):$(id -g)` or `--read-only` writes only under the mounted /out. Outside the image,
or inside a repository, nothing here does anything.

Only the commands that read params.yaml and dvc.yaml (PIPELINE) get the clone; `--version`,
`--help`, a usage error, `predict`, `evaluate MODEL CSV`, `export`, `serve` and `make-csv` run
where they are and make nothing under /out.

Every run starts from the image's settings: `dvc exp run -S` leaves each run's values in
params.yaml, so before a pipeline command and again after it the clone's tracked files are set to
the image's commit (`git fetch` from /app, `git reset --hard`; a rebuilt image's code and params
too). Each run stays a DVC experiment (`dvc exp show`), and the last run's untracked outputs
(models/, dvc.lock, checkpoints/) stay in place, so DVC re-runs only what changed (docs/command-line.md).
"""

from __future__ import annotations

import argparse
import errno
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cnn_factory.errors import UserError

PIPELINE = ("train", "validate", "plan", "summary")  # the commands that read params.yaml and dvc.yaml


def in_image(environ: dict) -> bool:
    """Started by the image's entrypoint outside a repository: the pipeline runs in the clone."""
    return bool(environ.get("CNN_FACTORY_WORKDIR")) and not Path("dvc.yaml").is_file()


def home(environ: dict) -> Path:
    return Path(environ.get("CNN_FACTORY_HOME", "/app"))


def help_params(environ: dict) -> Path:
    """The params.yaml whose values `train --help` shows as the flags' defaults: in the image, the image's."""
    return home(environ) / "params.yaml" if in_image(environ) else Path("params.yaml")


@contextmanager
def workdir(environ: dict, args: argparse.Namespace) -> Iterator[None]:
    """Runs a pipeline command in the clone, its tracked files the image's before and after."""
    if args.command not in PIPELINE or not in_image(environ):
        yield
        return
    work, image = Path(environ["CNN_FACTORY_WORKDIR"]), home(environ)
    if environ.get("TMPDIR"):  # made here, else Python falls back to /tmp (read-only with --read-only)
        writable(Path(environ["TMPDIR"]), work.parent)
    writable(work, work.parent)
    if not (work / "dvc.yaml").is_file():
        clone(image, work)
    os.chdir(work)
    check_csv(getattr(args, "csv", None), Path(environ.get("CNN_FACTORY_DATA", "/data")))
    follow(image)
    try:
        yield
    finally:
        follow(image)


def writable(folder: Path, out: Path) -> None:
    """Makes `folder` (under the /out mount) and checks that this user can write in it."""
    try:
        if not out.is_dir():  # never made here: it is the user's mount
            raise NotADirectoryError(errno.ENOTDIR, "not a folder" if out.exists() else "no such folder", str(out))
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        where = f"{err.filename}: {err.strerror}" if err.filename else str(err)
        if err.errno == errno.EROFS:
            raise UserError(
                f"cannot write in {out} ({where}); mount it writable (`-v $(pwd)/output:{out}`, no :ro)"
            ) from None
        raise UserError(
            f"cannot write in {out} ({where}); {out} must be a folder user {os.getuid()} can write: make it "
            f"before Docker does (it makes a missing -v folder owned by root): `mkdir -p output`, then "
            f"`-v $(pwd)/output:{out}`, or run as its owner with `-u $(id -u):$(id -g)`"
        ) from None


def clone(image: Path, work: Path) -> None:
    if not (image / "dvc.yaml").is_file():
        raise UserError(f"CNN_FACTORY_HOME={image}: no cnn-factory repository there to start from")
    git(["clone", "-q", str(image), str(work)], f"cannot create the work folder {work}")
    print(f"cnn-factory: working in {work}", file=sys.stderr)


def follow(image: Path) -> None:
    """The clone's tracked files set to the image's commit; untracked outputs and experiments kept."""
    git(["fetch", "-q", str(image), "HEAD"], f"cannot read the image's repository {image}")
    git(["reset", "-q", "--hard", "FETCH_HEAD"], f"cannot reset the work folder {Path.cwd()}")


def git(command: list[str], failure: str) -> None:
    result = subprocess.run(["git", *command], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"{failure}: {' '.join(result.stderr.split())}")


def check_csv(csv: str | None, data: Path) -> None:
    """--csv must name a file the container sees: the user's data is mounted at /data."""
    if csv is None or Path(csv).is_file():
        return
    mount = f"`-v $(pwd)/data:{data}`, then --csv {data}/<file>.csv"
    if not data.is_dir():
        raise UserError(f"--csv {csv}: not found, and nothing is mounted at {data}; mount your data there: {mount}")
    if not Path(csv).resolve().is_relative_to(data.resolve()):
        raise UserError(f"--csv {csv}: not found; the container sees your files under {data}: {mount}")
    raise UserError(f"--csv {csv}: not found in the folder mounted at {data}; check the file's name there")
