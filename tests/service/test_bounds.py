"""Every request's declared work is bounded before it is done: the largest values each
route's schema allows answer within a second, without measurable memory growth (the
sweep's grid, counted before it is expanded, is in test_sweeps.py)."""

from __future__ import annotations

import time

import psutil
import pytest


LARGEST = [
    ("get", "/sample?n=256&scale=16&label=7&seed=9223372036854775807", 200),
    ("get", "/sample?n=257", 422),  # past AAE_MAX_SAMPLES
    ("get", "/sample?n=1000000000000", 422),
    ("get", "/sample?n=256&scale=17", 422),
    ("get", "/figures/manifold?model=plain&n=32&scale=8&extent=1000", 200),
    ("get", "/figures/manifold?model=plain&n=33", 422),
    ("get", "/figures/styles?rows=32&scale=8&seed=9223372036854775807", 200),
    ("get", "/figures/styles?rows=33", 422),
    ("get", "/jobs?limit=1001", 422),
    ("get", "/sweeps?limit=1001", 422),
]


@pytest.mark.parametrize("method, url, status", LARGEST)
def test_the_largest_request_the_schema_allows_answers_at_once(client, method, url, status):
    client.request(method, "/sample?n=1")  # the model loaded beforehand
    process = psutil.Process()
    before = process.memory_info().rss
    start = time.perf_counter()
    answer = client.request(method, url)
    took = time.perf_counter() - start
    assert answer.status_code == status, answer.text[:300]
    assert took < 1.0, f"{url}: {took:.2f} s"
    assert process.memory_info().rss - before < 100 * 2**20
