"""Sweeps: many training runs from one base, compared in one table.

A sweep is a base configuration and a list of points, each a dict of overrides: the
product of a grid (``{"z_dim": [2, 10], "seed": [1, 2, 3]}``: six points) or an explicit
list. ``expand`` makes the points; ``rank`` orders finished and running points by a
validation metric (``aae.selection.Metric``: never by the test set); ``seed_groups``
gives the mean and spread of points that differ only by their seed; ``table`` prints
both, the same for ``aae sweep run`` (local) and ``aae sweep show`` (the API's sweep).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aae.selection import Metric, metric_value

SEED = "seed"


class TooManyPoints(ValueError):
    """A sweep declares more points than allowed; said before any point is made."""


def count_points(grid: Mapping[str, Sequence[Any]], limit: int | None = None) -> int:
    """The number of points of a grid, the product of its lists' lengths, computed without
    expanding it; past ``limit``, ``TooManyPoints`` at once (the product of many long
    lists is never formed)."""
    count = 1
    for values in grid.values():
        count *= len(values)
        if limit is not None and count > limit:
            raise TooManyPoints(f"the sweep has more than {limit} points (the product of its "
                                "lists' lengths), more than allowed")
    return count


def expand(grid: Mapping[str, Sequence[Any]] | None = None,
           points: Sequence[Mapping[str, Any]] | None = None,
           limit: int | None = None) -> list[dict[str, Any]]:
    """The points of a grid (the product of its values, in the grid's key order, the
    last key varying fastest) or of an explicit list; exactly one must be given. More
    than ``limit`` points is ``TooManyPoints``, found before any point is made."""
    if (grid is None) == (points is None):
        raise ValueError("grid or points: give exactly one")
    if points is not None:
        if not points:
            raise ValueError("points: give at least one")
        if limit is not None and len(points) > limit:
            raise TooManyPoints(f"the sweep has {len(points)} points, more than allowed")
        return [dict(p) for p in points]
    assert grid is not None
    if not grid:
        raise ValueError("grid: give at least one field")
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"grid.{name}: give a non-empty list of values")
    count_points(grid, limit)
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True))
            for combo in itertools.product(*(grid[k] for k in keys))]


def label(overrides: Mapping[str, Any]) -> str:
    """A point as one short line, e.g. ``z_dim=10 seed=2`` (``base`` when it changes
    nothing)."""
    return " ".join(f"{k}={_short(v)}" for k, v in overrides.items()) or "base"


def _short(value: Any) -> str:
    if isinstance(value, bool) or value is None:  # as the grid is written: JSON
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_short(v) for v in value)
    return str(value)


@dataclass
class PointResult:
    """One point as a table shows it: its figures so far (None: not known yet)."""

    index: int
    overrides: dict[str, Any]
    status: str
    version: int | None = None
    validation_error: float | None = None
    validation_loss: float | None = None
    test_error: float | None = None
    seconds: float | None = None
    epoch: int | None = None
    epochs: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)
    error: str | None = None  # why it failed

    @property
    def said(self) -> str:
        """Its status as a table says it: with the epoch while it runs, with the reason
        once it failed."""
        if self.status == "started" and self.epoch is not None:
            return f"started (epoch {self.epoch}/{self.epochs})"
        if self.error:
            return f"{self.status}: {self.error}"
        return self.status

    def metric(self, metric: Metric | str) -> float | None:
        return getattr(self, Metric(metric).value)


def rank(points: Iterable[PointResult], metric: Metric | str) -> list[PointResult]:
    """Best first by ``metric`` (lower is better); points without a value yet last, in
    their order."""
    return sorted(points, key=lambda p: (p.metric(metric) is None, p.metric(metric) or 0.0,
                                         p.index))


@dataclass(frozen=True)
class Spread:
    """Mean and sample standard deviation of a figure over ``n`` points (0 when n = 1)."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std, len(values))


@dataclass(frozen=True)
class SeedGroup:
    """Points that differ only by their seed: the figures of those that finished."""

    overrides: dict[str, Any]  # the shared overrides, seed left out
    points: tuple[int, ...]  # their indices
    seeds: tuple[Any, ...]
    validation_error: Spread | None
    validation_loss: Spread | None
    test_error: Spread | None
    seconds: Spread | None


def seed_groups(points: Sequence[PointResult]) -> list[SeedGroup]:
    """Groups of two or more points equal but for ``seed``, figures over the finished
    ones, in the order of each group's first point."""
    groups: dict[str, list[PointResult]] = {}
    for point in sorted(points, key=lambda p: p.index):
        if SEED not in point.overrides:
            continue
        rest = {k: v for k, v in point.overrides.items() if k != SEED}
        groups.setdefault(repr(sorted(rest.items(), key=lambda kv: kv[0])), []).append(point)
    out = []
    for members in groups.values():
        if len(members) < 2:
            continue
        finished = [p for p in members if p.status == "finished"]

        def spread(name: str, finished: list[PointResult] = finished) -> Spread | None:
            return Spread.of([v for p in finished if (v := getattr(p, name)) is not None])

        out.append(SeedGroup(
            overrides={k: v for k, v in members[0].overrides.items() if k != SEED},
            points=tuple(p.index for p in members),
            seeds=tuple(p.overrides[SEED] for p in members),
            validation_error=spread("validation_error"),
            validation_loss=spread("validation_loss"), test_error=spread("test_error"),
            seconds=spread("seconds")))
    return sorted(out, key=lambda g: g.points[0])


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _loss(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def _spread(value: Spread | None, percent: bool = True) -> str:
    if value is None:
        return "-"
    if percent:
        return f"{value.mean:.2%} ± {value.std:.2%}"
    return f"{value.mean:.1f} ± {value.std:.1f}"


def table(points: Sequence[PointResult], metric: Metric | str) -> str:
    """The ranked points, then the seed groups, as plain text (Markdown tables)."""
    metric = Metric(metric)
    lines = [f"ranked by {metric.value} (validation split; lower is better)", "",
             "| rank | point | status | validation error | validation loss | test error "
             "| time (s) | version |",
             "|---:|---|---|---:|---:|---:|---:|---:|"]
    for n, p in enumerate(rank(points, metric), start=1):
        status = p.said.replace("|", "/")  # a cell of a Markdown table
        lines.append(f"| {n} | {label(p.overrides)} | {status} | "
                     f"{_percent(p.validation_error)} | {_loss(p.validation_loss)} | "
                     f"{_percent(p.test_error)} | "
                     f"{'-' if p.seconds is None else f'{p.seconds:.0f}'} | "
                     f"{'-' if p.version is None else p.version} |")
    groups = seed_groups(points)
    if groups:
        lines += ["", "over seeds (finished points: mean ± sample standard deviation)", "",
                  "| points | seeds | finished | validation error | test error | time (s) |",
                  "|---|---|---:|---:|---:|---:|"]
        for g in groups:
            n = g.validation_error.n if g.validation_error else 0
            lines.append(f"| {label(g.overrides)} | {','.join(map(str, g.seeds))} | {n} | "
                         f"{_spread(g.validation_error)} | {_spread(g.test_error)} | "
                         f"{_spread(g.seconds, percent=False)} |")
    return "\n".join(lines)


def point_from_metrics(index: int, overrides: dict[str, Any], metrics: Mapping[str, Any],
                       version: int | None = None) -> PointResult:
    """A finished point from its version's metrics (``aae.training``'s)."""
    return PointResult(
        index=index, overrides=overrides, status="finished", version=version,
        validation_error=metric_value(dict(metrics), Metric.VALIDATION_ERROR),
        validation_loss=metric_value(dict(metrics), Metric.VALIDATION_LOSS),
        test_error=metrics.get("test_error"), seconds=metrics.get("train_seconds"),
        epoch=metrics.get("epochs"), epochs=metrics.get("epochs"),
        history=list(metrics.get("history") or []))
