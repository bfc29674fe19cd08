"""Serves a model file over HTTP: a page to try it, JSON and PNG answers, the original cnn-factory's
serving interface and SageMaker's container contract.

    cnn-factory serve models/example.pt [--host 127.0.0.1 --port 8000]
    app = create_app("models/example.pt")   # the ASGI app (FastAPI): tests drive it in-process

Every image goes through predict.py's `Predictor`, so a served mask is byte for byte the file
`cnn-factory predict` writes, and each output kind says what it answers (`Output.answer`,
`Output.prediction_png`). Uploads are parsed and decoded in memory (nothing from a request
reaches the file system), then decoded and predicted in worker threads, at most `workers` at a
time, never on the event loop. Endpoints, limits and errors: docs/serving.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from cnn_factory import __version__
from cnn_factory.device import pick_device
from cnn_factory.errors import UserError
from cnn_factory.predict import Predictor

MAX_BYTES = 64 * 2**20  # an upload's size
MAX_PIXELS = 100_000_000  # an image's height x width (a decoded 100 MP RGB image is 300 MB)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/tiff", "image/bmp", "image/gif", "image/webp")


class BadRequest(Exception):
    """A request the server cannot use: answered with `status` and a one-line `{"error": ...}`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Service:
    """The model, its settings, and what every endpoint does with an image."""

    predictor: Predictor
    model_file: Path
    sha256: str
    threshold: float
    max_bytes: int
    max_pixels: int
    limiter: anyio.CapacityLimiter

    def info(self) -> dict[str, Any]:
        inputs = {
            n: {**s.model_dump(mode="json", exclude={"type", *s.unused}), "size": list(s.size)}
            for n, s in self.predictor.inputs.items()
        }
        outputs = {n: {"kind": o.kind, **o.describe()} for n, o in self.predictor.outputs.items()}
        return {
            "model": {"file": self.model_file.name, "sha256": self.sha256},
            "version": __version__,
            "inputs": inputs,
            "outputs": outputs,
            "threshold": self.threshold,
            "tile": self.predictor.tile,
            "limits": {"max_bytes": self.max_bytes, "max_pixels": self.max_pixels},
        }

    def masks(self) -> list[str]:
        return [n for n, o in self.predictor.outputs.items() if o.spatial]

    async def predict(self, sources: dict[str, bytes]) -> tuple[tuple[int, int], dict[str, np.ndarray]]:
        """(H, W) of the image and each output's probabilities or value, computed in a worker thread."""
        return await anyio.to_thread.run_sync(self._predict, sources, limiter=self.limiter)

    def _predict(self, sources: dict[str, bytes]) -> tuple[tuple[int, int], dict[str, np.ndarray]]:
        for name, data in sources.items():
            check_pixels(name, data, self.max_pixels)
        try:
            image = self.predictor.read(dict(sources))
        except ValueError as err:
            raise BadRequest(400, f"{' + '.join(sources)}: {err}") from None
        size = (int(image.shape[-2]), int(image.shape[-1]))
        if size[0] * size[1] > self.max_pixels:  # a format whose header Pillow could not read
            raise BadRequest(413, f"image is {size[1]}x{size[0]} pixels; this server takes at most {self.max_pixels}")
        return size, self.predictor.predict([image])[0]

    def answer(self, size: tuple[int, int], values: dict[str, np.ndarray]) -> dict[str, Any]:
        outputs = {
            n: {"kind": o.kind, **o.answer(values[n], size, self.threshold)} for n, o in self.predictor.outputs.items()
        }
        return {"model": self.model_file.name, "image": {"height": size[0], "width": size[1]}, "outputs": outputs}

    def mask_name(self, output: str | None) -> str:
        """The mask asked for, or the model's first; BadRequest when there is none such."""
        masks = self.masks()
        if output is None:
            if not masks:
                raise BadRequest(404, "this model has no mask output; POST /predict answers its values as JSON")
            return masks[0]
        if output not in self.predictor.outputs:
            raise BadRequest(404, f"no output {output!r}; the model's outputs are {', '.join(self.predictor.outputs)}")
        if output not in masks:
            raise BadRequest(400, f"output {output!r} is not a mask; ask for one of {', '.join(masks) or 'none'}")
        return output

    def png(self, size: tuple[int, int], values: dict[str, np.ndarray], name: str) -> Response:
        png = self.predictor.outputs[name].prediction_png(values[name], size, self.threshold)
        return Response(png, media_type="image/png")

    def single_input(self) -> str:
        if len(self.predictor.inputs) > 1:
            names = ", ".join(self.predictor.inputs)
            raise BadRequest(400, f"the model has several inputs ({names}); POST /predict with one field each")
        return next(iter(self.predictor.inputs))


def check_pixels(name: str, data: bytes, limit: int) -> None:
    """Refuses an image larger than `limit` pixels from its header, before decoding it."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Image.DecompressionBombError as err:  # larger than Pillow itself will decode
        raise BadRequest(413, f"{name}: {err}") from None
    except Exception:  # not an image Pillow knows: the decoders say why
        return
    if width * height > limit:
        raise BadRequest(413, f"{name}: image is {width}x{height} pixels; this server takes at most {limit}")


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    too_large = f"upload larger than {limit} bytes (--max-bytes)"
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, too_large)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, too_large)
        chunks.append(chunk)
    return b"".join(chunks)


def form_files(body: bytes, content_type: str) -> dict[str, bytes]:
    """{field name: bytes} of a multipart/form-data body, parsed in memory."""
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in options:
        raise BadRequest(415, "expected a multipart/form-data upload (e.g. curl -F image=@photo.png)")
    parts: list[tuple[dict[bytes, bytes], list[bytes]]] = []
    header = [b"", b""]

    def on_header_end() -> None:
        parts[-1][0][header[0].lower()] = header[1]
        header[:] = [b"", b""]

    callbacks = {
        "on_part_begin": lambda: parts.append(({}, [])),
        "on_header_field": lambda data, start, end: header.__setitem__(0, header[0] + data[start:end]),
        "on_header_value": lambda data, start, end: header.__setitem__(1, header[1] + data[start:end]),
        "on_header_end": on_header_end,
        "on_part_data": lambda data, start, end: parts[-1][1].append(data[start:end]),
    }
    try:
        parser = MultipartParser(options[b"boundary"], callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except MultipartParseError as err:
        raise BadRequest(400, f"malformed multipart/form-data body ({err})") from None
    fields = {}
    for headers, chunks in parts:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        fields[disposition.get(b"name", b"").decode("utf-8", "replace")] = b"".join(chunks)
    return fields


def uploaded_images(service: Service, fields: dict[str, bytes]) -> dict[str, bytes]:
    """{input name: bytes}: a field per input, or `image` for a model with one input."""
    names = list(service.predictor.inputs)
    sources = {}
    for name in names:
        field = name if name in fields or len(names) > 1 else "image"
        if field not in fields:
            raise BadRequest(400, f"missing field {field!r}: send the image as multipart/form-data field {field!r}")
        if not fields[field]:
            raise BadRequest(400, f"field {field!r} is empty")
        sources[name] = fields[field]
    return sources


async def raw_image(service: Service, request: Request) -> dict[str, bytes]:
    """The original cnn-factory's form: the image file's bytes as the body, with its Content-Type."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in (*IMAGE_TYPES, "application/octet-stream", "application/x-image"):
        raise BadRequest(415, f"Content-Type {media or 'missing'}: send the image's bytes as image/png or image/jpeg")
    body = await read_body(request, service.max_bytes)
    if not body:
        raise BadRequest(400, "empty body: send the image's bytes")
    return {service.single_input(): body}


def create_app(
    model_path: str | Path,
    device: str = "auto",
    threshold: float = 0.5,
    tta: bool = False,
    workers: int = 2,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> FastAPI:
    """The app serving one model file; its routes are in `add_routes`."""
    dev = pick_device(device, "--device")
    predictor = Predictor.from_model_file(model_path, dev, tta=tta)
    if predictor.first.volume:
        raise UserError(
            f"{model_path}: a volume model; serve takes image models: use `cnn-factory predict {model_path} SCANS` "
            "(NIfTI masks and predictions.csv)"
        )
    sha256 = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
    limiter = anyio.CapacityLimiter(workers)
    service = Service(predictor, Path(model_path), sha256, threshold, max_bytes, max_pixels, limiter)
    app = FastAPI(title="cnn-factory", version=__version__, docs_url=None, redoc_url=None)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, err: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    add_routes(app, service)
    return app


def add_routes(app: FastAPI, service: Service) -> None:
    page = (files("cnn_factory") / "static" / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict:
        return service.info()

    @app.post("/predict", response_model=None)
    async def predict(request: Request, output: str | None = None) -> dict | Response:
        fields = form_files(await read_body(request, service.max_bytes), request.headers.get("content-type", ""))
        sources = uploaded_images(service, fields)
        name = None if output is None else service.mask_name(output)
        size, values = await service.predict(sources)
        return service.answer(size, values) if name is None else service.png(size, values, name)

    @app.post("/infer")
    async def infer(request: Request, output: str | None = None) -> Response:
        sources = await raw_image(service, request)
        name = service.mask_name(output)
        size, values = await service.predict(sources)
        return service.png(size, values, name)

    # the original cnn-factory's serving image
    @app.get("/status")
    async def status() -> dict:
        return {"status": "ok", "model": service.model_file.name, "sha256": service.sha256}

    @app.get("/version")
    async def version() -> dict:
        return {"version": __version__}

    # SageMaker's container contract: GET /ping, POST /invocations (port 8080)
    @app.get("/ping")
    async def ping() -> Response:
        return Response(status_code=200)

    @app.post("/invocations", response_model=None)
    async def invocations(request: Request) -> dict | Response:
        sources = await raw_image(service, request)
        wants_json = "application/json" in request.headers.get("accept", "") or not service.masks()
        size, values = await service.predict(sources)
        return service.answer(size, values) if wants_json else service.png(size, values, service.mask_name(None))


def serve(model_path: str | Path, host: str, port: int, **options: Any) -> None:
    """Runs the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(model_path, **options), host=host, port=port, log_level="info")
