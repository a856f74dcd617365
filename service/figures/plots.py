"""Plots of a model version and of a sweep, drawn with matplotlib's object-oriented API on the Agg
canvas (no pyplot and no global figure state: safe in a threaded server)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from aae.selection import Metric
from aae.sweeps import PointResult
from aae.sweeps import label as point_label


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def project_2d(z: np.ndarray) -> tuple[np.ndarray, str]:
    """z itself when it has 2 dimensions, else its first two principal components."""
    if z.shape[1] <= 2:
        return (z if z.shape[1] == 2 else np.column_stack([z[:, 0], np.zeros(len(z))]),
                "z")
    centred = z - z.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T, "principal component"


def latent_scatter(z: list[list[float]], labels: list[int], title: str) -> bytes:
    """The codes of labeled digits, coloured by true label, with a legend."""
    points, axis = project_2d(np.asarray(z, dtype=np.float64))
    labels_arr = np.asarray(labels)
    figure = Figure(figsize=(6, 5.5), dpi=100)
    ax = figure.add_subplot()
    for label in np.unique(labels_arr):
        at = labels_arr == label
        ax.scatter(points[at, 0], points[at, 1], s=6, alpha=0.7, label=str(label),
                   color=f"C{int(label) % 10}")
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_title(title)
    ax.legend(title="digit", markerscale=3, fontsize=8, loc="center left",
              bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    return _png(figure)


def training_curves(history: list[dict[str, Any]], title: str,
                    published_epoch: int | None = None) -> bytes:
    """The phases' losses and the validation error (for classifiers) per epoch; a dashed
    line marks the epoch whose weights were published where it is not the last
    (``keep_best``)."""
    epochs = [h["epoch"] for h in history]
    figure = Figure(figsize=(8, 4), dpi=100)
    losses, errors = figure.subplots(1, 2)
    for key in ("reconstruction", "discriminator", "generator", "classification",
                "validation_loss"):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            losses.plot(epochs, values, marker=".", label=key.replace("_", " "))
    losses.set_xlabel("epoch")
    losses.set_ylabel("loss")
    losses.legend(fontsize=8)
    validation = [h.get("validation_error") for h in history]
    if any(v is not None for v in validation):
        errors.plot(epochs, [100 * v for v in validation], marker=".", color="C3")
        errors.set_ylabel("validation error (%)")
        if published_epoch is not None and published_epoch != epochs[-1]:
            errors.axvline(published_epoch, color="0.4", linestyle="--",
                           label=f"published: epoch {published_epoch}")
            errors.legend(fontsize=8)
    else:
        errors.text(0.5, 0.5, "no classifier", ha="center", va="center",
                    transform=errors.transAxes)
    errors.set_xlabel("epoch")
    figure.suptitle(title)
    figure.tight_layout()
    return _png(figure)


def sweep_figure(points: list[PointResult], metric: str, title: str) -> bytes:
    """A sweep: the curves of its finished points by the metric it is ranked by
    (validation error or loss), over whole epochs, and its ranked table, best first,
    failed points with their reason (``sweep_plot``, as a PNG)."""
    return _png(sweep_plot(points, metric, title))


def sweep_plot(points: list[PointResult], metric: str, title: str) -> Figure:
    key = Metric(metric).value
    scale = 100 if key == "validation_error" else 1
    figure = Figure(figsize=(11, 4.5 + 0.22 * len(points)), dpi=100)
    curves, listing = figure.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    for n, point in enumerate(points):
        values = [h.get(key) for h in point.history]
        if any(v is not None for v in values):
            curves.plot([h["epoch"] for h in point.history],
                        [None if v is None else scale * v for v in values],
                        marker=".", color=f"C{n % 10}", label=f"{n + 1}. {point_label(point.overrides)}")
    curves.set_xlabel("epoch")
    last = max((h["epoch"] for p in points for h in p.history), default=1)
    curves.set_xlim(0.5, last + 0.5)  # whole epochs, even for one
    curves.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    curves.set_ylabel(key.replace("_", " ") + (" (%)" if scale == 100 else ""))
    if curves.has_data():
        curves.legend(fontsize=7)
    else:
        curves.text(0.5, 0.5, "no finished point yet", ha="center", va="center",
                    transform=curves.transAxes)

    def percent(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    def status(p: PointResult) -> str:
        return p.said if len(p.said) <= 48 else p.said[:47] + "…"

    rows = [[str(n + 1), point_label(p.overrides), status(p), percent(p.validation_error),
             "-" if p.validation_loss is None else f"{p.validation_loss:.4f}",
             percent(p.test_error), "-" if p.version is None else str(p.version)]
            for n, p in enumerate(points)]
    listing.axis("off")
    if rows:
        table = listing.table(cellText=rows, loc="upper center", colLabels=[
            "#", "point", "status", "val. error", "val. loss", "test error", "version"])
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        table.auto_set_column_width(list(range(7)))
    listing.set_title(f"ranked by {key} (validation)", fontsize=9)
    figure.suptitle(title)
    figure.tight_layout()
    return figure
