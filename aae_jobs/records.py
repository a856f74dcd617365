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
a Redis that forgets it too. Only the standard library and pydantic here: the API and
the workers both import this module, and the library's file primitives.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from aae.atomic import TMP_PREFIX, replace_file

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


def records_dir(model_dir: Path) -> Path:
    return Path(model_dir) / RECORDS_DIR


def write_document(directory: Path, name: str, document: BaseModel) -> None:
    """Write ``document`` as ``<directory>/<name>.json``, whole or not at all, durably."""
    replace_file(directory / f"{name}.json", document.model_dump_json().encode("utf-8"))


def write_record(model_dir: Path, record: JobRecord) -> None:
    write_document(records_dir(model_dir), record.id, record)


def read_record(model_dir: Path, job_id: str) -> JobRecord | None:
    try:
        text = (records_dir(model_dir) / f"{job_id}.json").read_text(encoding="utf-8")
        return JobRecord.model_validate_json(text)
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        logger.error("job record %s is unreadable: %s", job_id, exc)
        return None


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


def remove_stale_temporaries(model_dir: Path, older_than_s: float = 600.0) -> None:
    """Temporary files of writers that died mid-write."""
    now = time.time()
    for tmp in records_dir(model_dir).glob(f"{TMP_PREFIX}*"):
        try:
            if now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
        except OSError:
            continue
