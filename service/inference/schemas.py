"""Request and response bodies of the models and of inference, named by direction
(``...Create``, ``...Public``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from aae.selection import Metric
from service.core.schemas import VERSION_PATTERN


class ModelRef(BaseModel):
    model: str = Field(description="model name")
    version: int = Field(description="version number that served the request")


class InputsPublic(BaseModel):
    inputs: list[list[float]] | None = Field(
        None, description="with return_input=true: the 784 pixels (28x28, row-major, in "
        "[0, 1]) the model saw for each image, after normalisation")


class CodePublic(ModelRef, InputsPublic):
    z: list[list[float]] = Field(description="the continuous code of each image")
    y: list[list[float]] | None = Field(
        None, description="class (or cluster) probabilities of each image, for models with y")


class PredictionPublic(BaseModel):
    label: int
    probabilities: list[float]


class ClassificationPublic(ModelRef, InputsPublic):
    label: int | None = Field(None, description="the predicted class, when one image was sent")
    probabilities: list[float] | None = Field(None, description="when one image was sent")
    predictions: list[PredictionPublic] = Field(description="one per image, in order")


class ImagesPublic(ModelRef):
    images: list[list[float]] = Field(description="784 pixels in [0, 1] per image, row-major")


Label = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]  # bounds keep tensors from overflowing


class DecodeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    z: list[float] | list[list[float]] = Field(
        description="one code (z_dim numbers) or a list of codes")
    label: Label | list[Label] | None = Field(
        None, description="class of each code (one for all, or one per code); required by "
        "models with a class input, refused by unsupervised models")


class AliasUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Annotated[int, Field(ge=1)] | Annotated[str, Field(
        pattern=VERSION_PATTERN, max_length=64)] = Field(
        description="version number, or another alias to follow")
    unless_worse: Metric | None = Field(None, description=(
        "move the alias only if the version is no worse by this validation metric than "
        "the version the alias points at (a tie moves it; an unset alias is simply set): "
        "409 with both figures otherwise, 422 if a version lacks the metric"))


class ModelVersionPublic(BaseModel):
    name: str
    version: int
    aliases: list[str]
    created_at: str
    config: dict[str, Any]
    metrics: dict[str, Any]


class ModelPublic(BaseModel):
    name: str
    versions: list[int]
    aliases: dict[str, int]


class ModelDetailPublic(ModelPublic):
    version_details: list[ModelVersionPublic]


class ScorePublic(BaseModel):
    score: float = Field(description="reconstruction error plus -log p(z) per pixel, in nats")
    reconstruction_error: float = Field(description="mean per-pixel cross-entropy of P(Q(x))")
    prior_nll: float = Field(description="-log p(z) of the image's code under the prior")
    is_outlier: bool | None = Field(description="score above the version's threshold; "
                                    "null when the version has none calibrated")


class ScoresPublic(ModelRef, InputsPublic):
    threshold: float | None = Field(description="the 99th percentile of the validation "
                                    "digits' scores, calibrated at publish time")
    detail: str | None = None
    scores: list[ScorePublic]
