"""The DVC stages (`python -m stages.<stage>`, see dvc.yaml): read params, call cnn_factory, write outputs.

Importing torch, dvclive and pandas creates ~350k objects, and Python's cyclic collector walks
all of them again and again on the way (0.45 s of every stage's 2.3 s start, measured). A stage
imports this package first, so the collector is off until `run_stage` has frozen what the
imports made and turned it back on (cnn_factory/runtime.py).
"""

import gc

gc.disable()
