"""Reading the images of an inference request, whatever form they come in.

- ``multipart/form-data``: every file part is an image (PNG, JPEG, anything Pillow reads);
- ``image/*`` or ``application/octet-stream``: the body is one image file;
- ``application/json``: ``{"pixels": [784 numbers in 0..1]}`` or a list of such rows,
  ``{"image": "<base64>"}`` or ``{"images": ["<base64>", ...]}`` (data URLs accepted).

Image files are made into model inputs MNIST's way unless the request asks
``normalize=none``; pixel rows are taken as model inputs unless it asks
``normalize=mnist`` (``service.inference.images``).

Multipart bodies are split here rather than by Starlette's form parser (python-multipart,
which builds an upload object per part): 54 against 108 us for a one-digit upload,
measured side by side by ``python -m benchmarks.hand_written``.

A JSON body's nesting is measured before it is parsed (``json_depth``, numpy over the
bytes): deeper than ``max_depth`` is a 400, as is a body that is not JSON at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import torch
from fastapi import Request

from aae import digits
from aae.errors import InvalidInput, NoDigit
from aae.inputs import images
from service.core.errors import BadImage, BadRequest, PayloadTooLarge, UnsupportedMediaType
from service.inference.images import Normalization, decode_base64, decode_image

PIXELS = 784
T = TypeVar("T")
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')
_FILENAME = re.compile(r';\s*filename\*?\s*=', re.IGNORECASE)


def multipart_files(body: bytes, content_type: str) -> list[bytes]:
    """The contents of the parts of a multipart/form-data body that carry a file."""
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise BadImage("multipart body without a boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    files = []
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):  # the closing delimiter
            break
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            raise BadImage("malformed multipart part")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        if _is_file(head.decode("latin-1")):
            files.append(content)
    return files


def _is_file(head: str) -> bool:
    """Whether a part's headers announce a file: a ``filename`` parameter in its
    Content-Disposition, or an image Content-Type."""
    headers = {}
    for line in head.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    disposition = headers.get("content-disposition", "")
    return (bool(_FILENAME.search(disposition))
            or headers.get("content-type", "").lower().startswith("image/"))


def pixel_rows(value: object, limit: int) -> torch.Tensor:
    """JSON pixels -> (n, 784): one row of 784 numbers or a list of rows, each in [0, 1]."""
    if not isinstance(value, list) or not value:
        raise InvalidInput("pixels must be a list of 784 numbers or a list of such lists")
    rows = value if isinstance(value[0], list) else [value]
    if len(rows) > limit:
        raise PayloadTooLarge(f"{len(rows)} images is over the limit of {limit} per request")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != PIXELS:
            raise InvalidInput(f"image {i} must have {PIXELS} pixels, got "
                               f"{len(row) if isinstance(row, list) else type(row).__name__}")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
            raise InvalidInput(f"image {i}: pixels must be numbers")
    return images(rows, PIXELS)  # the library's rules: finite, in [0, 1]


_OPEN = np.zeros(256, np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1


def json_depth(body: bytes) -> int:
    """The deepest nesting of brackets in a JSON text, in one numpy pass (brackets inside
    strings count too: an over-estimate only for strings full of brackets, which no image
    body has)."""
    if not body:
        return 0
    steps = _OPEN[np.frombuffer(body, np.uint8)]
    steps = steps[steps != 0]  # the brackets alone: few, even in a large body
    return int(np.cumsum(steps, dtype=np.int32).max()) if steps.size else 0


def parse_json(body: bytes, max_depth: int) -> object:
    """A JSON body, refused with 400 (BadRequest) if nested deeper than ``max_depth`` (checked
    before parsing) or not JSON."""
    depth = json_depth(body)
    if depth > max_depth:
        raise BadRequest(f"JSON body nested {depth} deep, over the limit of {max_depth}")
    try:  # the stdlib's parser: NaN and 1e999 parse, and are refused as not finite (422)
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from None


def json_images(body: bytes, max_images: int, max_pixels: int, max_depth: int = 32,
                normalization: Normalization | None = None) -> torch.Tensor:
    doc = parse_json(body, max_depth)
    if not isinstance(doc, dict):
        raise InvalidInput('JSON body must be an object with "pixels", "image" or "images"')
    if "pixels" in doc:
        rows = pixel_rows(doc["pixels"], max_images)
        if normalization is not Normalization.MNIST:
            return rows
        return _decoded(rows, lambda row: digits.normalize(row.reshape(28, 28).numpy()).ravel())
    images = [doc["image"]] if "image" in doc else doc.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        raise InvalidInput('JSON body must hold "pixels", "image" (base64) or "images" '
                           '(a list of base64 strings)')
    if len(images) > max_images:
        raise PayloadTooLarge(f"{len(images)} images is over the limit of {max_images}")
    files = normalization or Normalization.MNIST
    return _decoded(images, lambda text: decode_base64(text, max_pixels, files))


def _decoded(items: Sequence[T], decode: Callable[[T], np.ndarray]) -> torch.Tensor:
    """Each item decoded into a row of 784 pixels, stacked into (n, 784); a picture without
    a digit is named by its place in the request."""
    rows = []
    for i, item in enumerate(items):
        try:
            rows.append(decode(item))
        except NoDigit as exc:
            raise NoDigit(f"image {i}: {exc}" if len(items) > 1 else str(exc)) from None
    return torch.from_numpy(np.stack(rows))


async def read_images(request: Request, *, max_images: int, max_pixels: int,
                      max_depth: int = 32, normalization: Normalization | None = None
                      ) -> torch.Tensor:
    """The request's images as a float32 (n, 784) tensor in [0, 1]. ``normalization``:
    None for each form's own default (files MNIST's way, pixel rows as sent)."""
    files = normalization or Normalization.MNIST
    content_type = request.headers.get("content-type", "").lower()
    body = await request.body()  # its size is limited by service.core.limits.BodySizeLimit
    if content_type.startswith("multipart/form-data"):
        parts = multipart_files(body, request.headers["content-type"])
        if not parts:
            raise BadImage("the multipart body has no file part")
        if len(parts) > max_images:
            raise PayloadTooLarge(f"{len(parts)} images is over the limit of {max_images}")
        return _decoded(parts, lambda part: decode_image(part, max_pixels, files))
    if content_type.startswith(("image/", "application/octet-stream")):
        if not body:
            raise BadImage("the body is empty")
        return torch.from_numpy(decode_image(body, max_pixels, files)[None])
    if content_type.startswith("application/json") or not content_type:
        return json_images(body, max_images, max_pixels, max_depth, normalization)
    raise UnsupportedMediaType(f"cannot read images from {content_type!r}: send "
                               "multipart/form-data, an image/* body or application/json")
