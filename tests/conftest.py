"""Shared fixtures: tiny generated data, a tiny params dict, and a throwaway DVC repository."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from PIL import Image

from benchmarks.cells import make_cells
from cnn_factory.config import PREPARED, Config, parse_params
from cnn_factory.data.example import make_example
from cnn_factory.data.prepare import prepare
from cnn_factory.data.volumes_example import make_volume_example
from cnn_factory.model import MultiOutputNet, model_args, model_meta, save_model
from cnn_factory.training.fit import fit
from cnn_factory.volumes import read_volume, volume_bytes

ROOT = Path(__file__).resolve().parents[1]
SIZE = [16, 16]
# how long a server process may take to answer its first request: seconds on a quiet machine,
# minutes where other work holds the cores (a niced run got 6% of one); a server that fails to
# start exits, which ends the wait at once
SERVER_START_S = 300


def with_majority(row: str, value: str) -> str:
    """A row of the example's data.csv (image,labels,majority,round_px) with `value` in its majority cell."""
    cells = row.split(",")
    return ",".join([*cells[:2], value, *cells[3:]])


def tiny_params(rows: int = 24) -> dict:
    """The repository's params.yaml, shrunk to 16x16 images and a few seconds of training."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["example"].update(rows=rows, size=SIZE)
    params["inputs"]["image"]["size"] = SIZE
    for out in params["outputs"].values():
        if out["type"] == "segmentation":
            out["size"] = SIZE
    params["model"].update(depth=2, filters=4)
    params["train"].update(epochs=2, batch_size=8, log_images_every=1)
    return params


PATCH = [32, 32]


def cell_params(folder: Path, mode: str = "patch", size: list[int] = PATCH, **train) -> dict:
    """params.yaml for the generated cell images in `folder`, one grey input, a mask and a category."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(csv=str(folder / "data.csv"), root=str(folder))
    params["inputs"] = {"image": {"type": "image", "size": size, "channels": 1, "mode": mode}}
    params["outputs"] = {
        "cells": {"type": "segmentation", "column": "labels", "label": 1},
        "density": {"type": "category", "classes": ["sparse", "dense"]},
    }
    params["model"].update(depth=2, filters=4)
    params["train"].update(batch_size=4, **train)
    return params


@pytest.fixture
def params() -> dict:
    return copy.deepcopy(tiny_params())


@pytest.fixture
def example_dir(tmp_path: Path) -> Path:
    out = tmp_path / "example"
    make_example(out, rows=24, size=tuple(SIZE), seed=0)
    return out


def run(cmd: list[str], cwd: Path, check: bool = True, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs a command with the venv's python and dvc first on PATH."""
    env = {
        **(extra_env or {}),
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": "",
    }
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def repro_killed_when(repo: Path, ready: Callable[[], bool], timeout: float = 240, target: str | None = None) -> None:
    """Starts `dvc repro [target]` and SIGKILLs it (dvc and the stage it runs) once `ready()` holds or `timeout`
    seconds have passed. Polling cannot pick the moment exactly (the stage keeps going between the last
    poll and the kill), so callers read what they need from disk after this returns, never before."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(
        ["dvc", "repro", *([target] if target else [])],
        cwd=repo,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline and not ready():
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be interrupted"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    clear_a_torn_dvc_lock(repo)


def clear_a_torn_dvc_lock(repo: Path) -> None:
    """DVC rewrites its own files in place, so a SIGKILL in the middle of a write leaves them torn:
    - its lock table `.dvc/tmp/rwlock`: the next `dvc repro` stops with "Unable to read RWLock-file
      ... JSON structure is corrupted" (treeverse/dvc#7615);
    - a `dvc.lock` (dvc/utils/serialize/_common.py opens it "w+" and dumps): the next run stops with
      "'./dvc.lock' validation failed".
    The remedy for both, as docs/pipeline.md says, is to delete the file: DVC's own state, not an
    output of the pipeline, whose files these tests check (without its dvc.lock, DVC runs the stages
    again or restores their outputs from its run cache)."""
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA
    from dvc.utils.strictyaml import YAMLSyntaxError, YAMLValidationError
    from dvc.utils.strictyaml import load as load_as_dvc_does

    lock = repo / ".dvc" / "tmp" / "rwlock"
    try:
        json.loads(lock.read_text())
    except FileNotFoundError:
        pass
    except json.JSONDecodeError:
        lock.unlink()
    for lockfile in (repo / "dvc.lock", repo / "folds" / "dvc.lock"):
        try:
            load_as_dvc_does(str(lockfile), COMPILED_LOCKFILE_SCHEMA)
        except FileNotFoundError:
            pass
        except (YAMLSyntaxError, YAMLValidationError):
            lockfile.unlink()


def checkpoint_epoch(repo: Path, name: str = "example") -> int:
    """Epochs held by the training checkpoint of an unfinished run (0: none yet, or the run completed)."""
    try:
        state = torch.load(repo / "checkpoints" / f"{name}.ckpt", weights_only=True)
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0
    return 0 if state.get("complete") else state["epoch"]


def prepare_and_fit(root: Path, cfg: Config) -> Path:
    """`root` after prepare and train ran there on `cfg`, seeded, as the stages run in a repository:
    data/prepared/, models/, dvclive/ and checkpoints/ land in it."""
    here = Path.cwd()
    os.chdir(root)
    try:
        torch.manual_seed(0)
        prepare(cfg, PREPARED, None, workers=1)
        fit(cfg)
    finally:
        os.chdir(here)
    return root


def make_repo(path: Path, params: dict) -> Path:
    """A git + DVC repository holding this project's code, dvc.yaml, its plot templates (.dvc/plots)
    and the given params."""
    path.mkdir(parents=True, exist_ok=True)
    for folder in ("stages", "src"):
        shutil.copytree(ROOT / folder, path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, path / name)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], path)
    run(["dvc", "init", "-q"], path)
    shutil.copytree(ROOT / ".dvc" / "plots", path / ".dvc" / "plots")
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "init"], path)
    return path


def with_plots(repo: Path, *folders: str) -> None:
    """repo's dvc.yaml with the plots of eval/plots/<folder> that it ships commented out (values,
    bland_altman: for numeric and measure outputs) uncommented, as docs/evaluation.md says to."""
    dvc_yaml = repo / "dvc.yaml"
    text = dvc_yaml.read_text()
    for folder in folders:
        start = text.index(f"  # - eval/plots/{folder}:")
        end = text.index("\n", text.index("y_label", start)) + 1
        text = text[:start] + text[start:end].replace("  # ", "  ") + text[end:]
    dvc_yaml.write_text(text)


@pytest.fixture
def repo(tmp_path: Path, params: dict) -> Path:
    return make_repo(tmp_path / "repo", params)


def untrained_model(raw: dict, manifest: dict, path: Path, spread: tuple[str, ...] = ()) -> Path:
    """A model file with random weights (no training needed: predict and serve only run it). The
    heads named in `spread` have their weights scaled up: an untrained network's logits stay
    within 0.01 of 0, so a mask would be all on or all off by rounding alone."""
    cfg = parse_params(raw)
    torch.manual_seed(0)
    args = model_args(cfg.model, cfg.inputs, cfg.outputs, manifest)
    model = MultiOutputNet.from_args(args).eval()
    with torch.no_grad():
        for name in spread:
            model.heads[name].head.weight.mul_(1000)
    save_model(path, model, args, {**model_meta(cfg.inputs, cfg.outputs, manifest), "epoch": 1, "val": {}})
    return path


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> dict[str, Path]:
    """A resize model (two masks, a category, a number), a patch model (a mask, a category), their images."""
    folder = tmp_path_factory.mktemp("serve")
    make_example(folder / "example", rows=4, size=(16, 16), seed=0)
    images = folder / "images"
    images.mkdir()
    shutil.copy(folder / "example" / "images" / "0000.png", images / "small.png")
    wide = np.asarray(Image.open(folder / "example" / "images" / "0001.png").resize((24, 40)))
    Image.fromarray(wide).save(images / "wide.png")
    raw = tiny_params()
    raw["outputs"]["area"] = {"type": "numeric", "column": "area", "loss": "mse"}
    manifest = {
        "inputs": {"image": {"mean": [0.4, 0.5, 0.45], "std": [0.2, 0.25, 0.22]}},
        "outputs": {"area": {"mean": 30.0, "std": 5.0}},
    }
    make_cells(folder / "cells", rows=3, sizes=(40, 72), seed=1)
    patch_manifest = {"inputs": {"image": {"mean": [0.5], "std": [0.25]}}, "outputs": {}}
    return {
        "resize": untrained_model(raw, manifest, folder / "resize.pt"),
        "patch": untrained_model(cell_params(folder / "cells"), patch_manifest, folder / "patch.pt"),
        "resize_images": images,
        "patch_images": folder / "cells" / "images",
    }


MASKS = ("organ", "tumour")  # the volume example's masks


@pytest.fixture(scope="session")
def served_scans(tmp_path_factory) -> dict[str, Path]:
    """A volume model with random weights (two masks, a category, a number) and scans to send it:
    an example scan placed obliquely (rotated 30 degrees about z, off the origin), the same as .nii
    and as a calibrated TIFF stack."""
    from tests.test_volume_pipeline import volume_params

    folder = tmp_path_factory.mktemp("scans")
    make_volume_example(folder / "example", rows=2, size=(12, 20, 20), seed=1)
    manifest = {
        "inputs": {"image": {"mean": [0.3], "std": [0.2]}},
        "outputs": {"tumour_ml": {"mean": 5.0, "std": 2.0}},
        "spacing": [3.0, 1.0, 1.0],
    }
    model = untrained_model(volume_params(folder / "example"), manifest, folder / "volumes.pt", spread=MASKS)
    scan = read_volume(folder / "example" / "images" / "0000.nii.gz", "test")
    turn = np.eye(4)
    turn[:2, :2] = [[np.cos(np.pi / 6), -np.sin(np.pi / 6)], [np.sin(np.pi / 6), np.cos(np.pi / 6)]]
    oblique = turn @ scan.affine
    (folder / "oblique.nii.gz").write_bytes(volume_bytes(scan.array, oblique))
    (folder / "oblique.nii").write_bytes(volume_bytes(scan.array, oblique, compress=False))
    d, h, w = scan.spacing
    metadata = {"spacing": d, "unit": "mm", "axes": "ZYX"}
    tifffile.imwrite(folder / "stack.tif", scan.array[0], imagej=True, resolution=(1 / w, 1 / h), metadata=metadata)
    return {"model": model, "folder": folder}
