"""Fixtures of the service tests: real models trained on the committed real digits, a real
checkpoint store, and the app served through its lifespan.

The models are trained once per session (about ten seconds on two cores: small networks,
fp32, two epochs) and published into a template store; every test gets its own copy of
that store, so tests that publish, delete or move aliases cannot disturb each other.

Template store (``model_dir``):

- ``digits``: semi_supervised (100 labels). Version 1 holds untrained weights, version 2
  the trained model, so that version selection visibly changes the answers.
- ``plain``: unsupervised, version 1.
- ``styles``: supervised, version 1.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from aae.checkpoints import publish_model
from aae.config import AAEConfig, Mode, Precision
from aae.data import Digits, load_splits, splits_for
from aae.digits import normalize
from aae.model import AdversarialAutoencoder
from aae.store import CheckpointStore
from aae.training import Trainer
from service.app import create_app
from service.settings import ServiceSettings

# fp32: on CPUs that report bf16 support without fast bf16 units, autocast is several
# times slower (about 4x on the CI machine)
QUICK = dict(epochs=2, validation_size=300, hidden=256, precision=Precision.FP32)
CONFIGS = {
    "digits": AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=100, **QUICK),
    "plain": AAEConfig(mode=Mode.UNSUPERVISED, **QUICK),
    "styles": AAEConfig(mode=Mode.SUPERVISED, **QUICK),
}


@dataclass(frozen=True)
class Trained:
    model: AdversarialAutoencoder
    metrics: dict[str, Any]


@pytest.fixture(scope="session")
def trained_models(fixture_data_dir: Path) -> dict[str, Trained]:
    """Each of CONFIGS trained on the committed digits, by name."""
    out = {}
    for name, cfg in CONFIGS.items():
        splits = splits_for(cfg, fixture_data_dir, download=False)
        result = Trainer(cfg, splits, device="cpu").fit()
        out[name] = Trained(result.model, result.metrics)
    return out


@pytest.fixture(scope="session")
def template_store(tmp_path_factory: pytest.TempPathFactory,
                   trained_models: dict[str, Trained]) -> Path:
    """The store every test starts from (see the module docstring)."""
    store = CheckpointStore(tmp_path_factory.mktemp("template") / "models")
    torch.manual_seed(0)
    untrained = AdversarialAutoencoder(CONFIGS["digits"]).eval()
    assert publish_model(store, "digits", untrained, {"note": "untrained"}) == 1
    for name, result in trained_models.items():
        publish_model(store, name, result.model, result.metrics)
    assert store.versions("digits") == [1, 2]
    return store.root


@pytest.fixture
def model_dir(tmp_path: Path, template_store: Path) -> Path:
    """This test's own copy of the template store."""
    target = tmp_path / "models"
    shutil.copytree(template_store, target)
    return target


@pytest.fixture
def store(model_dir: Path) -> CheckpointStore:
    """The store the app serves from, for publishing or deleting behind its back."""
    return CheckpointStore(model_dir)


def service_settings(model_dir: Path, **overrides: Any) -> ServiceSettings:
    values: dict[str, Any] = dict(model_dir=model_dir, default_model="digits",
                                  alias_refresh_s=0.2,
                                  redis_url="redis://127.0.0.1:1")  # inference needs none
    return ServiceSettings(**{**values, **overrides})


# Where the test client connects from. Starlette's default ("testclient") is no address;
# without an API key the service lets only loopback clients change anything
# (service.core.auth), so the tests connect from loopback, as a user of `aae up` does,
# and the tests of that rule from REMOTE (an address of TEST-NET-1, RFC 5737).
LOOPBACK = ("127.0.0.1", 50000)
REMOTE = ("192.0.2.10", 50000)


@pytest.fixture
def make_client(model_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """``make_client(client=LOOPBACK, **settings)``: a started client of an app over this
    test's store, connecting from ``client``, with settings overridden (e.g. small
    limits); stopped at the end of the test."""
    threads = torch.get_num_threads()  # the lifespan sets torch's process-wide thread count
    with ExitStack() as stack:
        def make(client: tuple[str, int] = LOOPBACK, **overrides: Any) -> TestClient:
            app = create_app(service_settings(model_dir, **overrides))
            return stack.enter_context(TestClient(app, client=client))
        yield make
    torch.set_num_threads(threads)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """The app with default limits over this test's store, default model "digits"."""
    return make_client()


PROBLEM = "application/problem+json"


def check_problem(response: Any, status: int, detail: str | None = None) -> dict[str, Any]:
    """Assert ``response`` is an RFC 9457 problem with ``status`` (and exactly ``detail``)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM, response.headers
    body = response.json()
    assert body["status"] == status and body["type"] == "about:blank" and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if detail is not None:
        assert body["detail"] == detail
    return body


@pytest.fixture(scope="session")
def problem() -> Callable[..., dict[str, Any]]:
    """``problem(response, status, detail=None)``: check an error answer, return its body."""
    return check_problem


# -- image files from real digits -----------------------------------------------------------

@pytest.fixture(scope="session")
def test_digits(fixture_data_dir: Path) -> Digits:
    """The committed test-file digits (not seen in training)."""
    splits = load_splits(fixture_data_dir, n_labels=None, validation_size=0, seed=0,
                         download=False)
    return splits.test


@dataclass(frozen=True)
class ImageFiles:
    """Image files made from real test digits, in the forms clients send."""

    digits: Digits

    def picture(self, i: int = 0) -> Image.Image:
        pixels = (self.digits.images[i].reshape(28, 28) * 255).round().to(torch.uint8)
        return Image.fromarray(pixels.numpy())  # uint8: mode "L"

    def pixels(self, i: int = 0) -> torch.Tensor:
        """What the model sees for ``png(i)``: the digit made MNIST's way again (nearly its
        own pixels: MNIST's digits are already so), 784 floats in [0, 1]."""
        return torch.from_numpy(normalize(self.digits.images[i].reshape(28, 28).numpy())
                                .ravel())

    def inputs(self, n: int) -> torch.Tensor:
        """``pixels`` of the first ``n`` digits, (n, 784)."""
        return torch.stack([self.pixels(i) for i in range(n)])

    def label(self, i: int = 0) -> int:
        return int(self.digits.labels[i])

    @staticmethod
    def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
        out = io.BytesIO()
        image.save(out, format=fmt)
        return out.getvalue()

    def png(self, i: int = 0) -> bytes:
        """The digit as a 28x28 greyscale PNG."""
        return self.encode(self.picture(i))

    def jpeg(self, i: int = 0) -> bytes:
        return self.encode(self.picture(i), "JPEG")

    def rgb_png(self, i: int = 0) -> bytes:
        """The digit as a colour PNG: a yellow digit on a dark blue ground."""
        grey = self.picture(i)
        black = Image.new("L", grey.size, 0)
        blue = Image.new("L", grey.size, 40)
        return self.encode(Image.merge("RGB", (grey, grey, Image.composite(black, blue, grey))))

    def large_png(self, i: int = 0, side: int = 56) -> bytes:
        """The digit enlarged to side x side (the service resizes it back to 28x28)."""
        return self.encode(self.picture(i).resize((side, side), Image.Resampling.BICUBIC))


@pytest.fixture(scope="session")
def image_files(test_digits: Digits) -> ImageFiles:
    return ImageFiles(test_digits)


# -- Prometheus metrics ---------------------------------------------------------------------

class Scrape(dict):
    """One ``/metrics`` answer parsed with prometheus-client's own parser: sample value by
    (sample name, labels)."""

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; 0 for a sample not (yet) exposed."""
        return self.get((name, frozenset(labels.items())), 0.0)

    def samples(self, name: str) -> dict[frozenset, float]:
        return {labels: v for (n, labels), v in self.items() if n == name}


def parse_metrics(text: str) -> Scrape:
    scrape = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            scrape[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return scrape


@pytest.fixture(scope="session")
def scrape() -> Callable[[Any], Scrape]:
    """``scrape(client)``: GET /metrics (Prometheus text format) and parse it."""
    def get(client: Any) -> Scrape:
        response = client.get("/metrics")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain; version=")
        return parse_metrics(response.text)
    return get
