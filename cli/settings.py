"""Settings of the command line, from ``AAE_*`` environment variables (the shared ones in
``aae_jobs.settings``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr

from aae.data import default_data_dir
from aae_jobs.settings import AAESettings


class CLISettings(AAESettings):
    # MNIST-format IDX files; the canonical ones are downloaded here when missing
    data_dir: Path = Field(default_factory=default_data_dir)
    # aae sweep submit, list, show: the API, and its key if it has one
    api_url: str = "http://127.0.0.1:8000"
    api_key: SecretStr | None = None

    @property
    def redis_configured(self) -> bool:
        """Whether a Redis was given (``AAE_REDIS_URL`` or ``REDIS_URL``); without one,
        ``aae up`` starts its own."""
        return "redis_url" in self.model_fields_set


@lru_cache
def get_settings() -> CLISettings:
    return CLISettings()
