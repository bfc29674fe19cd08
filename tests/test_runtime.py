"""The allocator settings every entry point runs with (stages/runtime.py), observed through RSS:
freed activations stay in the process for the next step instead of going back to the kernel."""

from __future__ import annotations

import os
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


def test_a_stage_collects_garbage_again_once_started(tmp_path):
    """Off while `python -m stages.<stage>` imports (stages/__init__.py), on once run_stage starts."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import gc, sys\n"
        "import stages  # what `python -m stages.<stage>` imports first\n"
        "import cnn_factory.errors\n"
        "during = gc.isenabled()\n"
        "cnn_factory.errors.run_stage(lambda: print(during, gc.isenabled()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["False", "True"]
