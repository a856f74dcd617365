"""Digits as people upload them: accuracy per kind of picture, before and after MNIST's
normalisation of uploads.

MNIST's test digits are changed the ways real uploads differ from MNIST (off-centre in a
larger frame, scaled, thick and thin strokes, rotated by up to 15 degrees, dark ink on
grey paper under uneven light, JPEG-compressed, low resolution, colour), written as the
image files a client would send, and classified through the ``/classify`` code path
(``service.inference.images.decode_image``, then the model's classifier) twice: with
``normalize=none`` (the pixels as sent, resized whole to 28x28: the service before) and
with the default MNIST normalisation. Beside them, real handwriting from another source:
the 1,797 digits of the UCI optical recognition set (43 other writers, 8x8, 17 grey
levels; bundled with scikit-learn, the ``bench`` extra), enlarged as an upload would be.

    python -m benchmarks.wild_digits --store runs/models x11-default x11-seed-heldout
"""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from scipy import ndimage

from aae.checkpoints import load_model
from aae.data import default_data_dir, load_digits
from aae.store import CheckpointStore
from service.inference.images import Normalization, decode_image

Picture = Callable[[np.ndarray, np.random.Generator], bytes]
MAX_PIXELS = 4096 * 4096


def _file(pixels: np.ndarray, fmt: str = "PNG", quality: int = 95) -> bytes:
    """An image file of grey (h, w) or colour (h, w, 3) pixels in [0, 1]."""
    out = io.BytesIO()
    Image.fromarray(np.rint(np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(
        out, format=fmt, quality=quality)
    return out.getvalue()


def _scaled(digit: np.ndarray, factor: float) -> np.ndarray:
    side = max(4, round(28 * factor))
    return np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC),
                      np.float32).clip(0, 1)


def _placed(digit: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    frame = np.zeros((side, side), np.float32)
    top, left = rng.integers(0, side - digit.shape[0] + 1, size=2)
    frame[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return frame


def clean(digit, rng) -> bytes:
    return _file(digit)


def off_centre(digit, rng) -> bytes:
    """The digit at its own size somewhere in a 96x96 frame."""
    return _file(_placed(digit, 96, rng))


def scaled(digit, rng) -> bytes:
    """The digit at half to three times its size, somewhere in a frame a third larger."""
    big = _scaled(digit, rng.uniform(0.5, 3.0))
    return _file(_placed(big, round(big.shape[0] * 4 / 3), rng))


def _stroke(digit: np.ndarray, radius: float) -> np.ndarray:
    """Strokes thickened (radius > 0) or thinned (< 0) by a disc, at 4x resolution."""
    big = _scaled(digit, 4)
    r = max(1, round(abs(radius) * 4))
    disc = np.hypot(*np.mgrid[-r:r + 1, -r:r + 1]) <= r
    big = (ndimage.grey_dilation if radius > 0 else ndimage.grey_erosion)(big, footprint=disc)
    return np.asarray(Image.fromarray(big).resize((28, 28), Image.Resampling.BOX), np.float32)


def thick(digit, rng) -> bytes:
    return _file(_stroke(digit, rng.uniform(0.75, 1.5)))


def thin(digit, rng) -> bytes:
    return _file(_stroke(digit, -rng.uniform(0.25, 0.5)))


def rotated(digit, rng) -> bytes:
    angle = rng.uniform(-15, 15)
    return _file(np.asarray(Image.fromarray(digit).rotate(angle, Image.Resampling.BICUBIC),
                            np.float32))


def paper(digit, rng) -> bytes:
    """Dark ink on grey paper with grain, lit unevenly, the digit off-centre in 112x112."""
    ink = _placed(_scaled(digit, rng.uniform(1.5, 3.0)), 112, rng)
    rows, cols = np.mgrid[0:112, 0:112] / 112
    angle = rng.uniform(0, 2 * np.pi)
    light = 0.25 * ((rows - 0.5) * np.cos(angle) + (cols - 0.5) * np.sin(angle))
    page = rng.uniform(0.55, 0.8) + light + 0.03 * rng.standard_normal((112, 112))
    return _file(page - rng.uniform(0.4, 0.55) * ink)


def jpeg(digit, rng) -> bytes:
    """Dark on white, enlarged, JPEG at quality 10 to 40."""
    return _file(1 - _scaled(digit, 2), "JPEG", quality=int(rng.integers(10, 41)))


def low_resolution(digit, rng) -> bytes:
    """Reduced to 8x8 .. 16x16, then enlarged to 64x64 (a thumbnail blown up)."""
    side = int(rng.integers(8, 17))
    small = Image.fromarray(digit).resize((side, side), Image.Resampling.BOX)
    return _file(np.asarray(small.resize((64, 64), Image.Resampling.BILINEAR), np.float32))


def colour(digit, rng) -> bytes:
    """Coloured ink on coloured paper (RGB), enlarged."""
    ink, page = rng.uniform(0, 0.45, 3), rng.uniform(0.6, 1.0, 3)
    big = _scaled(digit, 2)[..., None]
    return _file(page * (1 - big) + ink * big)


PICTURES: dict[str, Picture] = {
    "clean (MNIST as is)": clean, "off-centre in 96x96": off_centre,
    "scaled 0.5-3x": scaled, "thick strokes": thick, "thin strokes": thin,
    "rotated up to 15 deg": rotated, "dark on uneven grey paper": paper,
    "JPEG q10-40, dark on white": jpeg, "low resolution 8-16 px": low_resolution,
    "colour ink and paper": colour,
}


def uci_digits() -> tuple[list[bytes], np.ndarray] | None:
    """The UCI handwritten digits as uploads (8x8, enlarged to 64x64), or None without
    scikit-learn."""
    try:
        from sklearn.datasets import load_digits as uci
    except ImportError:
        return None
    data = uci()
    files = [_file(np.asarray(Image.fromarray((im / 16).astype(np.float32)).resize(
        (64, 64), Image.Resampling.BILINEAR))) for im in data.images]
    return files, data.target


def accuracy(model, files: list[bytes], labels: np.ndarray,
             normalization: Normalization) -> float:
    rows = []
    for data in files:
        try:
            rows.append(decode_image(data, MAX_PIXELS, normalization))
        except Exception:  # noqa: BLE001  (a 422 "no digit found" counts as wrong)
            rows.append(None)
    found = [i for i, r in enumerate(rows) if r is not None]
    predicted = np.full(len(files), -1)
    if found:
        with torch.no_grad():
            x = torch.from_numpy(np.stack([rows[i] for i in found]))
            predicted[found] = model.classify(x).argmax(1).numpy()
    return float((predicted == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="NAME or NAME@VERSION of published versions")
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("AAE_DATA_DIR") or default_data_dir()))
    parser.add_argument("--n", type=int, default=2000, help="test digits per picture kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _, test = load_digits(args.data_dir)
    digits = test.images.reshape(-1, 28, 28).numpy()
    labels = test.labels.numpy()
    kinds = {}
    for k, (name, picture) in enumerate(PICTURES.items()):
        rng = np.random.default_rng([args.seed, k])
        n = len(digits) if picture is clean else args.n
        kinds[name] = ([picture(d, rng) for d in digits[:n]], labels[:n])
    real = uci_digits()
    if real is not None:
        kinds["real: UCI handwriting, 8x8"] = real
    store = CheckpointStore(args.store)
    loaded = {}
    for spec in args.models:
        name, _, version = spec.partition("@")
        info, model = load_model(store, name, version or None)
        loaded[f"{name}@{info.version}"] = model.eval()
    print("| pictures | n | " + " | ".join(f"{m}: as sent | {m}: normalised"
                                          for m in loaded) + " |")
    print("|---|---:|" + "---:|---:|" * len(loaded))
    for kind, (files, truth) in kinds.items():
        cells = []
        for model in loaded.values():
            for normalization in (Normalization.NONE, Normalization.MNIST):
                cells.append(f"{100 * accuracy(model, files, truth, normalization):.1f}%")
        print(f"| {kind} | {len(files)} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
