from enum import Enum
from typing import Optional

import pytest
import torch

from aae.config import (AAEConfig, FieldType, Mode, Precision, PriorKind, StepMode,
                        _field_type, field_types)
from aae.errors import CapabilityError, InvalidInput
from aae.model import AdversarialAutoencoder

MODES = list(Mode)


def small(mode: Mode, **kw) -> AdversarialAutoencoder:
    torch.manual_seed(0)
    return AdversarialAutoencoder(AAEConfig(mode=mode, hidden=64, z_dim=3, **kw)).eval()


@pytest.fixture
def digits(fixture_data_dir):
    from aae.data import load_digits
    train, _ = load_digits(fixture_data_dir, download=False)
    return train.images[:8], train.labels[:8]


@pytest.mark.parametrize("mode", MODES)
def test_code_shapes_per_mode(mode, digits):
    model = small(mode)
    x, labels = digits
    code = model.encode(x)
    assert code.z.shape == (8, 3)
    if mode in (Mode.SEMI_SUPERVISED, Mode.CLUSTERING):
        assert code.y.shape == (8, 10)
        assert torch.allclose(code.y.sum(1), torch.ones(8))
        assert (code.y >= 0).all()
    else:
        assert code.y is None
    images = model.reconstruct(x, labels=labels if mode is Mode.SUPERVISED else None)
    assert images.shape == (8, 784)
    assert images.min() >= 0 and images.max() <= 1


@pytest.mark.parametrize("mode", MODES)
def test_sampling_per_mode(mode):
    model = small(mode)
    g = torch.Generator().manual_seed(5)
    if mode is Mode.UNSUPERVISED:
        images = model.sample(6, generator=g)
        with pytest.raises(InvalidInput):
            model.sample(2, labels=7)
    else:
        images = model.sample(6, labels=7, generator=g)
    assert images.shape == (6, 784)
    # the same seed gives the same images
    g2 = torch.Generator().manual_seed(5)
    again = model.sample(6, generator=g2) if mode is Mode.UNSUPERVISED else \
        model.sample(6, labels=7, generator=g2)
    assert torch.equal(images, again)


def test_supervised_decoder_output_depends_on_the_label_only_through_y():
    model = small(Mode.SUPERVISED)
    z = torch.zeros(2, 3)
    a = model.decode(z, labels=[1, 2])
    b = model.decode(z, labels=[1, 9])
    assert torch.equal(a[0], b[0]) and not torch.equal(a[1], b[1])


@pytest.mark.parametrize("mode", [Mode.UNSUPERVISED, Mode.SUPERVISED])
def test_models_without_a_categorical_code_cannot_classify(mode, digits):
    with pytest.raises(CapabilityError, match="categorical"):
        small(mode).classify(digits[0])


@pytest.mark.parametrize("mode", [Mode.SEMI_SUPERVISED, Mode.CLUSTERING])
def test_classify_gives_probabilities(mode, digits):
    probs = small(mode).classify(digits[0])
    assert probs.shape == (8, 10)
    assert torch.allclose(probs.sum(1), torch.ones(8))


@pytest.mark.parametrize("bad, match", [
    (torch.rand(2, 100), "784 pixels"),
    (torch.full((1, 784), float("nan")), "finite"),
    (torch.full((1, 784), 2.0), r"\[0, 1\]"),
])
def test_bad_images_are_refused(bad, match):
    with pytest.raises(InvalidInput, match=match):
        small(Mode.SEMI_SUPERVISED).encode(bad)


def test_bad_codes_and_labels_are_refused():
    model = small(Mode.SEMI_SUPERVISED)
    with pytest.raises(InvalidInput, match="3 numbers"):
        model.decode(torch.zeros(1, 5), labels=1)
    with pytest.raises(InvalidInput, match="finite"):
        model.decode(torch.tensor([[0.0, float("inf"), 0.0]]), labels=1)
    with pytest.raises(InvalidInput, match="0..9"):
        model.decode(torch.zeros(1, 3), labels=10)
    with pytest.raises(InvalidInput, match="label"):
        model.decode(torch.zeros(1, 3))
    with pytest.raises(InvalidInput, match="takes no label"):
        small(Mode.UNSUPERVISED).decode(torch.zeros(1, 3), labels=1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("prior", list(PriorKind))
def test_weights_round_trip_gives_identical_outputs(mode, prior, digits):
    model = small(mode, prior=prior)
    clone = AdversarialAutoencoder.from_tensors(model.cfg, model.state_tensors())
    x, labels = digits
    kw = {"labels": labels} if mode is Mode.SUPERVISED else {}
    assert torch.equal(model.reconstruct(x, **kw), clone.reconstruct(x, **kw))
    assert torch.equal(model.encode(x).z, clone.encode(x).z)


def test_config_round_trips_through_a_dict_and_rejects_unknown_keys():
    cfg = AAEConfig(mode=Mode.CLUSTERING, prior=PriorKind.MIXTURE, z_dim=8)
    assert AAEConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown configuration keys: nope"):
        AAEConfig.from_dict({**cfg.to_dict(), "nope": 1})


@pytest.mark.parametrize("changes, match", [
    ({"mode": "bogus"}, "mode must be one of"),
    ({"z_dim": 0}, "z_dim"),
    ({"dropout_encoder": 1.0}, "dropout_encoder"),
    ({"mode": "semi_supervised", "n_labels": 105}, "multiple of 10"),
    ({"mode": "unsupervised", "n_labels": 100}, "only meaningful"),
    ({"lr_reconstruction": 0}, r"in \(0, 10\]"),
    ({"prior": "cauchy"}, "prior must be one of gaussian, mixture"),
    ({"keep_best": "yes"}, "keep_best must be true or false"),
    ({"vat_dropout": 1}, "vat_dropout must be true or false"),
    ({"mode": "supervised", "sample_class_weight": 1.0}, "needs a model with a class code"),
])
def test_config_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        AAEConfig(**changes)


def test_field_types_are_read_off_the_annotations():
    kinds = field_types()
    assert kinds["mode"] == FieldType(Mode) and kinds["step_mode"] == FieldType(StepMode)
    assert kinds["keep_best"] == FieldType(bool) and kinds["vat_epsilon"] == FieldType(float)
    assert kinds["n_labels"] == FieldType(int, optional=True)
    assert kinds["lr_milestones"] == FieldType(int, sequence=True)
    # what a new field of these shapes would get, without any list to edit
    assert _field_type(float | None) == FieldType(float, optional=True)
    assert _field_type(Optional[Precision]) == FieldType(Precision, optional=True)
    assert _field_type(tuple[float, ...]) == FieldType(float, sequence=True)
    # every enum field is coerced from its value
    enums = {name: kind.base for name, kind in kinds.items() if issubclass(kind.base, Enum)}
    coerced = AAEConfig(**{name: next(iter(enum)).value for name, enum in enums.items()})
    assert all(isinstance(getattr(coerced, name), enum) for name, enum in enums.items())


def test_config_json_is_stamped_and_read_tolerantly(tmp_path, caplog):
    """A newer worker's unknown field is a warning on the serving path, not a failure."""
    from aae.checkpoints import CONFIG_FORMAT, config_document, load_model, publish_model
    from aae.store import CheckpointStore

    cfg = AAEConfig(mode=Mode.SEMI_SUPERVISED, hidden=16)
    document = config_document(cfg)
    assert document["format"] == CONFIG_FORMAT and document["library"].startswith("aae ")
    store = CheckpointStore(tmp_path)
    model = AdversarialAutoencoder(cfg)
    publish_model(store, "m", model, {})
    newer = {**document, "format": CONFIG_FORMAT + 1, "shiny_new_knob": 3}
    store.publish("m", model.state_tensors(), newer, {})
    with caplog.at_level("WARNING"):
        _, loaded = load_model(store, "m", 2)
    assert loaded.cfg == cfg
    assert "shiny_new_knob" in caplog.text and "newer than this release" in caplog.text
    with pytest.raises(ValueError, match="unknown configuration keys: shiny_new_knob"):
        AAEConfig.from_dict({"shiny_new_knob": 3})  # strict where a config is made
