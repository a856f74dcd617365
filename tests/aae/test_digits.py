"""Pictures of digits made into MNIST's form (``aae.digits``), on real test digits."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from aae.data import load_digits
from aae.digits import MAX_STROKE, normalize, read_image, resized, stroke_width
from aae.errors import ImageTooLarge, NoDigit


@pytest.fixture(scope="module")
def digits(fixture_data_dir) -> np.ndarray:
    """The fixture's 500 real test digits, (500, 28, 28) in [0, 1]."""
    return load_digits(fixture_data_dir, download=False)[1].images.reshape(-1, 28, 28).numpy()


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def png(pixels: np.ndarray, mode: str = "L") -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.rint(np.clip(pixels, 0, 1) * 255).astype(np.uint8)).convert(mode).save(
        out, format="PNG")
    return out.getvalue()


def test_mnist_digits_come_back_as_they_were(digits):
    out = np.stack([normalize(d) for d in digits])
    assert out.shape == (500, 28, 28) and out.dtype == np.float32
    worst = np.abs(out - digits).max(axis=(1, 2))
    assert np.mean(worst < 0.02) >= 0.95  # the rest moved by a pixel, or rescaled from 21
    alike = [similarity(o, d) for o, d in zip(out, digits)]
    assert np.percentile(alike, 1) > 0.8 and min(alike) > 0.7  # the boldest: thinned


def test_the_ink_fits_20x20_with_its_centre_of_mass_at_the_centre(digits):
    for d in digits[:50]:
        big = np.zeros((200, 300), np.float32)  # a small digit, far off-centre
        big[20:48, 230:258] = d
        out = normalize(big)
        rows, cols = np.nonzero(out > 0.05)
        assert max(np.ptp(rows), np.ptp(cols)) + 1 in (19, 20, 21)
        cy, cx = ndimage.center_of_mass(out)
        assert abs(cy - 14) <= 0.75 and abs(cx - 14) <= 0.75
        assert similarity(out, normalize(d)) > 0.9


def test_dark_ink_on_uneven_grey_paper_reads_as_the_digit(digits):
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:112, 0:112] / 112
    alike = []
    for d in digits[:50]:
        ink = np.asarray(Image.fromarray(d).resize((56, 56), Image.Resampling.BILINEAR))
        page = 0.55 + 0.3 * rows * cols + 0.03 * rng.standard_normal((112, 112))  # light
        page[30:86, 40:96] -= 0.5 * ink  # dark ink, lower right of centre
        alike.append(similarity(normalize(np.clip(page, 0, 1)), normalize(d)))
    # the same digit, its faintest edges lost in the paper's grain: measured 0.88 and 0.67
    assert np.mean(alike) > 0.85 and min(alike) > 0.6


def test_blank_and_nearly_blank_pictures_hold_no_digit():
    rng = np.random.default_rng(1)
    speck = np.zeros((28, 28), np.float32)
    speck[3, 5] = 1.0
    for picture in (np.zeros((28, 28)), np.full((64, 48), 0.7),
                    0.6 + 0.02 * rng.standard_normal((100, 100)), speck):
        with pytest.raises(NoDigit, match="no digit found"):
            normalize(picture)


def test_a_stroke_on_a_transparent_canvas_reads_as_ink():
    canvas = Image.new("RGBA", (200, 200), (0, 0, 0, 0))  # a browser canvas' transparent
    ImageDraw.Draw(canvas).line([(100, 30), (100, 170)], fill=(0, 0, 0, 255), width=14)
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    grey = read_image(out.getvalue())
    assert grey.shape == (200, 200) and grey[5, 5] == 1.0 and grey[100, 100] == 0.0
    one = normalize(grey)
    ink_rows, ink_cols = np.nonzero(one > 0.5)  # a centred upright 1, 20 tall, 2 wide
    assert (ink_rows.min(), ink_rows.max()) == (4, 23) and set(ink_cols) <= {13, 14, 15}


def test_reading_a_file_bounds_its_pixels_before_decoding(digits):
    data = png(np.zeros((100, 100)))
    assert read_image(data, max_pixels=10_000).shape == (100, 100)
    with pytest.raises(ImageTooLarge, match="100x100 pixels is over the limit of 9999"):
        read_image(data, max_pixels=9999)


def test_resized_keeps_28x28_pixels_as_sent_and_resizes_others_whole(digits):
    assert np.array_equal(resized(digits[0]), digits[0])
    wide = resized(np.ones((10, 40), np.float32))
    assert wide.shape == (28, 28) and np.allclose(wide, 1.0)


def test_strokes_bolder_than_any_of_mnist_are_thinned(digits):
    widths = [stroke_width(normalize(d)) for d in digits[:200]]
    assert np.percentile(widths, 99) < MAX_STROKE  # MNIST's own are left as they are
    canvas = Image.new("L", (224, 224), 0)  # a small 7 with a wide brush, as on the page
    ImageDraw.Draw(canvas).line([(40, 130), (100, 130), (60, 210)], fill=255, width=20,
                                joint="curve")
    bold = np.asarray(canvas, np.float32) / 255
    assert stroke_width(normalize(bold)) <= MAX_STROKE
