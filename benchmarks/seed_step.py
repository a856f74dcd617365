"""The seed post's per-minibatch procedure, written as the post describes it.

Used by the benchmarks as the baseline: four phases (reconstruction,
discriminator, generator, semi-supervised classification), a separate Adam
optimizer per network and phase, gradients zeroed per phase, sigmoid outputs
with ``TINY`` in the logs, the encoder run again for every phase. It reuses the
library's networks so that both steps train the same model sizes.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from aae.config import AAEConfig, Mode
from aae.model import AdversarialAutoencoder

TINY = 1e-15


class SeedStep:
    def __init__(self, model: AdversarialAutoencoder) -> None:
        cfg = model.cfg
        assert cfg.mode is Mode.SEMI_SUPERVISED, "the seed's four-phase step is semi-supervised"
        self.model, self.cfg = model, cfg
        q, p = model.encoder, model.decoder
        self.P_decoder = torch.optim.Adam(p.parameters(), lr=cfg.lr_reconstruction)
        self.Q_encoder = torch.optim.Adam(q.parameters(), lr=cfg.lr_reconstruction)
        self.Q_generator = torch.optim.Adam(q.parameters(), lr=cfg.lr_regularization)
        self.D_gauss_solver = torch.optim.Adam(model.d_gauss.parameters(), lr=cfg.lr_regularization)
        self.D_cat_solver = torch.optim.Adam(model.d_cat.parameters(), lr=cfg.lr_regularization)
        self.Q_semi_supervised = torch.optim.Adam(q.parameters(), lr=cfg.lr_semi_supervised)
        self.all = [self.P_decoder, self.Q_encoder, self.Q_generator, self.D_gauss_solver,
                    self.D_cat_solver, self.Q_semi_supervised]

    def zero_grad(self) -> None:
        for opt in self.all:
            opt.zero_grad()

    def q(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, y_logits = self.model.encoder(x)
        return F.softmax(y_logits, dim=1), z

    def __call__(self, x: torch.Tensor, x_l: torch.Tensor, y_l: torch.Tensor) -> dict:
        m, cfg = self.model, self.cfg
        Q, P, D_gauss, D_cat = m.encoder, m.decoder, m.d_gauss, m.d_cat
        n = x.shape[0]
        # 1) Reconstruction phase: update Q and P.
        self.zero_grad()
        y, z = self.q(x)
        x_sample = torch.sigmoid(P(z, y))
        recon_loss = F.binary_cross_entropy(x_sample + TINY, x + TINY)
        recon_loss.backward()
        self.P_decoder.step()
        self.Q_encoder.step()
        # 2-3) Regularization phase, discriminators (Q in eval mode, as in the post).
        self.zero_grad()
        Q.eval()
        z_real_cat = F.one_hot(torch.randint(cfg.n_classes, (n,)), cfg.n_classes).float()
        z_real_gauss = torch.randn(n, cfg.z_dim) * cfg.prior_std
        z_fake_cat, z_fake_gauss = self.q(x)
        D_real_cat = torch.sigmoid(D_cat(z_real_cat))
        D_real_gauss = torch.sigmoid(D_gauss(z_real_gauss))
        D_fake_cat = torch.sigmoid(D_cat(z_fake_cat))
        D_fake_gauss = torch.sigmoid(D_gauss(z_fake_gauss))
        D_loss_cat = -torch.mean(torch.log(D_real_cat + TINY) + torch.log(1 - D_fake_cat + TINY))
        D_loss_gauss = -torch.mean(torch.log(D_real_gauss + TINY)
                                   + torch.log(1 - D_fake_gauss + TINY))
        D_loss = D_loss_cat + D_loss_gauss
        D_loss.backward()
        self.D_cat_solver.step()
        self.D_gauss_solver.step()
        # 4) Regularization phase, generator.
        self.zero_grad()
        Q.train()
        z_fake_cat, z_fake_gauss = self.q(x)
        D_fake_cat = torch.sigmoid(D_cat(z_fake_cat))
        D_fake_gauss = torch.sigmoid(D_gauss(z_fake_gauss))
        G_loss = -torch.mean(torch.log(D_fake_cat + TINY)) - torch.mean(torch.log(D_fake_gauss + TINY))
        G_loss.backward()
        self.Q_generator.step()
        # 5) Semi-supervised classification phase on the labeled minibatch.
        self.zero_grad()
        _, pred = self.model.encoder(x_l)
        class_loss = F.cross_entropy(pred, y_l)
        class_loss.backward()
        self.Q_semi_supervised.step()
        return {"reconstruction": recon_loss.detach(), "discriminator": D_loss.detach(),
                "generator": G_loss.detach(), "classification": class_loss.detach()}
