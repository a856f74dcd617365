"""Turning output images into response bodies, large ones off the event loop.

A PNG of 256 samples at scale 16 is 51 M pixels and takes tens of ms of zlib (it took
0.2 s before ``aae.images`` stopped building the enlarged picture): on the event
loop it held every other request (``/healthz`` included) for that long. Bodies of
more than ``offload_pixels`` pixels are made on a small pool of worker threads instead;
zlib and numpy release the GIL, so the loop keeps answering (a 1 ms timer on the main
thread ticked at p99 8 ms while a thread encoded such PNGs back to back, against
hundreds of ms inline). Small bodies stay inline: a thread hop costs more than a
28x28 PNG (17 us).

The pool's queue is bounded like a batcher's (``max_queue`` waiting requests, then a
503 at once) and a request whose deadline passed while it waited is dropped before its
body is made.

Shed only when its turn at the pool comes, a request has had its forward pass (256
images: tens of ms of the event loop) for nothing, and its client has waited the whole
deadline for a 503. So the routes ask first (``admit``, before any work): a body bound
for the pool is refused at once when the pool's backlog, in seconds of encoding (each
body's pixels times the measured seconds per pixel of its kind), would keep it waiting
past the request's deadline; ``Retry-After`` is that wait. An admitted request's body
counts in the backlog from then on (a burst of requests is admitted only as far as the
pool can serve it), until its body is made, or at the latest until its deadline. The
check at the pool stays, for what the estimate let through.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar

import orjson
import torch

from aae.images import png
from service.inference.batching import Depth, deadline_of, shed, shed_late

logger = logging.getLogger(__name__)

PIXELS = 784

# the request's admission: its ticket in ``Encoder.admitted`` (admit -> _offload)
_ticket: ContextVar[int | None] = ContextVar("encoder_ticket", default=None)


def json_images(name: str, version: int, images: torch.Tensor) -> bytes:
    # orjson: the stdlib's float formatting took 7% of a /classify request
    return orjson.dumps({"model": name, "version": version, "images": images.tolist()})


class Encoder:
    """Makes PNG and JSON image bodies; above ``offload_pixels`` on ``threads`` threads."""

    def __init__(self, threads: int, offload_pixels: int, max_queue: int, deadline_s: float,
                 depth: Depth | None = None) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="encode")
        self.threads = threads
        self.offload_pixels, self.max_queue, self.deadline_s = (offload_pixels, max_queue,
                                                                deadline_s)
        self.depth = depth or Depth()
        self.waiting = 0  # submitted, not started
        self.backlog_s = 0.0  # predicted encoding time of the bodies submitted, not done
        # bodies admitted, not yet submitted: ticket -> (predicted seconds, deadline)
        self.admitted: dict[int, tuple[float, float]] = {}
        self._tickets = itertools.count()
        # measured seconds per pixel of each kind of body (0 until one was made)
        self.seconds_per_pixel = {"png": 0.0, "json": 0.0}

    def admit(self, kind: str, pixels: int) -> None:
        """Refuse now (``Overloaded``) a request whose body of ``pixels`` would go to the
        pool and could not be made in time: the pool's queue is full, or its backlog
        would keep the body waiting past the request's deadline. Called before any work
        is done for the request; small bodies (made inline) always pass."""
        if pixels <= self.offload_pixels:
            return
        self._check_queue()
        if self.deadline_s <= 0:
            return
        now = asyncio.get_running_loop().time()
        for ticket, (_, deadline) in list(self.admitted.items()):
            if deadline < now:  # its body never came (an error), or is late anyway
                del self.admitted[ticket]
        wait = (self.backlog_s + sum(p for p, _ in self.admitted.values())) / self.threads
        deadline = deadline_of(self.deadline_s, now)
        if now + wait > deadline:
            raise shed("deadline", f"its answer would wait about {wait * 1000:.0f} ms "
                       f"to be encoded, past the deadline of "
                       f"{self.deadline_s * 1000:.0f} ms; not computed",
                       retry_after_s=math.ceil(wait))
        ticket = next(self._tickets)
        self.admitted[ticket] = (pixels * self.seconds_per_pixel[kind], deadline)
        _ticket.set(ticket)

    async def png(self, images: torch.Tensor, scale: int, columns: int | None = None) -> bytes:
        pixels = images.shape[0] * PIXELS * scale * scale
        if pixels <= self.offload_pixels:
            return png(images, scale, columns)
        return await self._offload("png", pixels, png, images, scale, columns)

    async def json(self, name: str, version: int, images: torch.Tensor) -> bytes:
        pixels = images.shape[0] * PIXELS
        if pixels <= self.offload_pixels:
            return json_images(name, version, images)
        return await self._offload("json", pixels, json_images, name, version, images)

    def _check_queue(self) -> None:
        if self.max_queue and self.waiting >= self.max_queue:
            raise shed("queue_full", f"{self.waiting} large answers are waiting to be "
                       f"encoded, the most queued ({self.max_queue}); retry later")

    async def _offload(self, kind: str, pixels: int, fn, *args):  # noqa: ANN001, ANN202
        self._check_queue()
        ticket = _ticket.get()
        if ticket is not None:  # from now on counted as submitted
            self.admitted.pop(ticket, None)
            _ticket.set(None)
        loop = asyncio.get_running_loop()
        deadline = deadline_of(self.deadline_s, loop.time())
        predicted = pixels * self.seconds_per_pixel[kind]
        self.waiting += 1
        self.backlog_s += predicted
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
            start = time.perf_counter()
            body = fn(*args)
            return body, time.perf_counter() - start

        try:
            body, seconds = await loop.run_in_executor(self.executor, run)
        finally:
            leave()
            self.backlog_s = max(0.0, self.backlog_s - predicted)
        measured, average = seconds / pixels, self.seconds_per_pixel[kind]
        # a moving average (the last few bodies count most), from the first body on
        self.seconds_per_pixel[kind] = measured if not average else (
            average + 0.2 * (measured - average))
        return body

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
