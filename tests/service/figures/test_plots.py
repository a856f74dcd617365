"""The sweep figure: curves by the sweep's own ranking metric over whole epochs, and
failed points with their reason."""

from __future__ import annotations

import pytest

from aae.sweeps import PointResult
from service.figures.plots import sweep_plot


def _finished(index: int, epochs: int, error: float) -> PointResult:
    history = [{"epoch": e, "validation_error": error + 0.01 * (epochs - e),
                "validation_loss": 0.2} for e in range(1, epochs + 1)]
    return PointResult(index=index, overrides={"seed": index}, status="finished",
                       validation_error=error, validation_loss=0.2, history=history)


@pytest.mark.parametrize("metric, label", [("validation_error", "validation error (%)"),
                                           ("validation_loss", "validation loss")])
def test_the_curves_are_of_the_ranking_metric_over_whole_epochs(metric, label):
    figure = sweep_plot([_finished(1, 1, 0.1), _finished(2, 1, 0.2)], metric, "one epoch")
    curves = figure.axes[0]
    assert curves.get_ylabel() == label
    ticks = [t for t in curves.get_xticks() if curves.get_xlim()[0] <= t <= curves.get_xlim()[1]]
    assert ticks == [1.0]


def test_a_failed_point_shows_its_reason_in_the_table():
    failed = PointResult(index=2, overrides={"validation_size": 5000}, status="failed",
                         error="ValueError: validation_size 5000 must be below the 2000 "
                               "training digits")
    figure = sweep_plot([_finished(1, 3, 0.1), failed], "validation_error", "with a failure")
    cells = [t.get_text().get_text() for t in figure.axes[1].tables[0].get_celld().values()]
    assert any(c.startswith("failed: ValueError: validation_size 5000") for c in cells)
    assert max(len(c) for c in cells) <= 48
