"""Does virtual adversarial training help the encoder's classifier on its own?

Two checks behind docs/quality.md's VAT finding, on full MNIST with 100 labels:

1. sensitivity: a classifier (the encoder's q(y|x), no autoencoder) trained 200 steps on
   the 100 labels; KL(q(y|x) || q(y|x + r)) for r along VAT's adversarial direction and
   along a random one, both of norm ``--epsilon``, for several finite-difference steps xi;
2. training: that classifier trained ``--steps`` steps with cross-entropy on the labels,
   without and with VAT on unlabeled minibatches; validation error every 1,000 steps.

    python -m benchmarks.vat_check --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from aae.config import AAEConfig, Mode
from aae.data import default_data_dir, load_splits
from aae.nets import Encoder
from aae.phases import _kl, _unit, vat_loss


def classifier() -> Encoder:
    torch.manual_seed(0)
    return Encoder(AAEConfig(mode=Mode.SEMI_SUPERVISED, z_dim=10, dropout_encoder=0.0))


def sensitivity(splits, epsilon: float) -> None:
    enc = classifier()
    opt = torch.optim.Adam(enc.parameters(), 1e-3)
    for _ in range(200):
        loss = F.cross_entropy(enc(splits.labeled.images)[1], splits.labeled.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = splits.train.images[:100]
    target = enc(x)[1].detach()
    for xi in (1e-6, 1.0, 10.0):
        torch.manual_seed(1)
        d = (_unit(torch.randn_like(x)) * xi).requires_grad_()
        g, = torch.autograd.grad(_kl(target, enc(x + d)[1]), d)
        with torch.no_grad():
            adversarial = _kl(target, enc(x + epsilon * _unit(g))[1]).item()
            random = _kl(target, enc(x + epsilon * _unit(torch.randn_like(x)))[1]).item()
        print(f"xi {xi:g}: KL along the adversarial direction {adversarial:.4f}, "
              f"along a random one {random:.4f} (norm {epsilon:g})", flush=True)


def train(splits, vat_weight: float, epsilon: float, xi: float, steps: int) -> None:
    enc = classifier()
    opt = torch.optim.Adam(enc.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        loss = F.cross_entropy(enc(splits.labeled.images)[1], splits.labeled.labels)
        if vat_weight:
            x = splits.train.images[torch.randint(len(splits.train), (100,), generator=g)]
            loss = loss + vat_weight * vat_loss(enc, x, enc(x)[1], epsilon, xi)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 1000 == 0:
            with torch.no_grad():
                y = enc.eval()(splits.validation.images)[1]
            enc.train()
            error = (y.argmax(1) != splits.validation.labels).float().mean().item()
            print(f"VAT weight {vat_weight:g} eps {epsilon:g} xi {xi:g}: step {step} "
                  f"validation error {error:.2%} ({time.perf_counter() - start:.0f} s)",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("AAE_DATA_DIR", default_data_dir())))
    parser.add_argument("--epsilon", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args()
    splits = load_splits(args.data_dir, n_labels=100, validation_size=10_000, seed=1)
    sensitivity(splits, args.epsilon)
    for weight, epsilon, xi in ((0.0, 0.0, 0.0), (1.0, args.epsilon, 10.0),
                                (1.0, args.epsilon, 1e-6)):
        train(splits, weight, epsilon, xi, args.steps)


if __name__ == "__main__":
    main()
