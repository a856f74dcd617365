"""Durable job records: what makes a job answered 202 outlive Redis.

Redis is the queue, and a Redis that dies loses what it had not yet written to disk (a
second with ``appendfsync everysec``, everything without persistence). So before the API
answers 202 it writes the job's record, everything needed to queue it again, to the
checkpoint store (the volume the API and every worker share) and fsyncs it:

    <model_dir>/.queue/<job id>.json

The workers' maintenance reconciles the records with Redis (``worker.recovery``): a
record whose job Redis does not know is queued again under the same id (its next
attempt resumes from its saved state, or finds its published version and finishes at
once); a record whose job has ended in Redis for ``RECORD_GRACE_S`` is removed.

A cancel is written into the record before the stop flag is set, so a cancel survives
a Redis that forgets it too.

A job the API answered 503 for was not accepted, and must never run, even though its
enqueue may still reach Redis after the API gave up waiting (a paused Redis runs the
commands it had read when it resumes). So the API marks its record ``refused``
(``refuse``) before answering, and a worker marks the record ``started`` (``start``)
before running the job; both under one lock, so whichever comes first decides: a refused
job is never run (the worker fails it at once and the maintenance never queues it
again), and a job a worker started before the API gave up is answered 202 after all.
Both decisions are empty files beside the record (``<job id>.refused``,
``<job id>.started``), like the store's tombstones: made on a full disk too (they need
an inode, no block), so a worker starts a job and the API refuses one whatever space is
left. Only the standard library and pydantic here: the API and the workers both import
this module, and the library's file primitives.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from aae.atomic import FILE_MODE, TMP_PREFIX, file_lock, fsync_dir, replace_file

logger = logging.getLogger(__name__)

RECORDS_DIR = ".queue"  # under the store's root; the store ignores names starting with "."
RECORD_GRACE_S = 30.0  # an end Redis has held this long is on its disk (AOF: 1 s)
RESTORE_AFTER_S = 5.0  # a record younger than this may still be on its way into Redis


class JobRecord(BaseModel):
    """A job as the API accepted it: enough to queue it again, as the API did."""

    id: str
    queue: str
    name: str
    config: dict[str, Any]
    dataset: str
    dataset_checked: bool = False
    job_timeout_s: int
    retries: int
    result_ttl_s: int
    description: str
    created_at: float = Field(default_factory=time.time)
    cancel_requested: bool = False
    sweep: str | None = None  # the sweep the job is a point of (aae_jobs.sweeps)
    request_id: str | None = None  # of the request that queued it
    refused: bool = False  # answered 503: never to run
    started: bool = False  # a worker began it: it can no longer be refused


class JobRefused(Exception):
    """The job's record says the API refused it (answered 503): it must not run."""


def records_dir(model_dir: Path) -> Path:
    return Path(model_dir) / RECORDS_DIR


def write_document(directory: Path, name: str, document: BaseModel) -> None:
    """Write ``document`` as ``<directory>/<name>.json``, whole or not at all, durably."""
    replace_file(directory / f"{name}.json", document.model_dump_json().encode("utf-8"))


def write_record(model_dir: Path, record: JobRecord) -> None:
    write_document(records_dir(model_dir), record.id, record)


def read_record(model_dir: Path, job_id: str) -> JobRecord | None:
    """The record, with its decisions (``refused``, ``started``: its own fields or the
    empty files beside it)."""
    try:
        text = (records_dir(model_dir) / f"{job_id}.json").read_text(encoding="utf-8")
        record = JobRecord.model_validate_json(text)
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        logger.error("job record %s is unreadable: %s", job_id, exc)
        return None
    return record.model_copy(update={
        decision: getattr(record, decision) or _decision_file(model_dir, job_id,
                                                              decision).exists()
        for decision in DECISIONS})


DECISIONS = ("refused", "started")


def _decision_file(model_dir: Path, job_id: str, decision: str) -> Path:
    return records_dir(model_dir) / f"{job_id}.{decision}"


def _decide(model_dir: Path, job_id: str, decision: str) -> None:
    """Make the decision's empty file, durably (no block needed: a full disk too)."""
    path = _decision_file(model_dir, job_id, decision)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    fsync_dir(path.parent)


@contextmanager
def _decision(model_dir: Path) -> Iterator[None]:
    """The lock under which a record is refused, started or otherwise rewritten."""
    with file_lock(records_dir(model_dir) / ".decisions.lock"):
        yield


def update_record(model_dir: Path, job_id: str, **changes: Any) -> JobRecord | None:
    """Rewrite the record with ``changes`` (under the decisions' lock); None if it has
    none."""
    with _decision(model_dir):
        record = read_record(model_dir, job_id)
        if record is not None:
            record = record.model_copy(update=changes)
            write_record(model_dir, record)
        return record


def refuse(model_dir: Path, job_id: str) -> JobRecord | None:
    """The API: mark the job refused, unless a worker has started it already; returns
    the record as it now stands (None: no record)."""
    with _decision(model_dir):
        record = read_record(model_dir, job_id)
        if record is not None and not record.started:
            _decide(model_dir, job_id, "refused")
            record = record.model_copy(update={"refused": True})
        return record


def start(model_dir: Path, job_id: str) -> JobRecord | None:
    """A worker, before running the job: mark its record started; raises ``JobRefused``
    if the API refused it. A job without a record (queued by hand) just runs."""
    with _decision(model_dir):
        record = read_record(model_dir, job_id)
        if record is None:
            return None
        if record.refused:
            raise JobRefused(f"job {job_id} was refused when it was submitted (the API "
                             "answered 503): it does not run")
        if not record.started:
            _decide(model_dir, job_id, "started")
            record = record.model_copy(update={"started": True})
        return record


def job_records(model_dir: Path, queue: str) -> list[JobRecord]:
    """The records of ``queue``'s jobs, oldest first."""
    try:
        names = [p.stem for p in records_dir(model_dir).glob("*.json")]
    except OSError:
        return []
    records = [r for r in (read_record(model_dir, n) for n in names) if r is not None]
    return sorted((r for r in records if r.queue == queue), key=lambda r: r.created_at)


def remove_record(model_dir: Path, job_id: str) -> None:
    (records_dir(model_dir) / f"{job_id}.json").unlink(missing_ok=True)
    for decision in DECISIONS:
        _decision_file(model_dir, job_id, decision).unlink(missing_ok=True)


def remove_stale_temporaries(model_dir: Path, older_than_s: float = 600.0) -> None:
    """Temporary files of writers that died mid-write."""
    now = time.time()
    for tmp in records_dir(model_dir).glob(f"{TMP_PREFIX}*"):
        try:
            if now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
        except OSError:
            continue
