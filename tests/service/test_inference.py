"""The inference routes through real HTTP, on models trained on real digits.

Answers are checked against the library (``aae.checkpoints.load_model`` on the same store):
the service must compute what the model computes, whatever form the images came in.
"""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from aae.checkpoints import load_model, publish_model
from aae.config import Precision
from aae.data import splits_for
from aae.digits import normalize, read_image
from aae.presets import build_config
from aae.training import Trainer

# -- helpers --------------------------------------------------------------------------------


def open_png(content: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(content))
    image.load()
    assert image.format == "PNG"
    return image


def as_row(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32).reshape(-1) / 255)


def png_pixels(content: bytes) -> torch.Tensor:
    return as_row(open_png(content))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def multipart(*files: bytes, content_type: str = "image/png") -> list:
    return [("file", (f"digit{i}.png", data, content_type)) for i, data in enumerate(files)]


def eventually(probe, timeout: float = 2.0):
    """Call ``probe`` until it returns a truthy value or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def pixel_row(value: str, n: int = 784) -> str:
    """JSON text of a row of ``n`` copies of the literal ``value``."""
    return "[" + ",".join([value] * n) + "]"


def library(store, name="digits", version=None):
    return load_model(store, name, version)[1]


def pillow_pixels(data: bytes) -> torch.Tensor:
    """The documented decoding with normalize=none: ITU-R 601-2 luma, Lanczos resize to
    28x28, / 255."""
    image = Image.open(io.BytesIO(data)).convert("L")
    if image.size != (28, 28):
        image = image.resize((28, 28), Image.Resampling.LANCZOS)
    return as_row(image)


# -- encode: every input form ---------------------------------------------------------------

# (name, request kwargs builder): forms that carry the digits' exact pixels
EXACT_FORMS = {
    "multipart": lambda f, ids: {"files": multipart(*(f.png(i) for i in ids))},
    "raw png": lambda f, ids: {"content": f.png(ids[0]),
                               "headers": {"content-type": "image/png"}},
    "octet-stream": lambda f, ids: {"content": f.png(ids[0]),
                                    "headers": {"content-type": "application/octet-stream"}},
    "json pixels": lambda f, ids: {"json": {"pixels": (
        f.pixels(ids[0]).tolist() if len(ids) == 1 else [f.pixels(i).tolist() for i in ids])}},
    "json image": lambda f, ids: {"json": {"image": b64(f.png(ids[0]))}},
    "json images": lambda f, ids: {"json": {"images": [b64(f.png(i)) for i in ids]}},
    "data url": lambda f, ids: {"json": {"image": "data:image/png;base64," + b64(f.png(ids[0]))}},
}
SEVERAL = {"multipart", "json pixels", "json images"}  # the forms that carry several images


@pytest.mark.parametrize("form, ids", [(form, [0]) for form in EXACT_FORMS]
                         + [(form, [3, 1, 4, 1, 5]) for form in SEVERAL])
def test_encode_gives_the_library_code_whatever_the_form(client, store, image_files, form, ids):
    response = client.post("/encode", **EXACT_FORMS[form](image_files, ids))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["model"], body["version"]) == ("digits", 2)
    expected = library(store).encode(torch.stack([image_files.pixels(i) for i in ids]))
    z, y = torch.tensor(body["z"]), torch.tensor(body["y"])
    assert z.shape == (len(ids), 2) and y.shape == (len(ids), 10)
    torch.testing.assert_close(z, expected.z, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y, expected.y, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y.sum(1), torch.ones(len(ids)))


@pytest.mark.parametrize("kind", ["jpeg", "rgb_png", "large_png"])
def test_encode_with_normalize_none_converts_colour_jpeg_and_sizes_like_pillow(
        client, store, image_files, kind):
    data = getattr(image_files, kind)(2)
    content_type = "image/jpeg" if kind == "jpeg" else "image/png"
    response = client.post("/encode?normalize=none", content=data,
                           headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    expected = library(store).encode(pillow_pixels(data))
    torch.testing.assert_close(torch.tensor(response.json()["z"]), expected.z,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["jpeg", "rgb_png", "large_png"])
def test_encode_makes_colour_jpeg_and_other_sizes_mnist_inputs(client, store, image_files,
                                                               kind):
    data = getattr(image_files, kind)(2)
    content_type = "image/jpeg" if kind == "jpeg" else "image/png"
    response = client.post("/encode?return_input=true", content=data,
                           headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    body = response.json()
    seen = torch.tensor(body["inputs"][0])
    expected = torch.from_numpy(normalize(read_image(data)).ravel())
    torch.testing.assert_close(seen, expected)
    torch.testing.assert_close(torch.tensor(body["z"]), library(store).encode(seen).z,
                               rtol=1e-4, atol=1e-4)


def test_encode_with_an_unsupervised_model_has_no_y(client, store, image_files):
    response = client.post("/encode?model=plain", files=multipart(image_files.png(0)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "plain" and body["version"] == 1 and body["y"] is None
    torch.testing.assert_close(torch.tensor(body["z"]),
                               library(store, "plain").encode(image_files.pixels(0)).z,
                               rtol=1e-4, atol=1e-4)


def test_multipart_ignores_form_fields_that_are_not_files(client, image_files):
    response = client.post("/encode", data={"note": "hello"},
                           files=multipart(image_files.png(0), image_files.png(1)))
    assert response.status_code == 200, response.text
    assert len(response.json()["z"]) == 2


# -- classify ------------------------------------------------------------------------------


def test_classify_one_digit_matches_the_library(client, store, image_files):
    response = client.post("/classify", content=image_files.png(0),
                           headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    body = response.json()
    probabilities = torch.tensor(body["probabilities"])
    assert probabilities.shape == (10,) and (probabilities >= 0).all()
    assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-5)
    expected = library(store).classify(image_files.pixels(0))[0]
    assert body["label"] == int(expected.argmax()) == int(probabilities.argmax())
    torch.testing.assert_close(probabilities, expected, rtol=1e-4, atol=1e-5)
    assert body["predictions"] == [{"label": body["label"],
                                    "probabilities": body["probabilities"]}]


def test_classify_real_test_digits_far_above_chance(client, store, image_files):
    n = 50
    response = client.post("/classify", files=multipart(*(image_files.png(i) for i in range(n))))
    assert response.status_code == 200, response.text
    body = response.json()
    assert "label" not in body and "probabilities" not in body  # only for one image
    labels = torch.tensor([p["label"] for p in body["predictions"]])
    truth = image_files.digits.labels[:n]
    expected = library(store).classify(image_files.inputs(n)).argmax(1)
    assert torch.equal(labels, expected)
    accuracy = (labels == truth).float().mean().item()
    assert accuracy >= 0.4, f"accuracy {accuracy:.2f} (chance is 0.10)"
    # the untrained version 1 is near chance: version selection reaches the model
    untrained = client.post("/classify?version=1",
                            files=multipart(*(image_files.png(i) for i in range(n)))).json()
    assert untrained["version"] == 1
    untrained_accuracy = (torch.tensor([p["label"] for p in untrained["predictions"]])
                          == truth).float().mean().item()
    assert untrained_accuracy < accuracy - 0.2


def test_a_model_of_the_default_preset_is_served_as_it_classifies_in_training(
        store, make_client, image_files, fixture_data_dir):
    """The default preset's semi-supervised recipe (VAT, its moving average of the weights,
    the encoder's batch norm where it has one), trained briefly and published: the service
    answers what the trained model answers, batch norm on its running statistics, so one
    digit alone gets the label it gets among others."""
    cfg = build_config("default", mode="semi_supervised", n_labels=100, max_steps=20,
                       validation_size=300, hidden=64, precision=Precision.FP32)
    assert cfg.ema_decay > 0 and cfg.vat_weight > 0
    result = Trainer(cfg, splits_for(cfg, fixture_data_dir, download=False), device="cpu").fit()
    publish_model(store, "preset-default", result.model, result.metrics)
    client = make_client()
    n = 20
    response = client.post("/classify?model=preset-default",
                           files=multipart(*(image_files.png(i) for i in range(n))))
    assert response.status_code == 200, response.text
    served = torch.tensor([p["probabilities"] for p in response.json()["predictions"]])
    expected = result.model.classify(image_files.inputs(n))
    torch.testing.assert_close(served, expected, rtol=1e-4, atol=1e-5)
    one = client.post("/classify?model=preset-default", content=image_files.png(3),
                      headers={"content-type": "image/png"}).json()
    torch.testing.assert_close(torch.tensor(one["probabilities"]), expected[3],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("model", ["plain", "styles"])
def test_classify_refuses_a_model_without_a_categorical_code(client, image_files, problem,
                                                             model):
    response = client.post(f"/classify?model={model}", files=multipart(image_files.png(0)))
    mode = {"plain": "unsupervised", "styles": "supervised"}[model]
    problem(response, 409, f"{model} version 1 is a {mode} model and has no categorical code "
            "to classify with; use a semi_supervised or clustering model")


# -- reconstruct ---------------------------------------------------------------------------


@pytest.mark.parametrize("model, query", [("digits", ""), ("plain", ""), ("styles", "&label=7")])
def test_reconstruct_json_matches_the_library(client, store, image_files, model, query):
    ids = [0, 1, 2]
    response = client.post(f"/reconstruct?model={model}{query}",
                           files=multipart(*(image_files.png(i) for i in ids)),
                           headers={"accept": "application/json"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    images = torch.tensor(response.json()["images"])
    x = torch.stack([image_files.pixels(i) for i in ids])
    labels = 7 if model == "styles" else None
    expected = library(store, model).reconstruct(x, labels=labels)
    assert images.shape == (3, 784) and images.min() >= 0 and images.max() <= 1
    torch.testing.assert_close(images, expected, rtol=1e-4, atol=1e-4)


def test_reconstruct_png_is_the_28x28_picture_of_the_json(client, image_files):
    url = "/reconstruct"
    as_png = client.post(url, content=image_files.png(0), headers={"content-type": "image/png"})
    assert as_png.status_code == 200 and as_png.headers["content-type"] == "image/png"
    assert as_png.headers["x-model"] == "digits" and as_png.headers["x-model-version"] == "2"
    image = open_png(as_png.content)
    assert image.mode == "L" and image.size == (28, 28)
    as_json = client.post(url, content=image_files.png(0),
                          headers={"content-type": "image/png", "accept": "application/json"})
    pixels = torch.tensor(as_json.json()["images"][0])
    torch.testing.assert_close(png_pixels(as_png.content), pixels, atol=0.5 / 255 + 1e-6,
                               rtol=0)


def test_reconstruct_several_images_is_a_grid(client, image_files):
    response = client.post("/reconstruct?scale=2",
                           files=multipart(*(image_files.png(i) for i in range(3))))
    assert response.status_code == 200, response.text
    assert open_png(response.content).size == (2 * 56, 2 * 56)  # 2x2 tiles, 1 empty


def test_reconstruct_with_a_supervised_model_needs_the_label(client, image_files, problem):
    response = client.post("/reconstruct?model=styles", files=multipart(image_files.png(0)))
    problem(response, 422, "styles is a supervised model: it reconstructs an image given its "
            "label in 0..9")
    response = client.post("/reconstruct?model=styles&label=10",
                           files=multipart(image_files.png(0)))
    problem(response, 422, "label must be in 0..9")


# -- decode --------------------------------------------------------------------------------


@pytest.mark.parametrize("model, label", [("digits", 3), ("plain", None), ("styles", 3)])
def test_decode_one_code_to_a_png_and_json(client, store, model, label):
    body = {"z": [0.5, -1.0]} | ({} if label is None else {"label": label})
    response = client.post(f"/decode?model={model}", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = open_png(response.content)
    assert image.mode == "L" and image.size == (28, 28)
    as_json = client.post(f"/decode?model={model}", json=body,
                          headers={"accept": "application/json"})
    assert as_json.status_code == 200 and as_json.json()["model"] == model
    images = torch.tensor(as_json.json()["images"])
    expected = library(store, model).decode(torch.tensor([[0.5, -1.0]]), labels=label)
    torch.testing.assert_close(images, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(png_pixels(response.content), images[0], atol=0.5 / 255 + 1e-6,
                               rtol=0)


@pytest.mark.parametrize("n, size", [(2, (56, 28)), (4, (56, 56)), (5, (84, 56)),
                                     (10, (112, 84))])
def test_decode_a_batch_is_a_grid_ceil_sqrt_n_across(client, store, n, size):
    z = torch.linspace(-3, 3, 2 * n).reshape(n, 2)
    labels = [i % 10 for i in range(n)]
    response = client.post("/decode", json={"z": z.tolist(), "label": labels})
    assert response.status_code == 200, response.text
    assert open_png(response.content).size == size
    as_json = client.post("/decode", json={"z": z.tolist(), "label": labels},
                          headers={"accept": "application/json"})
    torch.testing.assert_close(torch.tensor(as_json.json()["images"]),
                               library(store).decode(z, labels=labels), rtol=1e-4, atol=1e-4)


def test_decode_one_label_serves_every_code(client, store):
    z = [[0.0, 0.0], [1.0, 1.0]]
    one = client.post("/decode", json={"z": z, "label": 4},
                      headers={"accept": "application/json"}).json()["images"]
    each = client.post("/decode", json={"z": z, "label": [4, 4]},
                       headers={"accept": "application/json"}).json()["images"]
    assert one == each


@pytest.mark.parametrize("scale", [1, 3, 16])
def test_decode_scale_enlarges_each_pixel(client, scale):
    response = client.post(f"/decode?scale={scale}", json={"z": [0.0, 0.0], "label": 1})
    assert response.status_code == 200, response.text
    image = open_png(response.content)
    assert image.size == (28 * scale, 28 * scale)
    small = open_png(client.post("/decode", json={"z": [0.0, 0.0], "label": 1}).content)
    assert image.resize((28, 28), Image.Resampling.NEAREST).tobytes() == small.tobytes()


# -- sample --------------------------------------------------------------------------------


def test_sample_is_a_grid_repeatable_by_seed(client):
    first = client.get("/sample?label=7&n=16&seed=1")
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "image/png"
    image = open_png(first.content)
    assert image.mode == "L" and image.size == (112, 112)
    assert client.get("/sample?label=7&n=16&seed=1").content == first.content
    assert client.get("/sample?label=7&n=16&seed=2").content != first.content
    assert client.get("/sample?label=3&n=16&seed=1").content != first.content


@pytest.mark.parametrize("model, query", [("digits", "label=7"), ("digits", ""),
                                          ("plain", ""), ("styles", "label=2"),
                                          ("styles", "")])
def test_sample_json_variant(client, model, query):
    url = f"/sample?model={model}&n=5&seed=3&{query}"
    response = client.get(url, headers={"accept": "application/json"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == model and body["version"] == (2 if model == "digits" else 1)
    images = torch.tensor(body["images"])
    assert images.shape == (5, 784) and images.min() >= 0 and images.max() <= 1
    assert images.std(0).mean() > 0  # five different draws
    again = client.get(url, headers={"accept": "application/json"}).json()
    assert again["images"] == body["images"]
    png = client.get(url)
    torch.testing.assert_close(png_pixels(png.content).reshape(56, 84)[:28, :28].reshape(-1),
                               images[0], atol=0.5 / 255 + 1e-6, rtol=0)


def test_sample_without_a_seed_differs(client):
    assert client.get("/sample?n=4").content != client.get("/sample?n=4").content


def test_sample_decodes_prior_draws_of_the_label(client, store):
    """The same draw as the library: z from the prior with the seeded generator, then P."""
    body = client.get("/sample?label=7&n=3&seed=11",
                      headers={"accept": "application/json"}).json()
    model = library(store)
    z = model.prior.sample(3, torch.Generator().manual_seed(11), None)
    torch.testing.assert_close(torch.tensor(body["images"]), model.decode(z, labels=7),
                               rtol=1e-4, atol=1e-4)


# -- which model serves --------------------------------------------------------------------


@pytest.mark.parametrize("query, served", [
    ("", ("digits", 2)),
    ("?version=latest", ("digits", 2)),
    ("?version=1", ("digits", 1)),
    ("?model=digits&version=2", ("digits", 2)),
    ("?model=plain", ("plain", 1)),
    ("?model=styles&version=latest", ("styles", 1)),
])
def test_model_and_version_selection(client, image_files, query, served):
    response = client.post(f"/encode{query}", files=multipart(image_files.png(0)))
    assert response.status_code == 200, response.text
    assert (response.json()["model"], response.json()["version"]) == served


def test_versions_really_differ(client, image_files):
    z = [client.post(f"/encode?version={v}", files=multipart(image_files.png(0))).json()["z"]
         for v in (1, 2)]
    assert z[0] != z[1]


def served_version(client, image_files, query="") -> int:
    response = client.post(f"/encode{query}", files=multipart(image_files.png(0)))
    assert response.status_code == 200, response.text
    return response.json()["version"]


def test_production_alias_set_through_the_api_becomes_the_default(client, image_files):
    assert served_version(client, image_files) == 2
    response = client.put("/models/digits/aliases/production", json={"version": 1})
    assert response.status_code == 200, response.text
    assert eventually(lambda: served_version(client, image_files) == 1, timeout=1.0)
    assert served_version(client, image_files, "?version=production") == 1
    assert served_version(client, image_files, "?version=latest") == 2


def test_alias_moved_behind_the_apps_back_takes_effect_within_the_refresh(client, store,
                                                                           image_files):
    assert served_version(client, image_files) == 2  # resolution now cached
    store.set_alias("digits", "production", 1)
    start = time.monotonic()
    assert eventually(lambda: served_version(client, image_files) == 1)
    assert time.monotonic() - start < 1.0  # alias_refresh_s is 0.2


def test_hot_published_version_serves_at_once_and_becomes_latest(client, store, image_files,
                                                                  trained_models):
    assert served_version(client, image_files) == 2
    version = publish_model(store, "digits", trained_models["digits"].model, {"note": "hot"})
    assert version == 3
    assert served_version(client, image_files, f"?version={version}") == 3  # no wait
    start = time.monotonic()
    assert eventually(lambda: served_version(client, image_files) == 3)
    assert time.monotonic() - start < 1.0
    assert client.get("/models/digits").json()["versions"] == [1, 2, 3]


def test_deleted_version_stops_being_served(client, store, image_files, trained_models,
                                            problem):
    version = publish_model(store, "digits", trained_models["digits"].model, {})
    assert served_version(client, image_files, f"?version={version}") == version
    assert served_version(client, image_files) == version
    assert client.delete(f"/models/digits/versions/{version}").status_code == 204
    response = client.post(f"/encode?version={version}", files=multipart(image_files.png(0)))
    problem(response, 404, f"model 'digits' has no version {version}")
    assert served_version(client, image_files) == 2


def test_version_deleted_behind_the_apps_back_stops_within_the_refresh(client, store,
                                                                      image_files):
    assert served_version(client, image_files, "?version=1") == 1  # loaded and cached
    store.delete_version("digits", 1)

    def gone():
        return client.post("/encode?version=1",
                           files=multipart(image_files.png(0))).status_code == 404
    assert eventually(gone, timeout=1.0)


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("query, detail", [
    ("?model=nope", "no model named 'nope'"),
    ("?version=9", "model 'digits' has no version 9"),
    ("?version=staging", "model 'digits' has no alias 'staging'"),
    ("?model=nope&version=3", "no model named 'nope'"),
])
@pytest.mark.parametrize("route", ["/encode", "/classify", "/reconstruct", "/decode"])
def test_unknown_model_or_version_is_404(client, image_files, problem, route, query, detail):
    kwargs = ({"json": {"z": [0.0, 0.0], "label": 1}} if route == "/decode"
              else {"files": multipart(image_files.png(0))})
    problem(client.post(route + query, **kwargs), 404, detail)


@pytest.mark.parametrize("query", ["?model=nope", "?version=9"])
def test_unknown_model_or_version_is_404_on_sample(client, problem, query):
    problem(client.get("/sample" + query), 404)


@pytest.mark.parametrize("query, detail", [
    ("?model=..", "invalid model name '..': use 1-64 letters, digits, '.', '_' or '-', "
                  "starting with a letter or digit"),
    ("?version=0", "invalid version 0: versions are positive integers"),
    ("?version=-1", "invalid alias '-1': use 1-64 letters, digits, '.', '_' or '-', "
                    "starting with a letter or digit"),
])
def test_invalid_model_or_version_name_is_422(client, image_files, problem, query, detail):
    problem(client.post("/encode" + query, files=multipart(image_files.png(0))), 422, detail)


@pytest.mark.parametrize("content_type, body, detail", [
    ("image/png", b"this is not an image", "cannot decode the image: cannot identify image file"),
    ("application/octet-stream", b"\x00" * 100,
     "cannot decode the image: cannot identify image file"),
    ("image/png", b"", "the body is empty"),
    ("multipart/form-data", b"--x\r\n\r\n--x--", "multipart body without a boundary"),
    ("multipart/form-data; boundary=x",
     b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nhello\r\n--x--\r\n',
     "the multipart body has no file part"),
    ("multipart/form-data; boundary=x", b"--x\r\nno blank line--x--\r\n",
     "malformed multipart part"),
])
def test_body_that_is_not_an_image_is_400(client, problem, content_type, body, detail):
    response = client.post("/encode", content=body, headers={"content-type": content_type})
    problem(response, 400, detail)


@pytest.mark.parametrize("form", ["raw", "multipart", "base64"])
def test_undecodable_image_is_400(client, image_files, problem, form):
    data = image_files.png(0)
    broken = data[:len(data) // 2]  # a PNG cut in the middle of its pixel data
    kwargs = {"raw": {"content": broken, "headers": {"content-type": "image/png"}},
              "multipart": {"files": multipart(broken)},
              "base64": {"json": {"image": b64(broken)}}}[form]
    body = problem(client.post("/encode", **kwargs), 400)
    assert body["detail"].startswith("cannot decode the image: ")
    assert "BytesIO" not in body["detail"]


@pytest.mark.parametrize("text", ["not base64!", "data:image/png;base64,@@@@"])
def test_invalid_base64_is_400(client, problem, text):
    problem(client.post("/encode", json={"image": text}), 400, "image is not valid base64")


@pytest.mark.parametrize("form", ["raw", "multipart", "base64"])
def test_too_many_pixels_is_413(make_client, image_files, problem, form):
    client = make_client(max_image_pixels=1000)
    data = image_files.large_png(0)  # 56x56 = 3136 pixels
    kwargs = {"raw": {"content": data, "headers": {"content-type": "image/png"}},
              "multipart": {"files": multipart(data)},
              "base64": {"json": {"images": [b64(data)]}}}[form]
    problem(client.post("/encode", **kwargs), 413,
            "image of 56x56 pixels is over the limit of 1000 pixels")
    assert client.post("/encode", files=multipart(image_files.png(0))).status_code == 200


@pytest.mark.parametrize("route", ["/encode", "/decode"])
def test_body_over_the_size_limit_is_413(make_client, image_files, problem, route):
    client = make_client(max_upload_bytes=2000)
    body = (b'{"pixels": ' + str(image_files.pixels(0).tolist()).encode() + b"}"
            if route == "/encode" else b'{"z": [0.0, 0.0], "label": 1' + b" " * 5000 + b"}")
    response = client.post(route, content=body, headers={"content-type": "application/json"})
    problem(response, 413, f"request body of {len(body)} bytes is over the limit of 2000")
    assert client.post("/encode", files=multipart(image_files.png(0))).status_code == 200


@pytest.mark.parametrize("route", ["/encode", "/decode"])
def test_streamed_body_over_the_size_limit_is_413(make_client, image_files, problem, route):
    """Without a Content-Length, the limit still holds while the body streams in."""
    client = make_client(max_upload_bytes=2000)
    chunk = image_files.png(0) if route == "/encode" else b" " * 500
    response = client.post(route, content=iter([chunk] * 20),
                           headers={"content-type": "image/png" if route == "/encode"
                                    else "application/json"})
    problem(response, 413, "request body is over the limit of 2000 bytes")


def test_streamed_body_under_the_limit_is_served(make_client, image_files):
    client = make_client(max_upload_bytes=2000)
    data = image_files.png(0)
    chunks = iter([data[:100], data[100:]])
    response = client.post("/encode", content=chunks, headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("form", ["multipart", "pixels", "images"])
def test_too_many_images_is_413(make_client, image_files, problem, form):
    client = make_client(max_images=2)
    kwargs = {"multipart": {"files": multipart(*(image_files.png(i) for i in range(3)))},
              "pixels": {"json": {"pixels": [image_files.pixels(i).tolist() for i in range(3)]}},
              "images": {"json": {"images": [b64(image_files.png(i)) for i in range(3)]}}}[form]
    body = problem(client.post("/encode", **kwargs), 413)
    assert body["detail"].startswith("3 images is over the limit of 2")


def test_too_many_codes_is_413(make_client, problem):
    client = make_client(max_images=2)
    problem(client.post("/decode", json={"z": [[0.0, 0.0]] * 3, "label": 1}), 413,
            "3 codes is over the limit of 2")


@pytest.mark.parametrize("z", [[0.0], [0.0, 1.0, 2.0], [[0.0, 1.0], [0.0]]])
def test_wrong_latent_length_is_422(client, problem, z):
    problem(client.post("/decode", json={"z": z, "label": 1}), 422,
            "each code z must have 2 numbers for digits version 2")


@pytest.mark.parametrize("z", [[], [[]]])
def test_empty_code_is_422(client, problem, z):
    problem(client.post("/decode", json={"z": z, "label": 1}), 422,
            "z must hold at least one code")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_z_is_422(client, problem, literal):
    body = f'{{"z": [[0.5, {literal}]], "label": 1}}'.encode()
    response = client.post("/decode", content=body, headers={"content-type": "application/json"})
    problem(response, 422, "z must hold finite numbers")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e999"])
def test_non_finite_pixels_are_422(client, problem, literal):
    body = f'{{"pixels": {pixel_row("0.5", 783)[:-1]}, {literal}]}}'.encode()
    response = client.post("/encode", content=body, headers={"content-type": "application/json"})
    problem(response, 422, "pixels must be finite numbers")


@pytest.mark.parametrize("url, body, detail", [
    ("/decode", {"z": [0.0, 0.0], "label": 10}, "label must be in 0..9"),
    ("/decode", {"z": [0.0, 0.0], "label": -1}, "label must be in 0..9"),
    ("/decode", {"z": [[0.0, 0.0]] * 2, "label": [1, 12]}, "label must be in 0..9"),
    ("/decode", {"z": [[0.0, 0.0]] * 2, "label": [1, 2, 3]}, "got 3 labels for 2 codes"),
    ("/decode", {"z": [0.0, 0.0]}, "digits is a semi_supervised model: give a label in 0..9"),
    ("/decode?model=styles", {"z": [0.0, 0.0]},
     "styles is a supervised model: give a label in 0..9"),
    ("/decode?model=plain", {"z": [0.0, 0.0], "label": 1},
     "plain is an unsupervised model and takes no label"),
    ("/sample?label=10", None, "label must be in 0..9"),
    ("/sample?model=plain&label=1", None, "plain is an unsupervised model and takes no label"),
])
def test_bad_label_is_422(client, problem, url, body, detail):
    response = client.get(url) if body is None else client.post(url, json=body)
    problem(response, 422, detail)


@pytest.mark.parametrize("url", ["/sample?label=-1", "/sample?label=100", "/sample?n=0",
                                 "/sample?scale=17", "/sample?seed=-1", "/sample?n=many"])
def test_out_of_range_query_is_422_with_its_location(client, problem, url):
    body = problem(client.get(url), 422)
    parameter = url.split("?")[1].split("=")[0]
    assert body["errors"][0]["loc"] == ["query", parameter]
    assert body["detail"].startswith(f"query.{parameter}: ")


def test_n_over_the_limit_is_422(client, make_client, problem):
    problem(client.get("/sample?n=257"), 422, "n=257 is over the limit of 256")
    small = make_client(max_samples=4)
    problem(small.get("/sample?n=5"), 422, "n=5 is over the limit of 4")
    assert small.get("/sample?n=4").status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml",
                                          "application/x-www-form-urlencoded"])
@pytest.mark.parametrize("route", ["/encode", "/classify", "/reconstruct"])
def test_unsupported_content_type_is_415(client, problem, route, content_type):
    response = client.post(route, content=b"a=1", headers={"content-type": content_type})
    problem(response, 415, f"cannot read images from {content_type!r}: send "
            "multipart/form-data, an image/* body or application/json")


MUST_HOLD = ('JSON body must hold "pixels", "image" (base64) or "images" '
             "(a list of base64 strings)")


@pytest.mark.parametrize("body, detail", [
    pytest.param("[1, 2]", 'JSON body must be an object with "pixels", "image" or "images"',
                 id="not an object"),
    pytest.param('{"foo": 1}', MUST_HOLD, id="no known key"),
    pytest.param('{"images": []}', MUST_HOLD, id="no images"),
    pytest.param('{"image": 5}', MUST_HOLD, id="image not a string"),
    pytest.param('{"pixels": []}', "pixels must be a list of 784 numbers or a list of such "
                 "lists", id="no pixels"),
    pytest.param('{"pixels": "abc"}', "pixels must be a list of 784 numbers or a list of such "
                 "lists", id="pixels not a list"),
    pytest.param('{"pixels": [0.5, 0.5]}', "image 0 must have 784 pixels, got 2", id="short"),
    pytest.param('{"pixels": [[0.5], 0.5]}', "image 0 must have 784 pixels, got 1",
                 id="short row"),
    pytest.param(f'{{"pixels": [{pixel_row("0.5")}, 3]}}', "image 1 must have 784 pixels, "
                 "got int", id="row not a list"),
    pytest.param(f'{{"pixels": {pixel_row(chr(34) + "a" + chr(34))}}}',
                 "image 0: pixels must be numbers", id="strings"),
    pytest.param(f'{{"pixels": {pixel_row("true")}}}', "image 0: pixels must be numbers",
                 id="booleans"),
    pytest.param(f'{{"pixels": {pixel_row("2")}}}', "pixels must lie in [0, 1]", id="over 1"),
    pytest.param(f'{{"pixels": {pixel_row("-0.1")}}}', "pixels must lie in [0, 1]",
                 id="negative"),
])
def test_wrong_json_shape_is_422(client, problem, body, detail):
    response = client.post("/encode", content=body.encode(),
                           headers={"content-type": "application/json"})
    problem(response, 422, detail)


def test_invalid_json_is_400(client, problem):
    """An unparseable body is a 400, as the README says (issue 12: it was a 422 here)."""
    response = client.post("/encode", content=b'{"pixels": [', headers={
        "content-type": "application/json"})
    assert problem(response, 400)["detail"].startswith("body is not valid JSON: ")


@pytest.mark.parametrize("body", ['{"z": "abc"}', '{"z": [0, 0], "label": 1, "extra": 1}',
                                  '{"label": 1}', '{"z": [0, 0], "label": 1.5}', "[0, 0]"])
def test_wrong_decode_body_is_422_with_errors(client, problem, body):
    response = client.post("/decode", content=body.encode(),
                           headers={"content-type": "application/json"})
    problem_body = problem(response, 422)
    assert problem_body["title"] == "Invalid request"
    assert problem_body["errors"] and all(e["loc"][0] == "body" for e in problem_body["errors"])


# -- bugs found by fuzzing and review, now fixed ----------------------------------------


@pytest.mark.parametrize("label", ["9223372036854775808", "[1, 99999999999999999999]"])
def test_decode_label_beyond_int64_is_422(client, problem, label):
    body = f'{{"z": [[0.0, 0.0], [0.0, 0.0]], "label": {label}}}'.encode()
    response = client.post("/decode", content=body, headers={"content-type": "application/json"})
    problem(response, 422)


def test_pixel_integer_beyond_float_range_is_422(client, problem):
    huge = "1" + "0" * 400
    body = f'{{"pixels": {pixel_row("0", 783)[:-1]}, {huge}]}}'.encode()
    response = client.post("/encode", content=body, headers={"content-type": "application/json"})
    problem(response, 422)


def test_decode_unsupported_content_type_is_415(client, problem):
    response = client.post("/decode", content=b"z=1", headers={"content-type": "text/plain"})
    problem(response, 415)


def test_reconstruct_refuses_a_label_for_models_that_infer_the_class(client, image_files,
                                                                     problem):
    response = client.post("/reconstruct?model=plain&label=3",
                           files={"file": ("d.png", image_files.png(), "image/png")})
    assert "takes no label" in problem(response, 422)["detail"]


# -- uploads made MNIST's way ---------------------------------------------------------------


def photo(image_files, i: int) -> bytes:
    """Digit ``i`` as a phone might see it: dark ink on light grey paper, lit from one
    side, small and off-centre in a 160x120 JPEG."""
    rows, cols = np.mgrid[0:120, 0:160]
    page = 0.75 + 0.15 * cols / 160 - 0.05 * rows / 120
    ink = np.asarray(image_files.picture(i).resize((42, 42), Image.Resampling.BICUBIC),
                     np.float32) / 255
    page[60:102, 20:62] -= 0.6 * ink
    out = io.BytesIO()
    Image.fromarray((np.clip(page, 0, 1) * 255).astype(np.uint8)).save(out, "JPEG",
                                                                       quality=80)
    return out.getvalue()


def test_a_photo_of_a_digit_is_read_as_the_digit_itself(client, store, image_files):
    ids = range(12)
    photos = client.post("/classify?return_input=true",
                         files=multipart(*(photo(image_files, i) for i in ids),
                                         content_type="image/jpeg"))
    assert photos.status_code == 200, photos.text
    seen = torch.tensor(photos.json()["inputs"])
    assert seen.shape == (12, 784)
    for x in seen.reshape(12, 28, 28).numpy():  # each framed as MNIST's: about 20 tall or
        rows, cols = np.nonzero(x > 0.05)       # wide (faint stroke ends drop out with the
        assert 17 <= max(np.ptp(rows), np.ptp(cols)) + 1 <= 21  # paper), centred by mass
        assert np.allclose(ndimage.center_of_mass(x), (14, 14), atol=0.75)
    labels = [p["label"] for p in photos.json()["predictions"]]
    clean = client.post("/classify", files=multipart(*(image_files.png(i) for i in ids)))
    same = sum(a == b["label"] for a, b in zip(labels, clean.json()["predictions"]))
    raw = client.post("/classify?normalize=none", files=multipart(
        *(photo(image_files, i) for i in ids), content_type="image/jpeg")).json()
    same_raw = sum(a["label"] == b["label"] for a, b in zip(raw["predictions"],
                                                            clean.json()["predictions"]))
    assert same >= 10 and same > same_raw + 3, (same, same_raw)


def test_json_pixel_rows_are_taken_as_sent_unless_asked(client, image_files):
    moved = np.roll(image_files.picture(0), 6, axis=1)  # off-centre by 6 pixels
    pixels = (np.asarray(moved, np.float32) / 255).ravel().tolist()
    as_sent = client.post("/encode?return_input=true", json={"pixels": pixels}).json()
    assert as_sent["inputs"][0] == pytest.approx(pixels)
    framed = client.post("/encode?return_input=true&normalize=mnist",
                         json={"pixels": pixels}).json()
    torch.testing.assert_close(torch.tensor(framed["inputs"][0]), image_files.pixels(0),
                               atol=0.05, rtol=0)


@pytest.mark.parametrize("route", ["/classify", "/encode", "/score", "/reconstruct"])
def test_a_blank_upload_is_a_422_not_a_guess(client, image_files, problem, route):
    blank = io.BytesIO()
    Image.new("L", (64, 64), 180).save(blank, "PNG")
    response = client.post(route, files=multipart(image_files.png(0), blank.getvalue()))
    problem(response, 422, "image 1: no digit found: the image is blank (no ink against the "
            "background)")
    assert client.post(route + "?normalize=none",
                       files=multipart(blank.getvalue())).status_code == 200
