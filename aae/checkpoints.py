"""Models in and out of the checkpoint store: weights, config and metrics together.

``config.json`` holds the ``AAEConfig`` fields plus ``format`` (the file's format: 2
since it was stamped; files without it are format 1, the same fields) and the
``library`` that wrote it. Reading is tolerant: a field this release does not know
(written by a newer worker during a rolling deploy) is logged and ignored.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

import aae
from aae.config import AAEConfig
from aae.errors import CheckpointCorrupt
from aae.model import AdversarialAutoencoder
from aae.store import CheckpointStore, VersionInfo

logger = logging.getLogger(__name__)

CONFIG_FORMAT = 2
STAMP_KEYS = ("format", "library")


def config_document(cfg: AAEConfig) -> dict[str, Any]:
    """What ``config.json`` holds: the config's fields, stamped with format and library."""
    return {"format": CONFIG_FORMAT, "library": f"aae {aae.__version__}", **cfg.to_dict()}


def config_fields(document: dict[str, Any]) -> dict[str, Any]:
    """A ``config.json`` without its stamp: the config's fields as written."""
    return {k: v for k, v in document.items() if k not in STAMP_KEYS}


def config_from_document(document: dict[str, Any]) -> AAEConfig:
    """The config of a ``config.json`` of any format, ignoring fields it does not know."""
    if document.get("format", 1) > CONFIG_FORMAT:
        logger.warning("config.json of format %s, newer than this release's %d (by %s): "
                       "reading the fields it knows", document.get("format"), CONFIG_FORMAT,
                       document.get("library", "an unknown library"))
    return AAEConfig.from_dict(config_fields(document), strict=False)


def publish_model(store: CheckpointStore, name: str, model: AdversarialAutoencoder,
                  metrics: dict[str, Any], extras: dict[str, dict] | None = None) -> int:
    """Publish ``model`` as the next version of ``name`` (with ``extras``, e.g. the
    ``latent`` sample of ``TrainResult.extras``); returns the version number."""
    return store.publish(name, model.state_tensors(), config_document(model.cfg), metrics,
                         extras)


def load_model(store: CheckpointStore, name: str, version: int | str | None = None,
               device: torch.device | str = "cpu"
               ) -> tuple[VersionInfo, AdversarialAutoencoder]:
    """Rebuild a published model from its config and weights, in eval mode on ``device``."""
    info, tensors = store.load(name, version)
    try:
        cfg = config_from_document(info.config)
        model = AdversarialAutoencoder.from_tensors(cfg, tensors, device)
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise CheckpointCorrupt(f"{name} version {info.version} cannot be rebuilt: {exc}") from exc
    return info, model
