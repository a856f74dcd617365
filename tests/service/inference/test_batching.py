"""Dynamic batching: concurrent calls share forward passes, results go back to their
callers, limits split batches, and a failed pass fails every call in it."""

import asyncio

import pytest
import torch

from service.inference.batching import Batcher


class Recorder:
    """A forward pass that doubles its input and records every batch it saw."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.fail = fail

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None):
        self.batches.append(x.shape[0])
        if self.fail:
            raise ValueError("the pass broke")
        return x * 2, (None if y is None else y + 1)


def run(coro):
    return asyncio.run(coro)


async def calls(batcher: Batcher, sizes: list[int], with_y: bool = False):
    inputs = [torch.arange(sum(sizes[:i]), sum(sizes[:i + 1]), dtype=torch.float32)
              .reshape(-1, 1) for i in range(len(sizes))]
    ys = [x.clone() if with_y else None for x in inputs]
    results = await asyncio.gather(*(batcher(x, y) for x, y in zip(inputs, ys)),
                                   return_exceptions=True)
    return inputs, results


def test_concurrent_calls_share_a_pass_and_get_their_own_rows():
    forward = Recorder()
    batcher = Batcher(forward, None, max_batch=64, max_wait_s=0.01)
    inputs, results = run(calls(batcher, [1, 3, 2, 1]))
    assert sum(forward.batches) == 7 and len(forward.batches) < 4  # coalesced
    for x, (doubled, y) in zip(inputs, results):
        assert torch.equal(doubled, x * 2) and y is None  # None stays None


def test_optional_inputs_are_joined_when_given():
    batcher = Batcher(Recorder(), None, max_batch=64, max_wait_s=0.01)
    inputs, results = run(calls(batcher, [2, 2], with_y=True))
    for x, (_, y) in zip(inputs, results):
        assert torch.equal(y, x + 1)


def test_batches_split_at_the_limit_and_a_large_call_runs_alone_in_slices():
    forward = Recorder()
    batcher = Batcher(forward, None, max_batch=4, max_wait_s=0.01)
    inputs, results = run(calls(batcher, [3, 3, 3, 9]))
    assert all(size <= 4 for size in forward.batches) and sum(forward.batches) == 18
    assert forward.batches[-3:] == [4, 4, 1]  # the large call alone, max_batch at a time
    assert all(torch.equal(r[0], x * 2) for x, r in zip(inputs, results))


@pytest.mark.parametrize("with_y", [False, True])
def test_the_loop_runs_between_the_slices_of_a_large_call(with_y):
    """On the event loop, a call of 10 rows with max_batch 4 is three passes, and other
    work runs between them: the loop is never held for more than one full batch."""
    events: list[str] = []

    class Logged(Recorder):
        def __call__(self, x, y=None):
            events.append(f"pass {x.shape[0]}")
            return super().__call__(x, y)

    async def go():
        batcher = Batcher(Logged(), None, max_batch=4, max_wait_s=0.0)

        async def other_work():
            for _ in range(3):
                events.append("other")
                await asyncio.sleep(0)

        x = torch.arange(10, dtype=torch.float32).reshape(-1, 1)
        result, _ = await asyncio.gather(batcher(x, x.clone() if with_y else None),
                                         other_work())
        return x, result

    x, (doubled, y) = run(go())
    assert torch.equal(doubled, x * 2) and (torch.equal(y, x + 1) if with_y else y is None)
    passes = [i for i, e in enumerate(events) if e.startswith("pass")]
    assert [events[i] for i in passes] == ["pass 4", "pass 4", "pass 2"]
    assert all("other" in events[a + 1:b] for a, b in zip(passes, passes[1:])), events


def test_an_error_reaches_every_caller_of_the_pass_and_the_batcher_goes_on():
    forward = Recorder(fail=True)
    batcher = Batcher(forward, None, max_batch=64, max_wait_s=0.01)
    _, results = run(calls(batcher, [1, 2, 3]))
    assert all(isinstance(r, ValueError) and str(r) == "the pass broke" for r in results)
    forward.fail = False

    async def again():
        return await batcher(torch.ones(1, 1))

    assert torch.equal(run(again())[0], torch.full((1, 1), 2.0))


def test_the_forward_pass_runs_on_the_executor_when_given():
    from concurrent.futures import ThreadPoolExecutor
    import threading

    threads = []

    def forward(x, y=None):
        threads.append(threading.current_thread().name)
        return (x,)

    with ThreadPoolExecutor(1, thread_name_prefix="inference") as pool:
        batcher = Batcher(forward, pool, max_batch=8, max_wait_s=0.0)
        _, results = run(calls(batcher, [1, 1]))
    assert all(isinstance(r, tuple) for r in results)
    assert threads and all(name.startswith("inference") for name in threads)


@pytest.mark.parametrize("wait", [0.0, 0.005])
def test_observe_sees_each_pass(wait):
    seen = []
    batcher = Batcher(Recorder(), None, max_batch=64, max_wait_s=wait, observe=seen.append)
    run(calls(batcher, [2, 2, 2]))
    assert sum(r.rows for r in seen) == 6 and all(r.compute_s >= 0 and r.ok for r in seen)
    assert sum(len(r.queued_s) for r in seen) == 3  # one wait per request
    assert all(q >= 0 for r in seen for q in r.queued_s)


def test_a_failed_pass_is_reported_as_failed():
    seen = []
    batcher = Batcher(Recorder(fail=True), None, max_batch=64, max_wait_s=0.0,
                      observe=seen.append)
    run(calls(batcher, [1, 1]))
    assert seen and not any(r.ok for r in seen) and sum(r.rows for r in seen) == 2


# -- admission control ------------------------------------------------------------------------

def test_a_full_queue_refuses_at_once_with_a_503():
    """max_queue waiting requests: one more is refused before it queues, the others run."""
    from service.core.errors import Overloaded

    forward = Recorder()

    async def go():
        batcher = Batcher(forward, None, max_batch=64, max_wait_s=0, max_queue=3)
        return await calls(batcher, [1, 1, 1, 1, 1])

    _, results = run(go())
    refused = [r for r in results if isinstance(r, Overloaded)]
    assert len(refused) == 2 and all(r.reason == "queue_full" and r.status == 503
                                     and r.headers["Retry-After"] for r in refused)
    assert sum(forward.batches) == 3


def test_each_shed_request_is_counted_where_it_is_shed_by_reason():
    """aae_requests_shed_total counts the batcher's refusals by reason; making the error
    alone counts nothing."""
    from prometheus_client import REGISTRY

    from service.core.errors import Overloaded

    def counted() -> float:
        return REGISTRY.get_sample_value("aae_requests_shed_total",
                                         {"reason": "queue_full"}) or 0.0

    before = counted()
    Overloaded("queue_full", "made, not shed")
    assert counted() == before

    async def go():
        batcher = Batcher(Recorder(), None, max_batch=64, max_wait_s=0, max_queue=3)
        return await calls(batcher, [1, 1, 1, 1, 1])

    run(go())
    assert counted() == before + 2


def test_a_request_past_its_deadline_is_dropped_never_computed():
    """A request still queued after the deadline fails with Overloaded("deadline") and its
    rows never reach the forward pass; one within the deadline is computed."""
    import time

    from service.core.errors import Overloaded

    class Slow(Recorder):
        def __call__(self, x, y=None):
            time.sleep(0.15)  # on the loop: the next requests wait behind it
            return super().__call__(x, y)

    forward = Slow()

    async def go():
        batcher = Batcher(forward, None, max_batch=1, max_wait_s=0, deadline_s=0.1)
        # both queue before the pass starts; the second waits 0.15 s > 0.1 for its turn
        return await asyncio.gather(batcher(torch.ones(1, 1), None),
                                    batcher(torch.ones(1, 1), None), return_exceptions=True)

    first, late = run(go())
    assert isinstance(first, tuple) and isinstance(late, Overloaded) and late.reason == "deadline"
    assert forward.batches == [1]
