import pytest
import torch

from aae.nets import Dropout


@pytest.mark.parametrize("p", [0.2, 0.25, 0.5])
def test_dropout_drops_the_stated_fraction_and_keeps_the_expectation(p):
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    y = Dropout(p).train()(x)
    assert abs((y == 0).float().mean().item() - p) < 0.003
    assert abs(y.mean().item() - 1.0) < 0.005
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)), rtol=1e-4)


def test_dropout_is_the_identity_in_eval_mode_and_repeatable_under_a_seed():
    x = torch.randn(50, 100)
    d = Dropout(0.3)
    assert torch.equal(d.eval()(x), x)
    d.train()
    torch.manual_seed(7)
    a = d(x)
    torch.manual_seed(7)
    assert torch.equal(a, d(x))


def test_dropout_gradient_flows_through_kept_units_only():
    x = torch.randn(20, 30, requires_grad=True)
    torch.manual_seed(3)
    y = Dropout(0.5).train()(x)
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)
