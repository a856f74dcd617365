"""Figure routes on models trained on the committed digits: sizes, determinism, content,
and the same model resolution and errors as inference."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from aae import figures
from aae.checkpoints import publish_model
from aae.config import AAEConfig, Mode, Precision
from aae.data import load_splits
from aae.model import AdversarialAutoencoder
from aae.training import Trainer


def picture(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


@pytest.fixture
def published(store, trained_models, test_digits):
    """digits version 3: the trained model again, now with its latent sample."""
    t = trained_models["digits"]
    return publish_model(store, "digits", t.model, t.metrics,
                         {"latent": figures.latent_sample(t.model, test_digits)})


@pytest.mark.parametrize("model, query, side", [
    ("digits", "n=5", 5 * 28), ("plain", "n=4&scale=2", 4 * 56),
    ("styles", "n=3&label=2&extent=3", 3 * 28)])
def test_the_manifold_is_an_n_by_n_grid_and_repeatable(client, model, query, side):
    url = f"/figures/manifold?model={model}&{query}"
    first = picture(client.get(url))
    assert first.shape == (side, side)
    assert np.array_equal(first, picture(client.get(url)))
    assert first.std() > 0  # not blank


@pytest.fixture(scope="module")
def drawn_digits(fixture_data_dir):
    """A supervised model trained long enough (40 epochs of the fixture, a few seconds) for
    its decoder to draw the class it is given, and the mean test digit of each class."""
    cfg = AAEConfig(mode=Mode.SUPERVISED, epochs=40, validation_size=300, hidden=256,
                    precision=Precision.FP32)
    splits = load_splits(fixture_data_dir, n_labels=None, validation_size=300,
                         seed=cfg.seed, download=False)
    centroids = torch.stack([splits.test.images[splits.test.labels == c].mean(0)
                             for c in range(10)])
    return Trainer(cfg, splits).fit().model, centroids


def test_a_manifold_at_a_label_draws_that_digit(client, store, drawn_digits):
    """Each tile of the manifold decoded at label L is nearest the mean real test digit of
    class L far more often than chance."""
    model, centroids = drawn_digits
    publish_model(store, "drawn", model, {})
    hits = 0
    for label in range(10):
        grid = picture(client.get(f"/figures/manifold?model=drawn&n=6&extent=5&label={label}"))
        tiles = grid.reshape(6, 28, 6, 28).transpose(0, 2, 1, 3).reshape(36, 784) / 255
        nearest = torch.cdist(torch.tensor(tiles, dtype=torch.float32), centroids).argmin(1)
        hits += (nearest == label).sum().item()
    assert hits / 360 > 0.4  # chance: 0.1 (measured: 0.70)


def test_the_style_grid_has_a_row_per_code_and_a_column_per_class(client):
    grid = picture(client.get("/figures/styles?model=styles&rows=4&seed=3"))
    assert grid.shape == (4 * 28, 10 * 28)
    assert np.array_equal(grid, picture(client.get("/figures/styles?model=styles&rows=4&seed=3")))
    assert not np.array_equal(grid, picture(client.get("/figures/styles?model=styles&rows=4&seed=4")))


def test_the_style_grid_of_uploaded_digits_keeps_each_ones_style(client, image_files):
    files = [("file", (f"{i}.png", image_files.png(i), "image/png")) for i in range(3)]
    grid = picture(client.post("/figures/styles?model=styles", files=files))
    assert grid.shape == (3 * 28, 10 * 28)
    codes = client.post("/encode?model=styles", files=files).json()["z"]
    decoded = client.post("/decode?model=styles", headers={"Accept": "application/json"},
                          json={"z": [codes[1]] * 10, "label": list(range(10))}).json()
    row = np.array(decoded["images"]).reshape(10, 28, 28)
    expected = np.concatenate(list((row * 255).round().astype(np.uint8)), axis=1)
    assert np.array_equal(grid[28:56], expected)  # row 1: digit 1's code, classes 0..9


def test_figures_answer_like_inference_when_they_do_not_apply(client, problem, store):
    torch.manual_seed(0)
    publish_model(store, "wide", AdversarialAutoencoder(AAEConfig(z_dim=4, hidden=16)), {})
    assert "2-D code" in problem(client.get("/figures/manifold?model=wide"), 409)["detail"]
    problem(client.get("/figures/styles?model=plain"), 409)
    problem(client.get("/figures/manifold?model=nope"), 404)
    problem(client.get("/figures/manifold?n=99"), 422)
    assert "without a sample" in problem(client.get("/figures/latent?model=plain"), 409)["detail"]


def test_latent_scatter_and_training_curves(client, published):
    scatter = picture(client.get(f"/figures/latent?model=digits&version={published}"))
    assert scatter.shape[0] >= 400 and scatter.shape[1] >= 400 and scatter.std() > 0
    curves = picture(client.get(f"/figures/curves?model=digits&version={published}"))
    assert curves.shape[0] >= 300 and curves.std() > 0


def test_training_curves_mark_the_published_epoch_where_it_is_not_the_last(client, store,
                                                                          trained_models):
    t = trained_models["digits"]
    history = [{"epoch": e, "validation_error": v, "reconstruction": 0.2}
               for e, v in ((1, 0.3), (2, 0.2), (3, 0.25))]
    url = "/figures/curves?model=digits&version={}"
    images = {}
    for selected in (3, 2):  # the last epoch (no mark), then keep_best's choice
        version = publish_model(store, "digits", t.model,
                                {**t.metrics, "history": history, "selected_epoch": selected})
        images[selected] = picture(client.get(url.format(version))).astype(int)
    changed = np.argwhere(np.abs(images[2] - images[3]).sum(axis=-1) > 0)
    width = images[3].shape[1]
    assert len(changed) > 50  # a dashed line, and its legend
    assert changed[:, 1].min() > width // 2  # all of it on the validation-error panel


def test_interpolation_between_codes_and_between_images(client, image_files):
    body = {"z": [[-2.0, 0.0], [2.0, 0.0]]}
    strip = picture(client.post("/interpolate?model=plain&steps=5", json=body))
    assert strip.shape == (28, 5 * 28)
    answer = client.post("/interpolate?model=digits&steps=3&label=1", json=body,
                         headers={"Accept": "application/json"}).json()
    assert answer["z"] == [[-2.0, 0.0], [0.0, 0.0], [2.0, 0.0]] and len(answer["images"]) == 3
    files = [("file", ("a.png", image_files.png(0), "image/png")),
             ("file", ("b.png", image_files.png(1), "image/png"))]
    encoded = client.post("/encode?model=digits", files=files).json()["z"]
    walked = client.post("/interpolate?model=digits&steps=4", files=files,
                         headers={"Accept": "application/json"}).json()["z"]
    assert np.allclose(walked[0], encoded[0], atol=1e-5)
    assert np.allclose(walked[-1], encoded[1], atol=1e-5)


def test_interpolation_refuses_what_it_cannot_walk(client, problem, image_files):
    problem(client.post("/interpolate?model=plain", json={"z": [[0.0, 0.0]]}), 422)
    problem(client.post("/interpolate?model=plain", json={"z": [[0.0], [1.0]]}), 422)
    one = [("file", ("a.png", image_files.png(0), "image/png"))]
    problem(client.post("/interpolate?model=digits", files=one), 422)
