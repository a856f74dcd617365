"""The service and the workers share only Redis and the checkpoint store, and neither
imports the other: the names they meet under are written on both sides. They must
agree."""

from __future__ import annotations

import ast
from pathlib import Path

from rq.utils import import_attribute

from service import job_metrics, jobs
from worker import control, metrics, tasks

ROOT = Path(__file__).resolve().parents[1]


def test_the_queued_task_is_the_workers_train_function():
    assert import_attribute(jobs.TRAIN_TASK) is tasks.train


def test_redis_keys_agree():
    assert jobs.STOP_KEY == control.STOP_KEY
    assert job_metrics.JOBS_KEY == metrics.JOBS_KEY
    assert job_metrics.STEPS_KEY == metrics.STEPS_KEY


def test_neither_side_imports_the_other_and_the_library_imports_neither():
    def imported(package: str) -> set[str]:
        names = set()
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names.add(node.module.split(".")[0])
        return names

    assert "worker" not in imported("service")
    assert "service" not in imported("worker")
    assert not imported("aae") & {"service", "worker", "cli", "fastapi", "rq", "redis",
                                  "pydantic_settings", "prometheus_client"}
