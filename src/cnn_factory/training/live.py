"""dvclive's Live, with its metrics file replaced atomically.

dvclive rewrites metrics.json in place every step; a run killed during that write would
leave half a file, which `dvc metrics show` and a resumed run then fail to read. Here the
summary goes to a temporary file next to it and is renamed into place.
"""

from __future__ import annotations

import json
from pathlib import Path

from dvclive import Live
from dvclive.plots import NumpyEncoder
from dvclive.serialize import dump_json

from cnn_factory.atomic import replace_file


class AtomicLive(Live):
    def make_summary(self) -> None:
        if self._step is not None:
            self.summary["step"] = self.step
        replace_file(self.metrics_file, lambda tmp: dump_json(self.summary, str(tmp), cls=NumpyEncoder))


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
