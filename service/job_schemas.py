"""Bodies of the job routes: ``TrainJobCreate`` in, ``TrainJobPublic`` out.

``TrainJobCreate`` has one field per ``AAEConfig`` field (the hyperparameters the
command line accepts, with the same defaults), plus the model name and the dataset.
Fields left out take the preset's value for the mode (``preset``, default ``default``),
else ``AAEConfig``'s. It is checked by building the ``AAEConfig``, so the rules live in
one place; a broken rule becomes a 422 naming its field.
"""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, create_model,
                      field_validator, model_validator)
from pydantic_core import InitErrorDetails, PydanticCustomError

from aae.config import AAEConfig
from aae.presets import DEFAULT_PRESET, PRESETS, build_config
from aae.store import validate_name

CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(AAEConfig))


class JobStatus(str, Enum):
    QUEUED = "queued"  # waiting for a worker (again, after a crash)
    STARTED = "started"  # a worker is running it
    FINISHED = "finished"  # trained and published: see ``result``
    FAILED = "failed"  # see ``error``
    CANCELED = "canceled"  # cancelled before it started
    STOPPED = "stopped"  # cancelled while running: stopped between two steps, nothing published


ENDED = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED})


class _TrainJobBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="model name in the checkpoint store "
                             "(default: <dataset>-<mode>, e.g. mnist-semi-supervised)")
    dataset: str = Field("mnist", description="'mnist' (downloaded by the workers when "
                         "missing) or a dataset in the workers' AAE_DATASETS_DIR")
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


def _no_schema_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)  # the value depends on the preset and the mode


def _config_fields() -> dict[str, Any]:
    hints = typing.get_type_hints(AAEConfig)
    return {f.name: (hints[f.name], Field(f.default, json_schema_extra=_no_schema_default,
                                          description="default: the preset's value"))
            for f in dataclasses.fields(AAEConfig)}


TrainJobCreate = create_model("TrainJobCreate", __base__=_TrainJobBase,
                              __doc__="A training run: model name, dataset, preset and "
                              "AAEConfig hyperparameters (defaults: the preset's).",
                              **_config_fields())


class JobProgressPublic(BaseModel):
    epoch: int = Field(description="the epoch being trained (1-based), or just ended")
    epochs: int
    step: int = Field(description="steps done")
    total_steps: int
    losses: dict[str, float] = Field(description="latest loss of each training phase")
    validation_error: float | None = Field(None, description="at the last epoch's end, "
                                           "for models that classify")
    validation_loss: float | None = None
    elapsed_s: float
    eta_s: float | None


class JobResultPublic(BaseModel):
    model: str
    version: int = Field(description="the version this job published")


class TrainJobPublic(BaseModel):
    id: str
    status: JobStatus
    model: str = Field(description="the model name the job publishes to")
    dataset: str
    config: dict[str, Any]
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    stage: str | None = Field(None, description="loading data, training, publishing, ...")
    progress: JobProgressPublic | None = None
    attempts: int = Field(0, description="times a worker started it (more than one after "
                          "a crash)")
    resumed_from_epoch: int | None = Field(None, description="the saved epoch the last "
                                           "attempt resumed from, if it resumed")
    checkpoint_epoch: int | None = Field(None, description="epoch of the newest resumable "
                                         "state")
    cancel_requested: bool = False
    result: JobResultPublic | None = None
    error: str | None = None
