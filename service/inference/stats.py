"""Per-version inference statistics of this process, in the shape of the Open Inference
Protocol's statistics extension (Triton's ``ModelStatistics``).

They come from what the batcher reports of each forward pass (``PassReport``): requests
that succeeded or failed with their time from arrival to answer, their time queued
before their pass, the passes themselves (execution count, compute time) and the
batch sizes. Every inference call counts, whichever route (REST or /v2) made it.
Counts are of this API process since it started; with several processes each answers
for itself.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from service.inference.batching import PassReport


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def public(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class VersionStats:
    last_inference_ms: int = 0
    inference_count: int = 0  # images or codes answered
    execution_count: int = 0  # forward passes
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    batches: dict[int, Duration] = field(default_factory=lambda: defaultdict(Duration))

    def record(self, report: PassReport) -> None:
        self.last_inference_ms = int(time.time() * 1000)
        self.execution_count += 1
        requests = len(report.queued_s)
        for queued in report.queued_s:
            self.queue.add(queued)
            (self.success if report.ok else self.fail).add(queued + report.compute_s)
        if report.ok:
            self.inference_count += report.rows
            self.compute_infer.add(report.compute_s, requests)
            self.batches[report.rows].add(report.compute_s)

    def public(self, name: str, version: int) -> dict[str, Any]:
        zero = Duration().public()
        return {
            "name": name, "version": str(version),
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.public(), "fail": self.fail.public(),
                "queue": self.queue.public(), "compute_input": zero,
                "compute_infer": self.compute_infer.public(), "compute_output": zero,
                "cache_hit": zero, "cache_miss": zero},
            "batch_stats": [{"batch_size": size, "compute_input": zero,
                             "compute_infer": d.public(), "compute_output": zero}
                            for size, d in sorted(self.batches.items())],
        }


class InferenceStats:
    """Statistics of every (model, version) this process has served."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, int], VersionStats] = defaultdict(VersionStats)

    def record(self, name: str, version: int, report: PassReport) -> None:
        self._versions[(name, version)].record(report)

    def public(self, name: str | None = None, version: int | None = None
               ) -> list[dict[str, Any]]:
        return [stats.public(*key) for key, stats in sorted(self._versions.items())
                if (name is None or key[0] == name) and (version is None or key[1] == version)]

    def version(self, name: str, version: int) -> dict[str, Any]:
        """One version's statistics (zeros if it has not served yet)."""
        stats = self._versions.get((name, version)) or VersionStats()
        return stats.public(name, version)
