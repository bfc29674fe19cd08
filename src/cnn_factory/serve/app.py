"""The app: a `Service` (the model, its settings, what each endpoint does with an upload) behind
FastAPI routes (`add_routes`); `serve` runs it with uvicorn. The package's docstring says more.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from cnn_factory import __version__
from cnn_factory.data.grids import resize_image
from cnn_factory.device import pick_device
from cnn_factory.errors import UserError
from cnn_factory.images import encode_png
from cnn_factory.model import model_files
from cnn_factory.outputs import Writer
from cnn_factory.predict import Loaded, Predictor
from cnn_factory.serve.uploads import (
    TAKES,
    BadRequest,
    Takes,
    browser_shows,
    form_files,
    raw_body,
    read_body,
    uploaded_files,
)

MAX_BYTES = 64 * 2**20  # an upload's size
MAX_PIXELS = 100_000_000  # an image's height x width (a decoded 100 MP RGB image is 300 MB), a scan's voxels


@dataclass
class Service:
    """The model, its settings, and what every endpoint does with an upload."""

    predictor: Predictor
    model_file: Path  # the MODEL given: a model file, or a folder or glob of the files of one model
    members: list[Path]  # the model files served, several averaged as one (an ensemble: the folds)
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
            "model": {
                "file": self.model_file.name,
                "sha256": self.sha256,
                **({"members": [f.name for f in self.members]} if len(self.members) > 1 else {}),
            },
            "version": __version__,
            "inputs": inputs,
            "outputs": outputs,
            "threshold": self.threshold,
            "tile": self.predictor.tile,
            "limits": {"max_bytes": self.max_bytes, "max_pixels": self.max_pixels},
        }

    @property
    def takes(self) -> Takes:
        return TAKES[self.predictor.first.volume]

    async def predict(self, sources: dict[str, bytes]) -> tuple[Loaded, dict[str, np.ndarray]]:
        """The upload as the model reads it, and each output's probabilities or value, in a worker thread."""
        return await anyio.to_thread.run_sync(self._predict, sources, limiter=self.limiter)

    def _predict(self, sources: dict[str, bytes]) -> tuple[Loaded, dict[str, np.ndarray]]:
        for name, data in sources.items():
            self.takes.check(name, data, self.max_pixels)
        try:
            loaded = self.predictor.load(dict(sources))
        except ValueError as err:
            raise BadRequest(400, f"{' + '.join(sources)}: {err}") from None
        except UserError as err:  # a scan's message names its input
            raise BadRequest(400, str(err)) from None
        if np.prod(loaded.size) > self.max_pixels:  # a format whose header could not be read first
            shown, what, unit = "x".join(map(str, loaded.size[::-1])), self.takes.what, self.takes.unit
            raise BadRequest(413, f"{what} is {shown} {unit}; this server takes at most {self.max_pixels}")
        return loaded, self.predictor.predict([loaded], self.threshold)[0]

    def answer(self, loaded: Loaded, values: dict[str, np.ndarray], shown: bool = True) -> dict[str, Any]:
        """`/predict`'s JSON; `shown`: a browser draws the upload itself (else it comes as a picture)."""
        outputs = {
            n: {"kind": o.kind, **Writer.of(o).answer(values[n], loaded.size, self.threshold, loaded.affine)}
            for n, o in self.predictor.outputs.items()
        }
        return {"model": self.model_file.name, **self.described(loaded, shown), "outputs": outputs}

    def described(self, loaded: Loaded, shown: bool) -> dict[str, Any]:
        """The upload's own size: an image's (and its pixel size where its file gives one), with the
        image as read as a PNG where a browser cannot draw its file (TIFF, DICOM); a scan's with its
        spacing and its middle slice as a PNG (the first channel, at the masks' height and width).
        The page draws the masks over them."""
        if loaded.affine is None:
            size: dict[str, Any] = {"image": {"height": loaded.size[0], "width": loaded.size[1]}}
            if loaded.spacing:  # a DICOM image's pixel size, which its measures are in mm by
                size["image"]["pixel_mm"] = loaded.spacing[0]
            if shown:
                return size
            # (H, W, 3) RGB, else the first channel (H, W)
            image = np.moveaxis(loaded.pixels, 0, -1) if len(loaded.pixels) == 3 else loaded.pixels[0]
            return {**size, "picture": base64.b64encode(encode_png(image)).decode("ascii")}
        depth, height, width = loaded.size
        middle = loaded.pixels[:1, len(loaded.pixels[0]) // 2]  # at the model's spacing
        picture = encode_png(resize_image(middle, (height, width))[0])
        return {
            "scan": {"depth": depth, "height": height, "width": width, "spacing": list(loaded.spacing or ())},
            "picture": base64.b64encode(picture).decode("ascii"),
        }

    def mask_name(self, output: str | None) -> str:
        """The mask asked for, or the model's first; BadRequest when there is none such."""
        masks = list(self.predictor.outputs.spatial)
        if output is None:
            if not masks:
                raise BadRequest(404, "this model has no mask output; POST /predict answers its values as JSON")
            return masks[0]
        if output not in self.predictor.outputs:
            raise BadRequest(404, f"no output {output!r}; the model's outputs are {', '.join(self.predictor.outputs)}")
        if output not in masks:
            raise BadRequest(400, f"output {output!r} is not a mask; ask for one of {', '.join(masks) or 'none'}")
        return output

    def mask_file(self, loaded: Loaded, values: dict[str, np.ndarray], name: str) -> Response:
        """The mask file predict writes: a PNG, or a scan's .nii.gz."""
        writer = Writer.of(self.predictor.outputs[name])
        data = writer.prediction_file(values[name], loaded.size, self.threshold, loaded.affine)
        if loaded.affine is None:
            return Response(data, media_type="image/png")
        disposition = {"Content-Disposition": f'attachment; filename="{name}.nii.gz"'}
        return Response(data, media_type="application/gzip", headers=disposition)

    async def raw_upload(self, request: Request) -> dict[str, bytes]:
        """The body as the model's one input (the original cnn-factory's form, SageMaker's)."""
        if len(self.predictor.inputs) > 1:
            names = ", ".join(self.predictor.inputs)
            raise BadRequest(400, f"the model has several inputs ({names}); POST /predict with one field each")
        return {next(iter(self.predictor.inputs)): await raw_body(request, self.takes, self.max_bytes)}


def create_app(
    model_path: str | Path,
    device: str = "auto",
    threshold: float = 0.5,
    tta: bool = False,
    workers: int = 2,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> FastAPI:
    """The app serving a model file, or the files of one model (a folder or a glob: the folds) as one,
    their probabilities averaged as `cnn-factory predict` does; its routes are in `add_routes`."""
    members = model_files(model_path)
    predictor = Predictor.from_model_file(model_path, pick_device(device, "--device"), tta=tta)
    digest = hashlib.sha256()  # of the files' bytes, one after another: one file's own sha256
    for member in members:
        digest.update(member.read_bytes())
    limiter = anyio.CapacityLimiter(workers)
    service = Service(
        predictor, Path(model_path), members, digest.hexdigest(), threshold, max_bytes, max_pixels, limiter
    )
    app = FastAPI(title="cnn-factory", version=__version__, docs_url=None, redoc_url=None)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, err: BadRequest) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    add_routes(app, service)
    return app


def add_routes(app: FastAPI, service: Service) -> None:
    page = (files("cnn_factory") / "static" / "index.html").read_text(encoding="utf-8")
    page = page.replace("{{accepts}}", service.takes.page).replace("{{accept}}", service.takes.accept)

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
        sources = uploaded_files(list(service.predictor.inputs), fields, service.takes)
        name = None if output is None else service.mask_name(output)
        loaded, values = await service.predict(sources)
        if name is not None:
            return service.mask_file(loaded, values, name)
        return service.answer(loaded, values, shown=browser_shows(next(iter(sources.values()))))

    @app.post("/infer")
    async def infer(request: Request, output: str | None = None) -> Response:
        sources = await service.raw_upload(request)
        name = service.mask_name(output)
        loaded, values = await service.predict(sources)
        return service.mask_file(loaded, values, name)

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
        sources = await service.raw_upload(request)
        wants_json = "application/json" in request.headers.get("accept", "") or not service.predictor.outputs.spatial
        loaded, values = await service.predict(sources)
        if wants_json:
            return service.answer(loaded, values)
        return service.mask_file(loaded, values, service.mask_name(None))


def serve(model_path: str | Path, host: str, port: int, **options: Any) -> None:
    """Runs the app with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(model_path, **options), host=host, port=port, log_level="info")
