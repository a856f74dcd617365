"""Bodies of the job routes: ``TrainJobCreate`` in, ``TrainJobPublic`` out (its status,
progress and result are the contract's: ``aae_jobs.contract``).

``TrainJobCreate`` has one field per ``AAEConfig`` field (the hyperparameters the
command line accepts, with the same defaults), plus the model name and the dataset.
Fields left out take the preset's value for the mode (``preset``, default ``default``),
else ``AAEConfig``'s. It is checked by building the ``AAEConfig``, so the rules live in
one place; a broken rule becomes a 422 naming its field.

The JSON schema says every rule, so that a body it allows is accepted: each field's
range as ``AAEConfig`` declares it (``aae.config.Range``, read here into pydantic
constraints), the names' patterns (the store's rules), and the two rules between
fields: ``n_labels`` only with a mode that takes labels (``aae.config.LABEL_MODES``;
no mode is the default, unsupervised), and without a ``name`` a dataset name short
enough for the default name ``<dataset>-<mode>``.
"""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from typing import Annotated, Any, Optional

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      create_model, field_validator, model_validator)
from pydantic_core import InitErrorDetails, PydanticCustomError

from aae.config import LABEL_MODES, AAEConfig, Mode, field_types
from aae.presets import DEFAULT_PRESET, PRESETS, build_config
from aae.store import validate_name
from aae_jobs.contract import JobProgress, JobResult, JobStatus
from service.core.schemas import NAME_PATTERN

CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(AAEConfig))
NAME_LENGTH = 64  # the store's limit
# without a name, <dataset>-<mode> must be a name: room for the longest mode
DATASET_LENGTH = NAME_LENGTH - max(len(f"-{mode.value}") for mode in Mode)


def _rules_between_fields(schema: dict[str, Any]) -> None:
    """The rules between fields, in the JSON schema (``_TrainJobBase`` checks them)."""
    schema["allOf"] = [
        {"anyOf": [{"properties": {"n_labels": {"type": "null"}}},
                   {"required": ["mode"], "properties": {
                       "mode": {"enum": sorted(mode.value for mode in LABEL_MODES)}}}]},
        {"anyOf": [{"required": ["name"], "properties": {"name": {"type": "string"}}},
                   {"properties": {"dataset": {"maxLength": DATASET_LENGTH}}}]},
    ]


class _TrainJobBase(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_rules_between_fields)

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=NAME_LENGTH)] | None = Field(
        None, description="model name in the checkpoint store (default: <dataset>-<mode>, "
        "e.g. mnist-semi-supervised)")
    dataset: str = Field("mnist", pattern=NAME_PATTERN, max_length=NAME_LENGTH,
                         description="'mnist' (downloaded by the workers when missing) or a "
                         "dataset in the workers' AAE_DATASETS_DIR; at most "
                         f"{DATASET_LENGTH} characters without a name")
    preset: typing.Literal[tuple(PRESETS)] = Field(  # type: ignore[valid-type]
        DEFAULT_PRESET, description="named recipe that fills in the fields not given "
        "(GET /presets lists each one's values per mode)")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str | None) -> str | None:
        return None if name is None else validate_name(name)

    @field_validator("dataset")
    @classmethod
    def _valid_dataset(cls, dataset: str) -> str:
        return validate_name(dataset, "dataset name")

    @model_validator(mode="after")
    def _valid_config(self) -> _TrainJobBase:
        if self.name is None and len(self.dataset) > DATASET_LENGTH:
            raise ValidationError.from_exception_data(type(self).__name__, [InitErrorDetails(
                type=PydanticCustomError("invalid_config", "{reason}", {"reason": (
                    f"dataset: without a name, at most {DATASET_LENGTH} characters, so "
                    "that <dataset>-<mode> is a model name")}),
                loc=("dataset",), input=self.dataset)])
        try:
            self.config()
        except ValueError as exc:  # AAEConfig's messages start with the field's name
            field = str(exc).split(" ", 1)[0]
            loc = (field,) if field in CONFIG_FIELDS else ()
            raise ValidationError.from_exception_data(type(self).__name__, [InitErrorDetails(
                type=PydanticCustomError("invalid_config", "{reason}", {"reason": str(exc)}),
                loc=loc, input=getattr(self, field, None))]) from None
        return self

    def config(self) -> AAEConfig:
        explicit = {name: getattr(self, name) for name in CONFIG_FIELDS
                    if name in self.model_fields_set}
        return build_config(self.preset, **explicit)

    def model_name(self) -> str:
        return self.name or f"{self.dataset}-{self.config().mode.value.replace('_', '-')}"


def _schema_extra(field: dataclasses.Field) -> Any:
    """The field's JSON schema has no default (the value depends on the preset and the
    mode), and a tuple whose items are bounded (``each``) has distinct items."""
    def edit(schema: dict[str, Any]) -> None:
        schema.pop("default", None)
        if "each" in field.metadata:
            schema["uniqueItems"] = True
    return edit


def _a_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PydanticCustomError("number_type", "Input should be a number")
    return value


def _typed(hint: Any, **constraints: Any) -> Any:
    """``hint`` with pydantic ``constraints``, its numbers and booleans typed as the JSON
    schema says: a JSON ``true`` is not the number 1, nor 1 a boolean, nor ``"1"`` a
    number; a whole float such as ``2.0`` is an integer (JSON Schema's ``integer``)."""
    if hint is int:
        return Annotated[int, Field(**constraints), BeforeValidator(_a_number)]
    if hint in (float, bool):  # a strict float still takes an int
        return Annotated[hint, Field(strict=True, **constraints)]
    return Annotated[hint, Field(**constraints)] if constraints else hint


def _constrained(field: dataclasses.Field) -> Any:
    """The field's type (``aae.config.field_types``) with its declared range
    (``aae.config.Range``) as pydantic constraints (``_typed``): checked by pydantic and
    written into the JSON schema. ``each`` bounds every item of a tuple (which
    ``_schema_extra`` makes distinct)."""
    kind = field_types()[field.name]
    if "range" in field.metadata:
        finite = {"allow_inf_nan": False} if kind.base is float else {}
        base = _typed(kind.base, **field.metadata["range"].bounds(), **finite)
    elif "each" in field.metadata:
        base = tuple[_typed(kind.base, **field.metadata["each"].bounds()), ...]
    elif kind.sequence:
        base = tuple[kind.base, ...]
    else:
        base = _typed(kind.base)
    return Optional[base] if kind.optional else base


def _config_fields() -> dict[str, Any]:
    return {f.name: (_constrained(f),
                     Field(f.default, json_schema_extra=_schema_extra(f),
                           description="default: the preset's value"))
            for f in dataclasses.fields(AAEConfig)}


TrainJobCreate = create_model("TrainJobCreate", __base__=_TrainJobBase,
                              __doc__="A training run: model name, dataset, preset and "
                              "AAEConfig hyperparameters (defaults: the preset's).",
                              **_config_fields())


class TrainJobPublic(BaseModel):
    id: str
    status: JobStatus
    model: str = Field(description="the model name the job publishes to")
    dataset: str
    config: dict[str, Any]
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    dataset_checked: bool = Field(False, description="whether the dataset was checked "
                                  "against the datasets the workers announced when the "
                                  "job was queued (false: no worker had announced any)")
    stage: str | None = Field(None, description="starting, loading data, building, "
                              "training, publishing, finished or stopped")
    progress: JobProgress | None = None
    attempts: int = Field(0, description="times a worker started it (more than one after "
                          "a crash; every start counts, those the system killed too)")
    resumed_from_epoch: int | None = Field(None, description="the saved epoch the last "
                                           "attempt resumed from, if it resumed")
    samples: str | None = Field(None, description="URL of the latest grid of samples, drawn "
                                "at the last epoch's end (GET it for a PNG)")
    checkpoint_epoch: int | None = Field(None, description="epoch of the newest resumable "
                                         "state")
    cancel_requested: bool = Field(False, description="whether the job was asked to "
                                   "stop (true for every canceled or stopped job)")
    sweep: str | None = Field(None, description="the sweep this job is a point of "
                              "(GET /sweeps/{id})")
    result: JobResult | None = None
    error: str | None = None
