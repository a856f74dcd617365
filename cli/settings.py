"""Settings of the command line, from ``AAE_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aae.data import default_data_dir


class CLISettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AAE_", populate_by_name=True)

    # MNIST-format IDX files; the canonical ones are downloaded here when missing
    data_dir: Path = Field(default_factory=default_data_dir)
    model_dir: Path = Path("models")  # the checkpoint store (the shared volume)
    # the job queue of `aae up`; unset, it starts its own Redis server
    redis_url: str | None = Field(None, validation_alias=AliasChoices("AAE_REDIS_URL",
                                                                      "REDIS_URL"))


@lru_cache
def get_settings() -> CLISettings:
    return CLISettings()
