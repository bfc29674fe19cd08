"""Serves a model file over HTTP: a page to try it, JSON and mask-file answers, the original
cnn-factory's serving interface and SageMaker's container contract.

    cnn-factory serve models/example.pt [--host 127.0.0.1 --port 8000]
    app = create_app("models/example.pt")   # the ASGI app (FastAPI): tests drive it in-process

Every upload goes through predict.py's `Predictor` (an image model's images; a volume model's
scans, NIfTI or TIFF stacks), so a served mask is byte for byte the file `cnn-factory predict`
writes, a PNG or a scan's .nii.gz on its own grid, and each output kind says what it answers
(`Writer.answer`, `Writer.prediction_file`). Uploads are read and parsed in memory (uploads.py:
nothing from a request reaches the file system), then decoded and predicted in worker threads, at
most `workers` at a time, never on the event loop (app.py). Endpoints, limits and errors:
docs/serving.md.
"""

from cnn_factory.serve.app import create_app, serve

__all__ = ["create_app", "serve"]
