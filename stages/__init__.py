"""The DVC stages (`python -m stages.<stage>`, see dvc.yaml): read params, call cnn_factory, write outputs.

Importing torch, dvclive and pandas creates ~350k objects, and Python's cyclic collector walks
all of them again and again on the way (0.45 s of every stage's 2.3 s start, measured). A stage
imports this package first, so the collector is off until `run_stage` has frozen what the
imports made and turned it back on (cnn_factory/runtime.py).

dvclive imports pandas when it is installed (0.28 s of the train and evaluate stages' start,
measured) only to accept DataFrames in `log_plot`, which no stage passes: a stage process runs
without it (`import pandas` raises ImportError there, and dvclive takes that as "not installed").

Debugging aid: with CNN_FACTORY_LOG_IMPORTS=<path> set, each stage appends one line at exit,
`<script> <module> <module> ...`, naming the cnn_factory modules it ran (tests check them
against the stage's deps in dvc.yaml).
"""

import atexit
import gc
import os
import sys

gc.disable()
sys.modules.setdefault("pandas", None)  # type: ignore[arg-type]  # see above


def _log_imports(path: str) -> None:
    names = sorted(n for n in sys.modules if n == "cnn_factory" or n.startswith("cnn_factory."))
    with open(path, "a") as f:
        f.write(" ".join([os.path.basename(sys.argv[0]), *names]) + "\n")


if os.environ.get("CNN_FACTORY_LOG_IMPORTS"):
    atexit.register(_log_imports, os.environ["CNN_FACTORY_LOG_IMPORTS"])
