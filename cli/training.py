"""How the command line reads a training configuration and opens a dataset: shared by
``aae train`` and ``aae sweep run``."""

from __future__ import annotations

import argparse
import dataclasses
from enum import Enum
from pathlib import Path
from typing import Any

from aae.config import AAEConfig, field_types
from aae.data import MNISTSplits, splits_for
from aae.errors import AAEError, DatasetNotFound
from aae.presets import DEFAULT_PRESET, build_config, preset_names
from aae.store import validate_name

ALIASES = {"n_labels": "labels"}  # friendlier flag names


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--preset`` and one flag per ``AAEConfig`` field; a flag left out takes the preset's
    value for the mode, else the field's default."""
    group = parser.add_argument_group("model and training (defaults: the preset's values, "
                                      "see `aae presets`; else the seed's recipe)")
    group.add_argument("--preset", default=DEFAULT_PRESET, choices=preset_names(),
                       help=f"named recipe (default {DEFAULT_PRESET})")
    for field in dataclasses.fields(AAEConfig):
        flag = "--" + ALIASES.get(field.name, field.name).replace("_", "-")
        kind = field_types()[field.name]
        common = dict(dest=field.name, default=argparse.SUPPRESS)
        if kind.base is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif issubclass(kind.base, Enum):
            group.add_argument(flag, choices=[m.value for m in kind.base], **common)
        elif kind.sequence:
            group.add_argument(flag, type=kind.base, nargs="*", **common)
        else:
            default = "none" if field.default is None else field.default
            group.add_argument(flag, type=kind.base, help=f"field default {default}",
                               **common)


def explicit_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(AAEConfig)
            if hasattr(args, f.name)}


def config_from_args(args: argparse.Namespace) -> AAEConfig:
    return build_config(args.preset, **explicit_fields(args))


def dataset_name(data_dir: Path) -> str:
    """A dataset is named by its directory (``.../fashion-mnist`` is ``fashion-mnist``), as
    the job API names the workers' datasets; the default MNIST cache is ``mnist``."""
    try:
        return validate_name(data_dir.resolve().name, "dataset name")
    except AAEError:
        return "dataset"


def open_splits(args: argparse.Namespace, data_dir: Path, cfg: AAEConfig) -> MNISTSplits:
    """The dataset's splits for ``cfg`` (its labels drawn by its seed)."""
    # MNIST is fetched into the configured data directory only: a --data-dir that lacks
    # the files is a mistake (a typo, another dataset's path) unless --download says not
    download = not args.no_download and (args.data_dir is None or args.download)
    try:
        return splits_for(cfg, data_dir, download=download)
    except DatasetNotFound as exc:
        raise DatasetNotFound(f"{exc}. Point --data-dir (or AAE_DATA_DIR) at a directory "
                              "with the four MNIST-format IDX files; --download fetches "
                              "MNIST into --data-dir") from None
