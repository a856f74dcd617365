"""The one frozen configuration object of a model and its training run.

It is saved as ``config.json`` next to the weights, and is enough to rebuild
the model (``AAEConfig.from_dict(json.load(...))``). Defaults are the values
of the seed post and of Makhzani et al. (2015).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import types
import typing
from dataclasses import dataclass
from enum import Enum
from typing import Any

logger = logging.getLogger(__name__)

DATASET_CLASSES = 10  # classes of an MNIST-format dataset (digits 0-9; Fashion-MNIST too)


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
class Range:
    """The values a numeric field may take: each bound that is set holds, and a float is
    finite. Declared once, on the field (``_bounded``): ``AAEConfig`` checks it, and the
    job API states it in its JSON schema (``service.jobs.schemas``)."""

    ge: float | None = None
    gt: float | None = None
    lt: float | None = None
    le: float | None = None
    multiple_of: int | None = None

    def bounds(self) -> dict[str, float]:
        """The bounds that are set, by their JSON-schema (and pydantic) names."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def holds(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return ((isinstance(value, int) or math.isfinite(value))  # an int may exceed a float
                and (self.ge is None or value >= self.ge)
                and (self.gt is None or value > self.gt)
                and (self.lt is None or value < self.lt)
                and (self.le is None or value <= self.le)
                and (self.multiple_of is None or value % self.multiple_of == 0))

    def __str__(self) -> str:
        def num(v: float) -> str:
            return str(int(v)) if float(v).is_integer() else f"{v:g}"

        low = (f"[{num(self.ge)}" if self.ge is not None else
               f"({num(self.gt)}" if self.gt is not None else None)
        high = (f"{num(self.le)}]" if self.le is not None else
                f"{num(self.lt)})" if self.lt is not None else None)
        if low and high:
            text = f"in {low}, {high}"
        elif self.gt == 0 and not high:
            text = "positive"
        elif self.ge == 0 and not high:
            text = "non-negative"
        elif low:
            text = f"at least {num(self.ge)}" if self.ge is not None else f"over {num(self.gt)}"
        elif high:
            text = f"at most {num(self.le)}" if self.le is not None else f"under {num(self.lt)}"
        else:
            text = "a finite number"
        return text if self.multiple_of is None else f"a multiple of {self.multiple_of}, {text}"


def _bounded(default: Any, range_: Range | None = None, *, each: Range | None = None,
             why: str | None = None) -> Any:
    """A field whose value (or, with ``each``, every item of it, none repeated) must lie in
    a range (``why``: said when it does not); a field whose default is ``None`` may also
    be ``None``."""
    metadata: dict[str, Any] = {"range": range_} if range_ is not None else {"each": each}
    return dataclasses.field(default=default, metadata={**metadata, "why": why})


@dataclass(frozen=True)
class FieldType:
    """What a config field holds, read off its annotation: ``base`` (int, float, bool or an
    Enum), alone, optional (``base | None``) or as a tuple of them."""

    base: type
    optional: bool = False
    sequence: bool = False


def _field_type(annotation: Any) -> FieldType:
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (inner,) = [a for a in args if a is not type(None)]
        return dataclasses.replace(_field_type(inner), optional=True)
    if typing.get_origin(annotation) is tuple:
        return FieldType(args[0], sequence=True)
    return FieldType(annotation)


@functools.cache
def field_types() -> dict[str, FieldType]:
    """Every ``AAEConfig`` field's type, by name: what the config checks and coerces, and
    what the command line's flags parse, derived from the annotations alone."""
    hints = typing.get_type_hints(AAEConfig)
    return {f.name: _field_type(hints[f.name]) for f in dataclasses.fields(AAEConfig)}


# Every field has an upper bound too, far past any useful value, so that no number a
# request can carry makes a run that cannot be built or never ends (the job API also
# holds a run's estimated memory and steps against the workers' budget: aae.budget).
DATASET_DIGITS = 60_000  # training digits of an MNIST-format dataset (MNIST, Fashion-MNIST)
MAX_EPOCHS = 10_000
FRACTION = Range(ge=0, lt=1)  # a dropout probability, a momentum
RATE = Range(gt=0, le=10)  # a learning rate
SPREAD = Range(gt=0, le=1000)  # a standard deviation, a radius, a step of pixel values
WEIGHT = Range(ge=0, le=1000)  # a loss term's weight

# the modes that take labeled examples, where n_labels applies
LABEL_MODES = frozenset({Mode.SEMI_SUPERVISED, Mode.SUPERVISED})


@dataclass(frozen=True)
class AAEConfig:
    """Architecture and training hyperparameters. Frozen: a run never mutates it."""

    mode: Mode = Mode.UNSUPERVISED
    # architecture
    x_dim: int = _bounded(784, Range(ge=1, le=65_536))
    z_dim: int = _bounded(2, Range(ge=1, le=1024))
    n_classes: int = _bounded(10, Range(ge=1, le=1000))  # label classes, or clusters in clustering mode
    hidden: int = _bounded(1000, Range(ge=1, le=16_384))
    depth: int = _bounded(2, Range(ge=1, le=16))  # hidden layers in every network
    dropout_encoder: float = _bounded(0.25, FRACTION)
    dropout_decoder: float = _bounded(0.25, FRACTION)
    dropout_discriminator: float = _bounded(0.2, FRACTION)
    # prior on z
    prior: PriorKind = PriorKind.GAUSSIAN
    prior_std: float = _bounded(5.0, SPREAD)
    mixture_components: int = _bounded(10, Range(ge=1, le=1000))
    mixture_component_std: float = _bounded(1.0, SPREAD)
    # optimisation (the seed's learning rates and batch size)
    lr_reconstruction: float = _bounded(6e-4, RATE)
    lr_regularization: float = _bounded(8e-4, RATE)
    lr_semi_supervised: float = _bounded(1e-3, RATE)
    batch_size: int = _bounded(100, Range(ge=1, le=DATASET_DIGITS))
    epochs: int = _bounded(10, Range(ge=1, le=MAX_EPOCHS))
    # stop after this many steps, whatever the epochs
    max_steps: int | None = _bounded(None, Range(ge=1, le=10**9))
    # data
    # labeled examples (semi_supervised, supervised; None = all labels), the same number
    # of each of the dataset's classes
    n_labels: int | None = _bounded(None, Range(ge=DATASET_CLASSES, le=DATASET_DIGITS,
                                                multiple_of=DATASET_CLASSES),
                                    why="the same number of each of the dataset's classes")
    validation_size: int = _bounded(10_000, Range(ge=0, le=DATASET_DIGITS))
    # weights, dropout, batch order, and the splits unless split_seed is set (mixed with
    # counters into torch seeds)
    seed: int = _bounded(10, Range(ge=0, le=2**32 - 1))
    precision: Precision = Precision.AUTO
    # Fields below came after the first release; each default keeps the behaviour of the
    # models trained before it, so an older config.json rebuilds exactly its model.
    # encoder regularisation (the paper: Gaussian noise on the input, no dropout)
    input_noise_std: float = _bounded(0.0, Range(ge=0, le=1000))
    encoder_batch_norm: bool = False  # BatchNorm1d after each of the encoder's layers
    # optimisation
    optimizer: Optimizer = Optimizer.ADAM
    momentum: float = _bounded(0.9, FRACTION)  # SGD only
    lr_schedule: LRSchedule = LRSchedule.CONSTANT
    # epochs after which the rate is multiplied (STEP), in any order (kept sorted)
    lr_milestones: tuple[int, ...] = _bounded((), each=Range(ge=1, le=MAX_EPOCHS))
    lr_gamma: float = _bounded(0.1, Range(gt=0, le=1000))
    step_mode: StepMode = StepMode.SIMULTANEOUS
    # the weights validated and published: an exponential moving average of the trained
    # ones, updated after every step with this decay after a warm-up (aae.optim.
    # weight_average), or the trained ones themselves (0)
    ema_decay: float = _bounded(0.0, FRACTION)
    # consistency of q(y|x) on unlabeled digits (semi_supervised and clustering; 0 = off):
    # virtual adversarial training (Miyato et al. 2018) and conditional entropy minimisation
    vat_weight: float = _bounded(0.0, WEIGHT)
    # L2 radius of the adversarial perturbation of an image; with vat_radius_neighbor k > 0,
    # the factor of each digit's distance to its k-th nearest training digit instead
    vat_epsilon: float = _bounded(2.0, SPREAD)
    # 0: one radius for every digit; k > 0: a radius per digit, vat_epsilon times its
    # distance to its k-th nearest training digit (IMSAT, Hu et al. 2017: k 10, 0.25)
    vat_radius_neighbor: int = _bounded(0, Range(ge=0, le=100))
    # finite-difference step of the power iteration (1e-6 is lost in bf16)
    vat_xi: float = _bounded(10.0, SPREAD)
    # VAT's passes through the encoder with its dropout (the first release's), or without
    # (nor updating batch norm's running statistics): q(y|x) and q(y|x + r) then differ
    # by r alone, not by two dropout masks as well
    vat_dropout: bool = True
    entropy_weight: float = _bounded(0.0, WEIGHT)
    # marginal entropy of q(y|x) over the unlabeled minibatch, maximised (IMSAT's second
    # half of the mutual information, Hu et al. 2017): classes or clusters used evenly
    marginal_entropy_weight: float = _bounded(0.0, WEIGHT)
    # sample fidelity (semi_supervised and clustering; 0 = off): the decoder learns to make
    # its prior draws of class y classify as y, minimising the cross-entropy of q(y | P(z, y))
    # for z ~ p(z), y ~ Cat(n_classes), so that the class input, not the style code, sets
    # the digit a sample shows (the encoder takes no gradient from it)
    sample_class_weight: float = _bounded(0.0, WEIGHT)
    # epochs trained without the sample-fidelity term before it starts (a warm-up in which
    # q(y|x), the term's judge, learns first)
    sample_class_warmup: int = _bounded(0, Range(ge=0, le=10_000))
    # the reconstruction's gradient reaches q(y|x) through the class input the decoder
    # reads (the paper's), or not: y enters the decoder detached, so that q(y|x) learns
    # from the labels, the adversary and the consistency terms alone
    reconstruction_class_grad: bool = True
    # labeled minibatch (None: batch_size)
    labeled_batch_size: int | None = _bounded(None, Range(ge=1, le=DATASET_DIGITS))
    # labeled images moved by up to this many pixels each step (0: off)
    label_shift: int = _bounded(0, Range(ge=0, le=8))
    # training digits changed as handwriting differs (aae.augment; all 0: off): rotation
    # in degrees, relative scale, shear factor, translation in pixels, strokes bolder or
    # thinner (3x3 dilations or erosions, fractions blend), elastic displacement in pixels,
    # each drawn per digit up to this much either way; on the labeled digits, or on all
    augment_rotation: float = _bounded(0.0, Range(ge=0, le=45))
    augment_scale: float = _bounded(0.0, Range(ge=0, le=0.5))
    augment_shear: float = _bounded(0.0, Range(ge=0, le=1))
    augment_translation: float = _bounded(0.0, Range(ge=0, le=8))
    augment_stroke: float = _bounded(0.0, Range(ge=0, le=3))
    augment_elastic: float = _bounded(0.0, Range(ge=0, le=8))
    # half the digits reduced to a side of this many pixels or more and enlarged (0: off)
    augment_resolution: int = _bounded(0, Range(ge=0, le=28))
    augment_unlabeled: bool = False
    # the weights published: those of the epoch with the lowest validation error (the
    # validation reconstruction loss for models without a classifier), or the last epoch's
    keep_best: bool = False
    # evaluation of clustering models
    cluster_mapping: ClusterMapping = ClusterMapping.MAJORITY
    # draws the validation split and the labeled digits instead of ``seed`` (None: seed),
    # so that runs can differ in their weights and batch order alone
    split_seed: int | None = _bounded(None, Range(ge=0, le=2**32 - 1))

    def __post_init__(self) -> None:
        for field, kind in field_types().items():
            value = getattr(self, field)
            if issubclass(kind.base, Enum) and not isinstance(value, kind.base):
                try:
                    object.__setattr__(self, field, kind.base(value))
                except ValueError:
                    choices = ", ".join(m.value for m in kind.base)
                    raise ValueError(f"{field} must be one of {choices}, got {value!r}") from None
            elif kind.base is bool and not isinstance(value, bool):
                raise ValueError(f"{field} must be true or false, got {value!r}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not field.metadata or (value is None and field.default is None):
                continue
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{field.name} must be a finite number, got {value!r}")
            if "range" in field.metadata and not field.metadata["range"].holds(value):
                why = f" ({field.metadata['why']})" if field.metadata["why"] else ""
                raise ValueError(f"{field.name} must be {field.metadata['range']}{why}, got "
                                 f"{value!r}")
            if "each" in field.metadata:
                each = field.metadata["each"]
                items = list(value)
                if not all(each.holds(v) for v in items) or len(set(items)) != len(items):
                    raise ValueError(f"{field.name} must be distinct numbers, each {each}, "
                                     f"got {items}")
                object.__setattr__(self, field.name, tuple(sorted(int(v) for v in items)))
        if self.sample_class_weight > 0 and not self.has_categorical:
            raise ValueError(f"sample_class_weight needs a model with a class code "
                             f"(semi_supervised or clustering), not {self.mode.value}")
        if self.n_labels is not None and self.mode not in LABEL_MODES:
            raise ValueError(f"n_labels is only meaningful for semi_supervised or supervised, "
                             f"not {self.mode.value}")

    # -- what the mode implies -------------------------------------------------
    @property
    def has_categorical(self) -> bool:
        """The encoder has a softmax head y (and a categorical discriminator), so the
        model can classify (by argmax y)."""
        return self.mode in (Mode.SEMI_SUPERVISED, Mode.CLUSTERING)

    @property
    def has_classification_phase(self) -> bool:
        """A phase trains q(y|x) on its own: on labels (semi-supervised, with any
        consistency terms), or on the consistency terms alone (clustering)."""
        return self.mode is Mode.SEMI_SUPERVISED or (
            self.mode is Mode.CLUSTERING and self.has_consistency_terms)

    @property
    def has_consistency_terms(self) -> bool:
        """Terms on q(y|x) of the unlabeled minibatch: VAT, or either entropy."""
        return self.vat_weight > 0 or self.entropy_weight > 0 or self.marginal_entropy_weight > 0

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
