"""Settings of the API service, from ``AAE_*`` environment variables (the shared ones in
``aae_jobs.settings``)."""

from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

from pydantic import ByteSize, Field, SecretStr, field_validator

from aae_jobs.settings import AAESettings


class ServiceSettings(AAESettings):
    renamed: ClassVar[dict[str, str]] = {"AAE_DEVICE": "device",
                                         "AAE_TORCH_THREADS": "torch_threads"}

    default_model: str = "mnist-semi-supervised"  # used when a request names no model
    # inference device: cpu, cuda, cuda:1 ...
    device: str = Field("cpu", validation_alias="AAE_API_DEVICE")
    # torch threads for forward passes; 1 leaves the other cores to the event loop(s), whose
    # HTTP work costs more than the model's on small batches
    torch_threads: int = Field(1, ge=1, validation_alias="AAE_API_TORCH_THREADS")

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
    # the work of one request: output pixels (images x 784 x scale^2 of a PNG); the
    # default lets max_samples images at the largest scale through
    max_output_pixels: int = Field(256 * 784 * 16 * 16, ge=784)
    max_json_depth: int = Field(32, ge=2)  # nesting of a JSON body, checked before parsing

    # HTTP connections (service.core.connections, uvicorn's protocol under every launcher)
    http_max_header_bytes: int = Field(16 * 1024, ge=1024)  # request line + header: 431
    http_header_timeout_s: float = Field(10.0, gt=0)  # a request's header, from its start
    http_body_timeout_s: float = Field(30.0, gt=0)  # its body, from the header's end
    http_max_connections: int = Field(1000, ge=1)  # past it requests are answered 503

    # admission control: past these a request is answered 503 with Retry-After at once
    # (never computed); 0 turns each off
    max_queue: int = Field(256, ge=0)  # requests waiting per model stage (batch, encode)
    request_deadline_ms: float = Field(2000.0, ge=0)  # a request still queued then is shed
    # PNGs (and JSON pixel lists) of more pixels than this are made on encode_threads
    # worker threads, off the event loop (zlib releases the GIL)
    offload_pixels: int = Field(200_000, ge=0)
    encode_threads: int = Field(1, ge=1)

    # training jobs (on the queue of AAE_REDIS_URL / AAE_QUEUE)
    job_timeout_s: int = Field(24 * 3600, ge=1)  # a job running longer is killed
    job_retries: int = Field(3, ge=0)  # restarts after a crash (errors are not retried)
    job_result_ttl_s: int = Field(7 * 24 * 3600, ge=1)  # ended jobs stay listed this long
    job_events_poll_s: float = Field(0.5, gt=0)  # how often /jobs/{id}/events looks
    max_sweep_points: int = Field(64, ge=1)  # training jobs one POST /sweeps may queue
    # the workers' budget: a job whose estimated peak memory or steps (aae.budget) exceed
    # it is refused (422 naming the field and the estimate); bytes, or "8GiB"
    max_job_memory: ByteSize = Field(ByteSize(8 * 2**30), ge=1)
    max_job_steps: int = Field(5_000_000, ge=1)

    # the job queue as the API uses it (service.jobs.breaker): no Redis command waits
    # longer than this; one that times out (or finds Redis down) opens the breaker, and
    # the job routes answer 503 at once for redis_breaker_s; they run on job_threads
    # threads of their own (never the model routes'), 503 after job_wait_s without one
    redis_timeout_s: float = Field(0.5, gt=0, validation_alias="AAE_API_REDIS_TIMEOUT_S")
    redis_breaker_s: float = Field(5.0, gt=0)
    job_threads: int = Field(8, ge=1)
    job_wait_s: float = Field(0.25, gt=0)

    # set: submitting and cancelling jobs, moving aliases and deleting versions need
    # "Authorization: Bearer <api_key>"; inference stays open
    api_key: SecretStr | None = None

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        return None if value == "" else value


@lru_cache
def get_settings() -> ServiceSettings:
    return ServiceSettings()
