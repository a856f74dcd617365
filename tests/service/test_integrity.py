"""Damaged weights are never served, and no answer with non-finite numbers is a 200: the
app over a real store whose files were damaged on disk, through real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from aae.checkpoints import publish_model
from aae.errors import NonFiniteOutput
from aae.store import CheckpointStore
from tests.aae.test_manifest import overwrite_middle
from tests.service.conftest import ImageFiles, Trained

# every inference route, as (method, path, body kind); each takes ?model=&version=
ROUTES = [("POST", "/classify", "png"), ("POST", "/encode", "png"),
          ("POST", "/reconstruct", "png"), ("POST", "/score", "png"),
          ("POST", "/decode", "z"), ("GET", "/sample", None), ("POST", "/v2", "images")]


def call(client: TestClient, route: tuple[str, str, str | None], model: str, version: int,
         image_files: ImageFiles) -> Any:
    method, path, body = route
    if path == "/v2":
        x = image_files.inputs(2)
        return client.post(f"/v2/models/{model}/versions/{version}/infer", json={
            "inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.flatten().tolist()}]})
    query = f"{path}?model={model}&version={version}"
    if body == "png":
        return client.post(query, files={"file": ("d.png", image_files.png(0), "image/png")})
    if body == "z":
        return client.post(query, json={"z": [0.5, -0.5], "label": 3},
                           headers={"Accept": "application/json"})
    return client.get(query + "&n=2", headers={"Accept": "application/json"})


def check_error(response: Any, route: tuple, title: str, problem) -> dict:
    if route[1] == "/v2":  # the protocol's error document
        assert response.status_code == 500, response.text
        return {"detail": response.json()["error"]}
    body = problem(response, 500)
    assert body["title"] == title
    return body


@pytest.fixture
def damaged(model_dir: Path) -> Path:
    """digits version 2 (the default) with 4 KiB overwritten in the middle of its weights,
    as the issue did."""
    path = model_dir / "digits" / "2" / "weights.safetensors"
    overwrite_middle(path)
    return path


@pytest.mark.parametrize("route", ROUTES, ids=[r[1] for r in ROUTES])
def test_a_damaged_version_answers_a_problem_naming_it_and_its_file(
        client: TestClient, damaged: Path, route, image_files: ImageFiles, problem) -> None:
    response = call(client, route, "digits", 2, image_files)
    body = check_error(response, route, "Model damaged", problem)
    assert "'digits' version 2 is damaged: weights.safetensors" in body["detail"]
    if route[1] != "/v2":
        assert (body["model"], body["version"], body["file"]) == (
            "digits", 2, "weights.safetensors")
    # the other version is whole and serves (v1 has untrained weights, but finite ones)
    assert call(client, route, "digits", 1, image_files).status_code == 200


def test_damage_counts_in_readyz_and_the_metric_until_deleted(
        client: TestClient, damaged: Path, image_files: ImageFiles, scrape) -> None:
    assert client.post("/classify", files={"file": image_files.png(0)}).status_code == 500
    ready = client.get("/readyz")
    assert ready.status_code == 200  # other models and training still work
    detail = ready.json()["detail"]
    assert "not loadable yet" in detail and "is damaged: weights.safetensors" in detail
    assert "1 damaged version(s) found and not served: digits version 2 " \
           "(weights.safetensors)" in detail
    assert scrape(client).value("aae_model_version_damaged", model="digits",
                                version="2") == 1
    assert client.delete("/models/digits/versions/2").status_code == 204
    assert scrape(client).value("aae_model_version_damaged", model="digits",
                                version="2") == 0
    assert client.get("/readyz").json()["detail"] == "digits version 1"


def test_a_repaired_version_serves_again(client: TestClient, damaged: Path,
                                         template_store: Path, image_files: ImageFiles,
                                         scrape) -> None:
    assert client.post("/encode", files={"file": image_files.png(0)}).status_code == 500
    damaged.write_bytes((template_store / "digits" / "2" / damaged.name).read_bytes())
    assert client.post("/encode", files={"file": image_files.png(0)}).status_code == 200
    assert scrape(client).value("aae_model_version_damaged", model="digits",
                                version="2") == 0
    assert "damaged" not in client.get("/readyz").json()["detail"]


@pytest.fixture
def nan_versions(store: CheckpointStore, trained_models: dict[str, Trained]) -> dict[str, int]:
    """A version of "digits" (semi-supervised) and of "styles" (supervised: /score is not
    batched there) whose weights are all NaN, published whole: manifests match."""
    out = {}
    for name in ("digits", "styles"):
        model = trained_models[name].model
        poisoned = type(model).from_tensors(
            model.cfg, {k: torch.full_like(t, float("nan")) if t.is_floating_point() else t
                        for k, t in model.state_tensors().items()}, "cpu")
        out[name] = publish_model(store, name, poisoned, {"note": "NaN weights"})
    return out


# every route of the semi-supervised model; /score of the supervised one, whose best
# class of ten is computed outside the batchers
NAN_CASES = [("digits", r) for r in ROUTES] + [("styles", ROUTES[3])]


@pytest.mark.parametrize(("name", "route"), NAN_CASES,
                         ids=[f"{n}{r[1]}" for n, r in NAN_CASES])
def test_no_answer_with_non_finite_numbers_is_a_200(
        client: TestClient, nan_versions: dict[str, int], name: str, route,
        image_files: ImageFiles, problem) -> None:
    version = nan_versions[name]
    response = call(client, route, name, version, image_files)
    body = check_error(response, route, "Model answer is not finite", problem)
    assert "not finite (NaN or infinity)" in body["detail"]
    assert store_is_whole(client, name, version)


def store_is_whole(client: TestClient, name: str, version: int) -> bool:
    """The NaN version's files match its manifest: only its answers are withheld."""
    return client.app.state.store.verify(name, version).ok


def test_one_request_with_a_non_finite_answer_fails_alone(
        make_client: Callable[..., TestClient], image_files: ImageFiles) -> None:
    """Requests batched together are checked one by one: a code that overflows the
    decoder fails its own request, not the others in its forward pass."""
    import asyncio

    client = make_client(max_batch_wait_ms=50)
    registry = client.app.state.registry

    async def both() -> list:
        loaded = await registry.get("plain", None)
        huge = torch.tensor([[3e38, -3e38]])  # finite, as /decode accepts
        fine = torch.zeros((1, 2))
        return await asyncio.gather(loaded.batchers["decode"](fine, None),
                                    loaded.batchers["decode"](huge, None),
                                    return_exceptions=True)

    fine, bad = client.portal.call(both)
    assert torch.isfinite(fine[0]).all()
    assert isinstance(bad, NonFiniteOutput), bad
