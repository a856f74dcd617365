"""Bodies of the sweep routes: ``SweepCreate`` in, ``SweepPublic`` out."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aae.selection import Metric
from aae_jobs.contract import JobStatus
from aae_jobs.sweeps import SweepPromotion
from service.core.schemas import ALIAS_PATTERN
from service.jobs.schemas import TrainJobCreate

GridValues = list[Any]


class SweepCreate(BaseModel):
    """A base training run and the points to train: a grid (every combination of its
    values) or an explicit list of overrides. Every point publishes a version of the
    base's model."""

    model_config = ConfigDict(extra="forbid")

    base: TrainJobCreate = Field(default_factory=lambda: TrainJobCreate(),
                                 description="any body of POST /jobs/train; a point's "
                                 "overrides replace its fields")
    grid: dict[str, GridValues] | None = Field(
        None, description='field -> values, e.g. {"z_dim": [2, 10], "seed": [1, 2, 3]}: '
        "one point per combination", examples=[{"seed": [1, 2, 3]}])
    points: list[dict[str, Any]] | None = Field(
        None, description="explicit points, each a dict of overrides (instead of grid)")
    rank_by: Metric = Field(Metric.VALIDATION_ERROR, description="the validation metric "
                            "points are ranked by, lower first (never the test set)")
    promote: str | None = Field(None, pattern=ALIAS_PATTERN, max_length=64, description=(
        "when every point has ended, move this alias (e.g. production) to the best point, "
        "unless it is worse by rank_by than the version the alias points at"))

    @model_validator(mode="after")
    def _grid_or_points(self) -> SweepCreate:
        if (self.grid is None) == (self.points is None):
            raise ValueError("give either grid or points")
        return self


class SweepPointPublic(BaseModel):
    index: int = Field(description="the point's place in the sweep's order")
    overrides: dict[str, Any]
    job: str = Field(description="its training job (GET /jobs/{id})")
    status: JobStatus
    epoch: int | None = None
    epochs: int | None = None
    validation_error: float | None = Field(None, description="at the last epoch's end")
    validation_loss: float | None = Field(None, description="reconstruction loss on the "
                                          "validation split, at the last epoch's end")
    test_error: float | None = Field(None, description="once finished (reported, never "
                                     "used to rank)")
    seconds: float | None = Field(None, description="training time so far, or in all")
    version: int | None = Field(None, description="the version it published")
    error: str | None = Field(None, description="why it failed (its job's error)")


class Spread(BaseModel):
    mean: float
    std: float = Field(description="sample standard deviation (0 for one point)")
    n: int


class SeedGroupPublic(BaseModel):
    overrides: dict[str, Any] = Field(description="what the points share, seed left out")
    points: list[int]
    seeds: list[Any]
    validation_error: Spread | None = None
    validation_loss: Spread | None = None
    test_error: Spread | None = None
    seconds: Spread | None = None


class SweepPublic(BaseModel):
    id: str
    status: Literal["running", "ended"] = Field(description="ended once every point has")
    model: str = Field(description="the model every point publishes a version of")
    dataset: str
    base: dict[str, Any]
    rank_by: Metric
    promote: str | None = None
    created_at: datetime
    cancel_requested: bool = False
    counts: dict[str, int] = Field(description="points by status")
    points: list[SweepPointPublic] = Field(description="best first by rank_by; points "
                                           "without a value yet last")
    seeds: list[SeedGroupPublic] = Field(description="points that differ only by seed: "
                                         "mean and spread of the finished ones")
    settled: bool = Field(False, description="every point's outcome recorded (and the "
                          "promotion done) by a worker")
    promotion: SweepPromotion | None = None


class SweepSummary(BaseModel):
    id: str
    model: str
    dataset: str
    status: Literal["running", "ended"]
    counts: dict[str, int]
    created_at: datetime
    promote: str | None = None
    promotion: SweepPromotion | None = None
