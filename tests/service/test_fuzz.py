"""Fuzz every operation of the committed openapi.yaml with schemathesis, in process (ASGI),
against the real app over a real store of models trained on real digits.

Invariants, for every generated request, valid or not:

- no 5xx answer;
- a 2xx answer conforms to the documented content type and response schema;
- any other answer is an error document: ``application/problem+json`` whose ``status`` is
  the HTTP status, or the Open Inference Protocol's ``{"error": ...}`` under /v2.

Random model names almost never exist, so each request is also sent aimed at the store's
model "digits" (path ``{name}``; no ``?model=``, which means the default model): the
version, alias and body handling behind the name lookup get fuzzed too.

The examples are derandomized (the same requests every run) and few, so the test is
repeatable and takes well under a minute; raise ``FUZZ_EXAMPLES`` to fuzz harder. No
operation is left out: the /jobs routes talk to a real Redis started here.

``test_schemathesis_checks_all`` runs the schemathesis CLI with ``--checks all`` against
the API served by uvicorn (``scripts/fuzz_api.py``, bounded; the full run is that script
without ``--max-examples``), and fails on any failure or skipped operation.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import torch
from hypothesis import HealthCheck, settings
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (content_type_conformance,
                                               response_schema_conformance)

import yaml

from cli.embedded_redis import EmbeddedRedis
from scripts.fuzz_api import fuzz
from service.app import create_app
from service.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
OPENAPI_YAML = ROOT / "openapi.yaml"
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))

schema = schemathesis.openapi.from_path(OPENAPI_YAML)


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory: pytest.TempPathFactory,
                template_store: Path) -> Iterator[asgi.ASGIClient]:
    """One app for the whole module, started through schemathesis's own ASGI client.
    Small limits keep the largest legal answers (grids of samples) quick to draw."""
    model_dir = tmp_path_factory.mktemp("fuzz") / "models"
    shutil.copytree(template_store, model_dir)
    threads = torch.get_num_threads()  # the lifespan sets torch's process-wide thread count
    with EmbeddedRedis() as redis:
        app = create_app(ServiceSettings(model_dir=model_dir, default_model="digits",
                                         alias_refresh_s=0.2, max_images=8, max_samples=8,
                                         max_upload_bytes=256 * 1024, redis_url=redis.url))
        with asgi.get_client(app) as client:
            yield client
    asgi.shutdown_lifespans()  # the client leaves the app's lifespan running
    torch.set_num_threads(threads)


def check_error_document(case, response) -> None:
    path = case.operation.path
    content_type = response.headers.get("content-type", [""])[0]
    body = response.json()
    if path.startswith("/v2") and content_type == "application/json":
        assert isinstance(body.get("error"), str) and body["error"], body
        return
    assert content_type == "application/problem+json", (
        f"{case.method} {path}: {response.status_code} with {content_type}")
    assert body["status"] == response.status_code and body["title"] and body["detail"], body


def on_a_known_model(case):
    """The same request, aimed at the model "digits"; None if that changes nothing or would
    delete its versions (which would leave the rest of the run with no model)."""
    if case.method.upper() == "DELETE":
        return None
    known = case.derive(query={k: v for k, v in case.query.items() if k != "model"})
    if "name" in known.path_parameters:
        known.path_parameters["name"] = "digits"
    return None if (known.query == case.query
                    and known.path_parameters == case.path_parameters) else known


def check(case, response) -> None:
    assert response.status_code < 500, (
        f"{response.status_code} for {case.as_curl_command()}\n{response.text[:500]}")
    if response.status_code < 300:
        case.validate_response(response, checks=[content_type_conformance,
                                                 response_schema_conformance])
    else:
        check_error_document(case, response)


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_never_fails_and_answers_as_documented(case, fuzz_client):
    for sent in (case, on_a_known_model(case)):
        if sent is not None:
            check(sent, sent.call(base_url=fuzz_client.base_url, session=fuzz_client))


def test_schemathesis_checks_all(template_store, tmp_path):
    """Every check of schemathesis (auth, status codes, headers, positive and negative data,
    stateful links) on every operation, over real HTTP: zero failures, nothing skipped."""
    status, output, skipped = fuzz(template_store, max_examples=5, seed=0, workdir=tmp_path,
                                   timeout_s=300)
    assert status == 0, output[-6000:]
    assert not skipped, f"schemathesis skipped {skipped}"
    operations = sum(len(ops) for ops in yaml.safe_load(OPENAPI_YAML.read_text())["paths"].values())
    tested = re.search(r"Tested: (\d+)", output)
    assert tested and int(tested.group(1)) == operations, output[-3000:]
