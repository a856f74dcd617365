"""The one frozen configuration object of a model and its training run.

It is saved as ``config.json`` next to the weights, and is enough to rebuild
the model (``AAEConfig.from_dict(json.load(...))``). Defaults are the values
of the seed post and of Makhzani et al. (2015).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any


class Mode(str, Enum):
    """Which of the paper's models to build and train."""

    UNSUPERVISED = "unsupervised"  # Gaussian (or mixture) prior on z
    SUPERVISED = "supervised"  # decoder gets the one-hot label and z: z learns style only
    SEMI_SUPERVISED = "semi_supervised"  # categorical y + Gaussian z, a labeled subset trains y
    CLUSTERING = "clustering"  # the semi-supervised architecture with no labels, K clusters


class PriorKind(str, Enum):
    """The distribution imposed on the continuous code z."""

    GAUSSIAN = "gaussian"  # N(0, prior_std^2 I)
    MIXTURE = "mixture"  # mixture_components Gaussians with means on a circle of radius prior_std


class Precision(str, Enum):
    """Arithmetic of the matrix products in training (weights stay float32)."""

    AUTO = "auto"  # bf16 where the hardware has native bf16 matrix units, else fp32
    FP32 = "fp32"
    BF16 = "bf16"


@dataclass(frozen=True)
class AAEConfig:
    """Architecture and training hyperparameters. Frozen: a run never mutates it."""

    mode: Mode = Mode.UNSUPERVISED
    # architecture
    x_dim: int = 784
    z_dim: int = 2
    n_classes: int = 10  # label classes, or clusters in clustering mode
    hidden: int = 1000
    depth: int = 2  # hidden layers in every network
    dropout_encoder: float = 0.25
    dropout_decoder: float = 0.25
    dropout_discriminator: float = 0.2
    # prior on z
    prior: PriorKind = PriorKind.GAUSSIAN
    prior_std: float = 5.0
    mixture_components: int = 10
    mixture_component_std: float = 1.0
    # optimisation (the seed's learning rates and batch size)
    lr_reconstruction: float = 6e-4
    lr_regularization: float = 8e-4
    lr_semi_supervised: float = 1e-3
    batch_size: int = 100
    epochs: int = 10
    max_steps: int | None = None  # stop after this many steps, whatever the epochs
    # data
    n_labels: int | None = None  # labeled examples (semi_supervised; None = all labels)
    validation_size: int = 10_000
    seed: int = 10
    precision: Precision = Precision.AUTO

    def __post_init__(self) -> None:
        for field in ("mode", "prior", "precision"):
            enum = {"mode": Mode, "prior": PriorKind, "precision": Precision}[field]
            value = getattr(self, field)
            if not isinstance(value, enum):
                try:
                    object.__setattr__(self, field, enum(value))
                except ValueError:
                    choices = ", ".join(m.value for m in enum)
                    raise ValueError(f"{field} must be one of {choices}, got {value!r}") from None
        positive = ("x_dim", "z_dim", "n_classes", "hidden", "depth", "batch_size", "epochs",
                    "mixture_components")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("dropout_encoder", "dropout_decoder", "dropout_discriminator"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("prior_std", "mixture_component_std", "lr_reconstruction",
                     "lr_regularization", "lr_semi_supervised"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.validation_size < 0:
            raise ValueError(f"validation_size must be >= 0, got {self.validation_size}")
        if self.mode is Mode.SEMI_SUPERVISED:
            if self.n_labels is not None and (self.n_labels < self.n_classes
                                              or self.n_labels % self.n_classes):
                raise ValueError(
                    f"n_labels must be a positive multiple of n_classes ({self.n_classes}) "
                    f"so that every class is equally represented, got {self.n_labels}")
        elif self.n_labels is not None and self.mode is not Mode.SUPERVISED:
            raise ValueError(f"n_labels is only meaningful for semi_supervised or supervised, "
                             f"not {self.mode.value}")

    # -- what the mode implies -------------------------------------------------
    @property
    def has_categorical(self) -> bool:
        """The encoder has a softmax head y (and there is a categorical discriminator)."""
        return self.mode in (Mode.SEMI_SUPERVISED, Mode.CLUSTERING)

    @property
    def uses_labels(self) -> bool:
        """The decoder is conditioned on a class: given (supervised) or inferred (y)."""
        return self.mode is not Mode.UNSUPERVISED

    @property
    def can_classify(self) -> bool:
        return self.has_categorical

    @property
    def decoder_input_dim(self) -> int:
        return self.z_dim + (self.n_classes if self.uses_labels else 0)

    # -- (de)serialisation ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, Enum):
                out[key] = value.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AAEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown configuration keys: {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> AAEConfig:
        return dataclasses.replace(self, **changes)
