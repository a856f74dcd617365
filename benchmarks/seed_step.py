"""The seed post's networks and per-minibatch procedure, written as the post describes them.

The benchmarks' baseline: the post's ``Q_net``, ``P_net`` and ``D_net`` (stock
``F.dropout``, sigmoid outputs, ``TINY`` in the logs) and its four phases for
the semi-supervised model (reconstruction, discriminator, generator,
classification), each with its own Adam optimizers, gradients zeroed per phase
and the encoder run again for every phase. Sizes come from the same
``AAEConfig`` as the library's model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from aae.config import AAEConfig

TINY = 1e-15


class Q_net(nn.Module):  # noqa: N801 - the post's names
    def __init__(self, cfg: AAEConfig) -> None:
        super().__init__()
        self.p = cfg.dropout_encoder
        self.lin1 = nn.Linear(cfg.x_dim, cfg.hidden)
        self.lin2 = nn.Linear(cfg.hidden, cfg.hidden)
        self.lin3gauss = nn.Linear(cfg.hidden, cfg.z_dim)
        self.lin3cat = nn.Linear(cfg.hidden, cfg.n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(F.dropout(self.lin1(x), p=self.p, training=self.training))
        x = F.relu(F.dropout(self.lin2(x), p=self.p, training=self.training))
        return F.softmax(self.lin3cat(x), dim=1), self.lin3gauss(x)


class P_net(nn.Module):  # noqa: N801
    def __init__(self, cfg: AAEConfig) -> None:
        super().__init__()
        self.p = cfg.dropout_decoder
        self.lin1 = nn.Linear(cfg.z_dim + cfg.n_classes, cfg.hidden)
        self.lin2 = nn.Linear(cfg.hidden, cfg.hidden)
        self.lin3 = nn.Linear(cfg.hidden, cfg.x_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.dropout(self.lin1(x), p=self.p, training=self.training))
        x = F.relu(F.dropout(self.lin2(x), p=self.p, training=self.training))
        return torch.sigmoid(self.lin3(x))


class D_net(nn.Module):  # noqa: N801
    def __init__(self, in_dim: int, cfg: AAEConfig) -> None:
        super().__init__()
        self.p = cfg.dropout_discriminator
        self.lin1 = nn.Linear(in_dim, cfg.hidden)
        self.lin2 = nn.Linear(cfg.hidden, cfg.hidden)
        self.lin3 = nn.Linear(cfg.hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(F.dropout(self.lin1(x), p=self.p, training=self.training))
        x = F.relu(F.dropout(self.lin2(x), p=self.p, training=self.training))
        return torch.sigmoid(self.lin3(x))


class SeedTrainer:
    """The seed's semi-supervised model and its training step."""

    def __init__(self, cfg: AAEConfig) -> None:
        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        self.Q, self.P = Q_net(cfg), P_net(cfg)
        self.D_gauss, self.D_cat = D_net(cfg.z_dim, cfg), D_net(cfg.n_classes, cfg)
        gen_lr, reg_lr, semi_lr = cfg.lr_reconstruction, cfg.lr_regularization, cfg.lr_semi_supervised
        self.P_decoder = torch.optim.Adam(self.P.parameters(), lr=gen_lr)
        self.Q_encoder = torch.optim.Adam(self.Q.parameters(), lr=gen_lr)
        self.Q_generator = torch.optim.Adam(self.Q.parameters(), lr=reg_lr)
        self.D_gauss_solver = torch.optim.Adam(self.D_gauss.parameters(), lr=reg_lr)
        self.D_cat_solver = torch.optim.Adam(self.D_cat.parameters(), lr=reg_lr)
        self.Q_semi_supervised = torch.optim.Adam(self.Q.parameters(), lr=semi_lr)

    def zero_grad(self) -> None:
        for net in (self.Q, self.P, self.D_gauss, self.D_cat):
            net.zero_grad()

    def step(self, X: torch.Tensor, X_l: torch.Tensor, y_l: torch.Tensor) -> None:  # noqa: N803
        cfg, Q, P, D_gauss, D_cat = self.cfg, self.Q, self.P, self.D_gauss, self.D_cat
        n = X.shape[0]
        # 1) Reconstruction phase: update the encoder Q and the decoder P.
        self.zero_grad()
        z_cat, z_gauss = Q(X)
        X_sample = P(torch.cat([z_cat, z_gauss], 1))
        recon_loss = F.binary_cross_entropy(X_sample + TINY, X + TINY)
        recon_loss.backward()
        self.P_decoder.step()
        self.Q_encoder.step()
        # 2-3) Regularization phase, discriminators (Q in eval mode, as in the post).
        self.zero_grad()
        Q.eval()
        z_real_cat = F.one_hot(torch.randint(cfg.n_classes, (n,)), cfg.n_classes).float()
        z_real_gauss = torch.randn(n, cfg.z_dim) * cfg.prior_std
        z_fake_cat, z_fake_gauss = Q(X)
        D_real_cat, D_real_gauss = D_cat(z_real_cat), D_gauss(z_real_gauss)
        D_fake_cat, D_fake_gauss = D_cat(z_fake_cat), D_gauss(z_fake_gauss)
        D_loss_cat = -torch.mean(torch.log(D_real_cat + TINY) + torch.log(1 - D_fake_cat + TINY))
        D_loss_gauss = -torch.mean(torch.log(D_real_gauss + TINY)
                                   + torch.log(1 - D_fake_gauss + TINY))
        (D_loss_cat + D_loss_gauss).backward()
        self.D_cat_solver.step()
        self.D_gauss_solver.step()
        # 4) Regularization phase, generator: Q learns to fool both discriminators.
        self.zero_grad()
        Q.train()
        z_fake_cat, z_fake_gauss = Q(X)
        G_loss = (-torch.mean(torch.log(D_cat(z_fake_cat) + TINY))
                  - torch.mean(torch.log(D_gauss(z_fake_gauss) + TINY)))
        G_loss.backward()
        self.Q_generator.step()
        # 5) Semi-supervised classification phase on a labeled minibatch.
        self.zero_grad()
        pred, _ = Q(X_l)
        class_loss = F.nll_loss(torch.log(pred + TINY), y_l)
        class_loss.backward()
        self.Q_semi_supervised.step()

    @torch.no_grad()
    def error(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        self.Q.eval()
        pred, _ = self.Q(images)
        self.Q.train()
        return (pred.argmax(1) != labels).float().mean().item()
