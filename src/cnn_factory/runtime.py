"""Process tuning, done by the entry points and by nothing else: importing the library changes nothing.

    # a stage script (stages/*.py), before its other imports:
    if __name__ == "__main__":
        runtime.before_stage_imports()
    ...
    run_stage(main)              # cnn_factory/errors.py: runtime.setup(), then the stage's work

The `cnn-factory` command's `main()` (cli/main.py) starts its work through `run_stage` too, so
it gets `setup()`; it does not turn the collector off before its own imports, which take ~0.3 s
and would gain ~15 ms (`cnn-factory --help`, median of 15 runs). The settings, each measured on
the built-in example (2 cores):

- the cyclic garbage collector is off while a stage imports (`before_stage_imports`): importing
  torch, dvclive and pandas creates ~350k objects, and the collector walks them again and again on
  the way (0.45 s of a stage's 2.3 s start; importing stages.train and torch._dynamo: 2.29 s ->
  1.85 s). `setup()` turns it back on.
- what the imports made is frozen out of the collector (`setup`: `gc.freeze()`): it lives until
  exit, and is then not walked again in every full collection and at exit (exit after torch and
  torch._dynamo: 0.74 s -> 0.22 s).
- glibc's malloc keeps freed memory (`setup`: `keep_freed_memory`). It returns any block above its
  mmap threshold (128 KiB at first, adapting up to 32 MiB) to the kernel on free, and trims the
  heap's free top beyond twice that; the next allocation faults the pages in again, zero-filled.
  A training step frees and re-allocates every activation, so each step went round that cycle:
  12% of the step's CPU time was the kernel's. With the mmap threshold at its maximum and a
  256 MiB trim threshold, freed blocks stay in the heap for the next step: the bare training
  step went from 87 to 107 img/s. Nothing changes where the C library is not glibc, or where the
  user has set these limits (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, GLIBC_TUNABLES) or
  preloaded another allocator.
- a stage runs without pandas (`before_stage_imports`): dvclive imports it when it is installed
  (0.28 s of the train and evaluate stages' start) only to accept DataFrames in `log_plot`, which
  no stage passes; `import pandas` raises ImportError in a stage's process, and dvclive takes that
  as "not installed".

Debugging aid: with CNN_FACTORY_LOG_IMPORTS=<path> set, each stage appends one line at exit,
`<script> <module> <module> ...`, naming the cnn_factory modules it ran (tests/test_pipeline.py
checks them against the stage's deps in dvc.yaml).
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest on 64-bit systems
TRIM_THRESHOLD = 256 << 20
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")


def before_stage_imports() -> None:
    """A stage's first call, before its other imports: the collector off until `setup()`, pandas
    hidden, and the imports log when asked for."""
    gc.disable()
    sys.modules.setdefault("pandas", None)  # type: ignore[arg-type]  # see the module's docstring
    if os.environ.get("CNN_FACTORY_LOG_IMPORTS"):
        atexit.register(_log_imports, os.environ["CNN_FACTORY_LOG_IMPORTS"])


def setup() -> None:
    """Called once the entry point's imports are done, before its work starts (by `run_stage`)."""
    gc.freeze()
    gc.enable()
    keep_freed_memory()


def keep_freed_memory() -> bool:
    """Raises glibc's mmap and trim thresholds for this process; False where nothing was changed."""
    if any(os.environ.get(name) for name in USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):  # not glibc (macOS, ...): nothing to tune
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _log_imports(path: str) -> None:
    names = sorted(n for n in sys.modules if n == "cnn_factory" or n.startswith("cnn_factory."))
    with open(path, "a") as f:
        f.write(" ".join([os.path.basename(sys.argv[0]), *names]) + "\n")
