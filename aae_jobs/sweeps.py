"""A sweep's durable record: what the API accepted, written before any of its points is
queued, and what became of its promotion.

    <model_dir>/.sweeps/<sweep id>.json

Each point is an ordinary training job with its own durable job record
(``aae_jobs.records``), written before the sweep's record: a sweep the API answered 202
for has every point on disk, and the workers queue any point Redis lost like any job.
The sweep's record outlives its jobs: once every point has ended, the worker that
settles the sweep (``worker.sweeps``) writes each point's outcome into it, so the table
still reads after Redis has expired the jobs.

The promotion (``promote``: an alias moved to the best point if it is no worse than the
alias' target) is done exactly once: under an exclusive lock on the record, a worker
writes its intent (``promotion.state = "promoting"``, with the alias' target before),
moves the alias, then writes the outcome. A worker that dies in between leaves the
intent, and the next one to settle the sweep completes it (moving the alias only if it
still points where it did), never starting over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from aae.atomic import file_lock
from aae_jobs.records import write_document

logger = logging.getLogger(__name__)

SWEEPS_DIR = ".sweeps"  # under the store's root; the store ignores names starting with "."

PromotionState = Literal["promoting", "promoted", "refused", "skipped"]


class SweepPoint(BaseModel):
    """One point: its overrides of the base, and its job. ``status``, ``version`` and
    ``metrics`` are filled in when the sweep is settled."""

    index: int
    overrides: dict[str, Any]
    job_id: str
    status: str | None = None
    version: int | None = None
    error: str | None = None  # why it failed, once settled


class SweepPromotion(BaseModel):
    """What became of ``promote``: the alias, the version it was moved to (or that was
    refused), where it pointed before, the figures compared and why."""

    state: PromotionState
    alias: str
    version: int | None = None
    previous: int | None = None
    metric: str | None = None
    value: float | None = None
    previous_value: float | None = None
    reason: str | None = None
    at: float = Field(default_factory=time.time)


class SweepRecord(BaseModel):
    id: str
    queue: str
    name: str = Field(description="the model every point publishes a version of")
    dataset: str
    base: dict[str, Any] = Field(description="the request's base, as given")
    points: list[SweepPoint]
    rank_by: str
    promote: str | None = None
    created_at: float = Field(default_factory=time.time)
    cancel_requested: bool = False
    settled: bool = False  # every point ended, its outcome and the promotion's recorded
    promotion: SweepPromotion | None = None
    request_id: str | None = None


def sweeps_dir(model_dir: Path) -> Path:
    return Path(model_dir) / SWEEPS_DIR


def write_sweep(model_dir: Path, record: SweepRecord) -> None:
    write_document(sweeps_dir(model_dir), record.id, record)


def remove_sweep(model_dir: Path, sweep_id: str) -> None:
    (sweeps_dir(model_dir) / f"{sweep_id}.json").unlink(missing_ok=True)


def read_sweep(model_dir: Path, sweep_id: str) -> SweepRecord | None:
    try:
        text = (sweeps_dir(model_dir) / f"{sweep_id}.json").read_text(encoding="utf-8")
        return SweepRecord.model_validate_json(text)
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        logger.error("sweep record %s is unreadable: %s", sweep_id, exc)
        return None


def sweep_records(model_dir: Path, queue: str | None = None) -> list[SweepRecord]:
    """The sweeps (of ``queue``, if given), newest first."""
    try:
        names = [p.stem for p in sweeps_dir(model_dir).glob("*.json")]
    except OSError:
        return []
    records = [r for r in (read_sweep(model_dir, n) for n in names) if r is not None]
    return sorted((r for r in records if queue is None or r.queue == queue),
                  key=lambda r: r.created_at, reverse=True)


@contextmanager
def locked(model_dir: Path, sweep_id: str) -> Iterator[None]:
    """An exclusive ``flock`` on the sweep's lock file: released when its holder exits,
    however it exits."""
    with file_lock(sweeps_dir(model_dir) / f".{sweep_id}.lock"):
        yield
