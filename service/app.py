"""The FastAPI application: ``create_app()``; run with ``uvicorn service.app:create_app --factory``."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from aae.store import CheckpointStore
from aae_jobs.settings import store_line
from service import v2
from service.core import errors, logs
from service.core.errors import problem_responses
from service.core.limits import BodySizeLimit
from service.core.metrics import HTTPMetrics, mark_process_dead
from service.inference.encoding import Encoder
from service.inference.metrics import InferenceMetrics
from service.inference.registry import ModelRegistry, pin_mmap_threshold
from service.jobs.metrics import JobMetrics
from service.jobs.queue import JobQueue
from service.jobs.sweeps import Sweeps
from service.routes import (figures, health, inference, jobs, metrics, models, presets,
                            scores, sweeps, web)
from service.settings import ServiceSettings, get_settings

logger = logging.getLogger(__name__)

DESCRIPTION = """Train and serve Adversarial Autoencoders (Makhzani et al., 2015).

Inference endpoints pick their model with `?model=<name>&version=<number or alias>`;
by default the `production` alias of the default model if set, else its `latest`
version. Every error is an `application/problem+json` document."""


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop_writing = logs.write_off_the_loop()  # log lines written by threads meanwhile
        torch.set_num_threads(settings.torch_threads)
        torch.seed()  # unseeded /sample draws: differ between processes and restarts
        pin_mmap_threshold()  # evicted models' weights go back to the kernel
        observer = InferenceMetrics()
        deadline_s = settings.request_deadline_ms / 1000
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        app.state.settings = settings
        app.state.store = CheckpointStore(settings.model_dir)
        app.state.registry = ModelRegistry(
            app.state.store, default_model=settings.default_model, device=settings.device,
            cache_size=settings.model_cache_size, alias_refresh_s=settings.alias_refresh_s,
            executor=executor, max_batch=settings.max_batch_size,
            max_wait_s=settings.max_batch_wait_ms / 1000, max_queue=settings.max_queue,
            deadline_s=deadline_s, observer=observer)
        app.state.encoder = Encoder(settings.encode_threads, settings.offload_pixels,
                                    settings.max_queue, deadline_s, observer.queue("*", "png"))
        app.state.jobs = JobQueue.connect(settings)  # connects on first use
        app.state.sweeps = Sweeps(app.state.jobs, app.state.store, settings.max_sweep_points)
        app.state.metric_collectors = (JobMetrics(app.state.jobs),)
        logger.info("serving models from the %s", store_line(settings.model_dir))
        gc.freeze()  # start-up objects (torch, the app) leave the collector's generations
        try:
            yield
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
            app.state.encoder.close()
            app.state.jobs.close()
            mark_process_dead()  # several uvicorn workers: this one's gauges go
            stop_writing()  # what is queued is written; from here on, as logged

    # FastAPIOffline: FastAPI whose /docs and /redoc load packaged assets, not a CDN's
    app = FastAPIOffline(title="AAE serving", version="0.1.0", description=DESCRIPTION,
                         lifespan=lifespan)
    # 3.2: FastAPI's server-sent events (itemSchema) and media types with a description
    app.openapi_version = "3.2.0"
    logs.configure(settings.log_format)
    errors.install(app)
    app.add_middleware(BodySizeLimit, limit=settings.max_upload_bytes)
    app.add_middleware(HTTPMetrics)  # it also counts what the limit refuses
    app.add_middleware(logs.RequestContext)  # outermost: every answer carries its id
    app.include_router(inference.router)  # the hot routes first: FastAPI matches in order
    app.include_router(v2.router)
    app.include_router(scores.router)
    app.include_router(figures.router)
    app.include_router(models.router, responses=problem_responses(400))  # unparseable bodies
    app.include_router(health.router)
    app.include_router(jobs.router, responses=problem_responses(400))
    app.include_router(sweeps.router, responses=problem_responses(400))
    app.include_router(presets.router)
    app.include_router(metrics.router)
    app.include_router(web.router)
    app.mount("/ui", web.assets, name="ui")
    _add_openapi_components(app, {**v2.openapi_components(), **inference.components()})
    return app


def _add_openapi_components(app: FastAPI, schemas: dict[str, dict]) -> None:
    """Schemas that routes reading their own bodies refer to, added to the document."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            document = generate()
            components = document.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in schemas.items():
                components.setdefault(name, schema)
        return app.openapi_schema or document

    app.openapi = openapi
