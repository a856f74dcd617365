"""The settings base of every process (the API, a worker, the command line), from
``AAE_*`` environment variables.

It holds what the processes must agree on: where Redis is, the queue, the checkpoint
store. Each process has its own subclass (``service.settings``, ``worker.settings``,
``cli.settings``); a setting that means something different to two processes carries
the process in its name (``AAE_API_DEVICE``, ``AAE_WORKER_DEVICE``).

Renamed variables keep working: a subclass lists them in ``renamed`` (old variable ->
field), and an old one that is set while the new one is not is read, with a
``DeprecationWarning`` that is also logged (a warning alone is hidden by default).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def default_model_dir() -> Path:
    """``$XDG_DATA_HOME/aae/models``, else ``~/.local/share/aae/models``."""
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "aae" / "models"


def store_line(model_dir: Path) -> str:
    """What every process that serves or fills the store says at start."""
    return f"checkpoint store: {Path(model_dir).resolve()} (AAE_MODEL_DIR moves it)"


class AAESettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AAE_", populate_by_name=True)

    # old environment variable -> field, read with a DeprecationWarning
    renamed: ClassVar[dict[str, str]] = {}

    # the job queue: REDIS_URL is honoured too, so one variable can point everything at Redis
    redis_url: str = Field(DEFAULT_REDIS_URL,
                           validation_alias=AliasChoices("AAE_REDIS_URL", "REDIS_URL"))
    queue: str = "training"  # the RQ queue the API fills and the workers drain
    # the checkpoint store (the shared volume): by default one per user, wherever a process
    # starts, so that `aae up`, `aae models` and the API agree from any directory
    model_dir: Path = Field(default_factory=lambda: default_model_dir())
    # logs: "text" (one readable line) or "json" (one JSON object per line); each line
    # carries the id of its request (API) or job (worker): aae_jobs.logs
    log_format: str = Field("text", pattern="^(text|json)$")

    @model_validator(mode="before")
    @classmethod
    def _read_renamed(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for old, field in cls.renamed.items():
            new = cls.model_fields[field].validation_alias
            if old not in os.environ or new in os.environ:
                continue
            message = f"{old} is deprecated and will be removed: set {new} instead"
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            logger.warning(message)
            if field not in data and new not in data:
                data = {**data, field: os.environ[old]}
        return data
