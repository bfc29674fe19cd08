"""cnn-factory serve's page in a real browser: headless Chromium, driven over its DevTools pipe.

The server runs in a thread on 127.0.0.1 and a free port; Chromium loads `/`, is handed an image
as if chosen in the file dialog, and the test reads what the page drew. With
CNN_FACTORY_SCREENSHOT=<file.png> the test also saves a screenshot there (docs/images/serve-page.png
is made so, with a trained model: see docs/serving.md).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from PIL import Image

from cnn_factory.serve import create_app
from tests.conftest import SERVER_START_S

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")


class Browser:
    """Chromium with --remote-debugging-pipe: DevTools messages as NUL-terminated JSON on fds 3 and 4."""

    def __init__(self, width: int = 1100, height: int = 700):
        self.to_browser_r, self.to_browser = os.pipe()
        self.from_browser, self.from_browser_w = os.pipe()
        script = f'exec 3<&{self.to_browser_r} 4>&{self.from_browser_w}; exec "$@"'
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-pipe",
            f"--window-size={width},{height}",
        ]
        self.process = subprocess.Popen(
            ["bash", "-c", script, "chromium", CHROMIUM, *flags, "about:blank"],
            pass_fds=(self.to_browser_r, self.from_browser_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(self.to_browser_r)
        os.close(self.from_browser_w)
        self.next_id, self.buffer, self.session = 0, b"", None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.buffer:
                chunk = os.read(self.from_browser, 1 << 16)
                assert chunk, "chromium closed its DevTools pipe"
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply["error"]
                return reply["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        os.close(self.to_browser)
        os.close(self.from_browser)


def start_server(app) -> tuple[uvicorn.Server, threading.Thread, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_S
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    return server, thread, f"http://127.0.0.1:{port}/"


def wait_for(browser: Browser, condition: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    guarded = f"(() => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }})()"  # not loaded yet
    while not browser.evaluate(guarded):
        assert time.monotonic() < deadline, f"the page never reached: {condition}"
        time.sleep(0.1)


def choose_file(browser: Browser, path: Path, media: str) -> None:
    """As if the file were chosen in the dialog: the page's own change handler sends it."""
    data = base64.b64encode(path.read_bytes()).decode()
    browser.evaluate(
        f"""(async () => {{
            const bytes = Uint8Array.from(atob("{data}"), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "{path.name}", {{ type: "{media}" }}));
            const input = document.getElementById("file");
            input.files = transfer.files;
            input.dispatchEvent(new Event("change"));
        }})()"""
    )
    wait_for(browser, f"document.getElementById('view').dataset.shown === '{path.name}'")


def page_state(browser: Browser) -> dict:
    """What the page shows: each mask's canvas (output, width, height, pixels drawn), the values'
    headings, the download links, the masks' counts and any error."""
    return browser.evaluate(
        """(() => {
            const canvases = [...document.querySelectorAll('#view canvas')];
            const drawn = canvases.map((c) => {
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let on = 0;
                for (let i = 3; i < d.length; i += 4) on += d[i] > 0;
                return [c.dataset.output, c.width, c.height, on];
            });
            const values = [...document.querySelectorAll('#values table')].map((t) => t.rows[0].textContent);
            const links = [...document.querySelectorAll('#masks a[download]')].map((a) => a.download);
            const counts = [...document.querySelectorAll('#masks p')].map((p) => p.textContent);
            return { drawn, values, links, counts, error: document.getElementById('error').textContent };
        })()"""
    )


def test_the_page_draws_the_masks_over_the_image_and_lists_the_values(served, tmp_path):
    model = Path(os.environ.get("CNN_FACTORY_SCREENSHOT_MODEL") or served["resize"])
    image = Path(os.environ.get("CNN_FACTORY_SCREENSHOT_IMAGE") or served["resize_images"] / "wide.png")
    server, thread, url = start_server(create_app(model, device="cpu"))
    browser = Browser()
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=url)
        wait_for(browser, "document.getElementById('model').textContent.includes('segmentation')")
        choose_file(browser, image, "image/png")
        state = page_state(browser)
        from fastapi.testclient import TestClient

        answer = (
            TestClient(create_app(model, device="cpu")).post("/predict", files={"image": image.read_bytes()}).json()
        )
        outputs, size = answer["outputs"], (answer["image"]["width"], answer["image"]["height"])
        masks = {n: o["pixels"]["foreground"] for n, o in outputs.items() if "mask" in o}  # what the masks hold
        values = [n for n, o in outputs.items() if "mask" not in o]
        assert state["error"] == "" and len(masks) == 2 and "majority" in values
        assert {n: on for n, _, _, on in state["drawn"]} == masks  # every set pixel drawn, none other
        assert {(w, h) for _, w, h, _ in state["drawn"]} == {size}
        assert [v.split(":")[0] for v in state["values"]] == values
        assert f"majority: {outputs['majority']['label']}" in state["values"]
        assert state["links"] == [f"{n}.png" for n in masks]

        browser.evaluate("document.getElementById('show-round').click()")
        browser.evaluate("(() => { const o = document.getElementById('opacity'); o.value = 0.8; "
                         "o.dispatchEvent(new Event('input')); })()")  # fmt: skip
        hidden = browser.evaluate(
            "[...document.querySelectorAll('#view canvas')].map((c) => [c.hidden, c.style.opacity])"
        )
        assert hidden == [[True, "0.8"], [False, "0.8"]]
        browser.evaluate("document.getElementById('show-round').click()")
        shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        assert shot[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("CNN_FACTORY_SCREENSHOT"):
            Path(os.environ["CNN_FACTORY_SCREENSHOT"]).write_bytes(shot)
    finally:
        browser.close()
        server.should_exit = True
        thread.join(timeout=10)


def test_a_scans_masks_are_drawn_over_its_middle_slice_with_their_ml(served_scans):
    from fastapi.testclient import TestClient

    scan = served_scans["folder"] / "oblique.nii.gz"
    server, thread, url = start_server(create_app(served_scans["model"], device="cpu"))
    browser = Browser()
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=url)
        wait_for(browser, "document.getElementById('model').textContent.includes('segmentation')")
        assert "NIfTI" in browser.evaluate("document.getElementById('drop').textContent")
        choose_file(browser, scan, "application/gzip")
        state = page_state(browser)
        answer = TestClient(create_app(served_scans["model"], device="cpu")).post(
            "/predict", files={"image": scan.read_bytes()}
        )
        outputs, size = answer.json()["outputs"], (answer.json()["scan"]["width"], answer.json()["scan"]["height"])
        masks = [n for n, o in outputs.items() if "mask" in o]
        slices = {n: np.asarray(Image.open(io.BytesIO(base64.b64decode(outputs[n]["slice"])))) for n in masks}
        assert state["error"] == "" and masks == ["organ", "tumour"]
        assert {n: on for n, _, _, on in state["drawn"]} == {n: np.count_nonzero(m) for n, m in slices.items()}
        assert {(w, h) for _, w, h, _ in state["drawn"]} == {size}
        assert state["links"] == ["organ.nii.gz", "tumour.nii.gz"]
        ml = outputs["organ"]["ml"]["foreground"]
        assert f"foreground: {outputs['organ']['voxels']['foreground']} voxels, {ml:.4g}" in state["counts"][0]
        assert browser.evaluate("document.querySelector('#view img').naturalWidth") == size[0]  # the slice's picture
    finally:
        browser.close()
        server.should_exit = True
        thread.join(timeout=10)
