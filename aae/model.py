"""The adversarial autoencoder: the networks of one mode and what users ask of them.

``AdversarialAutoencoder`` owns the encoder Q, the decoder P, the discriminators
(D_gauss on z, D_cat on y where the mode has y) and the prior. Its inference
methods (``encode``, ``decode``, ``sample``, ``classify``, ``reconstruct``) take
and return float32 tensors on the model's device and never track gradients.
``require_finite`` is the rule for what is answered: finite numbers only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from aae import inputs
from aae.config import AAEConfig, Mode
from aae.errors import CapabilityError, InvalidInput, NonFiniteOutput
from aae.nets import Decoder, Discriminator, Encoder
from aae.priors import CategoricalPrior, make_prior


def require_finite(subject: str, operation: str, *outputs: torch.Tensor | None) -> None:
    """NonFiniteOutput unless every number of ``outputs`` (None: absent) is finite: a
    model that answers NaN or infinity has bad weights (or was driven out of range by
    an extreme input), and its answer is withheld."""
    if not all(bool(torch.isfinite(t).all()) for t in outputs if t is not None):
        raise NonFiniteOutput(f"{subject} answered {operation} with numbers that are not "
                              "finite (NaN or infinity): its weights are bad, or the input "
                              "drove it out of range; the answer is withheld")


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

    # -- inputs (the rules live in aae.inputs) ----------------------------------------------
    def decoder_classes(self, labels: inputs.Labels | None, n: int,
                        subject: str = "the model") -> torch.Tensor | None:
        """The class input of the decoder for ``n`` codes: one-hot rows of ``labels`` (one
        for all, or one each) for models whose decoder takes a class, None for the
        unsupervised model; InvalidInput if the labels do not fit the model (``subject``
        names it in the message)."""
        cfg = self.cfg
        if not cfg.uses_labels:
            if labels is not None:
                raise InvalidInput(f"{subject} is an unsupervised model and takes no label")
            return None
        if labels is None:
            raise InvalidInput(f"{subject} is a {cfg.mode.value} model: give a label in "
                               f"0..{cfg.n_classes - 1}")
        return inputs.one_hot(labels, n, cfg.n_classes).to(self.device)

    def reconstruction_labels(self, labels: inputs.Labels | None, n: int,
                              subject: str = "the model") -> torch.Tensor | None:
        """The labels ``reconstruct`` needs for ``n`` images: a supervised model's given
        class; None for the others, which infer the class (or have none)."""
        cfg = self.cfg
        if cfg.mode is Mode.SUPERVISED:
            if labels is None:
                raise InvalidInput(f"{subject} is a supervised model: it reconstructs an image "
                                   f"given its label in 0..{cfg.n_classes - 1}")
            return inputs.labels(labels, n, cfg.n_classes)
        if labels is not None:
            raise InvalidInput(f"{subject} is a {cfg.mode.value} model: it infers the class "
                               "itself and takes no label")
        return None

    # -- inference ------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> Code:
        """q(z [, y] | x): the code of each image (y as class probabilities)."""
        x = inputs.images(x, self.cfg.x_dim).to(self.device)
        z, y_logits = self.encoder(x)
        return Code(z=z.float(), y=None if y_logits is None else F.softmax(y_logits.float(), 1))

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: inputs.Labels | None = None,
               y: torch.Tensor | None = None) -> torch.Tensor:
        """p(x | z [, y]): images in [0, 1], shape (n, 784). Models with a class input take
        either integer ``labels`` (one-hot) or a probability vector ``y`` per code."""
        z = inputs.codes(z, self.cfg.z_dim).to(self.device)
        if y is None:
            y = self.decoder_classes(labels, z.shape[0])
        elif not self.cfg.uses_labels:
            raise InvalidInput("an unsupervised model takes no label")
        else:
            y = torch.as_tensor(y, dtype=torch.float32, device=self.device)
        return torch.sigmoid(self.decoder(z, y).float())

    @torch.no_grad()
    def sample_codes(self, n: int, labels: inputs.Labels | None = None,
                     generator: torch.Generator | None = None, subject: str = "the model"
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` codes from the prior and the decoder's class input for them: z ~ p(z) (a
        supervised mixture prior draws from each label's component) and y = the labels,
        or y ~ Cat(n_classes) when none are given, for models with a class input."""
        if labels is None and self.cfg.uses_labels:
            labels = torch.randint(self.cfg.n_classes, (n,), generator=generator)
        y = self.decoder_classes(labels, n, subject)
        components = None
        if self.cfg.mode is Mode.SUPERVISED:
            components = inputs.labels(labels, n, self.cfg.n_classes)
        z = self.prior.sample(n, generator, components).to(self.device)
        return z, y

    @torch.no_grad()
    def sample(self, n: int, labels: inputs.Labels | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """New images: codes from the prior (``sample_codes``) through P."""
        z, y = self.sample_codes(n, labels, generator)
        return torch.sigmoid(self.decoder(z, y).float())

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities y of each image (argmax is the predicted class)."""
        if not self.cfg.has_categorical:
            raise CapabilityError(f"a {self.cfg.mode.value} model has no categorical code to "
                                  "classify with; train a semi_supervised or clustering model")
        code = self.encode(x)
        assert code.y is not None
        return code.y

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor,
                    labels: torch.Tensor | int | list[int] | None = None) -> torch.Tensor:
        """P(Q(x)): each image through the code and back. A supervised model needs the labels."""
        code = self.encode(x)
        require_finite("the model", "reconstruct", code.z, code.y)  # not the caller's fault
        labels = self.reconstruction_labels(labels, code.z.shape[0])
        if labels is not None:
            return self.decode(code.z, labels=labels)
        return self.decode(code.z, y=code.y)
