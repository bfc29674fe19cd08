"""The DVC stages (`python -m stages.<stage>`, see dvc.yaml): read params, call cnn_factory, write outputs.

Importing this package, or a stage's module, changes nothing in the process. A stage script run
as the stage tunes its own process before its other imports (`runtime.before_stage_imports()`
under `if __name__ == "__main__"`), and `run_stage` finishes the tuning once they are done:
cnn_factory/runtime.py says what each setting does and what it saves.
"""
