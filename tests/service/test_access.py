"""Closed by default: without AAE_API_KEY only loopback clients change anything; with it,
the key. Unknown ids never create files. The app over a real store and a real Redis,
through real HTTP from a client address the test chooses (Starlette's TestClient sends
it as the ASGI client, as uvicorn does for a TCP peer)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cli.embedded_redis import EmbeddedRedis
from service.core.auth import is_loopback
from tests.aae.test_store import snapshot
from tests.service.conftest import LOOPBACK, REMOTE

# the POST routes that only read: inference, figures, the protocol's repository index
READS = {"/encode", "/classify", "/reconstruct", "/decode", "/score", "/figures/styles",
         "/interpolate", "/v2/models/{name}/infer",
         "/v2/models/{name}/versions/{version}/infer", "/v2/repository/index"}
PARAMS = {"name": "digits", "version": "1", "alias": "production"}
KEY = "s3cret-key"


def changing_routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every route that may change something, from the app's own
    OpenAPI document: a route added later is checked too."""
    found = []
    for template, operations in client.app.openapi()["paths"].items():
        for method in operations:
            if method in ("post", "put", "patch", "delete") and template not in READS:
                path = re.sub(r"\{(\w+)\}",
                              lambda m: PARAMS.get(m.group(1), str(uuid.uuid4())), template)
                found.append((method.upper(), path))
    return found


@pytest.fixture
def redis_url() -> str:
    with EmbeddedRedis() as redis:
        yield redis.url


def test_every_changing_route_refuses_remote_clients_without_a_key(
        make_client: Callable[..., TestClient], model_dir: Path, redis_url: str,
        problem) -> None:
    remote = make_client(client=REMOTE, redis_url=redis_url)
    routes = changing_routes(remote)
    assert {p.split("/")[1] for _, p in routes} == {"jobs", "sweeps", "models"}
    assert len(routes) == 6
    before = snapshot(model_dir)
    for method, path in routes:
        response = remote.request(method, path, json={})
        body = problem(response, 403)
        assert "192.0.2.10" in body["detail"] and "AAE_API_KEY" in body["detail"], path
        assert "Authorization: Bearer" in body["detail"]
    assert snapshot(model_dir) == before
    # the same requests from this machine get past the door (to their own answers)
    local = make_client(client=LOOPBACK, redis_url=redis_url)
    for method, path in routes:
        assert local.request(method, path, json={}).status_code not in (401, 403), path


def test_reads_stay_open_to_remote_clients(make_client: Callable[..., TestClient],
                                           image_files) -> None:
    remote = make_client(client=REMOTE)
    assert remote.post("/classify", files={"file": image_files.png(0)}).status_code == 200
    assert remote.get("/models/digits").status_code == 200
    assert remote.get("/sample?n=1").status_code == 200


def test_with_a_key_every_client_needs_it_and_remote_ones_may_use_it(
        make_client: Callable[..., TestClient], problem) -> None:
    for address in (LOOPBACK, REMOTE):
        client = make_client(client=address, api_key=KEY)
        problem(client.put("/models/digits/aliases/production", json={"version": 1}), 401)
        problem(client.put("/models/digits/aliases/production", json={"version": 1},
                           headers={"Authorization": "Bearer wrong"}), 401)
        moved = client.put("/models/digits/aliases/production", json={"version": 1},
                           headers={"Authorization": f"Bearer {KEY}"})
        assert moved.status_code == 200, moved.text


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False),
    ("testclient", False), ("", False), (None, False), ("10.0.0.1", False)])
def test_loopback_is_the_address_not_a_name(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_unknown_ids_never_create_files(make_client: Callable[..., TestClient],
                                        model_dir: Path, redis_url: str) -> None:
    """Every route that takes an id, with ids that do not exist (and names that are
    refused): the store is byte for byte as it was. POST /sweeps/<unknown>/cancel made a
    lock file per id."""
    client = make_client(redis_url=redis_url)
    unknown = str(uuid.uuid4())
    before = snapshot(model_dir)
    calls = [("POST", f"/sweeps/{unknown}/cancel", None, 404),
             ("GET", f"/sweeps/{unknown}", None, 404),
             ("GET", f"/sweeps/{unknown}/events", None, 404),
             ("GET", f"/sweeps/{unknown}/figure.png", None, 404),
             ("POST", f"/jobs/{unknown}/cancel", None, 404),
             ("GET", f"/jobs/{unknown}", None, 404),
             ("GET", f"/jobs/{unknown}/events", None, 404),
             ("PUT", "/models/digits/aliases/production", {"version": 9}, 404),
             ("PUT", "/models/nosuch/aliases/production", {"version": 1}, 404),
             ("PUT", "/models/digits/aliases/latest", {"version": 1}, 422),
             ("PUT", "/models/digits/aliases/staging", {"version": "nosuch"}, 404),
             ("DELETE", "/models/digits/versions/9", None, 404),
             ("DELETE", "/models/nosuch/versions/1", None, 404)]
    for method, path, body, status in calls:
        response = client.request(method, path, json=body)
        assert response.status_code == status, (method, path, response.text)
        assert snapshot(model_dir) == before, (method, path)
