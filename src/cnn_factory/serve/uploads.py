"""What a request brings, read in memory: its body up to a limit, a multipart form's files, a raw
body's file, and an upload's size from its header before it is decoded. An image model takes
images, a volume model scans (`TAKES`); every refusal is a `BadRequest` with its HTTP status.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from cnn_factory.volumes import stated_voxels

IMAGE_TYPES = ("image/png", "image/jpeg", "image/tiff", "image/bmp", "image/gif", "image/webp")
BROWSER_FORMATS = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")  # PNG, JPEG, GIF, BMP (and WebP: browser_shows)


def browser_shows(data: bytes) -> bool:
    """Whether a browser draws the upload itself (PNG, JPEG, GIF, BMP, WebP); TIFF and DICOM it does not."""
    return data.startswith(BROWSER_FORMATS) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


class BadRequest(Exception):
    """A request the server cannot use: answered with `status` and a one-line `{"error": ...}`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_pixels(name: str, data: bytes, limit: int) -> None:
    """Refuses an image larger than `limit` pixels from its header, before decoding it."""
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


def check_voxels(name: str, data: bytes, limit: int) -> None:
    """Refuses a scan of more than `limit` voxels from its header, before unzipping or decoding it."""
    count = stated_voxels(data)
    if count is not None and count > limit:
        raise BadRequest(413, f"{name}: scan holds {count} voxels; this server takes at most {limit}")


@dataclass(frozen=True)
class Takes:
    """What a model takes: what messages call an upload and its elements, what the page says and
    its file dialog offers, a raw body's Content-Types, and the check of an upload's size from its header."""

    what: str
    unit: str
    page: str
    accept: str
    types: tuple[str, ...]
    send: str  # the Content-Types a refusal names
    check: Callable[[str, bytes, int], None]


TAKES = {  # by Predictor.first.volume
    False: Takes(
        "image",
        "pixels",
        "Drop an image here",
        "image/*,.tif,.tiff,.dcm",
        (*IMAGE_TYPES, "application/dicom", "application/octet-stream", "application/x-image"),
        "image/png or image/jpeg",
        check_pixels,
    ),
    # NIfTI has no registered type: the format is read from the bytes, as for a file's name
    True: Takes(
        "scan",
        "voxels",
        "Drop a scan here (NIfTI: .nii or .nii.gz; a TIFF stack; a multi-frame DICOM file)",
        ".nii,.gz,.tif,.tiff,.dcm",
        (
            *("application/octet-stream", "application/gzip", "application/x-gzip", "application/x-nifti"),
            *("image/tiff", "application/dicom"),
        ),
        "application/octet-stream (NIfTI, .nii or .nii.gz; multi-frame DICOM), image/tiff or application/dicom",
        check_voxels,
    ),
}


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


def uploaded_files(names: list[str], fields: dict[str, bytes], takes: Takes) -> dict[str, bytes]:
    """{input name: bytes}: a field per input of `names`, or `image` for a model with one input."""
    sources = {}
    for name in names:
        field = name if name in fields or len(names) > 1 else "image"
        if field not in fields:
            what = takes.what
            raise BadRequest(400, f"missing field {field!r}: send the {what} as multipart/form-data field {field!r}")
        if not fields[field]:
            raise BadRequest(400, f"field {field!r} is empty")
        sources[name] = fields[field]
    return sources


async def raw_body(request: Request, takes: Takes, limit: int) -> bytes:
    """The original cnn-factory's form: the file's bytes as the body, with its Content-Type."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in takes.types:
        raise BadRequest(415, f"Content-Type {media or 'missing'}: send the {takes.what}'s bytes as {takes.send}")
    body = await read_body(request, limit)
    if not body:
        raise BadRequest(400, f"empty body: send the {takes.what}'s bytes")
    return body
