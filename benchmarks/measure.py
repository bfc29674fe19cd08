"""The measurements behind `python -m benchmarks.run`, one function each; no timing is asserted.

Training runs as the real stage (`python -m stages.train` in a work folder of its own), so it
is measured end to end, startup, validation, logging and checkpoints included; peak memory
comes from the kernel's accounting of that child (`os.wait4`, benchmarks/peak.py).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from cnn_factory.config import Config, parse_params
from cnn_factory.data.dataset import PreparedSplit, make_loader, read_manifest, to_device
from cnn_factory.data.patches import PatchBatches, PatchSplit
from cnn_factory.data.rows import load_row
from cnn_factory.data.table import Table, read_table
from cnn_factory.layers import SPATIAL
from cnn_factory.model import ModelFile, MultiOutputNet, load_model, model_args, model_meta
from cnn_factory.predict import predict_images
from cnn_factory.training.loop import autocast_dtype
from cnn_factory.training.losses import Criterion
from cnn_factory.training.optim import make_optimizer

ROOT = Path(__file__).resolve().parents[1]
CODE = ROOT  # where child processes find stages/, src/, params.yaml and dvc.yaml; see snapshot()
IGNORED = shutil.ignore_patterns("__pycache__", "*.egg-info")


def snapshot(folder: Path) -> None:
    """Copies stages/, src/, params.yaml, dvc.yaml and .gitignore to `folder` and runs every child
    process from there (its src/ first on PYTHONPATH), so edits to the working tree during a run
    cannot mix two versions."""
    global CODE
    for code in ("stages", "src"):
        shutil.copytree(ROOT / code, folder / code, ignore=IGNORED)
    for name in ("params.yaml", "dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, folder / name)
    CODE = folder


class Contention:
    """Cores kept busy by other processes while a block runs, on average (Linux /proc/stat):
    the machine's busy CPU time less this process's and its finished children's."""

    cores: float | None = None

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait

    @staticmethod
    def _own() -> float:
        return sum(
            getattr(resource.getrusage(w), f)
            for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
            for f in ("ru_utime", "ru_stime")
        )

    def __enter__(self) -> Contention:
        self.start, self.busy, self.own = time.perf_counter(), self._busy(), self._own()
        return self

    def __exit__(self, *exc) -> None:
        busy = self._busy()
        if busy is not None and self.busy is not None:
            other = busy - self.busy - (self._own() - self.own)
            self.cores = max(0.0, other / (time.perf_counter() - self.start))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def pure_step_rate(cfg: Config, prepared: Path, device: torch.device, seconds: float) -> float:
    """Images/s of forward + backward + optimiser step on one batch already on the device:
    the step of `cnn_factory.training.loop.train_one_epoch` (same model, batch size, precision), and nothing else."""
    manifest, t = read_manifest(prepared, cfg.inputs, cfg.outputs), cfg.train
    args, meta = model_args(cfg.model, cfg.inputs, cfg.outputs, manifest), model_meta(cfg.inputs, cfg.outputs, manifest)
    layout = SPATIAL[args.get("dims", 2)].memory_format  # channels last, 2-D or 3-D, as training's
    model = MultiOutputNet.from_args(args).to(device, memory_format=layout).train()
    criterion = Criterion(cfg.outputs, manifest["outputs"])
    optimizer = make_optimizer(t.optimizer, model.parameters(), t.lr, t.momentum, t.weight_decay)
    amp = autocast_dtype(t.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    stats = ModelFile.from_meta(meta).normalisation(device)
    views = None
    if cfg.patch_mode:  # a batch of patches and their whole-image views, as the patch loader gives them
        patches = PatchSplit(prepared / "train", list(cfg.inputs), cfg.outputs, cfg.first_input.size, t.view_share)
        g = torch.Generator().manual_seed(0)
        sampler = PatchBatches(rows=patches, samples=t.batch_size, batch_size=t.batch_size, share=0.33, generator=g)
        x, targets, _, views = patches[next(iter(sampler))]
        if views is not None:  # none without image-level outputs
            views, _ = to_device(views, {}, device, *stats)
    else:
        split = PreparedSplit(prepared / "train", list(cfg.inputs), cfg.outputs)
        x, targets, _ = split[list(range(min(t.batch_size, len(split))))]
    x, targets = to_device(x, targets, device, *stats)

    def step() -> None:
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            preds = model(x, views)
        loss, _ = criterion({k: v.float() for k, v in preds.items()}, targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up: allocator, oneDNN/cuDNN kernel choice
        step()
    sync(device)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 5:
        for _ in range(5):  # check the clock (and sync) every 5 steps only
            step()
        steps += 5
        sync(device)
    return steps * len(x) / (time.perf_counter() - start)


def write_params(folder: Path, params: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_stage_timed(folder: Path, module: str, *args: str) -> tuple[float, int, str]:
    """Runs `python -m <module>` in `folder`; returns (wall seconds, peak RSS bytes, output).

    The peak comes from the kernel through benchmarks/peak.py: nothing polls the child while it
    runs (on 2 cores a poller's wake-ups stall the stage's two compute threads)."""
    env = {**os.environ, "PYTHONPATH": f"{CODE}{os.pathsep}{CODE / 'src'}", "DVC_NO_ANALYTICS": "1"}
    log, peak = folder / f"{module.rsplit('.', 1)[-1]}.log", folder / "peak_rss"
    wrapper = [sys.executable, str(Path(__file__).with_name("peak.py")), str(peak)]
    start = time.perf_counter()
    with open(log, "w") as out:
        command = [*wrapper, sys.executable, "-m", module, *args]
        code = subprocess.call(command, cwd=folder, env=env, stdout=out, stderr=out)
    wall, text = time.perf_counter() - start, log.read_text()
    if code != 0:
        raise RuntimeError(f"{module} failed in {folder} ({code}):\n{text[-3000:]}")
    return wall, int(peak.read_text()), text


def train_end_to_end(folder: Path, params: dict, prepared: Path) -> dict:
    """`python -m stages.train` on a prepared folder: wall time, images trained per second, peak RSS."""
    write_params(folder, params)
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "prepared").symlink_to(prepared.resolve())
    wall, peak, text = run_stage_timed(folder, "stages.train")
    speeds = [float(s) for s in re.findall(r"^epoch \d+/\d+ .* (\d+) img/s$", text, flags=re.M)]
    if not speeds:
        raise RuntimeError(f"no 'epoch N/M ... img/s' lines in the output of stages.train:\n{text[-3000:]}")
    cfg = parse_params(params)
    n_train = len(np.load(prepared / "train" / f"{next(iter(cfg.inputs))}.npy", mmap_mode="r"))
    per_epoch = n_train * (1 + cfg.train.num_augs)
    images = len(speeds) * per_epoch
    loop = sum(per_epoch / s for s in speeds)  # seconds inside train_one_epoch, from its own lines
    return {
        "wall_s": wall,
        "epochs": len(speeds),
        "images": images,
        "images_per_s": images / wall,
        "loop_images_per_s": images / loop,
        "peak_rss": peak,
    }


class DecodeOnEveryAccess(Dataset):
    """The original cnn-factory's way: each sample's PNGs are decoded and its label map split whenever it is read."""

    def __init__(self, table: Table, cfg: Config, rows: list[int]):
        self.table, self.cfg, self.rows = table, cfg, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, k: int):
        arrays = load_row(self.table, self.rows[k], self.cfg).arrays
        x = np.concatenate([arrays[n] for n in self.cfg.inputs], axis=0)
        return x, {n: arrays[n] for n in self.cfg.outputs}


def samples_per_s(loader, seconds: float) -> float:
    """Whole epochs of a loader until `seconds` have passed; samples per second."""
    seen, start = 0, time.perf_counter()
    while seen == 0 or time.perf_counter() - start < seconds:
        for x, *_ in loader:
            seen += len(x)
    return seen / (time.perf_counter() - start)


def loader_vs_decoding(cfg: Config, prepared: Path, seconds: float) -> dict:
    """Samples/s of the training loader over the prepared arrays, and of decoding every access."""
    split = PreparedSplit(prepared / "train", list(cfg.inputs), cfg.outputs)
    ours = samples_per_s(make_loader(split, cfg.train.batch_size, True), seconds)
    table = read_table(cfg.data.csv)
    manifest = read_manifest(prepared, cfg.inputs, cfg.outputs)
    index = {number: i for i, number in enumerate(table.numbers)}
    rows = [index[number] for number in manifest["splits"]["train"]["rows"]]
    generator = torch.Generator().manual_seed(0)
    seed_loader = DataLoader(
        DecodeOnEveryAccess(table, cfg, rows), batch_size=cfg.train.batch_size, shuffle=True, generator=generator
    )
    theirs = samples_per_s(seed_loader, seconds)
    return {"loader": ours, "decode_every_access": theirs, "ratio": ours / theirs}


@torch.no_grad()
def evaluate_rate(cfg: Config, prepared: Path, model_path: Path, device: torch.device, seconds: float) -> float:
    """Images/s of the trained model on prepared arrays: loader, normalisation and forward pass."""
    model, meta = load_model(model_path, device)
    model = model.to(memory_format=torch.channels_last)
    amp = autocast_dtype(cfg.train.precision, device)
    norm = ModelFile.from_meta(meta).normalisation(device)
    split = PreparedSplit(prepared / "train", list(meta["inputs"]), cfg.outputs)
    seen, start = 0, time.perf_counter()
    while seen == 0 or time.perf_counter() - start < seconds:
        for x, targets, _ in make_loader(split, cfg.train.batch_size, False):
            x, _ = to_device(x, targets, device, *norm)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                model(x)
            seen += len(x)
        sync(device)
    return seen / (time.perf_counter() - start)


def predict_rate(model_path: Path, images: Path, out: Path, batch_size: int) -> float:
    """Images/s of `cnn-factory predict` (stages/predict.py): PNG files in, masks and a CSV out."""
    count = len(list(images.glob("*.png")))
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        predict_images(str(model_path), [str(images / "*.png")], out, batch_size, "auto", tta=False)
    return count / (time.perf_counter() - start)


def dvc(repo: Path, *args: str) -> float:
    """Seconds one `dvc` command takes in `repo` (the venv's dvc)."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": "",
        "DVC_NO_ANALYTICS": "1",
    }
    start = time.perf_counter()
    result = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - start


def dvc_repo(repo: Path, params: dict) -> None:
    """A git + DVC repository holding this project's stages/ and only the prepare stage of dvc.yaml."""
    for code in ("stages", "src"):
        shutil.copytree(CODE / code, repo / code, ignore=IGNORED)
    pipeline = yaml.safe_load((CODE / "dvc.yaml").read_text())
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"prepare": pipeline["stages"]["prepare"]}}))
    shutil.copy(CODE / ".gitignore", repo / ".gitignore")
    write_params(repo, params)
    git = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "benchmark"]):
        subprocess.run(cmd, cwd=repo, env={**os.environ, **git}, check=True, capture_output=True)
        if cmd[1] == "init":
            dvc(repo, "init", "-q")
