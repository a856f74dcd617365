"""The Open Inference Protocol's bodies (KServe V2 REST), as pydantic models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, StrictBool

Parameters = dict[str, str | bool | int | float]


class ErrorPublic(BaseModel):
    error: str = Field(description="what went wrong")


class ServerMetadataPublic(BaseModel):
    name: str
    version: str
    extensions: list[str]


class LivePublic(BaseModel):
    live: bool


class DefaultModelState(BaseModel):
    name: str
    ready: bool
    version: int | None = None
    reason: str | None = Field(None, description="why it is not ready (not published yet, ...)")


class ReadyPublic(BaseModel):
    ready: bool = Field(description="the server takes requests: its checkpoint store is "
                        "readable (an empty store included)")
    default_model: DefaultModelState | None = None


class ModelReadyPublic(BaseModel):
    name: str
    version: str | None = None
    ready: bool


class ConfigTensor(BaseModel):
    name: str
    data_type: str = Field(description="TYPE_FP32, TYPE_INT64, ...")
    dims: list[int] = Field(description="without the batch dimension (max_batch_size > 0)")
    reshape: dict[str, list[int]] | None = Field(
        None, description='{"shape": []}: the model sees one value per batch row')
    optional: bool = False


class ModelConfigPublic(BaseModel):
    """A model's configuration in the shape of Triton's ``ModelConfig``."""

    name: str
    platform: str
    backend: str
    max_batch_size: int
    input: list[ConfigTensor] = Field(description='"images" (encode) or "z" [+ "label"] '
                                      "(decode): each set is optional, one must be sent")
    output: list[ConfigTensor]
    parameters: dict[str, dict[str, str]] = Field(default_factory=dict)


class RepositoryIndexCreate(BaseModel):
    ready: StrictBool = Field(False, description="only the versions ready to serve")


class RepositoryModelPublic(BaseModel):
    name: str
    version: str
    state: str = Field(description="READY, or UNAVAILABLE with a reason")
    reason: str = ""


class DurationPublic(BaseModel):
    count: int
    ns: int


class InferStatsPublic(BaseModel):
    success: DurationPublic
    fail: DurationPublic
    queue: DurationPublic
    compute_input: DurationPublic
    compute_infer: DurationPublic
    compute_output: DurationPublic
    cache_hit: DurationPublic
    cache_miss: DurationPublic


class BatchStatsPublic(BaseModel):
    batch_size: int
    compute_input: DurationPublic
    compute_infer: DurationPublic
    compute_output: DurationPublic


class ModelStatsPublic(BaseModel):
    name: str
    version: str
    last_inference: int = Field(description="ms since the epoch")
    inference_count: int = Field(description="images or codes answered")
    execution_count: int = Field(description="forward passes (dynamic batching)")
    inference_stats: InferStatsPublic
    batch_stats: list[BatchStatsPublic]


class StatisticsPublic(BaseModel):
    model_stats: list[ModelStatsPublic]


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
    parameters: Parameters | None = Field(
        None, description='"binary_data_size": the tensor\'s bytes follow the JSON header '
        "(binary tensor data extension)")
    data: list[Any] | None = Field(None, description="the values, row-major: flat or nested "
                                   "(absent for a binary input)")


class RequestOutput(BaseModel):
    name: str
    parameters: Parameters | None = Field(
        None, description='"binary_data": true to receive this output as raw bytes')


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: Parameters | None = Field(
        None, description='"binary_data_output": true for every output as raw bytes')
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = Field(
        None, description="the outputs to return (default: all the input set produces)")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[float | int] | None = Field(None, description="the values, flat and "
                                           "row-major (absent for a binary output)")


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


