"""The Open Inference Protocol's bodies (KServe V2 REST), as pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

Parameters = dict[str, str | bool | int | float]


class ErrorPublic(BaseModel):
    error: str = Field(description="what went wrong")


class ServerMetadataPublic(BaseModel):
    name: str
    version: str
    extensions: list[str]


class MetadataTensor(BaseModel):
    name: str
    datatype: str = Field(description="FP32, INT64, ...")
    shape: list[int] = Field(description="-1 marks a variable dimension (the batch)")
    parameters: Parameters | None = Field(
        None, description='"operation": "encode" or "decode", the input set it belongs to')


class ModelMetadataPublic(BaseModel):
    name: str
    versions: list[str] = Field(description="the model's version numbers")
    platform: str
    inputs: list[MetadataTensor] = Field(
        description='send either "images" (encode) or "z" [+ "label"] (decode)')
    outputs: list[MetadataTensor]
    parameters: Parameters | None = None


class RequestInput(BaseModel):
    name: str = Field(description='"images", or "z" and "label"')
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] = Field(description="the values, row-major: flat or nested")


class RequestOutput(BaseModel):
    name: str
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = Field(
        None, description="the outputs to return (default: all the input set produces)")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[float | int] = Field(description="the values, flat and row-major")


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


