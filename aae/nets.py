"""The networks of the paper, one ``nn.Module`` per role.

Every network is the seed's MLP: ``depth`` hidden layers of ``hidden`` units
with ReLU and dropout. Heads return logits; probabilities are taken where they
are needed, so that losses can use the numerically stable ``*_with_logits``
forms.
"""

from __future__ import annotations

import torch
from torch import nn

from aae.config import AAEConfig


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose masks, on the CPU, are cut from random 64-bit words.

    On the CPU ``bernoulli_`` draws one number at a time and took 30% of a training
    step; slicing ``torch.randint`` words into 16-bit draws is ten times faster. The
    drop probability is rounded to a multiple of 1/65536 (0.2 becomes 0.199997).
    Other devices use the stock kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu":
            return super().forward(x)
        dropped = round(self.p * 65536)
        words = torch.randint(-(2**63), 2**63 - 1, ((x.numel() + 3) // 4,), dtype=torch.int64)
        draws = words.view(torch.int16)[: x.numel()].view(x.shape)  # uniform on -32768..32767
        mask = (draws >= dropped - 32768).to(x.dtype).mul_(65536 / (65536 - dropped))
        return x * mask


def mlp(in_dim: int, hidden: int, depth: int, dropout: float,
        batch_norm: bool = False) -> nn.Sequential:
    """``depth`` blocks of Linear -> ReLU -> Dropout (Linear -> BatchNorm -> ReLU ->
    Dropout with ``batch_norm``)."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(in_dim if i == 0 else hidden, hidden))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden))
        layers += [nn.ReLU(), Dropout(dropout)]
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """Q: x -> (z, y logits). A linear Gaussian head for z; a categorical head for y
    when the mode has one (semi-supervised, clustering)."""

    def __init__(self, cfg: AAEConfig) -> None:
        super().__init__()
        self.body = mlp(cfg.x_dim, cfg.hidden, cfg.depth, cfg.dropout_encoder,
                        cfg.encoder_batch_norm)
        self.gauss = nn.Linear(cfg.hidden, cfg.z_dim)
        self.cat = nn.Linear(cfg.hidden, cfg.n_classes) if cfg.has_categorical else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.body(x)
        return self.gauss(h), (self.cat(h) if self.cat is not None else None)


class Decoder(nn.Module):
    """P: (z [, y]) -> logits of the 784 pixels; ``sigmoid`` of them is the image."""

    def __init__(self, cfg: AAEConfig) -> None:
        super().__init__()
        self.body = mlp(cfg.decoder_input_dim, cfg.hidden, cfg.depth, cfg.dropout_decoder)
        self.out = nn.Linear(cfg.hidden, cfg.x_dim)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        code = z if y is None else torch.cat([z, y.to(z.dtype)], dim=1)
        return self.out(self.body(code))


class Discriminator(nn.Module):
    """D: code -> logit of "this code was drawn from the prior"."""

    def __init__(self, in_dim: int, cfg: AAEConfig) -> None:
        super().__init__()
        self.body = mlp(in_dim, cfg.hidden, cfg.depth, cfg.dropout_discriminator)
        self.out = nn.Linear(cfg.hidden, 1)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(code)).squeeze(1)
