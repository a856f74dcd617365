"""A run's cost from its configuration alone (aae.budget): the parameter count is the
built model's, the memory estimate bounds what a real training step takes, and a run over
budget is refused naming the field that weighs most. Every field has an upper bound."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aae import budget
from aae.config import AAEConfig, Mode, Optimizer, Precision
from aae.model import AdversarialAutoencoder

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("batch_norm", [False, True])
def test_the_parameter_count_is_the_built_models(mode, batch_norm):
    labels = {"n_labels": 100} if mode in (Mode.SEMI_SUPERVISED, Mode.SUPERVISED) else {}
    cfg = AAEConfig(mode=mode, hidden=37, depth=3, z_dim=5, n_classes=7,
                    encoder_batch_norm=batch_norm, **labels)
    model = AdversarialAutoencoder(cfg)
    assert budget.parameters(cfg) == (sum(p.numel() for p in model.parameters()),
                                      sum(p.numel() for p in model.encoder.parameters()))


def test_the_steps_are_the_trainers():
    cfg = AAEConfig(batch_size=100, epochs=7, validation_size=10_000)
    assert budget.steps(cfg) == 7 * 500
    assert budget.steps(cfg.replace(max_steps=20)) == 20
    supervised = AAEConfig(mode=Mode.SUPERVISED, n_labels=1000, batch_size=100, epochs=3)
    assert budget.steps(supervised) == 3 * 10  # an epoch is the labeled digits


@pytest.mark.parametrize("mode, hidden, batch, optimizer", [
    (Mode.SEMI_SUPERVISED, 1500, 1000, Optimizer.ADAM),
    (Mode.SUPERVISED, 800, 1700, Optimizer.SGD),
])
def test_the_memory_estimate_bounds_what_training_takes(mode, hidden, batch, optimizer,
                                                        fixture_data_dir):
    """A few real steps in a fresh process: the growth of its peak resident memory from
    before the model is built stays under the estimate of the model and its activations
    and the rest (the data, loaded before, is the small committed fixture here)."""
    labels = ", n_labels=100" if mode in (Mode.SEMI_SUPERVISED, Mode.SUPERVISED) else ""
    script = textwrap.dedent(f"""
        import torch
        from aae.config import AAEConfig, Mode, Optimizer, Precision
        from aae.data import splits_for
        from aae.training import Trainer
        cfg = AAEConfig(mode=Mode("{mode.value}"), hidden={hidden}, batch_size={batch},
                        optimizer=Optimizer("{optimizer.value}"), max_steps=3,
                        validation_size=300, precision=Precision.FP32{labels})
        splits = splits_for(cfg, "{fixture_data_dir}", download=False)
        # the peak reset to the resident memory now (Linux: clear_refs 5), so that neither
        # the data's loading peak nor its freed buffers count: then the training's peak
        def status(field):
            with open("/proc/self/status") as lines:
                line = next(l for l in lines if l.startswith(field + ":"))
            return int(line.split()[1]) * 1024
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        before = status("VmRSS")
        Trainer(cfg, splits, device="cpu").fit()
        print(status("VmHWM") - before)
    """)
    grew = int(subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True,
                              capture_output=True, text=True,
                              env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
                              ).stdout.split()[-1])
    cfg = AAEConfig(mode=mode, hidden=hidden, batch_size=batch, optimizer=optimizer,
                    validation_size=300, precision=Precision.FP32,
                    **({"n_labels": 100} if labels else {}))
    found = budget.estimate(cfg, dataset_digits=2000)
    assert grew > 100 * 2**20  # the step was measured at all
    assert grew < found.memory_bytes - found.data_bytes


@pytest.mark.parametrize("changes, field", [
    ({"hidden": 16_384, "depth": 16}, "hidden"),
    ({"batch_size": 60_000, "hidden": 4096, "depth": 8}, "batch_size"),
])
def test_a_run_over_the_memory_budget_is_refused_naming_the_field(changes, field):
    cfg = AAEConfig(**changes)
    with pytest.raises(budget.OverBudget) as refused:
        budget.check(cfg, max_memory_bytes=8 * 2**30, max_steps=10**9,
                     memory_setting="AAE_MAX_JOB_MEMORY")
    assert refused.value.field == field and refused.value.limit == 8 * 2**30
    assert refused.value.estimate == budget.estimate(cfg).memory_bytes > 8 * 2**30
    assert "over AAE_MAX_JOB_MEMORY of 8.00 GiB" in str(refused.value)


def test_a_run_over_the_step_budget_is_refused_naming_the_field():
    with pytest.raises(budget.OverBudget) as refused:
        budget.check(AAEConfig(epochs=10_000, batch_size=1), max_memory_bytes=2**40,
                     max_steps=5_000_000)
    assert refused.value.field == "epochs" and refused.value.estimate == 10_000 * 50_000
    with pytest.raises(budget.OverBudget) as refused:
        budget.check(AAEConfig(epochs=10_000, batch_size=1, max_steps=10**8),
                     max_memory_bytes=2**40,
                     max_steps=5_000_000)
    assert refused.value.field == "max_steps"
    assert budget.check(AAEConfig(), max_memory_bytes=2**30,
                        max_steps=5_000).steps == 5_000  # the default run, exactly


def test_every_numeric_field_has_an_upper_bound_and_a_huge_integer_is_a_value_error():
    for field in dataclasses.fields(AAEConfig):
        bound = field.metadata.get("range") or field.metadata.get("each")
        if bound is not None:
            assert bound.le is not None or bound.lt is not None, field.name
            too_big = int(bound.le if bound.le is not None else bound.lt) + 1
            value = (too_big,) if "each" in field.metadata else too_big
            with pytest.raises(ValueError, match=field.name):
                AAEConfig(**{field.name: value})
    with pytest.raises(ValueError, match="epochs must be in"):  # not an OverflowError
        AAEConfig(epochs=10**400)
