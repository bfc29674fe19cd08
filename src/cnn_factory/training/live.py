"""dvclive's Live, with its metrics file replaced atomically and its system monitor working without a GPU.

dvclive rewrites metrics.json in place every step; a run killed during that write would
leave half a file, which `dvc metrics show` and a resumed run then fail to read. Here the
summary goes to a temporary file next to it and is renamed into place.

`train.monitor_system` starts dvclive's system monitor (`Live(monitor_system=True)`): about once a
second it logs CPU, memory, disk and NVIDIA GPU use under dvclive/plots/metrics/system/.
"""

from __future__ import annotations

import json
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
    def make_summary(self) -> None:
        if self._step is not None:
            self.summary["step"] = self.step
        replace_file(self.metrics_file, lambda tmp: dump_json(self.summary, str(tmp), cls=NumpyEncoder))

    def monitor_system(
        self, interval: float = 0.05, num_samples: int = 20, directories_to_monitor: dict[str, str] | None = None
    ) -> None:
        """As dvclive's (which `Live(monitor_system=True)` calls), with the monitor above: every
        `interval` seconds a sample, the mean of `num_samples` logged."""
        if self._system_monitor is not None:
            self._system_monitor.end()
        self._system_monitor = SystemMonitor(
            live=self,
            interval=interval,
            num_samples=num_samples,
            directories_to_monitor=directories_to_monitor or {"main": "/"},
        )


def drop_unreadable(path: Path) -> None:
    """A metrics file half-written by a killed run is removed; the resumed run writes it anew."""
    try:
        json.loads(path.read_text())
    except FileNotFoundError:
        pass
    except ValueError:
        path.unlink()


def trim_curves(folder: Path, steps: int) -> None:
    """Keeps the first `steps` steps of every curve under folder/plots/metrics (dvclive's .tsv files).

    A run killed after logging an epoch but before its checkpoint leaves rows that the resumed
    run logs again; those, and a row cut short, go, so each curve has one point per step."""
    for path in (folder / "plots" / "metrics").rglob("*.tsv"):
        header, *rows = path.read_text().splitlines() or [""]
        columns = header.split("\t")
        if "step" not in columns:
            continue
        at = columns.index("step")
        kept = [r for r in rows if len(f := r.split("\t")) == len(columns) and f[at].isdigit() and int(f[at]) < steps]
        if len(kept) != len(rows):
            text = "\n".join([header, *kept]) + "\n"
            replace_file(path, lambda tmp, text=text: tmp.write_text(text))  # type: ignore[misc]
