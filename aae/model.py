"""The adversarial autoencoder: the networks of one mode and what users ask of them.

``AdversarialAutoencoder`` owns the encoder Q, the decoder P, the discriminators
(D_gauss on z, D_cat on y where the mode has y) and the prior. Its inference
methods (``encode``, ``decode``, ``sample``, ``classify``, ``reconstruct``) take
and return float32 tensors on the model's device and never track gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from aae.config import AAEConfig, Mode
from aae.errors import CapabilityError, InvalidInput
from aae.nets import Decoder, Discriminator, Encoder
from aae.priors import CategoricalPrior, make_prior


@dataclass(frozen=True)
class Code:
    """The latent code of a batch: z always, class probabilities y where the model has them."""

    z: torch.Tensor
    y: torch.Tensor | None = None


class AdversarialAutoencoder(nn.Module):
    def __init__(self, cfg: AAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.d_gauss = Discriminator(cfg.z_dim, cfg)
        self.d_cat = Discriminator(cfg.n_classes, cfg) if cfg.has_categorical else None
        self.prior = make_prior(cfg)
        self.cat_prior = CategoricalPrior(cfg.n_classes)

    @property
    def device(self) -> torch.device:
        return self.decoder.out.weight.device

    # -- checkpoints ---------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Weights as a flat name -> tensor mapping (what safetensors stores)."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    @classmethod
    def from_tensors(cls, cfg: AAEConfig, tensors: dict[str, torch.Tensor],
                     device: torch.device | str = "cpu") -> AdversarialAutoencoder:
        model = cls(cfg)
        model.load_state_dict(tensors, strict=True)
        return model.to(device).eval()

    # -- inputs ---------------------------------------------------------------------
    def _images(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32, device=self.device)
        if x.ndim == 1:
            x = x.unsqueeze(0)
        x = x.reshape(x.shape[0], -1)
        if x.shape[1] != self.cfg.x_dim:
            raise InvalidInput(f"an image must have {self.cfg.x_dim} pixels, got {x.shape[1]}")
        if not torch.isfinite(x).all():
            raise InvalidInput("pixels must be finite numbers")
        if x.min() < 0 or x.max() > 1:
            raise InvalidInput("pixels must lie in [0, 1]")
        return x

    def _one_hot(self, labels: torch.Tensor | int | list[int], n: int) -> torch.Tensor:
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.device).reshape(-1)
        if labels.numel() == 1 and n > 1:
            labels = labels.expand(n)
        if labels.numel() != n:
            raise InvalidInput(f"got {labels.numel()} labels for {n} codes")
        if labels.min() < 0 or labels.max() >= self.cfg.n_classes:
            raise InvalidInput(f"labels must be in 0..{self.cfg.n_classes - 1}")
        return F.one_hot(labels, self.cfg.n_classes).float()

    # -- inference ------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> Code:
        """q(z [, y] | x): the code of each image (y as class probabilities)."""
        z, y_logits = self.encoder(self._images(x))
        return Code(z=z.float(), y=None if y_logits is None else F.softmax(y_logits.float(), 1))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: torch.Tensor | int | list[int] | None = None,
               y: torch.Tensor | None = None) -> torch.Tensor:
        """p(x | z [, y]): images in [0, 1], shape (n, 784). Models with a class input take
        either integer ``labels`` (one-hot) or a probability vector ``y``."""
        z = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        if z.ndim == 1:
            z = z.unsqueeze(0)
        if z.ndim != 2 or z.shape[1] != self.cfg.z_dim:
            raise InvalidInput(f"z must have {self.cfg.z_dim} values per code, "
                               f"got shape {tuple(z.shape)}")
        if not torch.isfinite(z).all():
            raise InvalidInput("z must hold finite numbers")
        if self.cfg.uses_labels:
            if y is None:
                if labels is None:
                    raise InvalidInput(f"a {self.cfg.mode.value} model decodes z with a label "
                                       f"in 0..{self.cfg.n_classes - 1}")
                y = self._one_hot(labels, z.shape[0])
            y = torch.as_tensor(y, dtype=torch.float32, device=self.device)
        elif labels is not None or y is not None:
            raise InvalidInput("an unsupervised model takes no label")
        return torch.sigmoid(self.decoder(z, y if self.cfg.uses_labels else None).float())

    @torch.no_grad()
    def sample_prior(self, n: int, generator: torch.Generator | None = None,
                     labels: torch.Tensor | int | None = None) -> torch.Tensor:
        """Draw n codes z from p(z) (from the labels' components for a mixture prior
        of a supervised model)."""
        components = None
        if labels is not None and self.cfg.mode is Mode.SUPERVISED:
            components = torch.as_tensor(labels).reshape(-1).expand(n).cpu()
        return self.prior.sample(n, generator, components).to(self.device)

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """New images: z ~ p(z) (and y = the label, or y ~ Cat for models with y) through P."""
        z = self.sample_prior(n, generator, labels)
        if not self.cfg.uses_labels:
            if labels is not None:
                raise InvalidInput("an unsupervised model draws no labelled samples")
            return self.decode(z)
        if labels is None:
            labels = torch.randint(self.cfg.n_classes, (n,), generator=generator)
        return self.decode(z, labels=labels)

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities y of each image (argmax is the predicted class)."""
        if not self.cfg.can_classify:
            raise CapabilityError(f"a {self.cfg.mode.value} model has no categorical code to "
                                  "classify with; train a semi_supervised or clustering model")
        code = self.encode(x)
        assert code.y is not None
        return code.y

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor,
                    labels: torch.Tensor | int | list[int] | None = None) -> torch.Tensor:
        """P(Q(x)): each image through the code and back. A supervised model needs the labels."""
        x = self._images(x)
        code = self.encode(x)
        if self.cfg.mode is Mode.SUPERVISED:
            if labels is None:
                raise InvalidInput("a supervised model reconstructs an image given its label")
            return self.decode(code.z, labels=labels)
        return self.decode(code.z, y=code.y)
