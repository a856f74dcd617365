"""Digits as MNIST made them: any picture of one handwritten digit to a 28x28 model input.

MNIST's digits (LeCun et al.) are white ink on black, the ink fitted into a 20x20 box
keeping its aspect ratio, anti-aliased, then placed in a 28x28 frame so that its centre
of mass is at the frame's centre. A digit from elsewhere (a photo, a scan, a drawing,
dark ink on paper, off-centre, small in a large frame) is read right only once it is
brought to that form; ``normalize`` does so:

1. ink found against the background: a light background (the border nearer the
   brightest pixels than the darkest) is paper, inverted, and its uneven light (a smooth
   background) fitted by a quadratic surface and removed; Otsu's threshold (1979) splits
   ink from paper, and the paper's texture (its median plus a few of its deviations)
   drops to black;
2. specks dropped: connected pieces of ink with under ``MIN_PIECE`` of the largest's ink;
3. the ink cropped, scaled to fit 20x20 (aspect ratio kept, Lanczos filter: anti-aliased),
   and pasted into 28x28 with its centre of mass at (14, 14), where MNIST's digits have
   theirs (13.99, 14.01 over the test set, standard deviation 0.29).

A picture with no ink to speak of raises ``NoDigit`` rather than being guessed at.
``read_image`` turns image file bytes into the grey array ``normalize`` takes;
``resized`` keeps a picture as sent (for inputs already made MNIST's way).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from aae.errors import ImageTooLarge, InvalidInput, NoDigit

SIDE = 28
BOX = 20
CENTRE = 14.0
# Raster formats only: EPS and friends would run external programs (Ghostscript).
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM", "ICO")
MIN_PIECE = 0.08  # a piece of ink with less than this share of the largest one's is a speck
MIN_CONTRAST = 0.1  # brightest minus darkest (0.5 and 99.5 percentiles) of a digit
MIN_INK_PIXELS = 4  # pixels at half intensity or more, at the picture's own resolution
MAX_SIDE = 512  # larger pictures are reduced (box filter: the ink's mass kept) first
# Stroke widths (``stroke_width``) of MNIST's 10,000 test digits: median 2.9 pixels, 99th
# percentile 5.4 (80 digits bolder than MAX_STROKE). Bolder strokes, as a small drawing
# with a wide brush has, are thinned to THINNED_STROKE.
MAX_STROKE = 5.5
THINNED_STROKE = 3.5


def read_image(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Image file bytes -> grey float32 pixels in [0, 1], (height, width).

    Colour becomes grey by ITU-R 601-2 luma. Transparent pixels take the colour that
    contrasts with the opaque ones' mean (a black stroke on a transparent canvas reads as
    dark ink on white). ``max_pixels`` bounds width x height before any pixel is decoded
    (``ImageTooLarge``). Pillow's errors pass through for the caller to word."""
    image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLarge(f"image of {width}x{height} pixels is over the limit of "
                         f"{max_pixels} pixels")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P"
                                                and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), np.float32) / 255.0
        grey = np.asarray(rgba.convert("L"), np.float32) / 255.0
        opaque = alpha > 0.5
        behind = 1.0 if opaque.any() and grey[opaque].mean() < 0.5 else 0.0
        return (grey * alpha + behind * (1.0 - alpha)).astype(np.float32)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, np.float32) / 255.0


def resized(grey: np.ndarray) -> np.ndarray:
    """The picture as sent, for inputs already made MNIST's way: 28x28 as it is, any other
    size resized to 28x28 whole (Lanczos; aspect ratio not kept)."""
    x = np.clip(np.asarray(grey, np.float32), 0.0, 1.0)
    if x.shape == (SIDE, SIDE):
        return x
    eight_bit = Image.fromarray(np.rint(x * 255).astype(np.uint8))  # as Pillow resizes "L"
    return np.asarray(eight_bit.resize((SIDE, SIDE), Image.Resampling.LANCZOS),
                      np.float32) / 255.0


def normalize(grey: np.ndarray) -> np.ndarray:
    """A picture of one digit (grey, (height, width), values in [0, 1], any polarity and
    size) -> the 28x28 float32 input MNIST would have made of it. ``NoDigit`` if blank."""
    x = np.asarray(grey, np.float32)
    if x.ndim != 2 or min(x.shape) < 1:
        raise InvalidInput(f"a picture must be a 2-D array of pixels, got shape {x.shape}")
    x = _reduced(np.clip(x, 0.0, 1.0))
    counts = _histogram(x)
    k = max(2, round(2e-4 * x.size)) / x.size  # the extremes, past a few noisy pixels
    dark, bright = _level(counts, k), _level(counts, 1 - k)
    if bright - dark < MIN_CONTRAST:
        raise NoDigit("no digit found: the image is blank (no ink against the background)")
    paper = float(np.median(_border(x)))
    if paper - dark > bright - paper:  # the paper nearer the brightest: dark ink on paper
        x, counts = 1.0 - x, counts[::-1]
        flat = _flattened(x)  # paper under uneven light; white on black is digital
        if flat is not None:
            x, counts = flat, _histogram(flat)
    threshold = _otsu(counts)
    ink = _ink(x, counts, threshold)
    if np.count_nonzero(ink >= 0.5) < MIN_INK_PIXELS:
        raise NoDigit("no digit found: too little ink in the image")
    return _framed(ink)


def _reduced(x: np.ndarray) -> np.ndarray:
    """Large pictures reduced to at most MAX_SIDE on their longer side (box filter)."""
    factor = int(np.ceil(max(x.shape) / MAX_SIDE))
    if factor <= 1:
        return x
    h, w = (x.shape[0] // factor) * factor, (x.shape[1] // factor) * factor
    return x[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))


# Statistics from a 256-level histogram: a tenth of the cost of numpy's percentile and
# median on a 28x28 picture, where their overhead dominates.
_LEVELS = np.arange(256) / 255.0
_FOUR_NEIGHBOURS = ndimage.generate_binary_structure(2, 1)  # scipy's default for label


def _histogram(x: np.ndarray) -> np.ndarray:
    return np.bincount(np.rint(x.ravel() * 255).astype(np.intp), minlength=256)[:256]


def _level(counts: np.ndarray, q: float) -> float:
    """The q-quantile of the pixels a histogram counts (in [0, 1])."""
    cumulative = np.cumsum(counts)
    return float(_LEVELS[min(255, int(np.searchsorted(cumulative, q * cumulative[-1])))])


def _otsu(counts: np.ndarray) -> float:
    """Otsu's threshold: the grey level that maximises the variance between the two
    classes it makes (pixels at or below it, and above)."""
    p = counts / counts.sum()
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * _LEVELS)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (m0[-1] * w0 - m0) ** 2 / (w0 * (1.0 - w0))
    between[~np.isfinite(between)] = 0.0
    best = np.flatnonzero(between >= between.max() * (1 - 1e-6))  # a plateau: its middle
    return float(_LEVELS[int(best[len(best) // 2])])


def _border(x: np.ndarray) -> np.ndarray:
    width = max(1, min(x.shape) // 20)
    return np.concatenate([x[:width].ravel(), x[-width:].ravel(),
                           x[:, :width].ravel(), x[:, -width:].ravel()])


def _flattened(x: np.ndarray) -> np.ndarray | None:
    """The picture with uneven light removed, or None where the light is even: a quadratic
    surface fitted by least squares to the paper (pixels whose residual is not far above
    the fit: the ink, bright by now, drops out over three rounds) and subtracted, where
    the border, paper in a photo or scan, spreads over more than 0.1 and the surface varies
    by more than 0.05."""
    low, high = np.percentile(_border(x), [5, 95])
    if high - low <= 0.1:
        return None
    step = max(1, x.size // 20000)
    rows, cols = np.divmod(np.arange(0, x.size, step), x.shape[1])
    values = x.ravel()[::step]
    r, c = rows / x.shape[0], cols / x.shape[1]
    basis = np.stack([np.ones_like(r), r, c, r * r, r * c, c * c], axis=1)
    paper = np.ones(values.size, bool)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(basis[paper], values[paper], rcond=None)
        residual = values - basis @ coef
        spread = 1.4826 * np.median(np.abs(residual[paper]))
        paper = residual < 2.5 * spread + 0.01
    rr, cc = np.meshgrid(np.arange(x.shape[0]) / x.shape[0],
                         np.arange(x.shape[1]) / x.shape[1], indexing="ij")
    surface = (coef[0] + coef[1] * rr + coef[2] * cc + coef[3] * rr * rr
               + coef[4] * rr * cc + coef[5] * cc * cc)
    if surface.max() - surface.min() <= 0.05:
        return None
    return np.clip(x - surface + float(np.median(surface)), 0.0, 1.0).astype(np.float32)


def _ink(x: np.ndarray, counts: np.ndarray, threshold: float) -> np.ndarray:
    """Ink in [0, 1] on exact black: the paper (its median plus four robust deviations)
    goes to 0, the ink's own level (its 90th percentile) to 1, specks dropped."""
    cut = int(round(threshold * 255)) + 1
    paper, strokes = counts[:cut], counts[cut:]
    if strokes.sum() == 0:
        raise NoDigit("no digit found: no ink above the background")
    median = _level(paper, 0.5)
    deviations = np.bincount(np.abs(np.arange(cut) - int(round(median * 255))),
                             weights=paper, minlength=256)
    floor = median + 4 * 1.4826 * _level(deviations, 0.5)
    top = threshold + _level(strokes, 0.9) + 1 / 255
    if top - floor < MIN_CONTRAST:
        raise NoDigit("no digit found: the ink hardly differs from the background")
    ink = np.clip((x - floor) / (top - floor), 0.0, 1.0)
    pieces, n = ndimage.label(ink > 0, structure=_FOUR_NEIGHBOURS)
    if n > 1:
        mass = ndimage.sum(ink, pieces, index=np.arange(1, n + 1))
        keep = np.concatenate([[False], mass >= MIN_PIECE * mass.max()])
        ink = np.where(keep[pieces], ink, 0.0)
    return ink.astype(np.float32)


def _framed(ink: np.ndarray) -> np.ndarray:
    """The ink cropped, fitted into BOX x BOX keeping its aspect ratio (Lanczos), strokes
    bolder than any of MNIST's thinned (and the thinner ink fitted again), and placed in
    SIDE x SIDE with its centre of mass at (CENTRE, CENTRE)."""
    crop = _fitted(ink)
    thinner = _thinned(crop)
    if thinner is not crop:
        crop = _fitted(thinner)
    cy, cx = ndimage.center_of_mass(crop)
    top, left = int(round(CENTRE - cy)), int(round(CENTRE - cx))
    out = np.zeros((SIDE + 2 * BOX, SIDE + 2 * BOX), np.float32)  # room for any offset
    out[BOX + top:BOX + top + crop.shape[0], BOX + left:BOX + left + crop.shape[1]] = crop
    return out[BOX:BOX + SIDE, BOX:BOX + SIDE]


def _fitted(ink: np.ndarray) -> np.ndarray:
    """The ink's bounding box, scaled to BOX pixels on its longer side."""
    rows, cols = np.nonzero(ink > 0.02)
    crop = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size != (w, h):
        crop = np.asarray(Image.fromarray(crop).resize(
            size, Image.Resampling.LANCZOS), np.float32)
    return np.clip(crop, 0.0, 1.0)


def stroke_width(ink: np.ndarray) -> float:
    """The mean width of the strokes, in pixels: twice the ink's area over its boundary
    (pixels at half intensity or more; a stroke of width w and length l has area w l and
    a boundary of 2 l)."""
    solid = np.pad(ink >= 0.5, 1)
    inner = (solid[1:-1, 1:-1] & solid[:-2, 1:-1] & solid[2:, 1:-1] & solid[1:-1, :-2]
             & solid[1:-1, 2:])  # a 4-neighbour erosion, without scipy's per-call set-up
    area = np.count_nonzero(solid)
    return 2.0 * area / max(1, area - np.count_nonzero(inner))


def _thinned(fitted: np.ndarray) -> np.ndarray:
    """Ink fitted into the 20x20 box, with strokes bolder than MAX_STROKE pixels eroded to
    THINNED_STROKE (at 4x resolution, by a disc); any other ink as it is."""
    width = stroke_width(fitted)
    if width <= MAX_STROKE:
        return fitted
    radius = round(2 * (width - THINNED_STROKE))  # half the excess, at 4x
    disc = np.hypot(*np.mgrid[-radius:radius + 1, -radius:radius + 1]) <= radius
    h, w = fitted.shape
    big = np.asarray(Image.fromarray(fitted).resize((4 * w, 4 * h),
                                                    Image.Resampling.BICUBIC), np.float32)
    big = ndimage.grey_erosion(np.pad(big, radius), footprint=disc)[radius:-radius,
                                                                     radius:-radius]
    thin = np.asarray(Image.fromarray(big).resize((w, h), Image.Resampling.BOX), np.float32)
    return np.clip(thin, 0.0, 1.0) if thin.max() >= 0.5 else fitted
