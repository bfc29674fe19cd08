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

from stages.atomic import replace_file


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
