"""Settings of a training worker, from ``AAE_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aae.data import default_data_dir


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AAE_", populate_by_name=True)

    # the queue: REDIS_URL is honoured too, so one variable can point everything at Redis
    redis_url: str = Field("redis://localhost:6379/0",
                           validation_alias=AliasChoices("AAE_REDIS_URL", "REDIS_URL"))
    queue: str = "training"

    model_dir: Path = Path("models")  # the checkpoint store (the shared volume)
    # MNIST-format IDX files of dataset "mnist"; the canonical ones are downloaded here
    data_dir: Path = Field(default_factory=default_data_dir)
    # other datasets: <datasets_dir>/<name> holds the four IDX files of dataset <name>
    datasets_dir: Path | None = None

    device: str | None = None  # cpu, cuda, cuda:1 ...; default: cuda when present
    torch_threads: int | None = Field(None, ge=1)  # CPU threads of a job (default: torch's)
    progress_every: int = Field(50, ge=1)  # steps between progress reports
    checkpoint_every: int = Field(2, ge=1)  # epochs between resumable states

    # crash recovery: a running job renews a lease every lease_ttl_s / 3 seconds; a job
    # whose lease has lapsed is requeued by the next worker to look (every
    # maintenance_interval_s while idle, and at start-up), and resumes from its state
    lease_ttl_s: float = Field(30.0, gt=0)
    maintenance_interval_s: int = Field(15, ge=1)


@lru_cache
def get_settings() -> WorkerSettings:
    return WorkerSettings()
