"""Resumable training state: a run stopped after an epoch and resumed in a fresh trainer
ends with exactly the weights of a run that never stopped."""

import json

import pytest
import torch

from aae.config import AAEConfig, Mode, Precision
from aae.data import splits_for
from aae.errors import CheckpointCorrupt, TrainingStopped
from aae.resume import latest_epoch, load_state, save_state
from aae.training import Trainer


def config(mode: Mode, **changes) -> AAEConfig:
    return AAEConfig(mode=mode, n_labels=100 if mode is Mode.SEMI_SUPERVISED else None,
                     epochs=3, hidden=32, validation_size=300, precision=Precision.FP32,
                     **changes)



def stopped_after(epochs: int, cfg: AAEConfig, splits, directory) -> Trainer:
    """A run that saves its state at every epoch's end and is stopped after ``epochs``."""
    trainer = Trainer(cfg, splits, on_epoch_end=lambda t: save_state(t, directory),
                      should_stop=lambda: trainer.epoch >= epochs)
    with pytest.raises(TrainingStopped):
        trainer.fit()
    return trainer


@pytest.mark.parametrize("mode", [Mode.SEMI_SUPERVISED, Mode.UNSUPERVISED])
def test_a_resumed_run_ends_exactly_like_an_uninterrupted_one(mode, fixture_data_dir,
                                                              tmp_path):
    cfg = config(mode)
    splits = splits_for(cfg, fixture_data_dir)
    straight = Trainer(cfg, splits).fit()

    stopped_after(1, cfg, splits, tmp_path)
    assert latest_epoch(tmp_path) == 1
    resumed = Trainer(cfg, splits)
    assert load_state(resumed, tmp_path) == 1
    assert (resumed.epoch, resumed.step, len(resumed.history)) == (1, 17, 1)
    result = resumed.fit()

    a, b = straight.model.state_tensors(), result.model.state_tensors()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert result.metrics["history"] == straight.metrics["history"]
    assert result.metrics["steps"] == straight.metrics["steps"] == 51


def test_only_the_newest_complete_state_is_kept_and_read(fixture_data_dir, tmp_path):
    cfg = config(Mode.UNSUPERVISED)
    stopped_after(2, cfg, splits_for(cfg, fixture_data_dir), tmp_path)
    (tmp_path / ".tmp-0123").mkdir()  # a state being written when the machine died
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-0123", "epoch-2"]
    assert sorted(p.name for p in (tmp_path / "epoch-2").iterdir()) == [
        "state.json", "state.safetensors"]  # tensors and JSON: nothing pickled
    assert load_state(Trainer(cfg, splits_for(cfg, fixture_data_dir)), tmp_path) == 2


def test_no_state_means_a_fresh_start(fixture_data_dir, tmp_path):
    cfg = config(Mode.UNSUPERVISED)
    trainer = Trainer(cfg, splits_for(cfg, fixture_data_dir))
    assert load_state(trainer, tmp_path / "missing") is None
    assert latest_epoch(tmp_path / "missing") is None
    assert trainer.epoch == trainer.step == 0


def test_a_state_of_other_hyperparameters_or_unreadable_is_refused(fixture_data_dir,
                                                                     tmp_path):
    cfg = config(Mode.UNSUPERVISED)
    splits = splits_for(cfg, fixture_data_dir)
    stopped_after(1, cfg, splits, tmp_path)
    other = config(Mode.UNSUPERVISED, lr_reconstruction=1e-3)
    with pytest.raises(CheckpointCorrupt, match="other hyperparameters"):
        load_state(Trainer(other, splits), tmp_path)
    document = tmp_path / "epoch-1" / "state.json"
    document.write_text(json.dumps({"format": 1})[:-3])
    with pytest.raises(CheckpointCorrupt, match="unreadable"):
        load_state(Trainer(cfg, splits), tmp_path)


def test_a_state_that_names_a_best_epoch_without_its_weights_is_refused(fixture_data_dir,
                                                                        tmp_path):
    from safetensors.torch import load_file, save_file

    cfg = config(Mode.UNSUPERVISED, keep_best=True)
    splits = splits_for(cfg, fixture_data_dir)
    stopped_after(1, cfg, splits, tmp_path)
    state = tmp_path / "epoch-1"
    assert json.loads((state / "state.json").read_text())["best_epoch"] == 1
    tensors = load_file(str(state / "state.safetensors"))
    save_file({k: v for k, v in tensors.items() if not k.startswith("best.")},
              str(state / "state.safetensors"))
    with pytest.raises(CheckpointCorrupt, match="best epoch's weights"):
        load_state(Trainer(cfg, splits), tmp_path)
