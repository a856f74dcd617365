"""Jobs are held against the workers' budget at the door (aae.budget, AAE_MAX_JOB_MEMORY,
AAE_MAX_JOB_STEPS): over it, a 422 naming the field and the estimate, before Redis is
asked anything; numbers past any field's bound are a 422, never a 500; every preset of
every mode fits the default budget."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from aae import budget
from aae.config import Mode
from aae.presets import PRESETS, build_config
from service.app import create_app
from service.settings import ServiceSettings
from tests.service.conftest import LOOPBACK

DOWN = "redis://127.0.0.1:1"  # nothing listens: a job within budget gets as far as a 503


@pytest.fixture
def client(tmp_path: Path):
    threads = torch.get_num_threads()
    settings = ServiceSettings(model_dir=tmp_path / "models", redis_url=DOWN,
                               max_job_memory="4GiB", max_job_steps=1_000_000)
    with TestClient(create_app(settings), client=LOOPBACK) as client:
        yield client
    torch.set_num_threads(threads)


@pytest.mark.parametrize("body, field, setting", [
    ({"hidden": 16_384, "depth": 16}, "hidden", "AAE_MAX_JOB_MEMORY of 4.00 GiB"),
    ({"batch_size": 50_000, "hidden": 4096, "depth": 8}, "batch_size", "AAE_MAX_JOB_MEMORY"),
    ({"epochs": 10_000}, "epochs", "AAE_MAX_JOB_STEPS of 1,000,000"),
    ({"epochs": 10_000, "max_steps": 2_000_000}, "max_steps", "AAE_MAX_JOB_STEPS"),
])
def test_a_job_over_the_budget_is_refused_naming_the_field_and_the_estimate(
        client, problem, body, field, setting):
    refused = problem(client.post("/jobs/train", json=body), 422)
    assert refused["errors"][0]["loc"] == ["body", field]
    assert setting in refused["detail"] and "the run" in refused["detail"]
    sweep = problem(client.post("/sweeps", json={"grid": {k: [v] for k, v in body.items()}}),
                    422)
    assert sweep["errors"][0]["loc"] == ["body", "grid", field]
    assert "point 0" in sweep["detail"] and setting in sweep["detail"]


@pytest.mark.parametrize("raw", [
    '{"epochs": 1' + "0" * 400 + "}", '{"epochs": 1e400}', '{"depth": 1000000}',
    '{"hidden": 1e20}', '{"lr_reconstruction": 1e400}', '{"batch_size": -1e400}',
    '{"lr_milestones": [1' + "0" * 400 + "]}",
])
def test_numbers_out_of_range_are_a_422(client, problem, raw):
    problem(client.post("/jobs/train", content=raw,
                        headers={"content-type": "application/json"}), 422)


def test_a_job_within_budget_gets_to_the_queue(client, problem):
    problem(client.post("/jobs/train", json={"epochs": 2, "hidden": 64}), 503)  # Redis down


def test_every_preset_of_every_mode_fits_the_default_budget():
    defaults = ServiceSettings()
    for preset in PRESETS:
        for mode in Mode:
            labels = {"n_labels": 100} if mode in (Mode.SEMI_SUPERVISED,
                                                   Mode.SUPERVISED) else {}
            budget.check(build_config(preset, mode=mode, **labels),
                         max_memory_bytes=defaults.max_job_memory,
                         max_steps=defaults.max_job_steps)
