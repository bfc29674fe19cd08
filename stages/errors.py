"""The one exception type for mistakes a user can make, and the stage entry wrapper.

Every stage's `main()` is started through `run_stage(main)`: a `UserError` becomes one
line on stderr and exit code 1; anything else is a bug and keeps its traceback.
Set `CNN_FACTORY_DEBUG=1` (or pass `--debug`) to see the traceback of a `UserError` too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


class UserError(Exception):
    """A problem with the user's data or params: the message says what, where and what to do."""


def debug_enabled(argv: list[str] | None = None) -> bool:
    argv = sys.argv if argv is None else argv
    return "--debug" in argv or os.environ.get("CNN_FACTORY_DEBUG", "") not in ("", "0")


def run_stage(main: Callable[[], object]) -> None:
    """Run a stage's main(): user errors print one line and exit 1, without a traceback."""
    debug = debug_enabled()
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    try:
        main()
    except UserError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
