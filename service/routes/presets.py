"""Training presets: the named recipes ``POST /jobs/train`` takes as ``preset``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from aae.config import Mode
from aae.presets import DEFAULT_PRESET, PRESETS, preset_values

router = APIRouter(prefix="/presets", tags=["jobs"])


@router.get("", summary="Each preset's config values per mode (fields not listed take "
            "AAEConfig's defaults)")
def list_presets() -> dict[str, Any]:
    return {"default_preset": DEFAULT_PRESET,
            "presets": {name: {mode.value: preset_values(name, mode) for mode in Mode}
                        for name in PRESETS}}
