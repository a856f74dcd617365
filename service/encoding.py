"""Turning output images into response bodies, large ones off the event loop.

A PNG of 256 samples at scale 16 is 51 M pixels and takes about 0.2 s of zlib: on the
event loop it held every other request (``/healthz`` included) for that long. Bodies of
more than ``offload_pixels`` pixels are made on a small pool of worker threads instead;
zlib and numpy release the GIL, so the loop keeps answering (a 1 ms timer on the main
thread ticked at p99 8 ms while a thread encoded such PNGs back to back, against
hundreds of ms inline). Small bodies stay inline: a thread hop costs more than a
28x28 PNG (17 us).

The pool's queue is bounded like a batcher's (``max_queue`` waiting requests, then a
503 at once) and a request whose deadline passed while it waited is dropped before its
body is made.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import orjson
import torch

from service.batching import Depth, deadline_of, shed_late
from service.errors import Overloaded
from service.images import png

logger = logging.getLogger(__name__)

PIXELS = 784


def json_images(name: str, version: int, images: torch.Tensor) -> bytes:
    # orjson: the stdlib's float formatting took 7% of a /classify request
    return orjson.dumps({"model": name, "version": version, "images": images.tolist()})


class Encoder:
    """Makes PNG and JSON image bodies; above ``offload_pixels`` on ``threads`` threads."""

    def __init__(self, threads: int, offload_pixels: int, max_queue: int, deadline_s: float,
                 depth: Depth | None = None) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="encode")
        self.offload_pixels, self.max_queue, self.deadline_s = (offload_pixels, max_queue,
                                                                deadline_s)
        self.depth = depth or Depth()
        self.waiting = 0  # submitted, not started

    async def png(self, images: torch.Tensor, scale: int, columns: int | None = None) -> bytes:
        if images.shape[0] * PIXELS * scale * scale <= self.offload_pixels:
            return png(images, scale, columns)
        return await self._offload(png, images, scale, columns)

    async def json(self, name: str, version: int, images: torch.Tensor) -> bytes:
        if images.shape[0] * PIXELS <= self.offload_pixels:
            return json_images(name, version, images)
        return await self._offload(json_images, name, version, images)

    async def _offload(self, fn, *args):  # noqa: ANN001, ANN202 - png or json_images
        if self.max_queue and self.waiting >= self.max_queue:
            raise Overloaded("queue_full", f"{self.waiting} large answers are waiting to be "
                             f"encoded, the most queued ({self.max_queue}); retry later")
        loop = asyncio.get_running_loop()
        deadline = deadline_of(self.deadline_s, loop.time())
        self.waiting += 1
        self.depth.inc()
        queued = True

        def leave() -> None:  # on the loop: when it starts, or if it never does
            nonlocal queued
            if queued:
                queued = False
                self.waiting -= 1
                self.depth.dec()

        def run():  # noqa: ANN202 - on a worker thread
            loop.call_soon_threadsafe(leave)
            if loop.time() > deadline:
                raise shed_late(self.deadline_s)
            return fn(*args)

        try:
            return await loop.run_in_executor(self.executor, run)
        finally:
            leave()

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
