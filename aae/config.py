"""The one frozen configuration object of a model and its training run.

It is saved as ``config.json`` next to the weights, and is enough to rebuild
the model (``AAEConfig.from_dict(json.load(...))``). Defaults are the values
of the seed post and of Makhzani et al. (2015).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any

logger = logging.getLogger(__name__)


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


class Optimizer(str, Enum):
    """The update rule of every phase (each phase keeps its own instance and learning rate)."""

    ADAM = "adam"  # the seed's
    SGD = "sgd"  # with ``momentum`` (Nesterov off), as in the paper


class LRSchedule(str, Enum):
    """How every phase's learning rate moves over the run (a pure function of the step)."""

    CONSTANT = "constant"
    STEP = "step"  # times ``lr_gamma`` at each epoch in ``lr_milestones``
    COSINE = "cosine"  # from the base rate down to zero at the last step


class StepMode(str, Enum):
    """How the phases of one minibatch are run."""

    SIMULTANEOUS = "simultaneous"  # every phase's gradient at the same weights, then all update
    SEQUENTIAL = "sequential"  # each phase updates before the next one runs (the paper)


class ClusterMapping(str, Enum):
    """How a clustering model's clusters get labels, from the validation split."""

    MAJORITY = "majority"  # the most frequent true label among a cluster's members
    PAPER = "paper"  # the label of the example with the highest q(y_i|x) (Makhzani et al.)


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
    # Fields below came after the first release; each default keeps the behaviour of the
    # models trained before it, so an older config.json rebuilds exactly its model.
    # encoder regularisation (the paper: Gaussian noise on the input, no dropout)
    input_noise_std: float = 0.0
    encoder_batch_norm: bool = False  # BatchNorm1d after each of the encoder's layers
    # optimisation
    optimizer: Optimizer = Optimizer.ADAM
    momentum: float = 0.9  # SGD only
    lr_schedule: LRSchedule = LRSchedule.CONSTANT
    lr_milestones: tuple[int, ...] = ()  # epochs after which the rate is multiplied (STEP)
    lr_gamma: float = 0.1
    step_mode: StepMode = StepMode.SIMULTANEOUS
    # consistency of q(y|x) on unlabeled digits (semi_supervised; 0 = off): virtual
    # adversarial training (Miyato et al. 2018) and conditional entropy minimisation
    vat_weight: float = 0.0
    vat_epsilon: float = 2.0  # L2 radius of the adversarial perturbation of an image
    vat_xi: float = 10.0  # finite-difference step of the power iteration (1e-6 is lost in bf16)
    entropy_weight: float = 0.0
    labeled_batch_size: int | None = None  # labeled minibatch (None: batch_size)
    label_shift: int = 0  # labeled images moved by up to this many pixels each step (0: off)
    # evaluation of clustering models
    cluster_mapping: ClusterMapping = ClusterMapping.MAJORITY

    def __post_init__(self) -> None:
        enums = {"mode": Mode, "prior": PriorKind, "precision": Precision,
                 "optimizer": Optimizer, "lr_schedule": LRSchedule, "step_mode": StepMode,
                 "cluster_mapping": ClusterMapping}
        for field, enum in enums.items():
            value = getattr(self, field)
            if not isinstance(value, enum):
                try:
                    object.__setattr__(self, field, enum(value))
                except ValueError:
                    choices = ", ".join(m.value for m in enum)
                    raise ValueError(f"{field} must be one of {choices}, got {value!r}") from None
        if not isinstance(self.encoder_batch_norm, bool):
            raise ValueError(f"encoder_batch_norm must be true or false, got "
                             f"{self.encoder_batch_norm!r}")
        positive = ("x_dim", "z_dim", "n_classes", "hidden", "depth", "batch_size", "epochs",
                    "mixture_components")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("dropout_encoder", "dropout_decoder", "dropout_discriminator"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("prior_std", "mixture_component_std", "lr_reconstruction",
                     "lr_regularization", "lr_semi_supervised", "lr_gamma", "vat_epsilon",
                     "vat_xi"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("input_noise_std", "vat_weight", "entropy_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        milestones = tuple(int(m) for m in self.lr_milestones)
        if any(m < 1 for m in milestones) or list(milestones) != sorted(set(milestones)):
            raise ValueError(f"lr_milestones must be increasing epochs >= 1, got "
                             f"{list(self.lr_milestones)}")
        object.__setattr__(self, "lr_milestones", milestones)
        if not 0 <= self.label_shift <= 8:
            raise ValueError(f"label_shift must be in 0..8 pixels, got {self.label_shift}")
        if self.labeled_batch_size is not None and self.labeled_batch_size < 1:
            raise ValueError(f"labeled_batch_size must be at least 1, got "
                             f"{self.labeled_batch_size}")
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
        """The encoder has a softmax head y (and a categorical discriminator), so the
        model can classify (by argmax y)."""
        return self.mode in (Mode.SEMI_SUPERVISED, Mode.CLUSTERING)

    @property
    def uses_labels(self) -> bool:
        """The decoder is conditioned on a class: given (supervised) or inferred (y)."""
        return self.mode is not Mode.UNSUPERVISED

    @property
    def decoder_input_dim(self) -> int:
        return self.z_dim + (self.n_classes if self.uses_labels else 0)

    # -- (de)serialisation ------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, Enum):
                out[key] = value.value
            elif isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, strict: bool = True) -> AAEConfig:
        """The config of ``data``. Unknown keys are refused, or with ``strict=False`` (the
        serving path: a newer worker may have published a field this release does not
        know) logged and ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown and strict:
            raise ValueError(f"unknown configuration keys: {', '.join(unknown)}")
        if unknown:
            logger.warning("ignoring configuration keys this release does not know: %s",
                           ", ".join(unknown))
        return cls(**{k: v for k, v in data.items() if k in known})

    def replace(self, **changes: Any) -> AAEConfig:
        return dataclasses.replace(self, **changes)
