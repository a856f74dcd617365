"""Tensors of the protocol to and from torch: a model's signature, request inputs checked
against their declared datatype and shape, response outputs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from aae.config import AAEConfig
from aae.errors import InvalidInput
from service.core.errors import PayloadTooLarge
from service.v2.schemas import ConfigTensor, MetadataTensor, RequestInput, RequestOutput

FLOATS = ("FP32", "FP64")
INTEGERS = ("INT32", "INT64")
DATATYPES = {torch.float32: "FP32", torch.int64: "INT64"}
NUMPY = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8"}  # little-endian
CONFIG_TYPES = {"FP32": "TYPE_FP32", "INT64": "TYPE_INT64"}

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


def config_tensors(cfg: AAEConfig) -> tuple[list[ConfigTensor], list[ConfigTensor]]:
    """The signature in Triton's model configuration: dims without the batch dimension; a
    per-row scalar (``label``) as dims [1] reshaped to []; both input sets optional."""
    inputs, produced = signature(cfg)

    def config(tensor: MetadataTensor, optional: bool) -> ConfigTensor:
        dims = tensor.shape[1:] or [1]
        return ConfigTensor(name=tensor.name, data_type=CONFIG_TYPES[tensor.datatype],
                            dims=dims, reshape={"shape": []} if len(tensor.shape) == 1
                            else None, optional=optional)

    return ([config(t, True) for t in inputs], [config(t, False) for t in produced])


def input_values(tensor: RequestInput, datatypes: tuple[str, ...], limit: int,
                 raw: bytes | None = None) -> torch.Tensor:
    """An input's data (JSON ``data``, or ``raw`` little-endian bytes for a binary input)
    as a tensor of its declared shape, batch first, at most ``limit`` rows."""
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
    size = math.prod(tensor.shape)
    if raw is not None:
        dtype = np.dtype(NUMPY[tensor.datatype])
        if len(raw) != size * dtype.itemsize:
            raise InvalidInput(f"input {name!r} has {len(raw)} bytes of binary data, its "
                               f"shape {tensor.shape} of {tensor.datatype} needs "
                               f"{size * dtype.itemsize}")
        return torch.from_numpy(np.frombuffer(raw, dtype).copy()).reshape(tensor.shape)
    if tensor.data is None:
        raise InvalidInput(f"input {name!r} has neither data nor binary_data_size")
    try:
        values = torch.tensor(tensor.data)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise InvalidInput(f"input {name!r}: data must be an array of numbers, flat or "
                           "nested with equal lengths") from None
    if values.dtype == torch.bool or values.is_complex():
        raise InvalidInput(f"input {name!r}: data must be numbers")
    if tensor.datatype in INTEGERS and values.is_floating_point():
        raise InvalidInput(f"input {name!r} is {tensor.datatype}: data must be integers")
    if values.numel() != size:
        raise InvalidInput(f"input {name!r} has {values.numel()} values, its shape "
                           f"{tensor.shape} needs {size}")
    return values.reshape(tensor.shape)


def input_rows(tensor: RequestInput, width: int, limit: int,
               raw: bytes | None = None) -> torch.Tensor:
    """A float input as (n, width) float32 rows; trailing dimensions are flattened."""
    values = input_values(tensor, FLOATS, limit, raw)
    if values.ndim < 2 or math.prod(values.shape[1:]) != width:
        raise InvalidInput(f"input {tensor.name!r} must have shape [n, {width}], "
                           f"got {tensor.shape}")
    return values.reshape(values.shape[0], width).float()


def _wants_binary(output: RequestOutput | None, binary_default: bool) -> bool:
    if output is not None and output.parameters and "binary_data" in output.parameters:
        return bool(output.parameters["binary_data"])
    return binary_default


def outputs(produced: dict[str, torch.Tensor], requested: list[RequestOutput] | None,
            binary_default: bool = False) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The requested outputs (all that were produced if none were named) as response
    entries, and the raw bytes of those sent binary, in order: JSON ``data`` flat and
    row-major, or ``parameters.binary_data_size`` with the bytes after the JSON header."""
    wanted = {o.name: o for o in requested} if requested else dict.fromkeys(produced)
    entries, chunks = [], []
    for name, output in wanted.items():
        if name not in produced:
            raise InvalidInput(f"unknown output {name!r}: these inputs give "
                               f"{', '.join(repr(n) for n in produced)}")
        tensor = produced[name]
        entry: dict[str, Any] = {"name": name, "shape": list(tensor.shape),
                                 "datatype": DATATYPES[tensor.dtype]}
        if _wants_binary(output, binary_default):
            raw = tensor.numpy().astype(NUMPY[entry["datatype"]], copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = tensor.reshape(-1).tolist()
        entries.append(entry)
    return entries, chunks
