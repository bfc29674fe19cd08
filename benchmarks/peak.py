"""Runs a command and writes its peak resident memory in bytes to a file, without polling.

    python benchmarks/peak.py <file> <command> [args...]

The kernel's ru_maxrss of a child also counts the memory of the process that forked it (up to
the exec), so the benchmark, hundreds of MiB with torch loaded, measures through this small
process: the command's own high-water mark comes back from os.wait4. Exits with its exit code.
"""

import os
import subprocess
import sys
from pathlib import Path


def main() -> None:
    out, command = Path(sys.argv[1]), sys.argv[2:]
    proc = subprocess.Popen(command)
    _, status, usage = os.wait4(proc.pid, 0)
    out.write_text(f"{usage.ru_maxrss * 1024}\n")  # Linux reports KiB
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
