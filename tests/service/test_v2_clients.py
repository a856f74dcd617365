"""Real Open Inference Protocol clients (Triton's ``tritonclient.http`` and its asyncio
twin), with their defaults, against the service over real HTTP: health, metadata,
configuration, repository index, statistics, and inference with binary and JSON
tensors, whose answers equal the service's own /encode, /classify and /decode."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from tests.service.live import LiveServer
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def server(tmp_path_factory, template_store) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("v2clients") / "models"
    shutil.copytree(template_store, root)
    with LiveServer(root, max_images=64) as live:
        yield live


@pytest.fixture(scope="module")
def client(server) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.url) as c:
        yield c


@pytest.fixture(scope="module")
def digits(test_digits) -> np.ndarray:
    return test_digits.images[:8].numpy()


def images_input(x: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("images", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def rest(server: LiveServer, method: str, path: str, **kwargs) -> httpx.Response:
    response = httpx.request(method, f"http://{server.url}{path}", timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    return response


# -- health, metadata, configuration, index -------------------------------------------------

def test_health_and_server_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and client.is_model_ready("digits", "1")
    assert not client.is_model_ready("nope")
    metadata = client.get_server_metadata()
    assert "binary_tensor_data" in metadata["extensions"]
    assert "statistics" in metadata["extensions"]


def test_an_empty_store_is_live_and_ready(tmp_path):
    with LiveServer(tmp_path / "models") as empty, \
            triton.InferenceServerClient(empty.url) as c:
        assert c.is_server_live() and c.is_server_ready()
        assert not c.is_model_ready("digits")
        assert c.get_model_repository_index() == []


def test_model_metadata_and_config(client):
    metadata = client.get_model_metadata("digits")
    assert metadata["name"] == "digits" and metadata["versions"] == ["1", "2"]
    config = client.get_model_config("digits", "2")
    assert config["max_batch_size"] == 64
    inputs = {t["name"]: t for t in config["input"]}
    assert inputs["images"] == {"name": "images", "data_type": "TYPE_FP32", "dims": [784],
                                "reshape": None, "optional": True}
    assert inputs["z"]["dims"] == [2] and inputs["z"]["optional"]
    assert inputs["label"]["data_type"] == "TYPE_INT64" and inputs["label"]["reshape"] == {
        "shape": []}
    outputs = {t["name"]: t["dims"] for t in config["output"]}
    assert outputs == {"z": [2], "y": [10], "label": [1], "images": [784]}
    plain = client.get_model_config("plain")
    assert {t["name"] for t in plain["input"]} == {"images", "z"}


def test_repository_index_lists_every_version(client):
    index = client.get_model_repository_index()
    assert {(m["name"], m["version"], m["state"]) for m in index} >= {
        ("digits", "1", "READY"), ("digits", "2", "READY"), ("plain", "1", "READY")}


# -- inference ------------------------------------------------------------------------------

@pytest.mark.parametrize("binary", [True, False])
def test_images_give_exactly_what_encode_and_classify_give(client, server, digits, binary):
    outputs = [triton.InferRequestedOutput(name, binary_data=binary)
               for name in ("z", "y", "label")]
    result = client.infer("digits", [images_input(digits, binary)], model_version="2",
                          outputs=outputs)
    z, y, label = (result.as_numpy(name) for name in ("z", "y", "label"))
    assert z.shape == (8, 2) and y.shape == (8, 10) and label.shape == (8,)
    assert z.dtype == np.float32 and label.dtype == np.int64

    pixels = {"pixels": digits.tolist()}
    code = rest(server, "POST", "/encode?model=digits&version=2", json=pixels).json()
    classified = rest(server, "POST", "/classify?model=digits&version=2", json=pixels).json()
    assert np.array_equal(z, np.array(code["z"], dtype=np.float32))
    assert np.array_equal(y, np.array(code["y"], dtype=np.float32))
    assert label.tolist() == [p["label"] for p in classified["predictions"]]


def test_the_client_defaults_binary_in_and_out(client, digits):
    result = client.infer("digits", [images_input(digits)])  # no outputs: all, binary
    response = result.get_response()
    assert {o["name"] for o in response["outputs"]} == {"z", "y", "label"}
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    assert result.as_numpy("label").shape == (8,)


@pytest.mark.parametrize("model, labelled", [("digits", True), ("styles", True),
                                             ("plain", False)])
def test_z_and_label_give_exactly_what_decode_gives(client, server, model, labelled):
    z = np.array([[0.5, -1.0], [1.5, 0.25], [0.0, 0.0]], dtype=np.float32)
    labels = np.array([3, 7, 1], dtype=np.int64)
    inputs = [triton.InferInput("z", [3, 2], "FP32")]
    inputs[0].set_data_from_numpy(z)
    if labelled:
        inputs.append(triton.InferInput("label", [3], "INT64"))
        inputs[1].set_data_from_numpy(labels)
    images = client.infer(model, inputs).as_numpy("images")
    body = {"z": z.tolist()} | ({"label": labels.tolist()} if labelled else {})
    decoded = rest(server, "POST", f"/decode?model={model}", json=body,
                   headers={"Accept": "application/json"}).json()
    assert images.shape == (3, 784)
    assert np.array_equal(images, np.array(decoded["images"], dtype=np.float32))


def test_statistics_count_what_was_served(client, digits):
    before = client.get_inference_statistics("digits", "2")["model_stats"][0]
    client.infer("digits", [images_input(digits)], model_version="2")
    after = client.get_inference_statistics("digits", "2")["model_stats"][0]
    assert after["name"] == "digits" and after["version"] == "2"
    assert after["inference_count"] - before["inference_count"] == 8
    assert after["execution_count"] > before["execution_count"]
    success = after["inference_stats"]["success"]
    assert success["count"] > before["inference_stats"]["success"]["count"]
    assert success["ns"] > 0 and after["inference_stats"]["compute_infer"]["ns"] > 0
    assert after["last_inference"] > 0 and after["batch_stats"]
    everything = client.get_inference_statistics()["model_stats"]
    assert ("digits", "2") in {(m["name"], m["version"]) for m in everything}
    per_model = client.get_inference_statistics("digits")["model_stats"]
    assert [m["version"] for m in per_model] == ["1", "2"]


# -- errors ---------------------------------------------------------------------------------

def _raises(status: str, words: str, call) -> None:
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == status, caught.value
    assert words in caught.value.message(), caught.value.message()


def test_errors_carry_the_servers_message_and_status(client, digits):
    _raises("400", "shape [n, 784]",
            lambda: client.infer("digits", [images_input(digits[:, :700])]))
    ints = triton.InferInput("images", [8, 784], "INT64")
    ints.set_data_from_numpy(digits.astype(np.int64))
    _raises("400", "datatype", lambda: client.infer("digits", [ints]))
    _raises("404", "nope", lambda: client.infer("nope", [images_input(digits)]))
    _raises("404", "version 9",
            lambda: client.infer("digits", [images_input(digits)], model_version="9"))
    _raises("404", "nope", lambda: client.get_model_metadata("nope"))
    _raises("404", "nope", lambda: client.get_model_config("nope"))
    _raises("404", "nope", lambda: client.get_inference_statistics("nope"))
    bad = (digits * 3).astype(np.float32)
    _raises("400", "[0, 1]", lambda: client.infer("digits", [images_input(bad)]))


def test_unknown_routes_under_v2_answer_in_the_protocols_shape(server):
    response = httpx.get(f"http://{server.url}/v2/nothing/here")
    assert response.status_code == 404 and set(response.json()) == {"error"}
    response = httpx.delete(f"http://{server.url}/v2/models/digits")
    assert response.status_code == 405 and set(response.json()) == {"error"}


# -- the asyncio client ---------------------------------------------------------------------

def test_the_asyncio_client(server, digits):
    async def session():
        async with triton_aio.InferenceServerClient(server.url) as c:
            assert await c.is_server_live() and await c.is_server_ready()
            assert await c.is_model_ready("digits")
            config = await c.get_model_config("digits")
            index = await c.get_model_repository_index()
            answers = {}
            for binary in (True, False):
                tensor = triton_aio.InferInput("images", list(digits.shape), "FP32")
                tensor.set_data_from_numpy(digits, binary_data=binary)
                outputs = [triton_aio.InferRequestedOutput(n, binary_data=binary)
                           for n in ("z", "label")]
                result = await c.infer("digits", [tensor], model_version="2", outputs=outputs)
                answers[binary] = (result.as_numpy("z"), result.as_numpy("label"))
            z = triton_aio.InferInput("z", [2, 2], "FP32")
            z.set_data_from_numpy(np.array([[0.5, -1.0], [1.0, 2.0]], dtype=np.float32))
            label = triton_aio.InferInput("label", [2], "INT64")
            label.set_data_from_numpy(np.array([3, 8], dtype=np.int64))
            images = (await c.infer("digits", [z, label])).as_numpy("images")
            errors = []
            short = triton_aio.InferInput("images", [8, 700], "FP32")
            short.set_data_from_numpy(np.ascontiguousarray(digits[:, :700]))
            ints = triton_aio.InferInput("images", [8, 784], "INT64")
            ints.set_data_from_numpy(digits.astype(np.int64))
            for model, version, inputs in (("digits", "", [short]), ("digits", "", [ints]),
                                           ("nope", "", [tensor]), ("digits", "9", [tensor])):
                with pytest.raises(InferenceServerException) as caught:
                    await c.infer(model, inputs, model_version=version)
                errors.append((caught.value.status(), caught.value.message()))
            stats = await c.get_inference_statistics("digits", "2")
            return config, index, answers, images, errors, stats

    config, index, answers, images, errors, stats = asyncio.run(session())
    assert config["max_batch_size"] == 64 and len(index) >= 3
    pixels = {"pixels": digits.tolist()}
    code = rest(server, "POST", "/encode?model=digits&version=2", json=pixels).json()
    classified = rest(server, "POST", "/classify?model=digits&version=2", json=pixels).json()
    for z, label in answers.values():
        assert np.array_equal(z, np.array(code["z"], dtype=np.float32))
        assert label.tolist() == [p["label"] for p in classified["predictions"]]
    decoded = rest(server, "POST", "/decode?model=digits", json={
        "z": [[0.5, -1.0], [1.0, 2.0]], "label": [3, 8]},
        headers={"Accept": "application/json"}).json()
    assert np.array_equal(images, np.array(decoded["images"], dtype=np.float32))
    assert [status for status, _ in errors] == ["400", "400", "404", "404"]
    assert "shape [n, 784]" in errors[0][1] and "datatype" in errors[1][1]
    assert "nope" in errors[2][1] and "9" in errors[3][1]
    assert stats["model_stats"][0]["inference_count"] >= 16
