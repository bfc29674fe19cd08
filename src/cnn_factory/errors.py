"""The one exception type for mistakes a user can make, and the stage entry wrapper.

Every stage's `main()` is started through `run_stage(main)`: a `UserError` becomes one
line on stderr and exit code 1; anything else is a bug and keeps its traceback.
Set `CNN_FACTORY_DEBUG=1` (or pass `--debug`) to see the traceback of a `UserError` too.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Iterable

from cnn_factory import runtime


class UserError(Exception):
    """A problem with the user's data or params: the message says what, where and what to do."""


def listing(items: Iterable[object], limit: int, more: str = " and {} more") -> str:
    """The first `limit` of `items`, comma-separated, then how many more there are (`more`, formatted)."""
    shown = [str(item) for item in items]
    return ", ".join(shown[:limit]) + (more.format(len(shown) - limit) if len(shown) > limit else "")


def resource_error(err: BaseException) -> UserError | None:
    """Running out of disk or GPU memory, as a UserError that says what to change; else None."""
    if not isinstance(err, (OSError, RuntimeError)):
        return None
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = f" while writing {err.filename}" if err.filename else ""
        return UserError(
            f"no space left on the disk{where}; free some space (`dvc gc` removes old cached "
            "outputs) and run again: the previous outputs are intact"
        )
    # torch.OutOfMemoryError, named here so that stages without torch need not import it
    if type(err).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(err):
        return UserError(
            "out of GPU memory; lower train.batch_size (train.accumulate keeps the effective batch), "
            "model.filters or the input size, or use train.precision: bf16"
        )
    return None


def run_stage(main: Callable[[], object], restore: str | None = None) -> None:
    """Run a stage's main(): user errors print one line and exit 1, without a traceback.

    restore: the DVC stage whose last good outputs are put back from DVC's cache when main()
    fails (DVC deleted them before running it; see restore.py)."""
    debug = "--debug" in sys.argv or os.environ.get("CNN_FACTORY_DEBUG", "") not in ("", "0")
    if "--debug" in sys.argv:
        sys.argv.remove("--debug")
    runtime.setup()  # allocator and collector settings (see runtime.py)
    try:
        main()
    except BrokenPipeError:  # whoever read stdout stopped (`cnn-factory compare | head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own recipe, docs: signal
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        put_back(restore)
        sys.exit(130)
    except Exception as err:  # a UserError, or out of disk or GPU memory: one line; anything else is a bug
        user_error = err if isinstance(err, UserError) else resource_error(err)
        if debug or user_error is None:
            put_back(restore)
            raise
        print(f"error: {user_error}", file=sys.stderr)
        put_back(restore)
        sys.exit(1)


def put_back(stage: str | None) -> None:
    """After a failure: the stage's last good outputs back in place, and a line saying so."""
    if stage is None or os.environ.get("RANK", "0") != "0":  # under torchrun: rank 0 alone
        return
    from cnn_factory.restore import restore_outputs

    back = restore_outputs(stage)
    if back:
        print(f"{stage}: the last good {', '.join(back)} put back from DVC's cache", file=sys.stderr)
