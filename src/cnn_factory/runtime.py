"""Process set-up that every entry point gets through `cnn_factory.errors.run_stage`.

Two costs of a CPU process that imports torch, both measured on the built-in example (2 cores):

- glibc's malloc returns any block above its mmap threshold (128 KiB at first, adapting up to
  32 MiB) to the kernel on free, and trims the heap's free top beyond twice that; the next
  allocation faults the pages in again, zero-filled. A training step frees and re-allocates
  every activation, so each step went round that cycle: 12% of the step's CPU time was the
  kernel's. With the mmap threshold at its maximum and a 256 MiB trim threshold, freed blocks
  stay in the heap for the next step: the bare training step went from 87 to 107 img/s.
  Nothing changes where the C library is not glibc, or where the user has set these limits
  (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_, GLIBC_TUNABLES) or preloaded another allocator.
- the ~350k objects that importing torch, dvclive and pandas creates live until exit; frozen out
  of the cyclic collector, they are not walked again in every full collection and at exit
  (exit after torch and torch._dynamo: 0.74 s -> 0.22 s). The collector, off during a stage's
  imports (stages/__init__.py), is turned back on.
"""

from __future__ import annotations

import ctypes
import gc
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest on 64-bit systems
TRIM_THRESHOLD = 256 << 20
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")


def keep_freed_memory() -> bool:
    """Raises glibc's mmap and trim thresholds for this process; False where nothing was changed."""
    if any(os.environ.get(name) for name in USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):  # not glibc (macOS, ...): nothing to tune
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def setup() -> None:
    """Called once the entry point's imports are done, before its work starts."""
    gc.freeze()
    gc.enable()
    keep_freed_memory()
