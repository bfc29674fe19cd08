"""Process tuning (cnn_factory/runtime.py): the allocator settings observed through RSS (freed
activations stay in the process for the next step instead of going back to the kernel); importing
the library and the stages changes nothing; a stage's own process gets every setting."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = textwrap.dedent(
    """
    import sys
    import numpy as np
    from cnn_factory.runtime import keep_freed_memory

    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * 4096

    tuned = keep_freed_memory() if sys.argv[1] == "tune" else False
    block = np.ones(16 << 20, np.uint8)  # 16 MiB, above glibc's default mmap threshold
    before = rss()
    del block
    print(tuned, before - rss())
    """
)


def probe(mode: str, **env: str) -> tuple[bool, int]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD"))}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env={**environ, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_blocks_stay_in_the_process_once_tuned():
    tuned, released = probe("tune")
    assert tuned and released < 1 << 20  # kept for reuse
    tuned, released = probe("plain")
    assert not tuned and released >= 15 << 20  # glibc's default: straight back to the kernel


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_users_own_malloc_settings_win():
    tuned, released = probe("tune", MALLOC_TRIM_THRESHOLD_="0")
    assert not tuned and released >= 15 << 20


def python(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD"))}
    environ.update(PYTHONPATH=os.pathsep.join(p for p in (env.pop("PYTHONPATH", ""), str(ROOT)) if p), **env)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environ, capture_output=True, text=True)


def test_importing_the_library_and_the_stages_changes_nothing(tmp_path):
    script = tmp_path / "cnn-factory"  # the command's name, which the library once tuned itself for
    script.write_text(
        "import gc, sys\n"
        "import cnn_factory, cnn_factory.cli, cnn_factory.errors, cnn_factory.runtime\n"
        "import stages, stages.make_example, stages.prepare, stages.train, stages.evaluate\n"
        "print(gc.isenabled(), gc.get_freeze_count(), 'pandas' in sys.modules, sys.modules.get('pandas') is None)\n"
    )
    result = python([str(script)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "0", "True", "False"]  # dvclive imported the real pandas


# Imported by Python at start-up from PYTHONPATH (site.py's sitecustomize): watches the process
# that `python -m stages.<stage>` runs, without touching it, and writes what it saw at exit.
WATCH = textwrap.dedent(
    """
    import atexit, gc, json, os, sys

    seen = {}

    def on_import(event, args):
        if event == "import" and args[0] == "torch" and "gc_while_importing_torch" not in seen:
            seen["gc_while_importing_torch"] = gc.isenabled()

    def at_exit():
        import numpy as np

        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

        block = np.ones(16 << 20, np.uint8)  # 16 MiB, above glibc's default mmap threshold
        before = rss()
        del block
        seen.update(gc=gc.isenabled(), frozen=gc.get_freeze_count(), released=before - rss())
        seen["pandas"] = "hidden" if "pandas" in sys.modules and sys.modules["pandas"] is None else "importable"
        with open(os.environ["WATCHED"], "w") as f:
            json.dump(seen, f)

    sys.addaudithook(on_import)
    atexit.register(at_exit)  # registered first, so it runs after the stage's own exit handlers
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc, /proc")
def test_a_stage_run_tunes_its_own_process(tmp_path):
    """`python -m stages.evaluate` as DVC runs it, in a folder with params.yaml alone: it imports
    everything, then stops at the missing model. The collector was off while it imported torch,
    and at exit it is on, with the imports frozen; pandas is hidden; a freed block stays."""
    (tmp_path / "watch").mkdir()
    (tmp_path / "watch" / "sitecustomize.py").write_text(WATCH)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    watched = tmp_path / "watched.json"
    result = python(["-m", "stages.evaluate"], tmp_path, PYTHONPATH=str(tmp_path / "watch"), WATCHED=str(watched))
    assert result.returncode == 1 and "error: " in result.stderr, result.stderr  # the missing model
    seen = json.loads(watched.read_text())
    assert seen["gc_while_importing_torch"] is False
    assert seen["gc"] is True and seen["frozen"] > 100_000  # torch's objects, frozen by run_stage
    assert seen["pandas"] == "hidden"
    assert seen["released"] < 1 << 20  # glibc kept the freed 16 MiB

    plain = tmp_path / "plain.py"  # the same watch on a process that imports torch without the stage's tuning
    plain.write_text("import torch\n")
    assert python([str(plain)], tmp_path, PYTHONPATH=str(tmp_path / "watch"), WATCHED=str(watched)).returncode == 0
    seen = json.loads(watched.read_text())
    assert seen["gc_while_importing_torch"] is True and seen["frozen"] == 0 and seen["pandas"] == "importable"
    assert seen["released"] >= 15 << 20
