"""Images into the service: uploads to 784-pixel rows (PNGs out: ``aae.images``).

PNG, JPEG, GIF, BMP, WebP, TIFF, PPM and ICO files are accepted. Colour is converted to grey (ITU-R 601-2
luma); an image that is not 28x28 is resized to 28x28 with a Lanczos filter
(aspect ratio not kept), as MNIST digits are white on black and fill the frame.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
from PIL import Image

from service.core.errors import BadImage, PayloadTooLarge

SIDE = 28
# Raster formats only: EPS and friends would run external programs (Ghostscript).
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM", "ICO")


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """One image file's bytes -> a float32 row of 784 pixels in [0, 1]."""
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
        width, height = image.size
        if width * height > max_pixels:
            raise PayloadTooLarge(f"image of {width}x{height} pixels is over the limit of "
                                  f"{max_pixels} pixels")
        if image.mode != "L":
            image = image.convert("L")
        if image.size != (SIDE, SIDE):
            image = image.resize((SIDE, SIDE), Image.Resampling.LANCZOS)
        raw = image.tobytes()
    except PayloadTooLarge:
        raise
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"image is too large: {exc}") from None
    except Exception as exc:  # Pillow raises many types for bad data  # noqa: BLE001
        reason = str(exc).split(" <")[0]  # drop the repr of the in-memory file
        raise BadImage(f"cannot decode the image: {reason}") from None
    # numpy: a third of the cost of the same torch calls on 784 values
    return np.frombuffer(raw, np.uint8).astype(np.float32) / 255.0


def decode_base64(text: str, max_pixels: int) -> np.ndarray:
    if text.startswith("data:"):  # a data URL: data:image/png;base64,....
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage("image is not valid base64") from None
    return decode_image(data, max_pixels)
