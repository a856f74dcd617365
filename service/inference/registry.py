"""Which model a request means, and the loaded models kept in memory.

A request names a model and a version number or alias (default: ``production`` if
set, else ``latest``, of the default model). Resolutions are trusted for
``alias_refresh_s`` (so a moved alias or a deleted version takes effect within that
time); a version number not seen before is looked up at once, so a freshly published
version serves on the first request that asks for it. Loaded models live in an LRU
cache bounded by count; each has its batchers.

Memory under version churn: an evicted model must give its memory back at once. Two
things kept it: each batcher's report callback held its ``LoadedModel``, which holds
the batchers (a reference cycle: the weights waited for a full garbage collection,
which allocation counts rarely trigger as tensors are few objects); and glibc's
dynamic mmap threshold, which rises to the size of each freed weight matrix so that
the next ones came from the heap and stayed there. Cycling 5 versions with a cache of 4
grew RSS by 1.5 GB; without the cycle and with the threshold pinned
(``pin_mmap_threshold``), by the cached models' size (tests/service/test_overload.py).

Damage: a version whose files differ from its manifest is never loaded (the store raises
``CheckpointDamaged``); the registry remembers it, for ``/readyz`` and the metric
``aae_model_version_damaged``, until it loads whole again or is deleted. Every answer a
batcher hands back is checked to be finite (``aae.model.require_finite``).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

import torch

from aae.checkpoints import load_model
from aae.errors import AAEError, CheckpointDamaged
from aae.model import AdversarialAutoencoder, require_finite
from aae.store import CheckpointStore, VersionInfo
from service.inference.batching import Batcher, Depth, PassReport
from service.inference.stats import InferenceStats

logger = logging.getLogger(__name__)

MMAP_THRESHOLD = 1024 * 1024  # weight matrices (3-4 MB) are mapped; activations are not


def pin_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """Allocations over ``size`` bytes get their own mappings, returned to the kernel when
    freed (glibc otherwise raises the threshold to each freed mapping's size, up to
    32 MiB). No-op without glibc; returns whether it was set."""
    path = ctypes.util.find_library("c")
    try:
        return path is not None and bool(ctypes.CDLL(path).mallopt(-3, size))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


@dataclass
class LoadedModel:
    info: VersionInfo
    model: AdversarialAutoencoder
    batchers: dict[str, Batcher] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def version(self) -> int:
        return self.info.version


def _encode(model: AdversarialAutoencoder, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    code = model.encode(x)
    return code.z.cpu(), None if code.y is None else code.y.cpu()


def _decode(model: AdversarialAutoencoder, z: torch.Tensor, y: torch.Tensor | None
            ) -> tuple[torch.Tensor]:
    """``y``: the decoder's class rows (``model.decoder_classes``), None if it takes none."""
    return (model.decode(z, y=y).cpu(),)


def _reconstruct(model: AdversarialAutoencoder, x: torch.Tensor, labels: torch.Tensor | None
                 ) -> tuple[torch.Tensor]:
    """``labels``: ``model.reconstruction_labels`` (a supervised model's classes, else None)."""
    return (model.reconstruct(x, labels=labels).cpu(),)


OPERATIONS: dict[str, Callable] = {"encode": _encode, "decode": _decode,
                                   "reconstruct": _reconstruct}


@dataclass(frozen=True)
class Readiness:
    """Whether the service can take requests (its store is readable: an empty store on a
    fresh deployment included, so that a readiness probe never cuts off the API that
    would train the first model), and the default model's state."""

    ready: bool
    reason: str | None  # why not ready
    default_model: str
    default_version: int | None  # None: not loadable, see default_reason
    default_reason: str | None
    damaged: dict[tuple[str, int], str]  # (model, version) -> file, found when loading


class RegistryObserver(Protocol):
    """What the registry reports (the metrics implement it)."""

    def cache(self, name: str, version: int, hit: bool) -> None: ...
    def loaded(self, loaded: LoadedModel, seconds: float) -> None: ...
    def unloaded(self, name: str, version: int) -> None: ...
    def damaged(self, name: str, version: int, damaged: bool) -> None: ...
    def batch(self, name: str, version: int, operation: str, report: PassReport) -> None: ...
    def queue(self, name: str, stage: str) -> Depth: ...


class _Unobserved:
    def cache(self, name: str, version: int, hit: bool) -> None: pass
    def loaded(self, loaded: LoadedModel, seconds: float) -> None: pass
    def unloaded(self, name: str, version: int) -> None: pass
    def damaged(self, name: str, version: int, damaged: bool) -> None: pass
    def batch(self, name: str, version: int, operation: str, report: PassReport) -> None: pass
    def queue(self, name: str, stage: str) -> Depth: return Depth()


class ModelRegistry:
    def __init__(self, store: CheckpointStore, *, default_model: str, device: str,
                 cache_size: int, alias_refresh_s: float, executor: Executor,
                 max_batch: int, max_wait_s: float, max_queue: int = 0,
                 deadline_s: float = 0.0, observer: RegistryObserver | None = None) -> None:
        self.store, self.default_model, self.device = store, default_model, device
        self.cache_size, self.alias_refresh_s = cache_size, alias_refresh_s
        self.executor, self.max_batch, self.max_wait_s = executor, max_batch, max_wait_s
        self.max_queue, self.deadline_s = max_queue, deadline_s  # admission control
        self.observer: RegistryObserver = observer or _Unobserved()
        self.stats = InferenceStats()
        self._resolved: dict[tuple[str, str], tuple[int, float]] = {}
        self._models: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._loading: dict[tuple[str, int], asyncio.Future] = {}
        self.damaged: dict[tuple[str, int], str] = {}  # (model, version) -> damaged file

    def resolve(self, name: str | None, version: str | None) -> tuple[str, int]:
        """(model name, version number) for a request; raises CheckpointNotFound."""
        name = name or self.default_model
        key = (name, version or "")
        now = time.monotonic()
        cached = self._resolved.get(key)
        if cached is not None and now - cached[1] < self.alias_refresh_s:
            return name, cached[0]
        number = self.store.resolve(name, version)
        self._resolved[key] = (number, now)
        return name, number

    async def get(self, name: str | None = None, version: str | None = None) -> LoadedModel:
        """The loaded model for a request, loading it (off the event loop) if needed."""
        key = self.resolve(name, version)
        loaded = self._models.get(key)
        if loaded is not None:
            self._models.move_to_end(key)
            self.observer.cache(*key, hit=True)
            return loaded
        self.observer.cache(*key, hit=False)
        pending = self._loading.get(key)
        if pending is None:  # first request for it: load once, others wait on the same future
            pending = asyncio.ensure_future(self._load(key))
            self._loading[key] = pending
            pending.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(pending)

    async def _load(self, key: tuple[str, int]) -> LoadedModel:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            info, model = await loop.run_in_executor(
                self.executor, load_model, self.store, key[0], key[1], self.device)
        except CheckpointDamaged as exc:
            logger.error("%s", exc)
            self._mark(key, exc.fields["file"])
            raise
        self._mark(key, None)
        loaded = LoadedModel(info, model)
        subject = f"{key[0]} version {key[1]}"
        for op, fn in OPERATIONS.items():
            # the callbacks hold the model and the key, never ``loaded`` (no cycle)
            loaded.batchers[op] = Batcher(
                lambda *inputs, fn=fn: fn(model, *inputs),
                self.executor if torch.device(self.device).type == "cuda" else None,
                self.max_batch,
                self.max_wait_s,
                observe=lambda report, op=op: self._observe(key, op, report),
                max_queue=self.max_queue, deadline_s=self.deadline_s,
                depth=self.observer.queue(key[0], op),
                check=lambda outputs, op=op: require_finite(subject, op, *outputs))
        self._models[key] = loaded
        while len(self._models) > self.cache_size:
            evicted, _ = self._models.popitem(last=False)
            logger.info("unloaded %s version %d", *evicted)
            self.observer.unloaded(*evicted)
        seconds = time.perf_counter() - start
        logger.info("loaded %s version %d in %.3f s", key[0], key[1], seconds)
        self.observer.loaded(loaded, seconds)
        return loaded

    def _mark(self, key: tuple[str, int], file: str | None) -> None:
        """Remember ``key`` as damaged (in ``file``), or as whole (None)."""
        if file is not None:
            self.damaged[key] = file
            self.observer.damaged(*key, damaged=True)
        elif self.damaged.pop(key, None) is not None:
            self.observer.damaged(*key, damaged=False)

    async def readiness(self) -> Readiness:
        try:
            self.store.models()
        except OSError as exc:
            logger.error("checkpoint store %s is not readable: %s", self.store.root, exc)
            return Readiness(False, f"the checkpoint store is not readable "
                             f"({exc.strerror or type(exc).__name__})", self.default_model,
                             None, None, dict(self.damaged))
        try:
            loaded = await self.get()
        except AAEError as exc:
            return Readiness(True, None, self.default_model, None, str(exc),
                             dict(self.damaged))
        return Readiness(True, None, self.default_model, loaded.version, None,
                         dict(self.damaged))

    def _observe(self, key: tuple[str, int], operation: str, report: PassReport) -> None:
        self.stats.record(*key, report)
        self.observer.batch(*key, operation, report)

    def forget(self, name: str, version: int | None = None) -> None:
        """Drop cached resolutions (and the loaded model) after a change through this API."""
        self._resolved = {k: v for k, v in self._resolved.items() if k[0] != name}
        if version is not None and self._models.pop((name, version), None) is not None:
            self.observer.unloaded(name, version)
        if version is not None:  # deleted: no longer damaged either
            self._mark((name, version), None)

