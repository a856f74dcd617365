import math

import pytest
import torch
from torch.nn import functional as F

from aae.config import AAEConfig, Mode, Precision, StepMode
from aae.data import splits_for
from aae.errors import TrainingDiverged, TrainingStopped
from aae.evaluation import evaluate
from aae.model import AdversarialAutoencoder
from aae.optim import Optimizers
from aae.phases import (Batch, _decoder_class, discriminator_loss, generator_loss,
                        reconstruction_loss, train_step)
from aae.presets import build_config
from aae.training import Trainer



def test_phase_losses_are_the_seed_formulas():
    real, fake = torch.randn(50), torch.randn(50)
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    seed_d = -torch.mean(torch.log(d_real) + torch.log(1 - d_fake))
    seed_g = -torch.mean(torch.log(d_fake))
    assert torch.allclose(discriminator_loss(real, fake), seed_d, atol=1e-6)
    assert torch.allclose(generator_loss(fake), seed_g, atol=1e-6)


@pytest.mark.parametrize("mode", list(Mode))
def test_each_phase_optimizes_its_own_networks(mode):
    model = AdversarialAutoencoder(AAEConfig(mode=mode, hidden=32))
    opt = Optimizers(model, fused=False)
    encoder = {id(p) for p in model.encoder.parameters()}
    decoder = {id(p) for p in model.decoder.parameters()}
    discriminators = {id(p) for p in opt.discriminators}
    assert {id(p) for p in opt.autoencoder} == encoder | decoder
    assert {id(p) for p in opt.encoder} == encoder
    assert not discriminators & (encoder | decoder)
    assert len(discriminators) == (12 if mode in (Mode.SEMI_SUPERVISED, Mode.CLUSTERING) else 6)
    assert set(opt.named()) == {"reconstruction", "discriminator", "generator"} | (
        {"classification"} if mode is Mode.SEMI_SUPERVISED else set())


@pytest.mark.parametrize("step_mode", list(StepMode))
def test_the_sample_class_term_trains_the_decoder_alone(step_mode, fixture_data_dir):
    """One step from the same weights and random state, with and without the term: every
    network but the decoder ends identical (the term's draws come after all others)."""
    cfg = build_config("default", mode="semi_supervised", n_labels=100, hidden=32,
                       precision="fp32", step_mode=step_mode.value, validation_size=300)
    splits = splits_for(cfg, fixture_data_dir)
    after = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = AdversarialAutoencoder(cfg.replace(sample_class_weight=weight)).train()
        opt = Optimizers(model, fused=False)
        batch = Batch(x=splits.train.images[:100], x_labeled=splits.labeled.images[:100],
                      y_labeled=splits.labeled.labels[:100])
        losses = train_step(model, opt, batch, Precision.FP32)
        assert ("sample_class" in losses) == (weight > 0)
        after[weight] = {k: v.clone() for k, v in model.state_dict().items()}
    changed = {k.split(".")[0] for k in after[0.0] if not torch.equal(after[0.0][k], after[1.0][k])}
    # sequential draws the term's codes before the later phases' draws, so those differ too
    assert changed == {"decoder"} if step_mode is StepMode.SIMULTANEOUS else "decoder" in changed


@pytest.mark.parametrize("through", [True, False])
def test_the_reconstruction_reaches_q_y_only_where_configured(through, fixture_data_dir):
    """With ``reconstruction_class_grad`` off the decoder reads q(y|x) detached: the
    reconstruction's gradient reaches the style code's head but not the class head."""
    cfg = AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=100, hidden=32, validation_size=300,
                    reconstruction_class_grad=through)
    x = splits_for(cfg, fixture_data_dir).train.images[:50]
    model = AdversarialAutoencoder(cfg)
    z, logits = model.encoder(x)
    y = F.softmax(logits, dim=1)
    loss = reconstruction_loss(model.decoder(z, _decoder_class(cfg, y)), x)
    gauss, cat = torch.autograd.grad(loss, [model.encoder.gauss.weight,
                                            model.encoder.cat.weight], allow_unused=True)
    assert gauss is not None and gauss.abs().sum() > 0
    assert (cat is not None and cat.abs().sum() > 0) == through


def test_the_sample_class_term_waits_for_its_warm_up(fixture_data_dir):
    cfg = AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=100, hidden=32, epochs=2,
                    validation_size=300, sample_class_weight=1.0, sample_class_warmup=1)
    trainer = Trainer(cfg, splits_for(cfg, fixture_data_dir))
    trainer.fit()
    assert [("sample_class" in epoch) for epoch in trainer.history] == [False, True]


def test_classifiers_report_the_fidelity_of_their_samples(fixture_data_dir):
    cfg = AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=100, epochs=1, max_steps=5,
                    validation_size=300)
    fidelity = Trainer(cfg, splits_for(cfg, fixture_data_dir)).fit().metrics["sample_fidelity"]
    assert len(fidelity["per_class"]) == 10 and fidelity["per_class_samples"] == 100
    assert fidelity["mean"] == pytest.approx(sum(fidelity["per_class"]) / 10, abs=1e-3)
    unsupervised = cfg.replace(mode=Mode.UNSUPERVISED, n_labels=None)
    metrics = Trainer(unsupervised, splits_for(unsupervised, fixture_data_dir)).fit().metrics
    assert metrics["sample_fidelity"] is None


def test_semi_supervised_training_on_real_digits_beats_chance_by_far(fixture_data_dir):
    cfg = AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=200, epochs=4, validation_size=300)
    result = Trainer(cfg, splits_for(cfg, fixture_data_dir)).fit()
    # chance is 90% error; 60 steps on 1,700 digits with 200 labels get far below it
    assert result.metrics["test_error"] < 0.40
    assert result.metrics["steps"] == 4 * (1700 // 100)


@pytest.mark.parametrize("mode", [Mode.UNSUPERVISED, Mode.SUPERVISED, Mode.CLUSTERING])
def test_training_improves_reconstruction(mode, fixture_data_dir):
    cfg = AAEConfig(mode=mode, epochs=2, validation_size=300, z_dim=4)
    splits = splits_for(cfg, fixture_data_dir)
    torch.manual_seed(cfg.seed)
    untrained = evaluate(AdversarialAutoencoder(cfg), splits.test).reconstruction_loss
    result = Trainer(cfg, splits).fit()
    assert result.metrics["test_reconstruction_loss"] < 0.8 * untrained


@pytest.mark.parametrize("precision", [Precision.FP32, Precision.AUTO])
def test_training_is_deterministic(precision, fixture_data_dir):
    cfg = AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=100, max_steps=8, validation_size=300,
                    precision=precision)
    runs = [Trainer(cfg, splits_for(cfg, fixture_data_dir)).fit() for _ in range(2)]
    a, b = (r.model.state_tensors() for r in runs)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0].metrics["test_error"] == runs[1].metrics["test_error"]


def test_progress_reports_steps_epochs_and_validation(fixture_data_dir):
    cfg = AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=100, epochs=2, validation_size=300)
    events = []
    Trainer(cfg, splits_for(cfg, fixture_data_dir), on_progress=events.append,
            progress_every=5).fit()
    steps = [p for p in events if p.event == "step"]
    epochs = [p for p in events if p.event == "epoch"]
    assert [p.step for p in steps] == list(range(5, 35, 5)) + [34]
    assert [p.epoch for p in epochs] == [1, 2] and epochs[-1].step == 34
    assert all(0 <= p.validation_error <= 1 for p in epochs)
    # step reports carry the last epoch's validation, none before the first epoch's end
    assert all(p.validation_error is None for p in steps if p.step <= 17)
    assert all(p.validation_error == epochs[0].validation_error for p in steps
               if 17 < p.step < 34)
    assert set(steps[-1].losses) == {"reconstruction", "discriminator", "generator",
                                     "classification"}
    assert all(p.eta_s is not None and p.eta_s >= 0 for p in steps)
    assert steps[-1].eta_s == 0


def test_should_stop_ends_training_at_a_step_boundary(fixture_data_dir):
    cfg = AAEConfig(mode=Mode.UNSUPERVISED, epochs=3, validation_size=300)
    trainer = Trainer(cfg, splits_for(cfg, fixture_data_dir), should_stop=lambda: calls.pop())
    calls = [True] + [False] * 3  # popped from the end: three steps run, then stop
    with pytest.raises(TrainingStopped, match="step 3 of"):
        trainer.fit()
    assert trainer.step == 3


def test_a_diverging_run_stops_with_an_error_naming_the_losses_and_rates(fixture_data_dir):
    cfg = AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=100, epochs=3, validation_size=300,
                    optimizer="sgd", lr_regularization=10.0, precision=Precision.FP32)
    reports = []
    trainer = Trainer(cfg, splits_for(cfg, fixture_data_dir), progress_every=1,
                      on_progress=reports.append)
    with pytest.raises(TrainingDiverged, match=r"diverged by step \d+ of 51 .*"
                       r"(reconstruction|discriminator) loss nan.*lr_regularization 10.0, "
                       r"lr_semi_supervised 0.001\)$"):  # fp32: not told to use it
        trainer.fit()
    assert trainer.history == []  # stopped within its first epoch, before any evaluation
    assert all(math.isfinite(v) for r in reports for v in r.losses.values())


def test_minibatch_order_is_a_function_of_seed_and_epoch(fixture_data_dir):
    cfg = AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=100, validation_size=300)
    splits = splits_for(cfg, fixture_data_dir)
    t1, t2 = Trainer(cfg, splits), Trainer(cfg, splits)
    first = next(iter(t1._batches(3)))
    again = next(iter(t2._batches(3)))
    assert torch.equal(first.x, again.x) and torch.equal(first.x_labeled, again.x_labeled)
    assert not torch.equal(first.x, next(iter(t1._batches(4))).x)
    assert F.one_hot(first.y_labeled, 10).sum(0).min() >= 1  # a real labeled minibatch
