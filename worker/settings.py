"""Settings of a training worker, from ``AAE_*`` environment variables (the shared ones
in ``aae_jobs.settings``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from aae.data import default_data_dir
from aae_jobs.settings import AAESettings


class WorkerSettings(AAESettings):
    renamed: ClassVar[dict[str, str]] = {"AAE_DEVICE": "device",
                                         "AAE_TORCH_THREADS": "torch_threads"}

    # MNIST-format IDX files of dataset "mnist"; the canonical ones are downloaded here
    data_dir: Path = Field(default_factory=default_data_dir)
    # other datasets: <datasets_dir>/<name> holds the four IDX files of dataset <name>
    datasets_dir: Path | None = None

    # cpu, cuda, cuda:1 ...; default: cuda when present
    device: str | None = Field(None, validation_alias="AAE_WORKER_DEVICE")
    # CPU threads of a job (default: torch's)
    torch_threads: int | None = Field(None, ge=1, validation_alias="AAE_WORKER_TORCH_THREADS")
    progress_every: int = Field(50, ge=1)  # steps between progress reports
    checkpoint_every: int = Field(2, ge=1)  # epochs between resumable states

    # crash recovery: a running job renews a lease every lease_ttl_s / 3 seconds; a job
    # whose lease has lapsed is requeued by the next worker to look (every
    # maintenance_interval_s while idle, and at start-up), and resumes from its state
    lease_ttl_s: float = Field(30.0, gt=0)
    maintenance_interval_s: int = Field(15, ge=1)
    # a job whose process the system kills (out of memory, ...) this many times fails
    # with the reason instead of running again (worker.runner)
    max_job_kills: int = Field(2, ge=1)
    # a running job's own Redis client (worker.control): no command waits longer, so its
    # stop flag, progress and lease ride out a hung Redis off the training loop
    redis_timeout_s: float = Field(2.0, gt=0, validation_alias="AAE_JOB_REDIS_TIMEOUT_S")


@lru_cache
def get_settings() -> WorkerSettings:
    return WorkerSettings()
