"""Images into the service: uploads to 784-pixel rows (PNGs out: ``aae.images``).

PNG, JPEG, GIF, BMP, WebP, TIFF, PPM and ICO files are accepted, colour as grey. Each is
made into a model input MNIST's way by default (``aae.digits.normalize``: the digit found,
cropped, fitted into 20x20 and centred by its centre of mass in 28x28, dark ink on light
paper inverted); ``normalize=none`` takes the pixels as sent, resized to 28x28 whole.
"""

from __future__ import annotations

import base64
import binascii
from enum import StrEnum

import numpy as np
from PIL import Image

from aae import digits
from aae.errors import ImageTooLarge
from service.core.errors import BadImage, PayloadTooLarge


class Normalization(StrEnum):
    MNIST = "mnist"  # the digit found and framed as MNIST's were (aae.digits.normalize)
    NONE = "none"  # the pixels as sent (resized to 28x28 whole if they are not)


def decode_image(data: bytes, max_pixels: int,
                 normalization: Normalization = Normalization.MNIST) -> np.ndarray:
    """One image file's bytes -> a float32 row of 784 pixels in [0, 1]."""
    try:
        grey = digits.read_image(data, max_pixels)
    except ImageTooLarge as exc:
        raise PayloadTooLarge(str(exc)) from None
    except Image.DecompressionBombError as exc:
        raise PayloadTooLarge(f"image is too large: {exc}") from None
    except Exception as exc:  # Pillow raises many types for bad data  # noqa: BLE001
        reason = str(exc).split(" <")[0]  # drop the repr of the in-memory file
        raise BadImage(f"cannot decode the image: {reason}") from None
    if normalization is Normalization.MNIST:
        return digits.normalize(grey).ravel()
    return digits.resized(grey).ravel()


def decode_base64(text: str, max_pixels: int,
                  normalization: Normalization = Normalization.MNIST) -> np.ndarray:
    if text.startswith("data:"):  # a data URL: data:image/png;base64,....
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadImage("image is not valid base64") from None
    return decode_image(data, max_pixels, normalization)
