"""The figures' codes: grid layout, style rows, interpolation paths, latent samples."""

import pytest
import torch

from aae import figures
from aae.config import AAEConfig, Mode
from aae.data import Digits
from aae.errors import CapabilityError, InvalidInput
from aae.model import AdversarialAutoencoder


def model(mode: Mode, **changes) -> AdversarialAutoencoder:
    torch.manual_seed(0)
    return AdversarialAutoencoder(AAEConfig(mode=mode, hidden=16, **changes)).eval()


def test_the_manifold_grid_reads_like_a_plot():
    z, y = figures.manifold_codes(model(Mode.UNSUPERVISED), n=3)
    assert y is None
    assert z.tolist() == [[-10, 10], [0, 10], [10, 10], [-10, 0], [0, 0], [10, 0],
                          [-10, -10], [0, -10], [10, -10]]  # the seed's -10..10 for std 5
    z, y = figures.manifold_codes(model(Mode.SEMI_SUPERVISED), n=2, extent=1.0, label=7)
    assert z.abs().max() == 1 and y.argmax(1).tolist() == [7] * 4
    _, open_classes = figures.manifold_codes(model(Mode.SEMI_SUPERVISED), n=2)
    assert torch.allclose(open_classes, torch.full((4, 10), 0.1))
    with pytest.raises(CapabilityError, match="2-D code"):
        figures.manifold_codes(model(Mode.UNSUPERVISED, z_dim=3))
    assert figures.render(model(Mode.SUPERVISED), figures.manifold_codes(
        model(Mode.SUPERVISED), n=2, label=3)).shape == (4, 784)


def test_the_style_grid_keeps_z_along_rows_and_the_class_along_columns():
    m = model(Mode.SUPERVISED)
    z, y = figures.style_codes(m, rows=3, generator=torch.Generator().manual_seed(1))
    assert z.shape == (30, 2) and y.shape == (30, 10)
    assert all(torch.equal(z[i * 10], z[i * 10 + j]) for i in range(3) for j in range(10))
    assert y.argmax(1).tolist() == list(range(10)) * 3
    again, _ = figures.style_codes(m, rows=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(z, again)
    given, _ = figures.style_codes(m, z=torch.tensor([[0.5, -0.5]]))
    assert torch.equal(given, torch.tensor([[0.5, -0.5]] * 10))
    with pytest.raises(CapabilityError, match="no class input"):
        figures.style_codes(model(Mode.UNSUPERVISED))


def test_paths_are_straight_or_on_the_great_circle():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    line = figures.path(a, b, 5, spherical=False)
    arc = figures.path(a, b, 5, spherical=True)
    for p in (line, arc):
        assert torch.allclose(p[0], a) and torch.allclose(p[-1], b, atol=1e-6)
    assert torch.allclose(line[2], torch.tensor([1.5, 1.5]))
    assert torch.allclose(arc.norm(dim=1), torch.full((5,), 3.0), atol=1e-5)
    with pytest.raises(InvalidInput, match="2 steps"):
        figures.path(a, b, 1, spherical=False)


def test_interpolating_images_starts_and_ends_at_their_codes():
    m = model(Mode.SEMI_SUPERVISED)
    torch.manual_seed(2)
    x = torch.rand(2, 784)
    z, y = figures.image_interpolation_codes(m, x, steps=4)
    code = m.encode(x)
    assert torch.allclose(z[0], code.z[0]) and torch.allclose(z[-1], code.z[1], atol=1e-6)
    assert torch.allclose(y[0], code.y[0]) and torch.allclose(y[-1], code.y[1], atol=1e-6)
    z, y = figures.interpolation_codes(m, [0.0, 0.0], [1.0, 1.0], steps=3, label=4)
    assert z.tolist() == [[0, 0], [0.5, 0.5], [1, 1]] and y.argmax(1).tolist() == [4] * 3
    with pytest.raises(InvalidInput, match="2 images"):
        figures.image_interpolation_codes(m, torch.rand(3, 784))


def test_the_latent_sample_holds_codes_and_labels():
    m = model(Mode.SEMI_SUPERVISED)
    digits = Digits(torch.rand(7, 784), torch.arange(7))
    sample = figures.latent_sample(m, digits, n=5)
    assert len(sample["z"]) == 5 and len(sample["z"][0]) == 2
    assert sample["labels"] == [0, 1, 2, 3, 4]
    assert torch.allclose(torch.tensor(sample["z"]), m.encode(digits.images[:5]).z, atol=1e-4)
