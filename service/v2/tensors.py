"""Tensors of the protocol to and from torch: a model's signature, request inputs checked
against their declared datatype and shape, response outputs."""

from __future__ import annotations

import math

import torch

from aae.config import AAEConfig
from aae.errors import InvalidInput
from service.errors import PayloadTooLarge
from service.v2.schemas import MetadataTensor, RequestInput, RequestOutput, ResponseOutput

FLOATS = ("FP32", "FP64")
INTEGERS = ("INT32", "INT64")
DATATYPES = {torch.float32: "FP32", torch.int64: "INT64"}

def _tensor(name: str, datatype: str, width: int | None, operation: str) -> MetadataTensor:
    return MetadataTensor(name=name, datatype=datatype,
                          shape=[-1] if width is None else [-1, width],
                          parameters={"operation": operation})


def signature(cfg: AAEConfig) -> tuple[list[MetadataTensor], list[MetadataTensor]]:
    """A model's inputs and outputs: ``images`` (encode) or ``z`` [+ ``label``] (decode)."""
    inputs = [_tensor("images", "FP32", cfg.x_dim, "encode"),
              _tensor("z", "FP32", cfg.z_dim, "decode")]
    if cfg.uses_labels:
        inputs.append(_tensor("label", "INT64", None, "decode"))
    outputs = [_tensor("z", "FP32", cfg.z_dim, "encode")]
    if cfg.has_categorical:
        outputs.append(_tensor("y", "FP32", cfg.n_classes, "encode"))
        outputs.append(_tensor("label", "INT64", None, "encode"))
    outputs.append(_tensor("images", "FP32", cfg.x_dim, "decode"))
    return inputs, outputs


def input_values(tensor: RequestInput, datatypes: tuple[str, ...], limit: int) -> torch.Tensor:
    """An input's data as a tensor of its declared shape (batch first, at most ``limit``)."""
    name = tensor.name
    if tensor.datatype not in datatypes:
        raise InvalidInput(f"input {name!r} must have datatype {' or '.join(datatypes)}, "
                           f"got {tensor.datatype!r}")
    if not tensor.shape or any(d < 0 for d in tensor.shape):
        raise InvalidInput(f"input {name!r}: shape must be a list of non-negative sizes, "
                           f"got {tensor.shape}")
    if tensor.shape[0] < 1:
        raise InvalidInput(f"input {name!r} must hold at least one row")
    if tensor.shape[0] > limit:
        raise PayloadTooLarge(f"a batch of {tensor.shape[0]} is over the limit of {limit}")
    try:
        values = torch.tensor(tensor.data)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise InvalidInput(f"input {name!r}: data must be an array of numbers, flat or "
                           "nested with equal lengths") from None
    if values.dtype == torch.bool or values.is_complex():
        raise InvalidInput(f"input {name!r}: data must be numbers")
    if tensor.datatype in INTEGERS and values.is_floating_point():
        raise InvalidInput(f"input {name!r} is {tensor.datatype}: data must be integers")
    if values.numel() != math.prod(tensor.shape):
        raise InvalidInput(f"input {name!r} has {values.numel()} values, its shape "
                           f"{tensor.shape} needs {math.prod(tensor.shape)}")
    return values.reshape(tensor.shape)


def input_rows(tensor: RequestInput, width: int, limit: int) -> torch.Tensor:
    """A float input as (n, width) float32 rows; trailing dimensions are flattened."""
    values = input_values(tensor, FLOATS, limit)
    if values.ndim < 2 or math.prod(values.shape[1:]) != width:
        raise InvalidInput(f"input {tensor.name!r} must have shape [n, {width}], "
                           f"got {tensor.shape}")
    return values.reshape(values.shape[0], width).float()


def outputs(produced: dict[str, torch.Tensor], requested: list[RequestOutput] | None
            ) -> list[ResponseOutput]:
    """The requested outputs (all that were produced if none were named), flat row-major."""
    names = list(dict.fromkeys(o.name for o in requested)) if requested else list(produced)
    for name in names:
        if name not in produced:
            raise InvalidInput(f"unknown output {name!r}: these inputs give "
                               f"{', '.join(repr(n) for n in produced)}")
    return [ResponseOutput.model_construct(
        name=name, shape=list(produced[name].shape), datatype=DATATYPES[produced[name].dtype],
        data=produced[name].reshape(-1).tolist()) for name in names]
