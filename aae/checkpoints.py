"""Models in and out of the checkpoint store: weights, config and metrics together."""

from __future__ import annotations

from typing import Any

import torch

from aae.config import AAEConfig
from aae.errors import CheckpointCorrupt
from aae.model import AdversarialAutoencoder
from aae.store import CheckpointStore, VersionInfo


def publish_model(store: CheckpointStore, name: str, model: AdversarialAutoencoder,
                  metrics: dict[str, Any]) -> int:
    """Publish ``model`` as the next version of ``name``; returns the version number."""
    return store.publish(name, model.state_tensors(), model.cfg.to_dict(), metrics)


def load_model(store: CheckpointStore, name: str, version: int | str | None = None,
               device: torch.device | str = "cpu"
               ) -> tuple[VersionInfo, AdversarialAutoencoder]:
    """Rebuild a published model from its config and weights, in eval mode on ``device``."""
    info, tensors = store.load(name, version)
    try:
        cfg = AAEConfig.from_dict(info.config)
        model = AdversarialAutoencoder.from_tensors(cfg, tensors, device)
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise CheckpointCorrupt(f"{name} version {info.version} cannot be rebuilt: {exc}") from exc
    return info, model
