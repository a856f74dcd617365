"""The run curves of ``python -m benchmarks.quality --curves``, compared across run logs."""

import io

import numpy as np
from PIL import Image

from benchmarks.quality import run_curves

RUNS = {"a-seed1": [(1, 0.30), (2, 0.20), (3, 0.25)], "b-seed1": [(1, 0.40), (2, 0.10)]}


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_run_curves_draw_each_run_and_each_reference_line():
    plain = pixels(run_curves(RUNS, "two runs"))
    assert plain.shape == (450, 800, 3)
    one_run = pixels(run_curves({"a-seed1": RUNS["a-seed1"]}, "two runs"))
    with_paper = pixels(run_curves(RUNS, "two runs", {"paper": 0.05}))
    assert (plain != one_run).any(axis=2).sum() > 500  # the second run's line and legend
    assert (plain != with_paper).any(axis=2).sum() > 500  # a line across the whole axes
