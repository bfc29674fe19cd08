"""`cnn-factory serve [MODEL] [--host 127.0.0.1 --port 8000]`: a page to try a model, and an HTTP API.

The server itself is the cnn_factory/serve package; this is its command line. MODEL is a model
file, or a folder or quoted glob of the files of one model (the folds), served as one. With no
MODEL it starts as SageMaker starts a container (`docker run IMAGE serve`): the .pt files in
SageMaker's model folder, on 0.0.0.0:8080. Otherwise it binds 127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cnn_factory.config import DEVICES
from cnn_factory.errors import UserError

SAGEMAKER_MODEL_DIR = "/opt/ml/model"  # where SageMaker unpacks model.tar.gz


def add_parser(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[common], help="serve a model over HTTP: a page to try it, and an API")
    p.add_argument(
        "model",
        nargs="?",
        default=argparse.SUPPRESS,
        help="model file written by train, or a folder or quoted glob of model files of one model (e.g. "
        f"models/folds), served as one (default: the .pt files in {SAGEMAKER_MODEL_DIR}, SageMaker's model "
        "folder, served on 0.0.0.0:8080 as its container contract asks)",
    )
    local = "address to listen on (default: 127.0.0.1, this machine only)"
    p.add_argument("--host", default=argparse.SUPPRESS, help=local)
    p.add_argument("--port", type=int, default=argparse.SUPPRESS, help="port to listen on (default: 8000)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: CUDA when present")
    p.add_argument("--tta", action="store_true", help="average over horizontal, vertical and both flips (4x slower)")
    p.add_argument("--threshold", type=float, default=0.5, help="mask probability above which a pixel is set")
    p.add_argument("--workers", type=int, default=2, help="images (scans) decoded and predicted at once")
    p.add_argument("--max-bytes", type=int, default=64 * 2**20, help="largest upload accepted, in bytes")
    p.add_argument(
        "--max-pixels", type=int, default=100_000_000, help="largest image accepted, height x width (a scan: voxels)"
    )


def serve(args: argparse.Namespace) -> None:
    """Serves the model; with no MODEL, as SageMaker starts a container (`serve`): its model folder, 0.0.0.0:8080."""
    from cnn_factory.serve import serve as run_server

    for flag in ("workers", "max_bytes", "max_pixels"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')}: expected an integer >= 1, got {getattr(args, flag)}")
    model, host, port = getattr(args, "model", None), getattr(args, "host", None), getattr(args, "port", None)
    if model is None:
        folder = Path(os.environ.get("SM_MODEL_DIR", SAGEMAKER_MODEL_DIR))
        found = sorted(folder.glob("*.pt"))
        if not found:
            raise UserError(f"serve: give a MODEL file (no .pt file in {folder})")
        model, host, port = found[0] if len(found) == 1 else folder, host or "0.0.0.0", port or 8080
    host, port = host or "127.0.0.1", port or 8000
    from cnn_factory.model import model_files

    missing = [f for f in model_files(model) if not f.is_file()]
    if missing:
        raise UserError(f"{missing[0]}: no such model file")
    options = {"device": args.device, "threshold": args.threshold, "tta": args.tta, "workers": args.workers}
    run_server(str(model), host, port, max_bytes=args.max_bytes, max_pixels=args.max_pixels, **options)
