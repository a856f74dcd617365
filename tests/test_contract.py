"""The service and the workers share only Redis and the checkpoint store, and neither
imports the other: what they meet under is ``aae_jobs.contract``, the one home both
import. And the import boundaries that keep it so."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from rq.utils import import_attribute

from aae.training import Progress
from aae_jobs import contract
from worker import outcomes, tasks

ROOT = Path(__file__).resolve().parents[1]


def imported(package: str) -> set[str]:
    """The top-level modules a package's files import (absolute imports)."""
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def library_modules(package: str) -> set[str]:
    """The modules of ``aae`` that a package's files import."""
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aae."):
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names if a.name.startswith("aae."))
    return names


def test_the_task_and_the_callbacks_are_the_workers_functions():
    assert import_attribute(contract.TRAIN_TASK) is tasks.train
    callbacks = {contract.ON_SUCCESS: (outcomes.on_success, 3),
                 contract.ON_FAILURE: (outcomes.on_failure, 5),
                 contract.ON_STOPPED: (outcomes.on_stopped, 2)}
    for name, (function, arity) in callbacks.items():
        assert import_attribute(name) is function
        assert len(inspect.signature(function).parameters) == arity  # as RQ calls it


def test_per_job_keys_are_distinct_and_name_the_job():
    keys = [contract.stop_key("j1"), contract.lease_key("j1"), contract.fence_key("j1"),
            contract.lapse_key("j1"), contract.starts_key("j1"), contract.restore_lock("j1")]
    assert len(set(keys)) == len(keys) and all("j1" in key for key in keys)
    assert contract.stop_key("j1") != contract.stop_key("j2")
    assert contract.datasets_key("a") != contract.datasets_key("b")


def test_ended_statuses_are_the_final_ones():
    assert contract.ENDED == set(contract.JobStatus) - {contract.JobStatus.QUEUED,
                                                        contract.JobStatus.STARTED}
    assert {o.value for o in contract.Outcome} < {s.value for s in contract.JobStatus}


def test_the_progress_record_is_read_off_the_trainers_progress():
    progress = Progress(event="step", epoch=2, epochs=3, step=120, total_steps=255,
                        losses={"reconstruction": 0.2}, elapsed_s=1.5, eta_s=1.7,
                        validation_error=0.3, validation_loss=0.1)
    record = contract.JobProgress.model_validate(progress).model_dump()
    assert record == {k: v for k, v in vars(progress).items() if k != "event"}
    meta = contract.JobMeta.model_validate({"progress": record, "stage": "training",
                                            "something_newer": 1})  # extra keys: ignored
    assert meta.progress == contract.JobProgress(**record) and meta.attempts == 0


@pytest.mark.parametrize("package", ["service", "worker"])
def test_both_sides_take_the_contract_from_its_one_home(package):
    """No Redis key or task name is spelled out again outside the contract."""
    assert "aae_jobs" in imported(package)
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not node.value.startswith(("aae:", "worker.")), (
                    f"{path.relative_to(ROOT)} spells out {node.value!r}")


def test_neither_side_imports_the_other_and_the_library_imports_neither():
    assert "worker" not in imported("service")
    assert "service" not in imported("worker")
    assert not imported("aae") & {"service", "worker", "cli", "aae_jobs", "fastapi", "rq",
                                  "redis", "pydantic_settings", "prometheus_client"}
    # the contract may name RQ (``aae_jobs.queueing`` queues a job record) and the library's
    # file primitives (``aae.atomic``, torch-free at import), nothing else
    assert not imported("aae_jobs") & {"service", "worker", "cli", "fastapi", "redis",
                                       "starlette", "torch"}
    assert library_modules("aae_jobs") <= {"aae.atomic"}
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, aae_jobs.contract, aae_jobs.records, "
         "aae_jobs.sweeps, aae_jobs.logs, aae_jobs.settings; print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "False"
