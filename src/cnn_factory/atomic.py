"""Files replaced whole or not at all: written to a temporary sibling, then renamed into place.

The temporary name is fixed per target (`.<name>.tmp`, not per process): what a killed run
leaves behind is overwritten and renamed away by the next run's write of the same file.
One process writes each of these files (under torchrun, rank 0).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def replace_file(path: str | Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` writes the new content; a kill at any moment leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
