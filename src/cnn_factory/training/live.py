"""dvclive's Live: its metrics file replaced atomically, its folder kept with the checkpoint, its
system monitor working without a GPU.

dvclive rewrites metrics.json in place every step; a run killed during that write would
leave half a file, which `dvc metrics show` and a resumed run then fail to read. Here the
summary goes to a temporary file next to it and is renamed into place.

DVC deletes the train stage's outputs (the model, dvclive/) before it runs the stage again; a
run resuming from its checkpoint gets its curves and pictures back from the copy `keep_copy`
saves beside the checkpoint after every epoch.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from dvclive import Live
from dvclive.monitor_system import _SystemMonitor
from dvclive.plots import NumpyEncoder
from dvclive.serialize import dump_json

from cnn_factory.atomic import replace_file

try:
    from pynvml import NVMLError  # installed with dvclive; the NVIDIA driver it calls may not be

    NO_GPU: tuple[type[Exception], ...] = (NVMLError,)
except ImportError:  # without pynvml, dvclive does not look for a GPU at all
    NO_GPU = ()


class SystemMonitor(_SystemMonitor):
    """dvclive's monitor, without GPU figures where NVML cannot start (no NVIDIA driver).

    dvclive reads GPU, CPU, memory and disk in one call, so there an NVML error loses every
    figure: on a machine without the driver, `Live(monitor_system=True)` logged nothing at all
    (dvclive 3.49.1, CPU-only). Here the GPU part alone is left out."""

    def _get_gpu_info(self) -> dict[str, float | int]:
        try:
            return super()._get_gpu_info()
        except NO_GPU:
            return {}


class AtomicLive(Live):
    def _init_dvc(self) -> None:
        """dvclive's, except in a Git repository without commits (a new project's first `dvc repro`,
        before `git commit`): dvclive 3.49 asks Git for the commit there and fails with "Empty git
        repo". These logs need no commit (save_dvc_exp=False), so dvclive goes on without DVC's repo."""
        from scmrepo.exceptions import SCMError

        try:
            super()._init_dvc()
        except SCMError:
            self._dvc_repo = None
            self._dvc_file = self._init_dvc_file()

    def make_summary(self) -> None:
        if self._step is not None:
            self.summary["step"] = self.step
        replace_file(self.metrics_file, lambda tmp: dump_json(self.summary, str(tmp), cls=NumpyEncoder))

    def monitor_system(
        self, interval: float = 0.05, num_samples: int = 20, directories_to_monitor: dict[str, str] | None = None
    ) -> None:
        """As dvclive's (which `Live(monitor_system=True)` calls: train.monitor_system), with the monitor
        above: every `interval` seconds a sample, the mean of `num_samples` logged under
        dvclive/plots/metrics/system/."""
        if self._system_monitor is not None:
            self._system_monitor.end()
        self._system_monitor = SystemMonitor(
            live=self,
            interval=interval,
            num_samples=num_samples,
            directories_to_monitor=directories_to_monitor or {"main": "/"},
        )


def trim_curves(folder: Path, steps: int) -> None:
    """Keeps the first `steps` steps of every curve under folder/plots (dvclive's .tsv files and ours).

    A run killed after logging an epoch but before its checkpoint leaves rows that the resumed
    run logs again; those, and a row cut short, go, so each curve has one point per step."""
    for path in (folder / "plots").rglob("*.tsv"):
        header, *rows = path.read_text().splitlines() or [""]
        columns = header.split("\t")
        if "step" not in columns:
            continue
        at = columns.index("step")
        kept = [r for r in rows if len(f := r.split("\t")) == len(columns) and f[at].isdigit() and int(f[at]) < steps]
        if len(kept) != len(rows):
            text = "\n".join([header, *kept]) + "\n"
            replace_file(path, lambda tmp, text=text: tmp.write_text(text))  # type: ignore[misc]


def _link(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(source, target)


def keep_copy(folder: Path, copy: Path) -> None:
    """Replaces `copy` with the files of `folder` now (a kill leaves the old copy or the new one).

    The files are hard links, not copies: the pictures are never written again, metrics.json is
    replaced whole (AtomicLive), and the curves are only appended to, so what a later epoch adds
    to a linked curve is what `trim_curves` drops on resume. An epoch costs a few links, whatever
    the size of dvclive/."""
    tmp, old = copy.with_name(copy.name + ".tmp"), copy.with_name(copy.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    if folder.is_dir():
        shutil.copytree(folder, tmp, copy_function=_link)
    else:
        tmp.mkdir(parents=True)
    shutil.rmtree(old, ignore_errors=True)
    if copy.exists():
        os.replace(copy, old)
    os.replace(tmp, copy)
    shutil.rmtree(old, ignore_errors=True)


def restore_copy(copy: Path, folder: Path) -> None:
    """Puts the copy's files back into `folder` (emptied first), where there is a copy; a metrics file
    half-written by a killed run is removed (the resumed run writes it anew)."""
    if not copy.is_dir():
        copy = copy.with_name(copy.name + ".old")  # killed between the two renames of keep_copy
    if copy.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(copy, folder)
    try:
        json.loads((folder / "metrics.json").read_text())
    except FileNotFoundError:
        pass
    except ValueError:
        (folder / "metrics.json").unlink()


def log_curves(folder: Path, step: int, train: dict[str, float], val: dict[str, float], outputs: Mapping) -> None:
    """Appends a validated epoch to the curves people read at a glance, one file per output
    (dvc.yaml draws each folder, one chart per file):

        plots/curves/loss/<output>.tsv        step, train, val: the output's training and validation loss
        plots/curves/<kind>/<output>.tsv      step and the kind's validation metrics (e.g. masks: dice, iou)
    """
    curves = folder / "plots" / "curves"
    for name, output in outputs.items():
        rows = {
            curves / "loss" / f"{name}.tsv": {"train": train[f"{name}/loss"], "val": val[f"{name}/loss"]},
            curves / output.curves / f"{name}.tsv": {m: val[f"{name}/{m}"] for m in output.metric_names},
        }
        for path, values in rows.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            header = "" if path.is_file() else "\t".join(["step", *values]) + "\n"
            with path.open("a") as f:
                f.write(header + "\t".join([str(step), *(f"{v:.6g}" for v in values.values())]) + "\n")
