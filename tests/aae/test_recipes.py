"""The model-quality options (input noise, SGD and schedules, the sequential step, VAT,
VAT without dropout, VAT with per-digit radii, conditional and marginal entropy, the encoder's batch norm, the
paper's cluster mapping) and the presets: each exercised on real digits, deterministic,
and resumed exactly."""

import math

import pytest
import torch

from aae.config import AAEConfig, ClusterMapping, LRSchedule, Mode, Precision
from aae.data import splits_for
from aae.errors import TrainingStopped
from aae.evaluation import cluster_labels, map_clusters, paper_cluster_labels
from aae.optim import lr_scale
from aae.presets import PRESETS, build_config, preset_values
from aae.resume import load_state, save_state
from aae.training import Trainer

OPTIONS = {
    "noise": dict(input_noise_std=0.3, dropout_encoder=0.0),
    "sgd-step": dict(optimizer="sgd", lr_reconstruction=0.01, lr_regularization=0.05,
                     lr_semi_supervised=0.05, lr_schedule="step", lr_milestones=(1,)),
    "cosine": dict(lr_schedule="cosine"),
    "sequential": dict(step_mode="sequential"),
    "vat": dict(vat_weight=1.0, vat_epsilon=2.0),
    "vat-without-dropout": dict(vat_weight=1.0, vat_epsilon=2.0, vat_dropout=False),
    "entropy": dict(entropy_weight=0.5, labeled_batch_size=50),
    "label-shift": dict(label_shift=2),
    "batch-norm": dict(encoder_batch_norm=True, vat_weight=1.0, vat_epsilon=0.5),
    "batch-norm-clean-vat": dict(encoder_batch_norm=True, vat_weight=1.0, vat_epsilon=0.5,
                                 vat_dropout=False),
    "weight-average": dict(ema_decay=0.9, encoder_batch_norm=True),
    "clustering-vat": dict(mode=Mode.CLUSTERING, n_labels=None, n_classes=16, vat_weight=1.0,
                           vat_epsilon=0.5, vat_dropout=False, encoder_batch_norm=True),
    "clustering-vat-sequential": dict(mode=Mode.CLUSTERING, n_labels=None, vat_weight=1.0,
                                      entropy_weight=0.1, step_mode="sequential"),
    "clustering-mutual-information": dict(mode=Mode.CLUSTERING, n_labels=None,
                                          entropy_weight=0.1, marginal_entropy_weight=0.4),
    "clustering-imsat-radius": dict(mode=Mode.CLUSTERING, n_labels=None, vat_weight=1.0,
                                    vat_epsilon=0.25, vat_radius_neighbor=10,
                                    vat_dropout=False, marginal_entropy_weight=0.4),
}


def config(**changes) -> AAEConfig:
    base = dict(mode=Mode.SEMI_SUPERVISED, n_labels=100, epochs=2, hidden=64,
                validation_size=300, precision=Precision.FP32)
    return AAEConfig(**{**base, **changes})



def weights_equal(a, b) -> bool:
    a, b = a.state_tensors(), b.state_tensors()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("option", list(OPTIONS))
def test_each_option_trains_deterministically_and_resumes_exactly(option, fixture_data_dir,
                                                                  tmp_path):
    cfg = config(**OPTIONS[option])
    splits = splits_for(cfg, fixture_data_dir)
    straight = Trainer(cfg, splits).fit()
    again = Trainer(cfg, splits).fit()
    assert weights_equal(straight.model, again.model)

    stopped = Trainer(cfg, splits, on_epoch_end=lambda t: save_state(t, tmp_path),
                      should_stop=lambda: stopped.epoch >= 1)
    with pytest.raises(TrainingStopped):
        stopped.fit()
    resumed = Trainer(cfg, splits)
    assert load_state(resumed, tmp_path) == 1
    result = resumed.fit()
    assert weights_equal(straight.model, result.model)
    assert result.metrics["history"] == straight.metrics["history"]
    assert 0 <= result.metrics["test_error"] < 0.9  # better than chance on real digits


@pytest.mark.parametrize("changes", [{}, dict(ema_decay=0.9, encoder_batch_norm=True, seed=2)],
                         ids=["weights", "moving-average"])
def test_keep_best_publishes_the_best_validated_epoch_and_resumes_exactly(
        changes, fixture_data_dir, tmp_path):
    cfg = config(epochs=4, keep_best=True, **changes)
    splits = splits_for(cfg, fixture_data_dir)
    kept = Trainer(cfg, splits).fit()
    errors = [h["validation_error"] for h in kept.metrics["history"]]
    best = errors.index(min(errors)) + 1
    assert kept.metrics["selected_epoch"] == best < 4  # on this seed the error rises again
    assert (kept.metrics["validation_error"], kept.metrics["epochs"]) == (min(errors), 4)
    # what is published and tested is the model a run to the best epoch ends with
    shorter = Trainer(cfg.replace(epochs=best, keep_best=False), splits).fit()
    assert weights_equal(kept.model, shorter.model)
    assert kept.metrics["test_error"] == shorter.metrics["test_error"]
    assert not weights_equal(kept.model, Trainer(cfg.replace(keep_best=False), splits).fit().model)

    stopped = Trainer(cfg, splits, on_epoch_end=lambda t: save_state(t, tmp_path),
                      should_stop=lambda: stopped.epoch >= best)
    with pytest.raises(TrainingStopped):
        stopped.fit()
    resumed = Trainer(cfg, splits)
    assert load_state(resumed, tmp_path) == best
    result = resumed.fit()
    assert weights_equal(kept.model, result.model)
    assert result.metrics["selected_epoch"] == best


@pytest.mark.parametrize("mode, validation_size, selected",
                         [(Mode.UNSUPERVISED, 300, "lowest loss"), (Mode.SEMI_SUPERVISED, 0, "last")])
def test_keep_best_scores_by_reconstruction_without_a_classifier_and_needs_validation(
        mode, validation_size, selected, fixture_data_dir):
    cfg = config(mode=mode, n_labels=None if mode is Mode.UNSUPERVISED else 100, epochs=3,
                 keep_best=True, validation_size=validation_size)
    metrics = Trainer(cfg, splits_for(cfg, fixture_data_dir)).fit().metrics
    losses = [h["validation_loss"] for h in metrics["history"]]
    if selected == "last":  # no validation digits: nothing to choose by
        assert all(math.isnan(v) for v in losses) and metrics["selected_epoch"] == 3
    else:
        assert metrics["selected_epoch"] == losses.index(min(losses)) + 1


def test_options_change_the_training():
    """Each option is wired: the same seed gives other weights after one step."""
    from aae.data import Digits, MNISTSplits

    torch.manual_seed(0)
    x = torch.rand(300, 784)
    y = torch.arange(300) % 10
    digits = Digits(x, y)
    splits = MNISTSplits(train=digits, labeled=digits.take(torch.arange(100)),
                         validation=digits, test=digits, source="random")
    base = Trainer(config(max_steps=2), splits).fit().model
    for option, changes in OPTIONS.items():
        changed = Trainer(config(max_steps=2, **changes), splits).fit().model
        assert not weights_equal(base, changed), option


def test_losses_name_the_consistency_terms(fixture_data_dir):
    cfg = config(max_steps=3, vat_weight=1.0, entropy_weight=0.1, marginal_entropy_weight=0.1)
    events = []
    Trainer(cfg, splits_for(cfg, fixture_data_dir), on_progress=events.append,
            progress_every=1).fit()
    assert set(events[-1].losses) == {"reconstruction", "discriminator", "generator",
                                      "classification", "vat", "entropy", "marginal_entropy"}
    assert events[-1].losses["marginal_entropy"] >= 0


def test_marginal_entropy_is_zero_for_even_use_and_log_k_for_one_class():
    from aae.phases import marginal_entropy_loss

    even = torch.eye(4).repeat(3, 1) * 20  # 12 confident rows, each class 3 times
    assert marginal_entropy_loss(even).item() == pytest.approx(0, abs=1e-6)
    collapsed = torch.zeros(12, 4)
    collapsed[:, 2] = 50
    assert marginal_entropy_loss(collapsed).item() == pytest.approx(math.log(4), abs=1e-5)
    flat = torch.zeros(12, 4)  # every row unsure, the mean still even
    assert marginal_entropy_loss(flat).item() == pytest.approx(0, abs=1e-6)


@pytest.mark.parametrize("step_mode", ["simultaneous", "sequential"])
def test_clustering_models_train_q_y_on_the_consistency_terms(step_mode, fixture_data_dir):
    """In clustering mode VAT and entropy get a phase of their own (no labels to add them
    to); without them the mode trains as it always did, with no such phase."""
    plain = config(mode=Mode.CLUSTERING, n_labels=None, max_steps=2, step_mode=step_mode)
    consistent = plain.replace(vat_weight=1.0, entropy_weight=0.1, marginal_entropy_weight=0.1)
    assert not plain.has_classification_phase and consistent.has_classification_phase
    assert plain.replace(marginal_entropy_weight=0.1).has_classification_phase
    splits = splits_for(plain, fixture_data_dir)
    for cfg, terms in ((plain, set()), (consistent, {"vat", "entropy", "marginal_entropy"})):
        events = []
        trainer = Trainer(cfg, splits, on_progress=events.append, progress_every=1)
        trained = trainer.fit().model
        assert set(events[-1].losses) == {"reconstruction", "discriminator", "generator",
                                          *terms}
        assert (trainer.optimizers.classification is None) == (not terms)
    assert not weights_equal(Trainer(plain, splits).fit().model, trained)


def test_clean_passes_neither_drop_units_nor_move_batch_norm_statistics():
    """VAT's clean passes: batch statistics normalise the batch, the running ones stay put,
    no unit is dropped; afterwards dropout and tracking are as they were."""
    from aae.nets import Encoder
    from aae.phases import clean_passes

    torch.manual_seed(0)
    encoder = Encoder(config(encoder_batch_norm=True, hidden=32)).train()
    x = torch.rand(50, 784)
    encoder(x)  # one tracked pass: running statistics away from their initial values
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    with clean_passes(encoder):
        first, second = encoder(x + 0.5)[1], encoder(x + 0.5)[1]
    assert torch.equal(first, second)  # no dropout masks
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    eval_logits = encoder.eval()(x + 0.5)[1]
    assert not torch.allclose(first, eval_logits)  # the batch's statistics, not the running ones
    encoder.train()
    assert not torch.equal(encoder(x)[1], encoder(x)[1])  # dropout is back
    encoder(x)
    assert not torch.equal(before["body.1.running_mean"], encoder.state_dict()["body.1.running_mean"])


def test_the_moving_average_of_the_weights_is_validated_and_published(fixture_data_dir):
    """``ema_decay``: training follows the same path; the model validated, tested and
    returned is the average, lerped towards the trained weights after every step, after
    a warm-up in which it is their plain mean."""
    cfg = config(max_steps=3, validation_size=100, encoder_batch_norm=True)
    splits = splits_for(cfg, fixture_data_dir)
    weights = [Trainer(cfg.replace(max_steps=n), splits).fit().model.state_tensors()
               for n in (1, 2, 3)]
    floats = [k for k, v in weights[0].items() if v.is_floating_point()]
    assert any(not torch.equal(weights[1][k], weights[2][k]) for k in floats)

    def averaged(decay: float, steps: int):
        trainer = Trainer(cfg.replace(ema_decay=decay, max_steps=steps), splits)
        result = trainer.fit()
        assert weights_equal(trainer.model, Trainer(cfg.replace(max_steps=steps), splits)
                             .fit().model)  # training unchanged
        assert result.model is trainer.evaluated and result.model is not trainer.model
        assert result.metrics["validation_error"] == result.metrics["history"][-1][
            "validation_error"]
        return result.model.state_tensors()

    mean = averaged(0.999, 3)  # warm-up: the mean of the three steps' weights
    decayed = averaged(0.25, 3)  # past the warm-up at once: 0.25 of the old, 0.75 of the new
    for k in floats:
        torch.testing.assert_close(mean[k], (weights[0][k] + weights[1][k] + weights[2][k]) / 3)
        torch.testing.assert_close(
            decayed[k], 0.25 * (0.25 * weights[0][k] + 0.75 * weights[1][k])
            + 0.75 * weights[2][k])
    assert torch.equal(mean["encoder.body.1.num_batches_tracked"],
                       weights[2]["encoder.body.1.num_batches_tracked"])


def test_learning_rate_schedules():
    step = AAEConfig(lr_schedule=LRSchedule.STEP, lr_milestones=(2, 4), lr_gamma=0.5)
    assert [lr_scale(step, s, 10, 100) for s in (0, 19, 20, 39, 40, 99)] == \
        [1, 1, 0.5, 0.5, 0.25, 0.25]
    cosine = AAEConfig(lr_schedule=LRSchedule.COSINE)
    assert lr_scale(cosine, 0, 10, 100) == 1.0
    assert lr_scale(cosine, 50, 10, 100) == pytest.approx(0.5)
    assert lr_scale(cosine, 100, 10, 100) == pytest.approx(0.0)
    assert lr_scale(AAEConfig(), 12345, 10, 100) == 1.0


def test_the_paper_cluster_mapping_differs_from_majority_vote():
    # q(y|x) of six labeled examples over three clusters
    probabilities = torch.tensor([
        [0.90, 0.05, 0.05],  # label 1: cluster 0 at its most confident
        [0.60, 0.20, 0.20],  # label 2
        [0.55, 0.25, 0.20],  # label 2: cluster 0's majority is 2
        [0.10, 0.80, 0.10],  # label 3
        [0.20, 0.10, 0.70],  # label 4
        [0.05, 0.05, 0.95],  # label 5: cluster 2 at its most confident
    ])
    labels = torch.tensor([1, 2, 2, 3, 4, 5])
    assert paper_cluster_labels(probabilities, labels).tolist() == [1, 3, 5]
    assert cluster_labels(probabilities.argmax(1), labels, 3).tolist() == [2, 3, 4]
    assert map_clusters(probabilities, labels, ClusterMapping.PAPER).tolist() == [1, 3, 5]
    assert map_clusters(probabilities, labels, ClusterMapping.MAJORITY).tolist() == [2, 3, 4]


def test_field_defaults_keep_the_first_release_behaviour():
    """An old config.json (no new keys) rebuilds exactly the model it was saved with."""
    old = {"mode": "semi_supervised", "z_dim": 2, "n_labels": 100}
    cfg = AAEConfig.from_dict(old)
    assert (cfg.input_noise_std, cfg.optimizer.value, cfg.lr_schedule.value,
            cfg.step_mode.value, cfg.vat_weight, cfg.entropy_weight,
            cfg.cluster_mapping.value) == (0.0, "adam", "constant", "simultaneous", 0.0, 0.0,
                                           "majority")
    assert (cfg.vat_dropout, cfg.encoder_batch_norm, cfg.ema_decay, cfg.split_seed,
            cfg.marginal_entropy_weight) == (True, False, 0.0, None, 0.0)
    assert AAEConfig.from_dict(cfg.to_dict()) == cfg


def test_presets_fill_in_and_explicit_values_win():
    assert build_config("seed", mode="semi_supervised") == AAEConfig(mode=Mode.SEMI_SUPERVISED)
    cfg = build_config("paper", mode="semi_supervised", n_labels=100, z_dim=4)
    assert cfg.z_dim == 4  # explicit
    assert cfg.momentum == preset_values("paper", "semi_supervised")["momentum"]
    clusters = build_config("default", mode="clustering")
    assert (clusters.n_classes, clusters.cluster_mapping) == (30, ClusterMapping.PAPER)
    assert (clusters.vat_radius_neighbor, clusters.vat_epsilon, clusters.entropy_weight,
            clusters.marginal_entropy_weight, clusters.z_dim, clusters.keep_best) == (
        10, 0.25, 0.1, 0.4, 2, True)
    assert build_config("default", mode="unsupervised").z_dim == 2  # the 2-D figure mode
    semi = build_config("default", mode="semi_supervised", n_labels=100)
    assert (semi.z_dim, semi.prior_std, semi.marginal_entropy_weight, semi.vat_weight) == (
        10, 1.0, 0.4, 1.0)  # the paper's style code, kept from merging classes
    assert semi.label_shift == 2 and AAEConfig().label_shift == 0
    paper = build_config("paper", mode="semi_supervised")
    assert (paper.optimizer.value, paper.step_mode.value, paper.input_noise_std,
            paper.dropout_encoder, paper.z_dim) == ("sgd", "sequential", 0.3, 0.0, 10)
    assert build_config("paper", mode="clustering").cluster_mapping is ClusterMapping.PAPER
    for name in PRESETS:  # every preset builds a valid config in every mode
        for mode in Mode:
            build_config(name, mode=mode)
    with pytest.raises(ValueError, match="preset must be one of"):
        build_config("nope")


def test_shifted_moves_each_image_within_the_bound():
    from aae.phases import shifted

    torch.manual_seed(0)
    x = torch.zeros(50, 784)
    x[:, 14 * 28 + 14] = 1.0  # one lit pixel in the middle of every image
    moved = shifted(x, 2)
    where = moved.reshape(50, 28, 28).nonzero()[:, 1:]
    assert moved.sum(1).eq(1).all()  # nothing lost from the middle
    assert (where - 14).abs().max() <= 2 and len({tuple(w.tolist()) for w in where}) > 5


def test_vat_takes_one_radius_per_image():
    """A per-image radius (B, 1) equal to a constant is that constant; a zero radius leaves
    its image unperturbed (no divergence), whatever the others' radii."""
    from aae.phases import vat_loss

    from aae.nets import Encoder

    torch.manual_seed(0)
    net = Encoder(AAEConfig(mode=Mode.CLUSTERING, hidden=32)).eval()
    x = torch.rand(6, 784)
    _, logits = net(x)

    def loss(epsilon):
        torch.manual_seed(1)
        return vat_loss(net, x, logits, epsilon, xi=1.0)

    assert torch.equal(loss(2.0), loss(torch.full((6, 1), 2.0)))
    some = torch.tensor([[0.0], [3.0], [0.0], [3.0], [0.0], [3.0]])
    assert loss(torch.zeros(6, 1)).item() == pytest.approx(0, abs=1e-6)
    assert 0.2 * loss(3.0).item() < loss(some).item() < 0.8 * loss(3.0).item()


def test_per_digit_radii_are_computed_only_where_asked(fixture_data_dir):
    from aae.data import neighbor_distances

    cfg = config(vat_weight=1.0, vat_epsilon=0.25, vat_radius_neighbor=10)
    splits = splits_for(cfg, fixture_data_dir)
    trainer = Trainer(cfg, splits)
    assert torch.equal(trainer.radius, neighbor_distances(splits.train.images, 10))
    assert Trainer(cfg.replace(vat_radius_neighbor=0), splits).radius is None
    assert Trainer(cfg.replace(vat_weight=0.0), splits).radius is None  # no VAT, no radii
