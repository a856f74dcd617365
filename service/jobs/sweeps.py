"""Sweeps as the service sees them: submit, look up, list, follow, cancel.

A sweep is a set of ordinary training jobs, one per point, tagged with the sweep's id,
all publishing versions of one model (the base's name, default ``<dataset>-<mode>``), so
that its best point can be promoted like any version. Every point is checked up front
(422 naming the point and the field); then, before anything is queued, the idempotency
key (if any), every point's durable job record and then the sweep's record
(``aae_jobs.sweeps``); a failure among them removes what was written (507, say). The
jobs are queued last: should the API die or Redis fail halfway, the workers queue the
rest from their records. Should Redis not answer the first enqueue, every point is
marked refused and the sweep's record removed (answered 503: nothing runs). With an
``Idempotency-Key`` the same key and body return the first request's sweep
(``aae_jobs.idempotency``). The workers settle the sweep (outcomes, promotion:
``worker.sweeps``); the API only reads and cancels.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aae.errors import AAEError
from aae.store import CheckpointStore
from aae.sweeps import (PointResult, TooManyPoints, expand, point_from_metrics, rank,
                        seed_groups)
from aae_jobs import idempotency
from aae_jobs.contract import ENDED, JobStatus
from aae_jobs.idempotency import KeyEntry, body_hash, key_name
from aae_jobs.queueing import enqueue
from aae_jobs.records import remove_record, write_record
from aae_jobs.sweeps import (SweepPoint, SweepRecord, locked, read_sweep, remove_sweep,
                             sweep_records, write_sweep)
from service.core.errors import JobEnded, JobNotFound, QueueUnavailable
from service.jobs.queue import JobQueue
from service.jobs.schemas import TrainJobCreate, TrainJobPublic
from service.jobs.sweep_schemas import (SeedGroupPublic, Spread, SweepCreate, SweepPointPublic,
                                        SweepPublic, SweepSummary)

logger = logging.getLogger(__name__)

FIXED = ("name", "dataset", "mode")  # one model of one dataset per sweep


def _invalid(loc: tuple[Any, ...], msg: str, value: Any = None) -> RequestValidationError:
    return RequestValidationError([{"type": "invalid_point", "loc": ("body", *loc),
                                    "msg": msg, "input": value}])


class Sweeps:
    """The sweeps of one job queue."""

    def __init__(self, jobs: JobQueue, store: CheckpointStore, max_points: int) -> None:
        self.jobs, self.store, self.max_points = jobs, store, max_points
        self.model_dir = jobs.model_dir

    # -- submitting ----------------------------------------------------------------------

    def _points(self, params: SweepCreate) -> tuple[list[dict[str, Any]], list[TrainJobCreate]]:
        where = "grid" if params.grid is not None else "points"
        try:  # counted before anything is expanded: a few lists can declare 10^16 points
            overrides = expand(params.grid, params.points, limit=self.max_points)
        except TooManyPoints as exc:
            raise _invalid((where,), f"{exc} (AAE_MAX_SWEEP_POINTS is "
                           f"{self.max_points})") from None
        except ValueError as exc:
            raise _invalid((where,), str(exc)) from None
        base = params.base.model_dump(exclude_unset=True)
        name = params.base.model_name()
        points = []
        for index, point in enumerate(overrides):
            loc: tuple[Any, ...] = (where,) if where == "grid" else (where, index)
            for field in point:
                if field in FIXED:
                    raise _invalid((*loc, field), f"point {index}: a sweep publishes one "
                                   f"model of one dataset; set {field} in base, not per "
                                   "point", point[field])
                if field not in TrainJobCreate.model_fields:
                    raise _invalid((*loc, field), f"point {index}: no field {field!r}",
                                   point[field])
            try:
                params = TrainJobCreate(**{**base, **point, "name": name})
            except ValidationError as exc:
                error = exc.errors()[0]
                field_loc = tuple(error.get("loc", ()))
                raise _invalid((*loc, *field_loc), f"point {index} ({point}): "
                               f"{'.'.join(map(str, field_loc)) or 'config'}: {error['msg']}",
                               error.get("input")) from None
            try:
                self.jobs.check_budget(params)
            except RequestValidationError as exc:
                error = exc.errors()[0]
                field = error["loc"][-1]
                raise _invalid((*loc, field), f"point {index} ({point}): {field}: "
                               f"{error['msg']}", error.get("input")) from None
            points.append(params)
        return overrides, points

    def submit(self, params: SweepCreate, request_id: str | None = None,
               key: str | None = None) -> tuple[SweepPublic, bool]:
        """Queue the sweep's points (each checked first). With an idempotency ``key``: the
        sweep an earlier request with this key and body made, if any. Returns the sweep
        and whether this request made it."""
        if key is None:
            return self._submit(params, request_id), True
        name = key_name(self.jobs.queue.name, "sweep", key)
        body = body_hash(params.model_dump(mode="json", exclude_unset=True))
        with idempotency.locked(self.model_dir, name):
            entry = idempotency.read_key(self.model_dir, name)
            if entry is not None and (earlier := self.keyed(entry, body)) is not None:
                return earlier, False
            return self._submit(params, request_id, lambda sweep_id: idempotency.write_key(
                self.model_dir, name, KeyEntry(kind="sweep", queue=self.jobs.queue.name,
                                               body=body, id=sweep_id))), True

    def keyed(self, entry: KeyEntry, body: str) -> SweepPublic | None:
        """The sweep of an idempotency key; None if the key is free again (its sweep was
        refused); 422 if it was used with another body."""
        record = read_sweep(self.model_dir, entry.id)
        if record is None:
            return None
        if entry.body != body:
            raise RequestValidationError([{
                "type": "idempotency_key_reused", "loc": ("header", "Idempotency-Key"),
                "msg": f"this key was used for sweep {entry.id} with another body",
                "input": None}])
        return self._public(record)

    def _submit(self, params: SweepCreate, request_id: str | None,
                keyed: Any = None) -> SweepPublic:
        overrides, points = self._points(params)
        checked = self.jobs.check_dataset(params.base)
        sweep_id = str(uuid.uuid4())
        records = [self.jobs.record(p, checked, sweep=sweep_id, request_id=request_id)
                   for p in points]
        sweep = SweepRecord(
            id=sweep_id, queue=self.jobs.queue.name, name=points[0].model_name(),
            dataset=params.base.dataset, base=params.base.model_dump(exclude_unset=True),
            points=[SweepPoint(index=i, overrides=o, job_id=r.id)
                    for i, (o, r) in enumerate(zip(overrides, records, strict=True))],
            rank_by=params.rank_by.value, promote=params.promote, request_id=request_id)
        if keyed is not None:  # first: a key whose sweep has no record is free
            keyed(sweep_id)
        try:  # every point durable before the sweep, and the sweep before any job is queued
            for record in records:
                write_record(self.model_dir, record)
            write_sweep(self.model_dir, sweep)
        except BaseException:  # no space, say (507): nothing accepted, no point may run
            for record in records:
                remove_record(self.model_dir, record.id)
            remove_sweep(self.model_dir, sweep_id)
            raise
        try:
            self.jobs.enqueue(records[0])  # a worker that started it: accepted after all
        except Exception:  # not confirmed (503), or another failure: nothing may run
            for record in records[1:]:
                self.jobs.refuse(record.id)
            remove_sweep(self.model_dir, sweep_id)
            raise
        for record in records[1:]:
            try:
                enqueue(self.jobs.queue, record)
            except RedisError as exc:  # accepted: a worker queues it from its record
                logger.warning("sweep %s: job %s not queued now (%s); the workers queue "
                               "it from its record", sweep_id, record.id, exc)
        logger.info("sweep %s: queued %d points of %s", sweep_id, len(records), sweep.name)
        return self._public(sweep)

    # -- reading -------------------------------------------------------------------------

    def record(self, sweep_id: str) -> SweepRecord:
        record = read_sweep(self.model_dir, sweep_id)
        if record is None or record.queue != self.jobs.queue.name:
            raise JobNotFound(f"no sweep {sweep_id!r}")
        return record

    def _job(self, point: SweepPoint) -> TrainJobPublic | None:
        try:
            return self.jobs.get(point.job_id)
        except JobNotFound:  # expired from Redis: the settled record says how it ended
            return None

    def _result(self, record: SweepRecord, point: SweepPoint,
                job: TrainJobPublic | None) -> PointResult:
        status = job.status.value if job is not None else (point.status or "lost")
        version = job.result.version if job is not None and job.result else point.version
        if status == JobStatus.FINISHED and version is not None:
            try:
                metrics = self.store.info(record.name, version).metrics
                return point_from_metrics(point.index, point.overrides, metrics, version)
            except AAEError:  # deleted since: its figures went with it
                pass
        progress = job.progress if job is not None else None
        return PointResult(
            index=point.index, overrides=point.overrides, status=status, version=version,
            error=job.error if job is not None else point.error,
            validation_error=progress.validation_error if progress else None,
            validation_loss=progress.validation_loss if progress else None,
            seconds=progress.elapsed_s if progress else None,
            epoch=progress.epoch if progress else None,
            epochs=progress.epochs if progress else None)

    def results(self, record: SweepRecord) -> list[PointResult]:
        return [self._result(record, p, self._job(p)) for p in record.points]

    def ranked(self, record: SweepRecord) -> list[PointResult]:
        """The points best first by the sweep's metric."""
        return rank(self.results(record), record.rank_by)

    def _public(self, record: SweepRecord,
                results: list[PointResult] | None = None) -> SweepPublic:
        results = self.results(record) if results is None else results
        jobs = {p.index: p.job_id for p in record.points}
        counts = Counter(r.status for r in results)
        return SweepPublic(
            id=record.id, status=_status(results), model=record.name,
            dataset=record.dataset, base=record.base, rank_by=record.rank_by,
            promote=record.promote,
            created_at=datetime.fromtimestamp(record.created_at, timezone.utc),
            cancel_requested=record.cancel_requested, counts=dict(counts),
            points=[SweepPointPublic(
                index=r.index, overrides=r.overrides, job=jobs[r.index],
                status=_job_status(r.status), epoch=r.epoch, epochs=r.epochs,
                validation_error=r.validation_error, validation_loss=r.validation_loss,
                test_error=r.test_error, seconds=r.seconds, version=r.version,
                error=r.error)
                for r in rank(results, record.rank_by)],
            seeds=[SeedGroupPublic(
                overrides=g.overrides, points=list(g.points), seeds=list(g.seeds),
                **{k: Spread(**vars(v)) if (v := getattr(g, k)) else None
                   for k in ("validation_error", "validation_loss", "test_error",
                             "seconds")})
                for g in seed_groups(results)],
            settled=record.settled, promotion=record.promotion)

    def get(self, sweep_id: str) -> SweepPublic:
        return self._public(self.record(sweep_id))

    def recent(self, limit: int = 100) -> list[SweepSummary]:
        out = []
        for record in sweep_records(self.model_dir, self.jobs.queue.name)[:limit]:
            results = self.results(record)
            out.append(SweepSummary(
                id=record.id, model=record.name, dataset=record.dataset,
                status=_status(results), counts=dict(Counter(r.status for r in results)),
                created_at=datetime.fromtimestamp(record.created_at, timezone.utc),
                promote=record.promote, promotion=record.promotion))
        return out

    async def follow(self, sweep_id: str, poll_s: float) -> AsyncIterator[SweepPublic]:
        """The sweep now and each time it changes, until every point has ended and the
        sweep is settled."""
        last = None
        while True:
            try:
                sweep = await self.jobs.run(self.get, sweep_id)
            except (QueueUnavailable, RedisConnectionError, RedisTimeoutError,
                    JobNotFound) as exc:
                logger.warning("stopped following sweep %s: %s", sweep_id, exc)
                return
            if sweep != last:
                last = sweep
                yield sweep
            if sweep.status == "ended" and sweep.settled:
                return
            await asyncio.sleep(poll_s)

    # -- cancelling ----------------------------------------------------------------------

    def cancel(self, sweep_id: str) -> SweepPublic:
        """Cancel every point that has not ended (queued ones at once, running ones at
        their next step); no promotion follows. 409 if every point had ended."""
        self.record(sweep_id)  # 404 before the lock: an unknown id makes no lock file
        with locked(self.model_dir, sweep_id):
            record = self.record(sweep_id)
            if _status(self.results(record)) == "ended":
                raise JobEnded(f"sweep {sweep_id} has already ended")
            record.cancel_requested = True
            write_sweep(self.model_dir, record)
        for point in record.points:
            try:
                self.jobs.cancel(point.job_id)
            except (JobEnded, JobNotFound):
                continue
        logger.info("canceled sweep %s", sweep_id)
        return self.get(sweep_id)


def _job_status(status: str) -> JobStatus:
    try:
        return JobStatus(status)
    except ValueError:  # "lost": neither Redis nor a record knows it
        return JobStatus.FAILED


def _status(results: list[PointResult]) -> str:
    ended = {s.value for s in ENDED} | {"lost"}
    return "ended" if all(r.status in ended for r in results) else "running"


async def get_sweeps(request: Request) -> Sweeps:
    return request.app.state.sweeps


SweepsDep = Annotated[Sweeps, Depends(get_sweeps)]
