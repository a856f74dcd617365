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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

Forward = Callable[..., Sequence[torch.Tensor]]


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
    runs on its own."""

    def __init__(self, forward: Forward, executor: Executor | None, max_batch: int,
                 max_wait_s: float, observe: Callable[[PassReport], None] | None = None
                 ) -> None:
        self.forward, self.executor = forward, executor
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.observe = observe  # called with a PassReport after each pass
        self._queue: list[tuple[tuple[torch.Tensor, ...], asyncio.Future, float]] = []
        self._rows = 0
        self._full = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._shared = False  # whether the last batch held more than one request

    async def __call__(self, *inputs: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._queue.append((inputs, future, loop.time()))
        self._rows += inputs[0].shape[0]
        if self._rows >= self.max_batch:
            self._full.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        return await future

    def _take(self) -> list[tuple[tuple[torch.Tensor, ...], asyncio.Future, float]]:
        batch, rows = [], 0
        while self._queue:
            n = self._queue[0][0][0].shape[0]
            if batch and rows + n > self.max_batch:
                break
            batch.append(self._queue.pop(0))
            rows += n
        self._rows -= rows
        if self._rows < self.max_batch:
            self._full.clear()
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            if self._shared and self._rows < self.max_batch and self.max_wait_s > 0:
                try:
                    await asyncio.wait_for(self._full.wait(), self.max_wait_s)
                except TimeoutError:
                    pass
            batch = self._take()
            sizes = [inputs[0].shape[0] for inputs, _, _ in batch]
            self._shared = len(batch) > 1
            joined = [torch.cat(parts) if len(parts) > 1 and parts[0] is not None else parts[0]
                      for parts in zip(*(inputs for inputs, _, _ in batch))]
            start = loop.time()
            try:
                if self.executor is None:
                    outputs = self._forward(joined)
                else:
                    outputs = await loop.run_in_executor(self.executor, self._forward, joined)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                self._report(batch, sizes, start, loop.time(), ok=False)
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self._report(batch, sizes, start, loop.time(), ok=True)
            for i, (_, future, _) in enumerate(batch):
                if not future.done():
                    start_row = sum(sizes[:i])
                    future.set_result(tuple(None if out is None else
                                            out[start_row:start_row + sizes[i]]
                                            for out in outputs))

    def _report(self, batch: list, sizes: list[int], start: float, end: float,
                ok: bool) -> None:
        if self.observe is not None:
            self.observe(PassReport(rows=sum(sizes), compute_s=end - start,
                                    queued_s=tuple(start - arrived for _, _, arrived in batch),
                                    ok=ok))

    def _forward(self, inputs: list[torch.Tensor]) -> Sequence[torch.Tensor]:
        with torch.inference_mode():
            return self.forward(*inputs)
