"""A failed stage puts its last good outputs back from DVC's cache.

DVC deletes a stage's outputs before it runs the stage, so that its run-cache can restore them
when params return to values that already ran. A train stopped by a bad param would then leave no
model in the workspace. When a stage fails, `restore_outputs` copies back each output that
dvc.lock records for it and that is now missing, from the cache (`.dvc/cache/files/md5/`), as
`dvc checkout <stage>` would; outside DVC (no dvc.lock, no cache entry) it does nothing. An output
the failed run has begun to write again is left as it is: `dvc checkout <stage>` restores it.
"""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import yaml

from cnn_factory.atomic import replace_file

CACHE = Path(".dvc") / "cache" / "files" / "md5"


def _cached(root: Path, md5: str) -> Path:
    return root / CACHE / md5[:2] / md5[2:]


def restore_outputs(stage: str, root: Path = Path(".")) -> list[str]:
    """The paths put back (empty when there was nothing to do or nothing to restore from)."""
    try:
        lock = yaml.safe_load((root / "dvc.lock").read_text())
        outs = lock["stages"][stage].get("outs", [])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []
    restored = []
    for out in outs:
        path, md5 = root / out["path"], out.get("md5")
        if not md5 or path.exists():
            continue
        try:
            if md5.endswith(".dir"):  # a folder: its cached listing gives each file's md5
                files = [(e["md5"], path / e["relpath"]) for e in json.loads(_cached(root, md5).read_text())]
            else:
                files = [(md5, path)]
            if not all(_cached(root, m).is_file() for m, _ in files):
                continue
            for m, target in files:
                replace_file(target, partial(shutil.copyfile, _cached(root, m)))
        except (OSError, ValueError, KeyError):
            continue
        restored.append(out["path"])
    return restored
