"""Sweep points, ranking, seed aggregation and the printed table (``aae.sweeps``)."""

from __future__ import annotations

import statistics
import time

import pytest

from aae.sweeps import PointResult, TooManyPoints, count_points, expand, label, rank, seed_groups, table


def test_a_grid_is_the_product_of_its_values_the_last_field_fastest():
    assert expand(grid={"z_dim": [2, 10], "seed": [1, 2, 3]}) == [
        {"z_dim": 2, "seed": 1}, {"z_dim": 2, "seed": 2}, {"z_dim": 2, "seed": 3},
        {"z_dim": 10, "seed": 1}, {"z_dim": 10, "seed": 2}, {"z_dim": 10, "seed": 3}]
    assert expand(points=[{"seed": 1}, {}]) == [{"seed": 1}, {}]


@pytest.mark.parametrize("grid, points", [
    (None, None), ({"seed": [1]}, [{}]), ({}, None), ({"seed": []}, None),
    ({"seed": "123"}, None), (None, []),
])
def test_a_sweep_needs_exactly_one_non_empty_grid_or_list(grid, points):
    with pytest.raises(ValueError):
        expand(grid=grid, points=points)


def test_a_grid_past_the_limit_is_refused_before_any_point_is_made():
    huge = {f"f{i}": list(range(100)) for i in range(8)}  # 10^16 points
    start = time.perf_counter()
    with pytest.raises(TooManyPoints, match="more than 64 points"):
        expand(grid=huge, limit=64)
    assert time.perf_counter() - start < 0.1
    assert count_points({"z_dim": [2, 10], "seed": [1, 2, 3]}) == 6
    assert len(expand(grid={"z_dim": [2, 10], "seed": [1, 2, 3]}, limit=6)) == 6
    with pytest.raises(TooManyPoints, match="7 points, more than allowed"):
        expand(points=[{}] * 7, limit=6)


def _point(index, status="finished", error=None, seed=None, **overrides):
    if seed is not None:
        overrides["seed"] = seed
    return PointResult(index=index, overrides=overrides, status=status,
                       validation_error=error, test_error=error, seconds=10.0 + index)


def test_points_rank_best_first_by_the_metric_unknown_ones_last_in_their_order():
    points = [_point(0, "started"), _point(1, error=0.3), _point(2, "queued"),
              _point(3, error=0.1), _point(4, error=0.3)]
    assert [p.index for p in rank(points, "validation_error")] == [3, 1, 4, 0, 2]


def test_points_equal_but_for_their_seed_are_aggregated_over_the_finished_ones():
    points = [_point(0, error=0.1, seed=1, z_dim=2), _point(1, error=0.2, seed=2, z_dim=2),
              _point(2, "failed", seed=3, z_dim=2), _point(3, error=0.5, seed=1, z_dim=10),
              _point(4, error=0.4, z_dim=3)]  # no seed: never grouped
    (group,) = [g for g in seed_groups(points) if g.overrides == {"z_dim": 2}]
    assert group.points == (0, 1, 2) and group.seeds == (1, 2, 3)
    assert group.validation_error.n == 2
    assert group.validation_error.mean == pytest.approx(0.15)
    assert group.validation_error.std == pytest.approx(statistics.stdev([0.1, 0.2]))
    singles = [g for g in seed_groups(points) if g.overrides == {"z_dim": 10}]
    assert singles == []  # one point is no spread


def test_the_table_lists_every_point_ranked_and_the_seed_groups():
    points = [_point(0, error=0.2, seed=1), _point(1, error=0.1, seed=2),
              _point(2, "started", seed=3)]
    points[2].epoch, points[2].epochs = 3, 20
    text = table(points, "validation_error")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "seed=" in line]
    assert [r.split("|")[2].strip() for r in rows[:3]] == ["seed=2", "seed=1", "seed=3"]
    assert "started (epoch 3/20)" in text
    assert "15.00% ± 7.07%" in text  # the two finished seeds
    assert label({}) == "base" and label({"lr": 0.001, "m": [1, 2]}) == "lr=0.001 m=1,2"
