"""cnn-factory: the pipeline's stages (`python -m stages.<stage>`, see dvc.yaml) and the `cnn-factory` command.

Importing torch, dvclive and pandas creates ~350k objects, and Python's cyclic collector walks
all of them again and again on the way (0.45 s of every stage's 2.3 s start, measured). When this
package is imported to start a stage or the command, the collector is off until
stages.runtime.setup() has frozen what the imports made and turned it back on. sys.argv[0] is
"-m" only while `python -m` is locating the module it will run (documented with the -m option).
"""

import gc
import sys
from pathlib import Path

_first = (getattr(sys, "argv", None) or [""])[0]  # an embedding interpreter may set no argv
if _first == "-m" or Path(_first).name == "cnn-factory":
    gc.disable()
