"""The jobs a worker runs. The service enqueues ``train`` by its dotted name,
``"worker.tasks.train"``, with JSON arguments and the outcome callbacks of
``worker.outcomes`` (``aae_jobs.contract`` names them all).

One job publishes exactly one version, however many times it is started:

- it saves a resumable state every ``checkpoint_every`` epochs in its scratch directory
  ``<model_dir>/.jobs/<job id>/`` (on the shared volume); started again after its worker
  died, it resumes from the newest state rather than from scratch;
- the version it published is recorded in the version's metrics (``job_id``) and then
  in the job's meta; an attempt that finds either publishes nothing new. The look and
  the publishing happen under a file lock in the scratch directory (``flock``: it dies
  with its holder, and needs no Redis), so even two live copies of one job cannot both
  publish;
- every attempt takes the job's fence (``worker.control.Fence``) and confirms it, waiting
  for Redis if need be, before it saves a state, publishes and returns; an attempt that
  was superseded exits at once without a word to RQ, so only the current attempt's work
  takes effect.

Exceptions propagate so that RQ records them on the job. They are not retried (a bad
dataset fails again); only crashes are (see ``worker.recovery``), and a job whose process
the system killed ``AAE_MAX_JOB_KILLS`` times fails (``worker.runner``). A job asked to
stop stops at the next safe point of whatever stage it is in (before loading its data,
before building its model, between two steps, after its last evaluation, before
publishing) and has RQ end it as ``stopped`` (see ``aae_jobs.contract``). A job whose
record says the API refused it (answered 503) fails at once, untouched
(``aae_jobs.records.start``). A full checkpoint store fails no job: a sample grid or a
resumable state that finds no space is skipped with a warning, and publishing waits for
space (tried again after 1 s, doubling to 30 s; a cancel still stops it).
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from redis import Redis
from redis.exceptions import RedisError
from rq import get_current_job
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation
from rq.job import Job

from aae.atomic import file_lock
from aae.checkpoints import publish_model
from aae.config import AAEConfig
from aae.data import MNIST_FILES, splits_for
from aae.device import default_device
from aae.errors import AAEError, DatasetNotFound, TrainingStopped
from aae.resume import load_state, save_state
from aae.store import CheckpointStore, validate_name
from aae.training import Progress, Trainer
from aae_jobs import logs
from aae_jobs import records
from aae_jobs.contract import STOP_GRACE_S, TRAIN_TASK, JobResult, Stage
from worker.control import (Courier, Fence, JobReport, Lease, StopFlag, Superseded,
                            control_connection, count_start)
from worker.metrics import StepTimer
from worker.samples import save_samples
from worker.settings import WorkerSettings, get_settings

logger = logging.getLogger(__name__)

SCRATCH_DIR = ".jobs"  # under the store's root; the store ignores names starting with "."
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})  # a full store (or quota)
NO_SPACE_WAIT_MAX_S = 30.0  # longest wait between two tries to publish on a full store


def scratch_dir(model_dir: Path, job_id: str) -> Path:
    return model_dir / SCRATCH_DIR / job_id


def train(name: str, config: dict[str, Any], dataset: str = "mnist") -> dict[str, Any]:
    """Train ``config`` on ``dataset`` and publish the model as the next version of
    ``name``. Returns ``{"model": name, "version": n}``. Every line it logs carries the
    job's id (``aae_jobs.logs``)."""
    job = get_current_job()
    if job is None:
        raise RuntimeError(f"{TRAIN_TASK} runs as an RQ job")
    with logs.for_job(job.id):
        return _attempt(job, name, config, dataset)


def _attempt(job: Job, name: str, config: dict[str, Any], dataset: str) -> dict[str, Any]:
    settings = get_settings()
    records.start(settings.model_dir, job.id)  # JobRefused: answered 503, never to run
    device = torch.device(settings.device) if settings.device else default_device()
    control = control_connection(job.connection, settings.redis_timeout_s)
    attempt = count_start(control, job.id)
    fence = Fence.take(control, job, attempt)
    Lease(fence, settings.lease_ttl_s).start()  # renewed until this process exits
    report = JobReport(job, fence, Courier())
    stop = StopFlag(fence).start()
    logger.info("job %s: attempt %d on %s, model %s, queued by request %s", job.id, attempt,
                device, name, job.meta.get("request_id") or "-")
    try:
        report.update(attempts=attempt, worker=job.worker_name, pid=os.getpid(),
                      stage=Stage.STARTING.value, device=str(device))
        return _train(report, stop, settings, device, name, AAEConfig.from_dict(config),
                      dataset)
    except TrainingStopped:
        report.update(stage=Stage.STOPPED.value)
        _stop_through_rq(job, control)
        raise  # no worker ended this process: the job fails with TrainingStopped
    except Superseded as exc:
        _vanish(exc)
        raise  # not reached
    except BaseException:
        report.courier.drain(timeout_s=settings.redis_timeout_s * 2)  # its last stage
        raise


def _stop_point(stop: StopFlag, where: str) -> None:
    """A safe point to stop at: raise TrainingStopped if the job was asked to stop."""
    if stop():
        raise TrainingStopped(f"stopped on request {where}")


def _vanish(exc: Superseded) -> None:
    """End a superseded attempt's process at once, with status 0 so that its worker, if
    alive, records nothing: the job belongs to the attempt that holds its fence."""
    logger.warning("%s: this attempt stops and leaves no trace", exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(0)


def _train(report: JobReport, stop: StopFlag, settings: WorkerSettings, device: torch.device,
           name: str, cfg: AAEConfig, dataset: str) -> dict[str, Any]:
    job, fence = report.job, report.fence
    scratch = scratch_dir(settings.model_dir, job.id)
    if "result" in job.meta:  # an earlier attempt published, then died before finishing
        return _finish(report, job.meta["result"]["version"], name)
    store = CheckpointStore(settings.model_dir)
    version = _published_version(store, name, job.id)
    if version is not None:
        return _finish(report, version, name)

    _stop_point(stop, "before loading its data")
    report.update(stage=Stage.LOADING_DATA.value)
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    data_dir, download = dataset_dir(settings, dataset)
    splits = splits_for(cfg, data_dir, download=download)
    _stop_point(stop, "after loading its data")
    report.update(stage=Stage.BUILDING.value)
    step_timer = StepTimer(fence.connection, device.type, report.courier)

    def on_progress(progress: Progress) -> None:
        report.progress(progress)
        if not fence.superseded:
            step_timer(progress)

    trainer = Trainer(cfg, splits, device=device, on_progress=on_progress,
                      should_stop=stop,
                      on_epoch_end=_saver(scratch, settings, report, job.id),
                      progress_every=settings.progress_every)
    resumed = load_state(trainer, scratch)
    _stop_point(stop, "after building its model")
    report.update(stage=Stage.TRAINING.value, resumed_from_epoch=resumed,
                  device=str(trainer.device))
    fence.record_start()
    step_timer.start(trainer.step)
    result = trainer.fit()  # stops between two steps; ends with the test evaluation

    _stop_point(stop, "after its last evaluation")
    report.update(stage=Stage.PUBLISHING.value)
    fence.confirm("publishing")
    with _publish_lock(scratch):
        version = _published_version(store, name, job.id)
        wait_s = 1.0
        while version is None:  # the dataset by its name, not the worker's path to it
            fence.confirm("publishing")
            _stop_point(stop, "before publishing")  # the last point: publishing is whole
            metrics = {**result.metrics, "dataset": dataset, "job_id": job.id}
            try:
                version = publish_model(store, name, result.model, metrics, result.extras)
            except OSError as exc:  # the store left as it was (aae.store.publish)
                if exc.errno not in NO_SPACE:
                    raise
                logger.warning("job %s: the checkpoint store %s is full (%s): publishing "
                               "again in %.0f s", job.id, settings.model_dir, exc, wait_s)
                time.sleep(wait_s)
                wait_s = min(NO_SPACE_WAIT_MAX_S, wait_s * 2)
    return _finish(report, version, name)


@contextmanager
def _publish_lock(scratch: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``<scratch>/publish.lock``: released when its holder
    exits, however it exits, and taken without Redis."""
    with file_lock(scratch / "publish.lock"):
        yield


def _finish(report: JobReport, version: int, name: str) -> dict[str, Any]:
    """Record the result under the fence, waiting for Redis: RQ records the job's end
    right after this returns, and needs Redis for it."""
    result = JobResult(model=name, version=version).model_dump()
    report.update(send=False, stage=Stage.FINISHED.value, result=result)
    report.flush()
    logger.info("job %s: %s version %d", report.job.id, name, version)
    return result


def _stop_through_rq(job: Job, connection: Redis) -> None:
    """Ask this job's worker, with RQ's stop command, to end this work horse, and wait:
    RQ then records the job as stopped and runs its ``on_stopped`` callback. The
    command is sent again every second (it is a pub/sub message: a worker that was
    reconnecting misses it); returns if nothing happened within ``STOP_GRACE_S``."""
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        try:
            send_stop_job_command(connection, job.id, serializer=job.serializer)
        except (RedisError, InvalidJobOperation) as exc:
            logger.warning("job %s: cannot ask its worker to stop it: %s", job.id, exc)
        time.sleep(1.0)
    logger.error("job %s: its worker did not stop it within %.0f s", job.id, STOP_GRACE_S)


def _saver(scratch: Path, settings: WorkerSettings, report: JobReport,
           job_id: str) -> Callable[[Trainer], None]:
    """``Trainer.on_epoch_end``: a grid of samples every epoch, and a resumable state
    every ``checkpoint_every`` epochs (not after the last one: the model is published
    then), only by the attempt holding the fence: one Redis confirmed less than a lease
    ago (``Fence.confirmed_within``), so that the training loop never waits on Redis."""
    def on_epoch_end(trainer: Trainer) -> None:
        if not report.fence.confirmed_within(settings.lease_ttl_s):  # Superseded passes
            logger.warning("the job's fence is unconfirmed for a lease (Redis?): not "
                           "saving epoch %d", trainer.epoch)
            return
        with _unless_full(settings.model_dir, f"the samples of epoch {trainer.epoch}"):
            save_samples(trainer, settings.model_dir, job_id)
            report.update(sample_epoch=trainer.epoch)
        if trainer.epoch % settings.checkpoint_every == 0 and trainer.step < trainer.total_steps:
            with _unless_full(settings.model_dir, f"the state of epoch {trainer.epoch}"):
                save_state(trainer, scratch)
                report.update(checkpoint_epoch=trainer.epoch)
    return on_epoch_end


@contextmanager
def _unless_full(model_dir: Path, what: str) -> Iterator[None]:
    """A write the job can do without (its samples, a resumable state): on a full store
    it is skipped with a warning (the write removed what it made), and training goes on."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        logger.warning("the checkpoint store %s is full (%s): %s not saved, training on",
                       model_dir, exc, what)


def _published_version(store: CheckpointStore, name: str, job_id: str) -> int | None:
    """The version of ``name`` this job already published, if any."""
    try:
        versions = store.versions(name)
    except AAEError:  # no such model yet
        return None
    for version in reversed(versions):
        try:
            if store.info(name, version).metrics.get("job_id") == job_id:
                return version
        except AAEError:  # deleted meanwhile, or unreadable: not ours to judge here
            continue
    return None


def dataset_dir(settings: WorkerSettings, dataset: str) -> tuple[Path, bool]:
    """The directory of ``dataset``'s IDX files, and whether missing files may be fetched."""
    if dataset == "mnist":
        return settings.data_dir, True
    validate_name(dataset, "dataset name")
    if settings.datasets_dir is None:
        raise DatasetNotFound(f"unknown dataset {dataset!r}: this worker has only 'mnist' "
                              "(set AAE_DATASETS_DIR to a directory of datasets)")
    return settings.datasets_dir / dataset, False


def datasets(settings: WorkerSettings) -> list[str]:
    """The datasets this worker can train on: ``mnist`` (downloaded when missing) and
    each directory of ``datasets_dir`` that holds the four IDX files."""
    names = ["mnist"]
    if settings.datasets_dir is not None and settings.datasets_dir.is_dir():
        for path in sorted(settings.datasets_dir.iterdir()):
            if path.name != "mnist" and all((path / f).is_file() for f in MNIST_FILES):
                try:
                    names.append(validate_name(path.name, "dataset name"))
                except (AAEError, ValueError):
                    continue
    return names
