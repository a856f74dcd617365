"""Dynamic batching: concurrent requests for one model share one forward pass.

As in Triton, TorchServe and BentoML: requests queue up; a batch starts as soon as
``max_batch`` rows are waiting, or ``max_wait`` after its first request arrived,
whichever comes first; while a forward pass runs, the next batch gathers. The wait
is only spent under concurrent traffic (the previous batch held several requests):
a lone client is not delayed for company that is not coming.

Where the forward pass runs: with an executor (for CUDA, whose kernels run
asynchronously) it runs on that executor's thread; without one (the CPU) it runs on
the event loop itself. On the CPU a worker thread loses more than it gains: each of
the ~20 small torch calls of a forward pass needs the GIL back from a busy event
loop, which hands it over only every switch interval (5 ms), so a 4 ms forward pass
took tens of milliseconds under load.

On the event loop, no pass may hold it for long: a request of more than ``max_batch``
rows is computed in slices of ``max_batch`` rows, and the loop gets a turn between two
slices and between two passes. Run back to back, the 256-row passes of a flood of
``/sample?n=256`` kept ``/healthz`` waiting for up to half a second.

Admission control: a batcher holds at most ``max_queue`` waiting requests; one more is
refused at once (``Overloaded("queue_full")``, a 503 with Retry-After). A request still
waiting ``deadline_s`` after it reached the service (``service.core.logs.request_start``) is
dropped when its batch is formed (``Overloaded("deadline")``), never computed. 0 turns
either off. Each shed request is counted (``aae_requests_shed_total``, by reason) where
it is shed: ``shed`` makes its error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import torch

from service.core.errors import Overloaded
from service.core.logs import request_start
from service.inference.metrics import SHED_REQUESTS

logger = logging.getLogger(__name__)

Forward = Callable[..., Sequence[torch.Tensor]]


class Depth:
    """Where a queue reports its depth (a Prometheus gauge's child, in the service)."""

    def inc(self, amount: float = 1) -> None: ...
    def dec(self, amount: float = 1) -> None: ...


def deadline_of(deadline_s: float, now: float) -> float:
    """When the current request must have started computing (inf: no deadline)."""
    if deadline_s <= 0:
        return float("inf")
    start = request_start.get()
    return (now if start is None else start) + deadline_s


def shed(reason: str, detail: str, retry_after_s: int = 1) -> Overloaded:
    """The error of a request that admission control sheds, counted in
    ``aae_requests_shed_total`` by ``reason`` (``queue_full`` or ``deadline``)."""
    SHED_REQUESTS.labels(reason).inc()
    return Overloaded(reason, detail, retry_after_s)


def shed_late(deadline_s: float) -> Overloaded:
    return shed("deadline", f"the request waited over the deadline of "
                f"{deadline_s * 1000:.0f} ms for its turn and was not computed")


@dataclass(frozen=True)
class PassReport:
    """One forward pass, as the batcher saw it (for metrics and statistics)."""

    rows: int  # images or codes in the pass
    compute_s: float  # the forward pass itself
    queued_s: tuple[float, ...]  # each request's wait from its arrival to the pass's start
    ok: bool  # False: the pass raised, and every request in it failed


class Batcher:
    """Batches calls of ``forward(*inputs) -> outputs``; every tensor's first dimension is
    the batch. An input may be None (an input the model does not take): it must then be
    None in every call, and is passed on as None. A request larger than ``max_batch``
    runs on its own (in slices of ``max_batch`` rows on the event loop). ``check``, if
    given, sees each request's outputs before they are handed back; what it raises
    fails that request alone."""

    def __init__(self, forward: Forward, executor: Executor | None, max_batch: int,
                 max_wait_s: float, observe: Callable[[PassReport], None] | None = None,
                 max_queue: int = 0, deadline_s: float = 0.0, depth: Depth | None = None,
                 check: Callable[[tuple[torch.Tensor | None, ...]], None] | None = None
                 ) -> None:
        self.forward, self.executor, self.check = forward, executor, check
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.observe = observe  # called with a PassReport after each pass
        self.max_queue, self.deadline_s = max_queue, deadline_s
        self.depth = depth or Depth()
        # (inputs, future, arrival, deadline), oldest first
        self._queue: list[tuple[tuple[torch.Tensor, ...], asyncio.Future, float, float]] = []
        self._rows = 0
        self._full = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._shared = False  # whether the last batch held more than one request

    async def __call__(self, *inputs: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        if self.max_queue and len(self._queue) >= self.max_queue:
            raise shed("queue_full", f"{len(self._queue)} requests are waiting for this "
                       f"model, the most it queues ({self.max_queue}); retry later")
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        now = loop.time()
        self._queue.append((inputs, future, now, deadline_of(self.deadline_s, now)))
        self.depth.inc()
        self._rows += inputs[0].shape[0]
        if self._rows >= self.max_batch:
            self._full.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        return await future

    def _take(self, now: float) -> list[tuple[tuple[torch.Tensor, ...], asyncio.Future, float,
                                              float]]:
        """The next batch, oldest first; requests past their deadline are dropped."""
        batch, rows, taken = [], 0, 0
        while self._queue:
            n = self._queue[0][0][0].shape[0]
            if batch and rows + n > self.max_batch:
                break
            item = self._queue.pop(0)
            taken += 1
            self._rows -= n
            if item[3] < now:
                if not item[1].done():
                    item[1].set_exception(shed_late(self.deadline_s))
                continue
            batch.append(item)
            rows += n
        self.depth.dec(taken)
        if self._rows < self.max_batch:
            self._full.clear()
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        passed = False  # a pass has run in this loop
        while self._queue:
            if self._shared and self._rows < self.max_batch and self.max_wait_s > 0:
                try:
                    await asyncio.wait_for(self._full.wait(), self.max_wait_s)
                except TimeoutError:
                    pass
            elif passed and self.executor is None:  # the loop's turn between two passes
                await asyncio.sleep(0)
            batch = self._take(loop.time())
            if not batch:
                continue
            sizes = [inputs[0].shape[0] for inputs, *_ in batch]
            self._shared = len(batch) > 1
            joined = [torch.cat(parts) if len(parts) > 1 and parts[0] is not None else parts[0]
                      for parts in zip(*(inputs for inputs, *_ in batch))]
            start, passed = loop.time(), True
            try:
                if self.executor is None:
                    outputs, compute_s = await self._forward_inline(joined)
                else:
                    outputs = await loop.run_in_executor(self.executor, self._forward, joined)
                    compute_s = loop.time() - start
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                self._report(batch, sizes, start, loop.time() - start, ok=False)
                for _, future, *_ in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self._report(batch, sizes, start, compute_s, ok=True)
            for i, (_, future, *_) in enumerate(batch):
                if not future.done():
                    start_row = sum(sizes[:i])
                    mine = tuple(None if out is None else out[start_row:start_row + sizes[i]]
                                 for out in outputs)
                    try:
                        if self.check is not None:
                            self.check(mine)
                    except Exception as exc:  # noqa: BLE001 - this request's answer only
                        future.set_exception(exc)
                        continue
                    future.set_result(mine)

    def _report(self, batch: list, sizes: list[int], start: float, compute_s: float,
                ok: bool) -> None:
        if self.observe is not None:
            self.observe(PassReport(rows=sum(sizes), compute_s=compute_s,
                                    queued_s=tuple(start - item[2] for item in batch),
                                    ok=ok))

    async def _forward_inline(self, inputs: list[torch.Tensor | None]
                              ) -> tuple[Sequence[torch.Tensor | None], float]:
        """The pass on the event loop, and its compute time: in slices of at most
        ``max_batch`` rows with a yield between them, so that one large request holds
        the loop no longer than a full batch does."""
        rows, start = inputs[0].shape[0], time.perf_counter()
        if rows <= self.max_batch:
            return self._forward(inputs), time.perf_counter() - start
        parts, compute_s = [], 0.0
        for first in range(0, rows, self.max_batch):
            if parts:
                compute_s += time.perf_counter() - start
                await asyncio.sleep(0)
                start = time.perf_counter()
            parts.append(self._forward([None if x is None else x[first:first + self.max_batch]
                                        for x in inputs]))
        compute_s += time.perf_counter() - start
        outputs = tuple(None if outs[0] is None else torch.cat(outs) for outs in zip(*parts))
        return outputs, compute_s

    def _forward(self, inputs: list[torch.Tensor]) -> Sequence[torch.Tensor]:
        with torch.inference_mode():
            return self.forward(*inputs)
