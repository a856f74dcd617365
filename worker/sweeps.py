"""Settling a sweep once its last point has ended: each point's outcome written into the
sweep's record, and the promotion done, exactly once.

The workers settle sweeps, never the API: the worker whose job was a sweep's last point
to end does it in that job's outcome callback (``worker.outcomes``), and every worker's
maintenance pass settles any sweep left unsettled (its last point's worker died, or its
last points were canceled while queued and ran no callback). All of it happens under the
sweep record's lock, and the promotion follows the record's intent protocol
(``aae_jobs.sweeps``), so two workers, or a worker that died halfway, move the alias
once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.queue import Queue

from aae.errors import AAEError
from aae.selection import Metric, MetricMissing, MetricWorse, metric_value, promote
from aae.store import CheckpointStore
from aae_jobs.contract import ENDED, JobMeta, JobStatus
from aae_jobs.queueing import failure_reason
from aae_jobs.records import read_record
from aae_jobs.sweeps import (SweepPromotion, SweepRecord, locked, read_sweep, sweep_records,
                             write_sweep)

logger = logging.getLogger(__name__)


def _outcome(queue: Queue, model_dir: Path, job_id: str, ending: dict[str, str]
             ) -> tuple[str | None, int | None, str | None]:
    """A point's status (None while it has not ended), published version, and why it
    failed."""
    try:
        job = Job.fetch(job_id, connection=queue.connection, serializer=queue.serializer)
    except NoSuchJobError:  # queued again from its record soon, or expired long ago
        if read_record(model_dir, job_id) is not None:
            return None, None, None
        return "lost", None, "Redis lost the job and its record is gone"
    status = ending.get(job_id) or job.get_status(refresh=False).value
    try:
        ended = JobStatus(status) in ENDED
    except ValueError:  # RQ's deferred, scheduled, created: waiting
        ended = False
    if not ended:
        return None, None, None
    result = JobMeta.model_validate(job.meta).result
    version = result.version if result and status == JobStatus.FINISHED else None
    return status, version, failure_reason(job) if status == JobStatus.FAILED else None


def settle(queue: Queue, model_dir: Path, sweep_id: str,
           ending: dict[str, str] | None = None) -> bool:
    """Settle the sweep if all its points have ended (``ending``: jobs whose end RQ has
    not recorded yet, by id, e.g. the one whose callback calls this). Returns whether
    the sweep is settled."""
    with locked(model_dir, sweep_id):
        record = read_sweep(model_dir, sweep_id)
        if record is None:
            return False
        if record.settled and (record.promotion is None or
                               record.promotion.state != "promoting"):
            return True
        outcomes = [_outcome(queue, model_dir, p.job_id, ending or {}) for p in record.points]
        if any(status is None for status, _, _ in outcomes):
            return False
        for point, (status, version, error) in zip(record.points, outcomes, strict=True):
            point.status, point.version, point.error = status, version, error
        if record.promote is not None:  # its intent is written unsettled
            _promote(record, CheckpointStore(model_dir), model_dir)
        record.settled = True  # only now: a settled sweep's promotion has its outcome
        write_sweep(model_dir, record)
        logger.info("sweep %s settled: %s", sweep_id, _said(record))
        return True


def _said(record: SweepRecord) -> str:
    p = record.promotion
    if p is None:
        return "no promotion asked"
    return f"promotion {p.state}" + (f" ({p.reason})" if p.reason else "")


def _best(record: SweepRecord, store: CheckpointStore) -> tuple[int, float] | None:
    """The finished point's version best by the sweep's metric, with its value."""
    best = None
    for point in record.points:
        if point.status != JobStatus.FINISHED or point.version is None:
            continue
        try:
            value = metric_value(store.info(record.name, point.version).metrics,
                                 record.rank_by)
        except AAEError:
            continue
        if value is not None and (best is None or value < best[1]):
            best = (point.version, value)
    return best


def _promote(record: SweepRecord, store: CheckpointStore, model_dir: Path) -> None:
    """Do, or complete, the sweep's promotion; the record is written by the caller."""
    alias, promotion = record.promote, record.promotion
    assert alias is not None
    if promotion is not None and promotion.state != "promoting":
        return  # done already
    if promotion is None:
        if record.cancel_requested:
            record.promotion = SweepPromotion(state="skipped", alias=alias,
                                              reason="the sweep was canceled")
            return
        best = _best(record, store)
        if best is None:
            record.promotion = SweepPromotion(state="skipped", alias=alias, reason=(
                f"no finished point has a {record.rank_by}"))
            return
        previous = store.aliases(record.name).get(alias)
        promotion = SweepPromotion(state="promoting", alias=alias, version=best[0],
                                   previous=previous, metric=record.rank_by, value=best[1])
        record.promotion = promotion
        write_sweep(model_dir, record)  # the intent, before the alias moves
    elif store.aliases(record.name).get(alias) not in (promotion.previous,
                                                       promotion.version):
        record.promotion = promotion.model_copy(update={
            "state": "skipped", "reason": "the alias was moved by someone else meanwhile"})
        return
    assert promotion.version is not None
    try:
        done = promote(store, record.name, alias, promotion.version,
                       unless_worse=Metric(record.rank_by))
    except MetricWorse as exc:
        record.promotion = promotion.model_copy(update={
            "state": "refused", "previous": exc.fields["current_version"],
            "previous_value": exc.fields["current_value"], "reason": str(exc)})
        return
    except (MetricMissing, AAEError) as exc:
        record.promotion = promotion.model_copy(update={"state": "skipped",
                                                        "reason": str(exc)})
        return
    record.promotion = promotion.model_copy(update={
        "state": "promoted", "previous_value": done.previous_value})
    logger.info("sweep %s: alias %s of %s now at version %d", record.id, alias, record.name,
                done.version)


def settle_all(queue: Queue, model_dir: Path) -> None:
    """Settle every unsettled sweep of ``queue`` whose points have all ended."""
    for record in sweep_records(model_dir, queue.name):
        if not record.settled or (record.promotion is not None and
                                  record.promotion.state == "promoting"):
            try:
                settle(queue, model_dir, record.id)
            except (AAEError, OSError) as exc:
                logger.error("cannot settle sweep %s: %s", record.id, exc)
