"""cnn-factory serve, in-process: the same masks as predict, every endpoint, bad requests, concurrency."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnn_factory import __version__
from cnn_factory.predict import predict_images
from cnn_factory.serve import create_app
from tests.conftest import SERVER_START_S

COMMAND = [sys.executable, "-m", "cnn_factory"]


@pytest.fixture(scope="module")
def client(served) -> TestClient:
    return TestClient(create_app(served["resize"], device="cpu", max_pixels=5000))


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["resize", "patch"])
def test_served_masks_are_the_files_predict_writes(served, tmp_path, mode):
    images = sorted(served[f"{mode}_images"].glob("*.png"))
    predict_images(str(served[mode]), [str(p) for p in images], tmp_path, 4, "cpu", tta=False)
    client = TestClient(create_app(served[mode], device="cpu"))
    assert client.get("/info").json()["tile"] == (mode == "patch")  # a patch model slides windows
    first = client.post("/predict", files={"image": images[0].read_bytes()}).json()["outputs"]
    masks = [name for name, answer in first.items() if "mask" in answer]
    assert masks
    for path in images:
        answer = client.post("/predict", files={"image": (path.name, path.read_bytes(), "image/png")}).json()
        for name in masks:
            written = (tmp_path / name / path.name).read_bytes()
            assert base64.b64decode(answer["outputs"][name]["mask"]) == written, (path.name, name)
            direct = client.post(f"/predict?output={name}", files={"image": path.read_bytes()})
            assert direct.headers["content-type"] == "image/png" and direct.content == written
        pixels = np.asarray(Image.open(tmp_path / masks[0] / path.name))
        counts = answer["outputs"][masks[0]]["pixels"]
        assert sum(counts.values()) == pixels.size == answer["image"]["height"] * answer["image"]["width"]
    assert len({(tmp_path / masks[0] / p.name).read_bytes() for p in images}) == len(images)


def test_json_answer_has_every_output(client, served):
    image = (served["resize_images"] / "wide.png").read_bytes()
    answer = client.post("/predict", files={"image": ("wide.png", image, "image/png")}).json()
    assert answer["image"] == {"height": 40, "width": 24}
    outputs = answer["outputs"]
    assert set(outputs) == {"round", "angular", "majority", "area"}
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(outputs["round"]["mask"]))))
    assert mask.shape == (40, 24) and set(np.unique(mask)) <= {0, 255}
    assert outputs["round"]["pixels"] == {"background": int((mask == 0).sum()), "foreground": int((mask > 0).sum())}
    probabilities = outputs["majority"]["probabilities"]
    assert set(probabilities) == {"disc", "square", "triangle"} and sum(probabilities.values()) == pytest.approx(1)
    assert outputs["majority"]["label"] == max(probabilities, key=probabilities.get)
    assert np.isfinite(outputs["area"]["value"])


def test_info_and_the_original_tools_endpoints(client, served):
    info = client.get("/info").json()
    assert info["inputs"]["image"] == {"size": [16, 16], "channels": 3, "column": "image", "mode": "resize", "scale": 1}
    assert info["outputs"]["majority"]["classes"] == ["disc", "square", "triangle"]
    assert info["outputs"]["round"]["kind"] == "segmentation" and info["version"] == __version__
    import hashlib

    assert info["model"]["sha256"] == hashlib.sha256(served["resize"].read_bytes()).hexdigest()
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/status").json()["status"] == "ok"
    assert client.get("/version").json() == {"version": __version__}
    assert client.get("/ping").status_code == 200
    assert "<title>cnn-factory</title>" in client.get("/").text

    image = (served["resize_images"] / "small.png").read_bytes()
    first = client.post("/infer", content=image, headers={"Content-Type": "image/png"})
    named = client.post("/infer?output=angular", content=image, headers={"Content-Type": "image/png"})
    form = client.post("/predict", files={"image": image}).json()["outputs"]
    assert first.headers["content-type"] == "image/png"
    assert first.content == base64.b64decode(form["round"]["mask"])
    assert named.content == base64.b64decode(form["angular"]["mask"])
    sagemaker = client.post("/invocations", content=image, headers={"Content-Type": "image/png"})
    assert sagemaker.content == first.content
    as_json = client.post(
        "/invocations", content=image, headers={"Content-Type": "image/png", "Accept": "application/json"}
    )
    assert as_json.json()["outputs"]["majority"] == form["majority"]


def test_a_jpeg_and_a_16_bit_tiff_are_read_as_predict_reads_them(client, served):
    rgb = np.asarray(Image.open(served["resize_images"] / "small.png").convert("RGB"))
    buffer = io.BytesIO()
    import tifffile

    tifffile.imwrite(buffer, rgb.astype(np.uint16) * 257)  # 16-bit: the same pixels after scaling to 8 bits
    tiff = client.post("/infer", content=buffer.getvalue(), headers={"Content-Type": "image/tiff"})
    png = client.post("/infer", content=png_bytes(rgb), headers={"Content-Type": "image/png"})
    assert tiff.status_code == 200 and tiff.content == png.content
    jpeg = io.BytesIO()
    Image.fromarray(rgb).save(jpeg, format="JPEG")
    assert client.post("/predict", files={"image": ("a.jpg", jpeg.getvalue(), "image/jpeg")}).status_code == 200
    # a grey upload for the colour model: read as three equal channels, as its RGB copy
    grey = rgb[..., 1]
    answers = [
        client.post("/infer", content=png_bytes(g), headers={"Content-Type": "image/png"})
        for g in (grey, np.stack([grey] * 3, -1))
    ]
    assert answers[0].status_code == 200 and answers[0].content == answers[1].content
    dicom = client.post("/infer", content=rgb_dicom(rgb), headers={"Content-Type": "application/dicom"})
    assert dicom.status_code == 200 and dicom.content == png.content

    # the page draws the masks over the upload; one a browser cannot draw comes back as read
    answers = {
        kind: client.post("/predict", files={"image": (f"a.{kind}", data, "application/octet-stream")}).json()
        for kind, data in (("png", png_bytes(rgb)), ("tif", buffer.getvalue()), ("dcm", rgb_dicom(rgb)))
    }
    assert "picture" not in answers["png"]
    for kind in ("tif", "dcm"):
        picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(answers[kind]["picture"]))))
        assert np.array_equal(picture, rgb) and answers[kind]["outputs"] == answers["png"]["outputs"]


def rgb_dicom(rgb: np.ndarray) -> bytes:
    """A colour DICOM file (a slide, a dermoscopy image) holding `rgb` as it is."""
    from cnn_factory.dicom_scans import _slice

    dataset = _slice(np.zeros(rgb.shape[:2], np.int16), "1.2.826.0.1.3680043.8.498.3", "1.2.826.0.1.3680043.8.498.4")
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation, dataset.PlanarConfiguration = 3, "RGB", 0
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 8, 8, 7, 0
    dataset.PixelData = np.ascontiguousarray(rgb, np.uint8).tobytes()
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def bad_requests(served) -> dict:
    good = (served["resize_images"] / "small.png").read_bytes()
    five = io.BytesIO()
    import tifffile

    tifffile.imwrite(five, np.zeros((16, 16, 5), np.uint8))  # five channels: neither grey nor colour
    large = png_bytes(np.zeros((80, 80, 3), np.uint8))  # 6400 pixels; the client's server takes 5000
    return {
        "not an image": (
            "predict",
            {"files": {"image": ("a.png", b"hello, world", "image/png")}},
            400,
            "cannot be read",
        ),
        "truncated": ("predict", {"files": {"image": good[: len(good) // 2]}}, 400, "cannot be read as an image"),
        "wrong channels": (
            "predict",
            {"files": {"image": five.getvalue()}},
            400,
            "has shape (16, 16, 5); expected an image of height x width (x channels)",
        ),
        "too many pixels": ("predict", {"files": {"image": large}}, 413, "image is 80x80 pixels"),
        "missing field": ("predict", {"files": {"picture": good}}, 400, "missing field 'image'"),
        "empty field": ("predict", {"files": {"image": b""}}, 400, "field 'image' is empty"),
        "no form": ("predict", {"content": good, "headers": {"Content-Type": "image/png"}}, 415, "multipart/form-data"),
        "unknown output": ("predict?output=nose", {"files": {"image": good}}, 404, "no output 'nose'"),
        "not a mask": ("predict?output=area", {"files": {"image": good}}, 400, "'area' is not a mask"),
        "wrong type": ("infer", {"content": good, "headers": {"Content-Type": "text/plain"}}, 415, "Content-Type"),
        "empty body": ("infer", {"content": b"", "headers": {"Content-Type": "image/png"}}, 400, "empty body"),
    }


@pytest.mark.parametrize(
    "case",
    ["not an image", "truncated", "wrong channels", "too many pixels", "missing field", "empty field", "no form"]
    + ["unknown output", "not a mask", "wrong type", "empty body"],
)
def test_a_bad_request_is_a_4xx_with_one_line_and_the_server_keeps_serving(client, served, case):
    path, request, status, message = bad_requests(served)[case]
    response = client.post(f"/{path}", **request)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error
    good = (served["resize_images"] / "small.png").read_bytes()
    assert client.post("/predict", files={"image": good}).status_code == 200


def test_an_upload_over_the_byte_limit_is_refused_before_it_is_read(served):
    client = TestClient(create_app(served["resize"], device="cpu", max_bytes=1000))
    response = client.post("/predict", files={"image": b"\0" * 2000})
    assert response.status_code == 413 and "larger than 1000 bytes" in response.json()["error"]


def test_concurrent_requests_each_get_their_own_answer(served):
    app = create_app(served["resize"], device="cpu", workers=4)
    paths = sorted(served["resize_images"].glob("*.png"))
    single = {p.name: TestClient(app).post("/infer", content=p.read_bytes(), headers={"Content-Type": "image/png"})
              for p in paths}  # fmt: skip

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            requests = [
                http.post("/infer", content=p.read_bytes(), headers={"Content-Type": "image/png"}) for p in paths * 8
            ]
            return await asyncio.gather(*requests, http.get("/health"))

    *answers, health = asyncio.run(burst())
    assert health.status_code == 200
    for path, answer in zip(paths * 8, answers):
        assert answer.status_code == 200 and answer.content == single[path.name].content


def test_serve_command_answers_on_localhost_and_reports_a_missing_model_in_one_line(served, tmp_path):
    env = {**os.environ, "SM_MODEL_DIR": str(tmp_path / "sagemaker")}
    missing = subprocess.run([*COMMAND, "serve", str(tmp_path / "none.pt")], capture_output=True, text=True, env=env)
    assert missing.returncode == 1 and missing.stderr.strip().count("\n") == 0 and "none.pt" in missing.stderr
    (tmp_path / "sagemaker").mkdir()
    empty = subprocess.run([*COMMAND, "serve"], capture_output=True, text=True, env=env)
    assert empty.returncode == 1 and f"no .pt file in {tmp_path / 'sagemaker'}" in empty.stderr
    shutil.copy(served["resize"], tmp_path / "sagemaker" / "model.pt")  # no MODEL: SageMaker's model folder
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([*COMMAND, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as response:
                    assert response.status == 200
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=5) as response:
            assert json.load(response)["model"]["file"] == "model.pt"
    finally:
        server.terminate()
        server.wait(timeout=20)
