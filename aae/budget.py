"""What a training run will cost, from its configuration alone, before anything is built:
its parameters, the memory it needs at its peak and the steps it takes (``estimate``),
held against a budget (``check``), so that a run a worker cannot hold is refused before
it is queued rather than killed by the system halfway.

The memory is an upper estimate of three parts, in float32:

- the model: weights, their gradients, each phase's optimizer moments (Adam keeps two
  per parameter, SGD one; the encoder is in three or four phases) and the moving average
  of the weights where ``ema_decay`` asks for one;
- the activations of one step: every network's hidden layers, over the unlabeled and the
  labeled minibatch, kept for the backward pass (``ACTIVATION_COPIES`` tensors per layer
  and network, which covers the phases' several passes, VAT's included);
- the data: the training file and the test file as float32 pixels;
- and ``RUNTIME_BYTES`` for the rest: evaluation batches, the allocator's slack.

The steps are those ``aae.training.Trainer`` will take: the epochs times the minibatches
of an epoch, or ``max_steps`` if that is fewer. The training set is assumed to hold
``DATASET_DIGITS`` digits (MNIST's and Fashion-MNIST's training file).
"""

from __future__ import annotations

from dataclasses import dataclass

from aae.config import DATASET_DIGITS, AAEConfig, Mode, Optimizer
from aae.errors import AAEError

FLOAT_BYTES = 4
TEST_DIGITS = 10_000
ACTIVATION_COPIES = 16  # per hidden layer and network: linear, ReLU, dropout mask, passes
RUNTIME_BYTES = 256 * 2**20  # measured: a small run's peak grows by about 110 MiB


class OverBudget(AAEError):
    """A run would need more memory or steps than a worker allows. ``field`` is the
    hyperparameter that weighs most in the excess."""

    def __init__(self, message: str, field: str, estimate: int, limit: int) -> None:
        super().__init__(message)
        self.field, self.estimate, self.limit = field, estimate, limit


@dataclass(frozen=True)
class Estimate:
    parameters: int
    model_bytes: int  # weights, gradients, optimizer moments, moving average
    activation_bytes: int  # of one step
    data_bytes: int
    steps: int

    @property
    def memory_bytes(self) -> int:
        return self.model_bytes + self.activation_bytes + self.data_bytes + RUNTIME_BYTES

    def memory_field(self) -> str:
        """The field that weighs most in the memory: the width of the networks, the
        minibatch, or the dataset."""
        parts = {"hidden": self.model_bytes, "batch_size": self.activation_bytes,
                 "dataset": self.data_bytes}
        return max(parts, key=lambda k: parts[k])

    def said(self) -> str:
        return (f"about {gib(self.memory_bytes)} ({self.parameters:,} parameters: "
                f"{gib(self.model_bytes)} with gradients and optimizer state; activations "
                f"{gib(self.activation_bytes)}; data {gib(self.data_bytes)})")


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def _mlp(in_dim: int, hidden: int, depth: int, batch_norm: bool = False) -> int:
    """Parameters of ``aae.nets.mlp``."""
    per_layer = hidden + (2 * hidden if batch_norm else 0)  # bias, batch norm's scale and shift
    return in_dim * hidden + (depth - 1) * hidden * hidden + depth * per_layer


def parameters(cfg: AAEConfig) -> tuple[int, int]:
    """The model's parameters (``aae.model.AdversarialAutoencoder``), and the encoder's."""
    h, d = cfg.hidden, cfg.depth
    encoder = (_mlp(cfg.x_dim, h, d, cfg.encoder_batch_norm) + h * cfg.z_dim + cfg.z_dim
               + (h * cfg.n_classes + cfg.n_classes if cfg.has_categorical else 0))
    decoder = _mlp(cfg.decoder_input_dim, h, d) + h * cfg.x_dim + cfg.x_dim
    discriminators = _mlp(cfg.z_dim, h, d) + h + 1
    if cfg.has_categorical:
        discriminators += _mlp(cfg.n_classes, h, d) + h + 1
    return encoder + decoder + discriminators, encoder


def training_digits(cfg: AAEConfig, dataset_digits: int = DATASET_DIGITS) -> int:
    """The digits an epoch goes through (``Trainer.source``)."""
    train = max(1, dataset_digits - cfg.validation_size)
    if cfg.mode is Mode.SUPERVISED and cfg.n_labels is not None:
        return min(train, cfg.n_labels)
    return train


def steps(cfg: AAEConfig, dataset_digits: int = DATASET_DIGITS) -> int:
    """The steps ``aae.training.Trainer`` takes."""
    source = training_digits(cfg, dataset_digits)
    total = cfg.epochs * (source // min(cfg.batch_size, source))
    return min(total, cfg.max_steps) if cfg.max_steps else total


def estimate(cfg: AAEConfig, dataset_digits: int = DATASET_DIGITS) -> Estimate:
    total, encoder = parameters(cfg)
    moments = 2 if cfg.optimizer is Optimizer.ADAM else 1
    phases_with_encoder = 3 + (1 if cfg.has_classification_phase else 0)
    state = (total  # weights
             + total  # gradients
             + moments * (total + (phases_with_encoder - 1) * encoder)  # per phase
             + (total if cfg.ema_decay > 0 else 0))
    batch = min(cfg.batch_size, training_digits(cfg, dataset_digits))
    if cfg.mode is Mode.SEMI_SUPERVISED:
        batch += min(cfg.labeled_batch_size or cfg.batch_size, cfg.n_labels or dataset_digits)
    networks = 4 if cfg.has_categorical else 3
    activations = batch * (cfg.hidden * cfg.depth * networks * ACTIVATION_COPIES
                           + 4 * cfg.x_dim)
    data = (dataset_digits + TEST_DIGITS) * cfg.x_dim
    return Estimate(parameters=total, model_bytes=state * FLOAT_BYTES,
                    activation_bytes=activations * FLOAT_BYTES, data_bytes=data * FLOAT_BYTES,
                    steps=steps(cfg, dataset_digits))


def check(cfg: AAEConfig, *, max_memory_bytes: int, max_steps: int,
          memory_setting: str = "the memory budget",
          steps_setting: str = "the step budget") -> Estimate:
    """The run's estimate; raises ``OverBudget`` naming the field that weighs most if it
    needs more memory or steps than allowed (the settings' names are said)."""
    found = estimate(cfg)
    if found.memory_bytes > max_memory_bytes:
        field = found.memory_field()
        raise OverBudget(f"the run needs {found.said()}, over {memory_setting} of "
                         f"{gib(max_memory_bytes)}", field, found.memory_bytes,
                         max_memory_bytes)
    if found.steps > max_steps:
        field = "max_steps" if cfg.max_steps and found.steps == cfg.max_steps else "epochs"
        raise OverBudget(f"the run takes {found.steps:,} steps ({cfg.epochs} epochs "
                         f"of {steps(cfg.replace(epochs=1, max_steps=None)):,}), over "
                         f"{steps_setting} of {max_steps:,}", field, found.steps, max_steps)
    return found
