"""Response bodies: the PNG encoder (an enlarged picture is the same pixels, never built)
and the encoder pool's admission (a burst is admitted as far as the pool can serve it)."""

from __future__ import annotations

import asyncio
import contextvars
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from service.encoding import Encoder
from service.errors import Overloaded
from service.images import encode_png


def pictures() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"noise": (rng.random((28, 56)) * 255).astype(np.uint8),
            "strokes": ((rng.random((56, 28)) > 0.8) * 255).astype(np.uint8),
            "flat": np.zeros((28, 28), np.uint8)}


@pytest.mark.parametrize("scale", [1, 2, 3, 16])
@pytest.mark.parametrize("name", list(pictures()))
def test_a_png_is_the_picture_with_each_pixel_a_scale_by_scale_block(name, scale):
    picture = pictures()[name]
    image = Image.open(io.BytesIO(encode_png(picture, scale)))
    assert image.format == "PNG" and image.mode == "L"
    enlarged = picture.repeat(scale, axis=0).repeat(scale, axis=1)
    assert np.array_equal(np.asarray(image), enlarged)


def test_an_unscaled_png_is_one_idat_of_unfiltered_rows():
    """Scale 1 is the plain encoding (filter type 0 on every row, zlib level 1)."""
    picture = pictures()["noise"]
    data = encode_png(picture)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    (length,) = struct.unpack(">I", data[33:37])
    assert data[37:41] == b"IDAT"
    rows = zlib.decompress(data[41:41 + length])
    assert rows == np.hstack([np.zeros((28, 1), np.uint8), picture]).tobytes()


def test_a_burst_is_admitted_as_far_as_the_pool_can_serve_it():
    """Bodies of 0.8 s of encoding each, one thread, a 2 s deadline: the first three
    would start within it (after 0, 0.8 and 1.6 s) and are admitted; the others are
    refused at once, saying the wait (Retry-After 3 s). An admission whose deadline has
    passed no longer counts."""
    pixels = 256 * 784 * 16 * 16

    async def go() -> tuple[int, list[Overloaded], Encoder]:
        encoder = Encoder(threads=1, offload_pixels=200_000, max_queue=0, deadline_s=2.0)
        encoder.seconds_per_pixel["png"] = 0.8 / pixels
        admitted, refused = 0, []
        for _ in range(5):  # each request in a context of its own, as under ASGI
            try:
                contextvars.copy_context().run(encoder.admit, "png", pixels)
                admitted += 1
            except Overloaded as exc:
                refused.append(exc)
        encoder.admit("png", 100_000)  # a small body is made inline: always admitted
        encoder.close()
        return admitted, refused, encoder

    admitted, refused, encoder = asyncio.run(go())
    assert admitted == 3 and len(refused) == 2
    assert all(e.reason == "deadline" and e.headers["Retry-After"] == "3" and
               "would wait about 2400 ms" in e.detail for e in refused)

    async def later() -> None:
        for ticket in list(encoder.admitted):  # their deadlines pass
            encoder.admitted[ticket] = (0.8, asyncio.get_running_loop().time() - 1)
        encoder.admit("png", pixels)

    asyncio.run(later())
    assert len(encoder.admitted) == 1
