"""Load test of `cnn-factory serve` on the loopback, against `cnn-factory predict` on the same images.

    python -m benchmarks.serve [--model models/example.pt --images 'data/example/images/*.png']
                               [--requests 400 --clients 8 --seconds 120] [--quick] [--out FILE]

Each scenario starts the real command (`cnn-factory serve MODEL --host 127.0.0.1`) on a free port,
warms it with one request per client, then `--clients` threads post `/predict` (multipart, the
JSON answer with every mask) over keep-alive connections, cycling through the images, until
`--requests` answers have come back or `--seconds` have passed, whichever is first. It reports
throughput, p50/p99 latency, errors, and the server's resident memory after the warm-up and at
the end. The reference is `cnn-factory predict` on the same images in one process (batch 16),
end to end, and its rate without the process start (its own time from the first image on).

Scenarios: the given model and images; without --model, a model with the example's layout
(64x64 resize, two masks and a category; weights untrained, which costs the same) on 64x64
example images, with 1 and 2 server workers, and a patch model (128x128 windows) on 1,000x1,000
images. Only 127.0.0.1 is ever contacted. Writes benchmarks/serve.json (git-ignored).
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # the only address this benchmark talks to
COMMAND = [sys.executable, "-m", "cnn_factory"]


def untrained_model(params: dict, channels: int, path: Path) -> Path:
    """A model file shaped as params.yaml says, with random weights (speed does not depend on them)."""
    from cnn_factory.config import parse_params
    from cnn_factory.model import MultiOutputNet, model_args, model_meta, save_model

    cfg = parse_params(params)
    manifest = {"inputs": {n: {"mean": [0.5] * channels, "std": [0.25] * channels} for n in cfg.inputs}, "outputs": {}}
    torch.manual_seed(0)
    args = model_args(cfg.model, cfg.inputs, cfg.outputs, manifest)
    save_model(
        path,
        MultiOutputNet.from_args(args).eval(),
        args,
        {**model_meta(cfg.inputs, cfg.outputs, manifest), "epoch": 1, "val": {}},
    )
    return path


def default_scenarios(folder: Path, quick: bool) -> list[dict]:
    """The example's layout on 64x64 images (1 and 2 workers), and a patch model on 1,000 px images."""
    from benchmarks.cells import make_cells
    from cnn_factory.data.example import make_example

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    make_example(folder / "example", rows=20 if quick else 200, size=(64, 64), seed=0)
    example = untrained_model(params, 3, folder / "example.pt")
    side = 200 if quick else 1000
    make_cells(folder / "large", rows=4 if quick else 16, sizes=(side, side + 1), seed=1)
    patch = {**params, "inputs": {"image": {"type": "image", "size": [128, 128], "channels": 1, "mode": "patch"}}}
    patch["outputs"] = {
        "cells": {"type": "segmentation", "column": "labels", "label": 1},
        "density": {"type": "category", "classes": ["sparse", "dense"]},
    }
    images = sorted(glob.glob(str(folder / "example" / "images" / "*.png")))
    large = sorted(glob.glob(str(folder / "large" / "images" / "*.png")))
    return [
        {"name": "example 64x64, resize, 1 worker", "model": example, "images": images, "workers": 1},
        {"name": "example 64x64, resize, 2 workers", "model": example, "images": images, "workers": 2},
        {
            "name": f"{side}x{side}, patch 128 (sliding windows), 2 workers",
            "model": untrained_model(patch, 1, folder / "patch.pt"),
            "images": large,
            "workers": 2,
            "requests": 8 if quick else 48,
        },
    ]


def form(path: str) -> tuple[bytes, str]:
    """A multipart/form-data body with the file as field `image`, and its Content-Type."""
    boundary = uuid.uuid4().hex
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{Path(path).name}"\r\n'
    head += "Content-Type: image/png\r\n\r\n"
    body = head.encode() + Path(path).read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def start_server(model: Path, workers: int) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    argv = [*COMMAND, "serve", str(model), "--host", HOST, "--port", str(port), "--workers", str(workers)]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=5)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return server, port
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("cnn-factory serve did not start within 120 s")


def load(port: int, bodies: list[tuple[bytes, str]], clients: int, requests: int, seconds: float) -> dict:
    """`clients` threads posting /predict until `requests` answers or `seconds`; latencies and errors."""
    latencies: list[float] = []
    errors: list[str] = []
    lock, sent = threading.Lock(), [0]
    stop = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=max(seconds, 60))
        while time.monotonic() < stop:
            with lock:
                if sent[0] >= requests:
                    return
                body, content_type = bodies[sent[0] % len(bodies)]
                sent[0] += 1
            start = time.perf_counter()
            try:
                connection.request("POST", "/predict", body=body, headers={"Content-Type": content_type})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except OSError as err:
                ok, response = False, err
                connection = http.client.HTTPConnection(HOST, port, timeout=max(seconds, 60))
            with lock:
                (latencies if ok else errors).append(time.perf_counter() - start if ok else str(response))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "answers": len(latencies),
        "errors": len(errors),
        "seconds": round(wall, 2),
        "img_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(1000 * statistics.median(ordered), 1) if ordered else None,
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1) if ordered else None,
    }


def reference(model: Path, images: list[str], folder: Path) -> dict:
    """`cnn-factory predict` on the images: end to end, and from its first image on (its own report)."""
    out = folder / f"predict-{model.stem}"
    start = time.perf_counter()
    result = subprocess.run([*COMMAND, "predict", str(model), *images, "--out", str(out)], capture_output=True)
    wall = time.perf_counter() - start
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    code = "from cnn_factory.predict import predict_images; import sys, time; t = time.perf_counter(); "
    code += f"predict_images({str(model)!r}, sys.argv[1:], __import__('pathlib').Path({str(out)!r}), 16, 'auto', False)"
    code += "; print(time.perf_counter() - t)"
    inner = subprocess.run([sys.executable, "-c", code, *images], capture_output=True, text=True, check=True)
    own = float(inner.stdout.strip().splitlines()[-1])
    return {
        "predict_img_per_s": round(len(images) / own, 2),
        "predict_img_per_s_end_to_end": round(len(images) / wall, 2),
    }


def run_scenario(scenario: dict, args: argparse.Namespace, folder: Path) -> dict:
    bodies = [form(p) for p in scenario["images"]]
    server, port = start_server(scenario["model"], scenario["workers"])
    try:
        load(port, bodies, args.clients, args.clients, args.seconds)  # warm-up: one request per client
        before = rss(server.pid)
        figures = load(port, bodies, args.clients, scenario.get("requests", args.requests), args.seconds)
        after = rss(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    ref = reference(scenario["model"], scenario["images"], folder)
    memory = {"rss_before_mib": before >> 20, "rss_after_mib": after >> 20}
    return {"scenario": scenario["name"], **figures, **memory, **ref}


def table(results: list[dict]) -> str:
    lines = [
        "| scenario | answers | errors | serve img/s | p50 ms | p99 ms | server RSS before -> after "
        "| predict img/s (its own time; end to end) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['scenario']} | {r['answers']} in {r['seconds']} s | {r['errors']} | {r['img_per_s']} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {r['rss_before_mib']} -> {r['rss_after_mib']} MiB | "
            f"{r['predict_img_per_s']}; {r['predict_img_per_s_end_to_end']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model file (default: generated scenarios)")
    parser.add_argument("--images", help="glob of images for --model")
    parser.add_argument("--requests", type=int, default=400, help="answers to wait for (fixed count)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=120, help="time cap of each load run")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (figures mean nothing)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "serve.json"), help="results file")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.seconds = 16, 30
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.model:
            images = sorted(glob.glob(args.images or "data/example/images/*.png"))
            scenarios = [{"name": Path(args.model).name, "model": Path(args.model), "images": images, "workers": 2}]
        else:
            scenarios = default_scenarios(folder, args.quick)
        results = [run_scenario(s, args, folder) for s in scenarios]
    print(table(results))
    Path(args.out).write_text(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
