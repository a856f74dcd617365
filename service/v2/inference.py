"""Inference under the protocol: a model answers one of two input sets.

- ``images`` (FP32 [-1, 784], pixels in [0, 1]) -> ``z`` (FP32 [-1, z_dim]), and for
  models with a categorical code ``y`` (FP32 [-1, n_classes]) and ``label`` (INT64 [-1],
  its argmax): the encoder;
- ``z`` and, for models with a class input, ``label`` (INT64 [-1]) -> ``images``: the
  decoder.

Inputs are checked with the library's rules (``aae.inputs`` and the model's helpers)
before they join a batch, so that a bad request never fails the requests batched
with it.
"""

from __future__ import annotations

import torch

from aae import inputs as rules
from aae.errors import InvalidInput
from service.inference.registry import LoadedModel
from service.v2.schemas import InferenceRequest, RequestInput
from service.v2.tensors import INTEGERS, input_rows, input_values


def _only(loaded: LoadedModel, inputs: dict[str, RequestInput], allowed: set[str]) -> None:
    extra = sorted(set(inputs) - allowed)
    if extra == ["label"] and not loaded.model.cfg.uses_labels:
        raise InvalidInput(f"{loaded.name} is an unsupervised model and takes no 'label' input")
    if extra:
        decode = "'z' and 'label'" if loaded.model.cfg.uses_labels else "'z'"
        raise InvalidInput(f"unexpected input {extra[0]!r}: send 'images' (encode) or "
                           f"{decode} (decode)")


def _checked(tensor: RequestInput, check) -> torch.Tensor:
    """``check(...)`` with the input's name in front of the library's message."""
    try:
        return check()
    except InvalidInput as exc:
        raise InvalidInput(f"input {tensor.name!r}: {exc}") from None


async def encode(loaded: LoadedModel, inputs: dict[str, RequestInput], limit: int,
                 binary: dict[str, bytes]) -> dict[str, torch.Tensor]:
    """images -> z, and y and label for models with a categorical code."""
    cfg = loaded.model.cfg
    _only(loaded, inputs, {"images"})
    images = inputs["images"]
    x = input_rows(images, cfg.x_dim, limit, binary.get("images"))
    x = _checked(images, lambda: rules.images(x, cfg.x_dim))
    z, y = await loaded.batchers["encode"](x)
    produced = {"z": z}
    if y is not None:
        produced.update(y=y, label=y.argmax(1))
    return produced


async def decode(loaded: LoadedModel, inputs: dict[str, RequestInput], limit: int,
                 binary: dict[str, bytes]) -> dict[str, torch.Tensor]:
    """z (and label, for models with a class input) -> images."""
    model, cfg = loaded.model, loaded.model.cfg
    _only(loaded, inputs, {"z", "label"} if cfg.uses_labels else {"z"})
    z = input_rows(inputs["z"], cfg.z_dim, limit, binary.get("z"))
    z = _checked(inputs["z"], lambda: rules.codes(z, cfg.z_dim, loaded.name))
    n = z.shape[0]
    labels = None
    if "label" in inputs:
        values = input_values(inputs["label"], INTEGERS, limit, binary.get("label"))
        if values.ndim > 2 or values.shape[0] != n or values.numel() != n:
            raise InvalidInput(f"input 'label' must have shape [{n}], one per code, "
                               f"got {inputs['label'].shape}")
        labels = values.reshape(n)
    elif cfg.uses_labels:
        raise InvalidInput(f"{loaded.name} is a {cfg.mode.value} model: add a 'label' input "
                           f"(INT64 [{n}], classes in 0..{cfg.n_classes - 1})")
    y = _checked(inputs.get("label", inputs["z"]),
                 lambda: model.decoder_classes(labels, n, loaded.name))
    (images,) = await loaded.batchers["decode"](z, y)
    return {"images": images}


async def infer(loaded: LoadedModel, request: InferenceRequest, binary: dict[str, bytes],
                limit: int) -> dict[str, torch.Tensor]:
    """The outputs of the input set the request sends."""
    inputs = {tensor.name: tensor for tensor in request.inputs}
    if len(inputs) != len(request.inputs):
        raise InvalidInput("each input may be given once")
    if "images" in inputs:
        return await encode(loaded, inputs, limit, binary)
    if "z" in inputs:
        return await decode(loaded, inputs, limit, binary)
    raise InvalidInput("send an 'images' input (encode) or a 'z' input (decode)")
