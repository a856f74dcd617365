"""Job and worker metrics, read from Redis when Prometheus scrapes ``/metrics``.

Nothing here is counted in the API's processes: the queue, RQ's registries, the running
jobs' progress (their meta) and the workers' counters (``worker/metrics.py`` writes
them; the keys and the progress record are ``aae_jobs.contract``'s) all live in Redis,
so every API process reports the same values, and a scrape sees the state of the
moment. Redis being down (or its breaker open: ``service.jobs.breaker``) gives
``aae_job_queue_up 0`` and no job metrics, never a failed or slow scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, Metric,
                                    SummaryMetricFamily)
from redis.exceptions import RedisError
from rq import Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from aae_jobs.contract import (JOBS_METRICS_KEY, STEPS_METRICS_KEY, TRAIN_TASK, JobMeta,
                               JobStatus)
from service.core.errors import QueueUnavailable
from service.jobs.queue import JobQueue

logger = logging.getLogger(__name__)


class JobMetrics:
    """A prometheus-client collector over one job queue."""

    def __init__(self, jobs: JobQueue) -> None:
        self.jobs = jobs

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time only; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("aae_job_queue_up", "Whether the job queue (Redis) answered "
                               "this scrape")
        try:
            with self.jobs.breaker.guard():
                metrics = list(self._collect())
        except (RedisError, QueueUnavailable) as exc:
            logger.warning("job metrics unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics

    def _collect(self) -> Iterator[Metric]:
        queue, connection = self.jobs.queue, self.jobs.connection
        with connection.pipeline(transaction=False) as pipe:
            pipe.llen(queue.key)
            for registry in (queue.started_job_registry, queue.finished_job_registry,
                             queue.failed_job_registry, queue.canceled_job_registry,
                             queue.deferred_job_registry, queue.scheduled_job_registry):
                pipe.zcard(registry.key)
            pipe.hgetall(JOBS_METRICS_KEY)
            pipe.hgetall(STEPS_METRICS_KEY)
            pipe.zrange(queue.failed_job_registry.key, 0, -1)
            (queued, started, finished, failed, canceled, deferred, scheduled, outcomes, steps,
             failed_ids) = pipe.execute()
        stopped = self._stopped(failed_ids)

        depth = GaugeMetricFamily("aae_jobs_queued", "Jobs waiting for a worker")
        depth.add_metric([], queued)
        yield depth
        by_status = GaugeMetricFamily("aae_jobs", "Jobs in Redis by status (ended ones "
                                      "until they expire)", labels=["status"])
        for status, count in (("queued", queued), ("deferred", deferred + scheduled),
                              ("started", started), ("finished", finished),
                              ("failed", failed - stopped), ("stopped", stopped),
                              ("canceled", canceled)):
            by_status.add_metric([status], count)
        yield by_status

        workers = GaugeMetricFamily("aae_workers_alive", "Workers listening on the queue")
        workers.add_metric([], Worker.count(connection=connection, queue=queue))
        yield workers

        ended = CounterMetricFamily("aae_worker_jobs", "Jobs the workers ended, by outcome "
                                    "(finished, failed, stopped) and device",
                                    labels=["outcome", "device"])
        for field, count in sorted(outcomes.items()):
            outcome, device = field.decode().split("|", 1)
            ended.add_metric([outcome, device], int(count))
        yield ended

        step_time = SummaryMetricFamily("aae_training_step_seconds", "Wall-clock time of "
                                        "training steps on the workers, by device (not "
                                        "validation; an epoch's steps after its last "
                                        "progress report are not timed)",
                                        labels=["device"])
        fields = {key.decode(): value for key, value in steps.items()}
        for device in sorted({key.split("|", 1)[0] for key in fields}):
            step_time.add_metric([device], count_value=int(fields.get(f"{device}|count", 0)),
                                 sum_value=float(fields.get(f"{device}|seconds", 0)))
        yield step_time

        yield from self._running(queue.started_job_registry.get_job_ids(cleanup=False))

    def _stopped(self, failed_ids: list[bytes]) -> int:
        """How many of the failed registry's jobs RQ recorded as stopped (it keeps both
        there)."""
        with self.jobs.connection.pipeline(transaction=False) as pipe:
            for job_id in failed_ids:
                pipe.hget(Job.key_for(job_id.decode()), "status")
            statuses = pipe.execute()
        return sum(1 for status in statuses if status == JobStatus.STOPPED.value.encode())

    def _running(self, job_ids: list[str]) -> Iterator[Metric]:
        """Per running job: where it is, its latest losses and validation error."""
        labels = ["job_id", "model"]
        families = {
            "epoch": GaugeMetricFamily("aae_job_epoch", "Epoch a running job is in",
                                        labels=labels),
            "epochs": GaugeMetricFamily("aae_job_epochs", "Epochs a running job will do",
                                        labels=labels),
            "step": GaugeMetricFamily("aae_job_step", "Training steps a running job has "
                                      "done", labels=labels),
            "total_steps": GaugeMetricFamily("aae_job_total_steps", "Training steps a "
                                             "running job will do", labels=labels),
            "validation_error": GaugeMetricFamily("aae_job_validation_error", "Validation "
                                                  "error at a running job's last epoch end",
                                                  labels=labels),
        }
        loss = GaugeMetricFamily("aae_job_loss", "Latest loss of each training phase of a "
                                 "running job", labels=[*labels, "phase"])
        jobs = Job.fetch_many(job_ids, connection=self.jobs.connection,
                              serializer=JSONSerializer)
        for job in jobs:
            if job is None or job.func_name != TRAIN_TASK:
                continue
            progress = JobMeta.model_validate(job.meta).progress
            if progress is None:
                continue
            values = [job.id, job.kwargs.get("name", "")]
            for field, family in families.items():
                value = getattr(progress, field)
                if value is not None:
                    family.add_metric(values, value)
            for phase, value in progress.losses.items():
                loss.add_metric([*values, phase], value)
        yield from families.values()
        yield loss
