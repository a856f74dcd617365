"""Settings of the API service, from ``AAE_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AAE_")

    model_dir: Path = Path("models")  # the checkpoint store (shared volume)
    default_model: str = "mnist-semi-supervised"  # used when a request names no model
    device: str = "cpu"  # inference device: cpu, cuda, cuda:1 ...
    # torch threads for forward passes; 1 leaves the other cores to the event loop(s), whose
    # HTTP work costs more than the model's on small batches
    torch_threads: int = Field(1, ge=1)

    # dynamic batching: concurrent requests for one model share one forward pass
    max_batch_size: int = Field(64, ge=1)
    max_batch_wait_ms: float = Field(2.0, ge=0)
    model_cache_size: int = Field(4, ge=1)  # loaded models kept (LRU)
    alias_refresh_s: float = Field(1.0, ge=0)  # how long a resolved alias is trusted

    # input limits
    max_upload_bytes: int = Field(4 * 1024 * 1024, ge=1)  # any request body
    max_image_pixels: int = Field(4096 * 4096, ge=1)  # before resizing to 28x28
    max_images: int = Field(256, ge=1)  # images or codes in one request
    max_samples: int = Field(256, ge=1)  # n of GET /sample


@lru_cache
def get_settings() -> ServiceSettings:
    return ServiceSettings()
