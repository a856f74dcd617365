"""The Open Inference Protocol routes (/v2) against real checkpoints trained on real digits.

Every answer is checked against the service's own routes (/encode, /classify, /decode) on
the same model version, so the protocol is a second door to the same computation.

The store is a copy of the conftest's template (digits: 1 untrained, 2 trained
semi_supervised; plain: unsupervised; styles: supervised) with the alias production -> 1
of digits and a clustering model "clusters"; one app serves the whole module."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from fastapi.testclient import TestClient

from aae.checkpoints import publish_model
from aae.config import AAEConfig, Mode, Precision
from aae.data import load_splits
from aae.store import CheckpointStore
from aae.training import Trainer
from service.app import create_app
from service.settings import ServiceSettings

MAX_IMAGES = 200


@pytest.fixture(scope="module")
def v2_model_dir(tmp_path_factory, template_store, fixture_data_dir):
    root = tmp_path_factory.mktemp("v2") / "models"
    shutil.copytree(template_store, root)
    store = CheckpointStore(root)
    store.set_alias("digits", "production", 1)
    cfg = AAEConfig(mode=Mode.CLUSTERING, n_classes=16, max_steps=3, validation_size=300,
                    hidden=64, precision=Precision.FP32)
    splits = load_splits(fixture_data_dir, n_labels=None, validation_size=cfg.validation_size,
                         seed=cfg.seed, download=False)
    result = Trainer(cfg, splits, device="cpu").fit()
    publish_model(store, "clusters", result.model, result.metrics)
    return root


def _app(model_dir, **settings):
    settings = {"default_model": "digits", "max_images": MAX_IMAGES, **settings}
    return create_app(ServiceSettings(model_dir=model_dir, **settings))


@pytest.fixture(scope="module")
def v2_client(v2_model_dir):
    threads = torch.get_num_threads()  # the lifespan sets torch's process-wide thread count
    with TestClient(_app(v2_model_dir)) as client:
        yield client
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits(test_digits):
    """Eight real test digits as rows of 784 pixels in [0, 1], with their labels."""
    return test_digits.images[:8], test_digits.labels[:8]


def _input(name, values: torch.Tensor, datatype="FP32", nested=False):
    data = values.tolist() if nested else values.reshape(-1).tolist()
    return {"name": name, "shape": list(values.shape), "datatype": datatype, "data": data}


def _outputs(body) -> dict[str, torch.Tensor]:
    out = {}
    for o in body["outputs"]:
        dtype = torch.float32 if o["datatype"] == "FP32" else torch.int64
        assert len(o["data"]) == math.prod(o["shape"])
        out[o["name"]] = torch.tensor(o["data"], dtype=dtype).reshape(o["shape"])
    return out


def _error(response, status):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and body["error"]
    return body["error"]


# -- health and metadata ------------------------------------------------------------------

def test_server_live_ready_and_metadata(v2_client):
    live, ready = v2_client.get("/v2/health/live"), v2_client.get("/v2/health/ready")
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.json()["default_model"] == {"name": "digits", "ready": True, "version": 1,
                                             "reason": None}
    meta = v2_client.get("/v2").json()
    app = v2_client.app
    assert meta == {"name": app.title, "version": app.version, "extensions": [
        "binary_tensor_data", "model_configuration", "model_repository", "statistics"]}


def test_server_is_ready_without_its_default_model_and_says_so(v2_model_dir, tmp_path):
    """Readiness means the server takes requests: a fresh deployment's empty store is
    ready, so that a probe never cuts off the API that would train the first model."""
    for model_dir, default in ((v2_model_dir, "missing"), (tmp_path / "empty", "digits")):
        with TestClient(_app(model_dir, default_model=default)) as other:
            assert other.get("/v2/health/live").status_code == 200
            ready = other.get("/v2/health/ready")
            assert ready.status_code == 200 and ready.json()["ready"] is True
            state = ready.json()["default_model"]
            assert (state["name"], state["ready"], state["version"]) == (default, False, None)
            assert default in state["reason"]
            readyz = other.get("/readyz")
            assert readyz.status_code == 200 and "not loadable yet" in readyz.json()["detail"]
            _error(other.get(f"/v2/models/{default}/ready"), 404)


@pytest.mark.parametrize("name, inputs, outputs", [
    ("digits", {"images": 784, "z": 2, "label": None},
     {"z": 2, "y": 10, "label": None, "images": 784}),
    ("plain", {"images": 784, "z": 2}, {"z": 2, "images": 784}),
    ("styles", {"images": 784, "z": 2, "label": None}, {"z": 2, "images": 784}),
    ("clusters", {"images": 784, "z": 2, "label": None},
     {"z": 2, "y": 16, "label": None, "images": 784}),
])
def test_model_metadata_follows_the_mode(v2_client, name, inputs, outputs):
    meta = v2_client.get(f"/v2/models/{name}").json()
    assert meta["name"] == name and meta["platform"] == "pytorch"
    assert meta["versions"] == (["1", "2"] if name == "digits" else ["1"])

    def tensors(widths):
        return [{"name": n, "shape": [-1] if w is None else [-1, w],
                 "datatype": "INT64" if n == "label" else "FP32"} for n, w in widths.items()]

    assert [{k: t[k] for k in ("name", "shape", "datatype")} for t in meta["inputs"]] \
        == tensors(inputs)
    assert [{k: t[k] for k in ("name", "shape", "datatype")} for t in meta["outputs"]] \
        == tensors(outputs)
    operations = {t["name"]: t["parameters"]["operation"] for t in meta["inputs"]}
    assert operations["images"] == "encode" and operations["z"] == "decode"


@pytest.mark.parametrize("version, served", [("1", "1"), ("2", "2"), ("latest", "2"),
                                             ("production", "1")])
def test_versions_by_number_and_alias(v2_client, version, served):
    meta = v2_client.get(f"/v2/models/digits/versions/{version}")
    assert meta.status_code == 200 and meta.json()["parameters"]["version"] == served
    assert v2_client.get(f"/v2/models/digits/versions/{version}/ready").status_code == 200


def test_model_ready(v2_client):
    assert v2_client.get("/v2/models/digits/ready").status_code == 200
    assert v2_client.get("/v2/models/plain/ready").json() == {"name": "plain", "ready": True}
    assert v2_client.get("/v2/models/digits/versions/latest/ready").json() == {
        "name": "digits", "version": "2", "ready": True}
    _error(v2_client.get("/v2/models/nope/ready"), 404)
    _error(v2_client.get("/v2/models/digits/versions/9/ready"), 404)
    _error(v2_client.get("/v2/models/digits/versions/nope/ready"), 404)


@pytest.mark.parametrize("path", ["/v2/models/nope", "/v2/models/digits/versions/7",
                                  "/v2/models/digits/versions/no-such-alias"])
def test_unknown_model_or_version_is_404(v2_client, path):
    _error(v2_client.get(path), 404)
    infer = v2_client.post(f"{path}/infer", json={"inputs": [
        _input("z", torch.zeros(1, 2))]})
    _error(infer, 404)


# -- inference ----------------------------------------------------------------------------

@pytest.mark.parametrize("nested", [False, True])
def test_images_give_the_code_and_label_of_encode_and_classify(v2_client, digits, nested):
    x, _ = digits
    response = v2_client.post("/v2/models/digits/versions/2/infer", json={
        "id": "req-7", "inputs": [_input("images", x, nested=nested)]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("digits", "2", "req-7")
    out = _outputs(body)
    assert list(out) == ["z", "y", "label"]
    assert out["z"].shape == (8, 2) and out["y"].shape == (8, 10) and out["label"].shape == (8,)
    assert [o["datatype"] for o in body["outputs"]] == ["FP32", "FP32", "INT64"]

    pixels = {"pixels": x.tolist()}
    code = v2_client.post("/encode?model=digits&version=2", json=pixels).json()
    classified = v2_client.post("/classify?model=digits&version=2", json=pixels).json()
    assert torch.allclose(out["z"], torch.tensor(code["z"]), atol=1e-5)
    assert torch.allclose(out["y"], torch.tensor(code["y"]), atol=1e-5)
    assert out["label"].tolist() == [p["label"] for p in classified["predictions"]]
    assert torch.equal(out["label"], out["y"].argmax(1))


def test_the_trained_version_labels_real_digits_far_above_chance(v2_client, test_digits):
    x, labels = test_digits.images[:MAX_IMAGES], test_digits.labels[:MAX_IMAGES]
    body = v2_client.post("/v2/models/digits/versions/latest/infer", json={
        "inputs": [_input("images", x)], "outputs": [{"name": "label"}]}).json()
    predicted = torch.tensor(body["outputs"][0]["data"])
    assert (predicted == labels).float().mean() > 0.3  # chance: 0.1


def test_images_as_28x28_and_without_id(v2_client, digits):
    x, _ = digits
    response = v2_client.post("/v2/models/digits/infer", json={
        "inputs": [_input("images", x[:2].reshape(2, 28, 28), "FP64", nested=True)]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] and body["model_version"] == "1"  # production, not latest
    flat = v2_client.post("/v2/models/digits/infer",
                          json={"inputs": [_input("images", x[:2])]})
    assert torch.allclose(_outputs(body)["z"], _outputs(flat.json())["z"])


def test_outputs_selects_what_comes_back(v2_client, digits):
    x, _ = digits
    body = v2_client.post("/v2/models/digits/infer", json={
        "inputs": [_input("images", x[:3])],
        "outputs": [{"name": "label"}, {"name": "z"}]}).json()
    assert [o["name"] for o in body["outputs"]] == ["label", "z"]
    assert body["outputs"][0]["shape"] == [3]


@pytest.mark.parametrize("name, labelled", [("digits", True), ("styles", True),
                                             ("plain", False)])
def test_z_and_label_give_the_images_of_decode(v2_client, name, labelled):
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(1)) * 2
    labels = torch.tensor([0, 4, 9])
    inputs = [_input("z", z)] + ([_input("label", labels, "INT64")] if labelled else [])
    response = v2_client.post(f"/v2/models/{name}/versions/latest/infer",
                              json={"inputs": inputs})
    assert response.status_code == 200, response.text
    out = _outputs(response.json())
    assert list(out) == ["images"] and out["images"].shape == (3, 784)

    decode = {"z": z.tolist(), **({"label": labels.tolist()} if labelled else {})}
    expected = v2_client.post(f"/decode?model={name}&version=latest", json=decode,
                           headers={"Accept": "application/json"}).json()["images"]
    assert torch.allclose(out["images"], torch.tensor(expected), atol=1e-6)
    assert out["images"].min() >= 0 and out["images"].max() <= 1


def test_decode_label_may_be_int32_column(v2_client):
    z = torch.zeros(2, 2)
    one = v2_client.post("/v2/models/digits/infer", json={"inputs": [
        _input("z", z), _input("label", torch.tensor([[3], [7]]), "INT32")]})
    assert one.status_code == 200, one.text
    images = _outputs(one.json())["images"]
    assert not torch.allclose(images[0], images[1])  # the class changes the image


# -- errors -------------------------------------------------------------------------------

def _image_input(**changes):
    return {**_input("images", torch.full((1, 784), 0.5)), **changes}


@pytest.mark.parametrize("inputs, outputs, words", [
    ([_image_input(shape=[1, 783], data=[0.5] * 783)], None, "shape [n, 784]"),
    ([_image_input(shape=[2, 784])], None, "needs 1568"),
    ([_image_input(datatype="INT64", data=[0] * 784)], None, "datatype"),
    ([_image_input(datatype="BYTES")], None, "datatype"),
    ([_image_input(data=[0.5] * 783 + ["x"])], None, "numbers"),
    ([_image_input(data=[[0.5] * 784, [0.5] * 3])], None, "equal lengths"),
    ([_image_input(data=[2.0] * 784)], None, "[0, 1]"),
    ([_image_input(shape=[0, 784], data=[])], None, "at least one"),
    ([_image_input()], [{"name": "images"}], "unknown output"),
    ([_image_input()], [{"name": "nope"}], "unknown output"),
    ([_image_input(), _input("z", torch.zeros(1, 2))], None, "unexpected input 'z'"),
    ([_input("z", torch.zeros(1, 2)), _input("y", torch.zeros(1, 10))], None,
     "unexpected input 'y'"),
    ([_image_input(), _image_input()], None, "once"),
    ([_input("pixels", torch.zeros(1, 784))], None, "'images'"),
    ([_input("z", torch.zeros(1, 2))], None, "label"),
    ([_input("z", torch.zeros(1, 3)), _input("label", torch.tensor([1]), "INT64")], None,
     "shape [n, 2]"),
    ([_input("z", torch.zeros(1, 2)), _input("label", torch.tensor([10]), "INT64")], None,
     "0..9"),
    ([_input("z", torch.zeros(2, 2)), _input("label", torch.tensor([1]), "INT64")], None,
     "shape [2]"),
    ([_input("z", torch.zeros(1, 2)), _input("label", torch.tensor([1.5]), "INT64")], None,
     "integers"),
    ([_input("z", torch.zeros(1, 2)), _input("label", torch.tensor([1]), "FP32")], None,
     "datatype"),
    ([], None, "inputs"),
])
def test_bad_requests_are_400(v2_client, inputs, outputs, words):
    body = {"inputs": inputs, **({"outputs": outputs} if outputs else {})}
    message = _error(v2_client.post("/v2/models/digits/infer", json=body), 400)
    assert words in message


def test_malformed_bodies_are_400_in_the_v2_shape(v2_client):
    _error(v2_client.post("/v2/models/digits/infer", json={"input": []}), 400)
    _error(v2_client.post("/v2/models/digits/infer", json={"inputs": [{"name": "z"}]}), 400)
    _error(v2_client.post("/v2/models/digits/infer", content=b"{not json",
                          headers={"content-type": "application/json"}), 400)


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity", "1e39"])
def test_non_finite_numbers_are_400(v2_client, bad):
    """Python's JSON parser reads NaN and Infinity; 1e39 overflows FP32."""
    images = ('{"inputs": [{"name": "images", "shape": [1, 784], "datatype": "FP32", '
              f'"data": [{", ".join(["0.5"] * 783 + [bad])}]}}]}}')
    codes = ('{"inputs": [{"name": "z", "shape": [1, 2], "datatype": "FP32", '
             f'"data": [0.5, {bad}]}}]}}')
    for model, body in (("digits", images), ("plain", codes)):
        response = v2_client.post(f"/v2/models/{model}/infer", content=body,
                                  headers={"content-type": "application/json"})
        assert "finite" in _error(response, 400)


def test_label_on_an_unsupervised_model_is_400(v2_client):
    message = _error(v2_client.post("/v2/models/plain/infer", json={"inputs": [
        _input("z", torch.zeros(1, 2)), _input("label", torch.tensor([1]), "INT64")]}), 400)
    assert "unsupervised" in message


def test_a_batch_over_the_limit_is_refused(v2_client):
    n = MAX_IMAGES + 1
    _error(v2_client.post("/v2/models/plain/infer", json={"inputs": [
        _input("z", torch.zeros(n, 2))]}), 413)


def test_openapi_documents_the_protocol_bodies(v2_client):
    schema = v2_client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    for name in ("InferenceRequest", "InferenceResponse", "MetadataTensor",
                 "ModelMetadataPublic", "ServerMetadataPublic", "ErrorPublic"):
        assert name in components
    paths = schema["paths"]
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{name}",
                 "/v2/models/{name}/versions/{version}", "/v2/models/{name}/ready",
                 "/v2/models/{name}/versions/{version}/ready", "/v2/models/{name}/infer",
                 "/v2/models/{name}/versions/{version}/infer"):
        assert path in paths
        for operation in paths[path].values():  # errors are 4XX {"error"}, never 422
            assert "422" not in operation["responses"]
