"""Bodies of the job routes: ``TrainJobCreate`` in, ``TrainJobPublic`` out (its status,
progress and result are the contract's: ``aae_jobs.contract``).

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
from typing import Any

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, create_model,
                      field_validator, model_validator)
from pydantic_core import InitErrorDetails, PydanticCustomError

from aae.config import AAEConfig
from aae.presets import DEFAULT_PRESET, PRESETS, build_config
from aae.store import validate_name
from aae_jobs.contract import JobProgress, JobResult, JobStatus

CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(AAEConfig))


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
    stage: str | None = Field(None, description="starting, loading data, training, "
                              "publishing, finished or stopped")
    progress: JobProgress | None = None
    attempts: int = Field(0, description="times a worker started it (more than one after "
                          "a crash)")
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
