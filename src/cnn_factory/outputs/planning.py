"""What `cnn-factory plan` says of an output kind's column before any training (`report`). Each
image-level kind's module defines its `ColumnReport` beside its core (base.py's `Adapter`); the
default says nothing (masks: the plan reads their foreground itself).
"""

from __future__ import annotations

import numpy as np

from cnn_factory.outputs.base import Adapter, Kind


class ColumnReport(Adapter[Kind]):
    """What the plan says of an output's decoded column: `self.output` is its core."""

    def report(self, values: np.ndarray) -> tuple[str, list[str]]:
        """One line about `values`, every row's decoded value (class balance, a number's range and
        spread), and warnings about what would make its head hard to train."""
        return "", []
