"""Digits as PNG files: an enlarged picture is the same pixels (never built), and a grid
holds the images in reading order."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from aae.images import SIDE, encode_png, grid, png


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



@pytest.mark.parametrize("n, columns, shape", [(1, None, (1, 1)), (5, None, (2, 3)),
                                               (40, 10, (4, 10)), (7, 10, (1, 10))])
def test_a_grid_holds_the_images_in_reading_order_padded_with_black(n, columns, shape):
    images = torch.rand(n, SIDE * SIDE)
    picture = np.asarray(Image.open(io.BytesIO(png(images, columns=columns))))
    assert picture.shape == (shape[0] * SIDE, shape[1] * SIDE)
    assert np.array_equal(picture, grid(images, columns))
    for i in range(shape[0] * shape[1]):
        row, column = divmod(i, shape[1])
        tile = picture[row * SIDE:(row + 1) * SIDE, column * SIDE:(column + 1) * SIDE]
        expected = (images[i].reshape(SIDE, SIDE) * 255).round().to(torch.uint8).numpy() \
            if i < n else np.zeros((SIDE, SIDE), np.uint8)
        assert np.array_equal(tile, expected)
