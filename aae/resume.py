"""Resumable training state: save a run at an epoch boundary, pick it up again elsewhere.

A state is everything ``Trainer.fit`` needs to continue as if it had never stopped: the
weights (their moving average, and the best epoch's copy, where the run keeps them),
every phase's optimizer state, the epoch and step counters, the training time so far,
the history and latest losses, and the random generators (torch's global one,
which drives dropout on the CPU, the trainer's prior sampler, and CUDA's where the run
is on a GPU). Minibatch order is a function of (seed, epoch), so on the CPU a resumed
run ends with the same weights as an uninterrupted one.

Layout under a scratch directory (one per run)::

    epoch-<n>/state.safetensors   every tensor (weights, optimizer moments, RNG states)
    epoch-<n>/state.json          counters, history, hyperparameters, optimizer settings
    .tmp-<uuid>/                  a state being written; never read

Tensors are stored with safetensors and everything else as JSON: nothing is unpickled.
A state appears by renaming a complete, fsynced temporary directory to ``epoch-<n>``;
older states are removed only after that, so a crash at any moment leaves at least
one complete state (or none, before the first save).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from aae.atomic import fsync_dir, staged_dir, write_json, write_tensors
from aae.config import AAEConfig
from aae.errors import CheckpointCorrupt

if TYPE_CHECKING:
    from aae.training import Trainer

logger = logging.getLogger(__name__)

TENSORS_FILE = "state.safetensors"
JSON_FILE = "state.json"
FORMAT = 1
_STATE_DIR = re.compile(r"epoch-([0-9]+)")


# -- flattening to name -> tensor and JSON ------------------------------------------------

def _optimizer_state(name: str, optimizer: torch.optim.Optimizer,
                     tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Put an optimizer's tensors into ``tensors`` and return the rest as JSON."""
    state = optimizer.state_dict()
    values: dict[str, dict[str, Any]] = {}
    for index, per_param in state["state"].items():
        plain = {}
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{name}.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain[key] = value
        values[str(index)] = plain
    return {"param_groups": state["param_groups"], "plain": values,
            "params": sorted(int(i) for i in state["state"])}


def _load_optimizer(name: str, optimizer: torch.optim.Optimizer, saved: dict[str, Any],
                    tensors: dict[str, torch.Tensor]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for index in saved["params"]:
        per_param = dict(saved["plain"].get(str(index), {}))
        prefix = f"optimizer.{name}.{index}."
        for key, value in tensors.items():
            if key.startswith(prefix):
                per_param[key[len(prefix):]] = value
        state[index] = per_param
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def _rng_tensors(trainer: Trainer) -> dict[str, torch.Tensor]:
    rng = {"rng.torch": torch.get_rng_state(), "rng.prior": trainer.prior_rng.get_state()}
    if trainer.device.type == "cuda":
        rng["rng.cuda"] = torch.cuda.get_rng_state(trainer.device)
    return rng


def _restore_rng(trainer: Trainer, tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    trainer.prior_rng.set_state(tensors["rng.prior"])
    if trainer.device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], trainer.device)


# -- saving and loading -------------------------------------------------------------------

def save_state(trainer: Trainer, directory: Path | str) -> Path:
    """Write the trainer's state as ``directory/epoch-<n>`` (atomically); drop older ones."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in trainer.model.state_tensors().items()}
    if trainer.average is not None:
        tensors.update({f"average.{k}": v.detach().cpu().contiguous()
                        for k, v in trainer.average.state_dict().items()})
    if trainer.best is not None:
        tensors.update({f"best.{k}": v.detach().cpu().contiguous()
                        for k, v in trainer.best.items()})
    optimizers = {name: _optimizer_state(name, opt, tensors)
                  for name, opt in trainer.optimizers.named().items()}
    tensors.update(_rng_tensors(trainer))
    document = {
        "format": FORMAT,
        "config": trainer.cfg.to_dict(),
        "epoch": trainer.epoch,
        "step": trainer.step,
        "elapsed_s": trainer.elapsed_s,
        "losses": trainer.losses,
        "history": trainer.history,
        "best_epoch": trainer.best_epoch,
        "optimizers": optimizers,
    }
    target = directory / f"epoch-{trainer.epoch}"
    with staged_dir(directory) as tmp:
        write_tensors(tmp / TENSORS_FILE, tensors)
        write_json(tmp / JSON_FILE, document, indent=None)
    try:
        if target.exists():  # saved before, then the run was resumed from an older state
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(directory)
    for epoch, path in _states(directory):
        if epoch != trainer.epoch:
            shutil.rmtree(path, ignore_errors=True)
    logger.info("saved resumable state at epoch %d (step %d) in %s", trainer.epoch,
                trainer.step, target)
    return target


def _states(directory: Path) -> list[tuple[int, Path]]:
    """Complete states in ``directory``, newest first."""
    found = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                match = _STATE_DIR.fullmatch(entry.name)
                if match and entry.is_dir():
                    found.append((int(match.group(1)), Path(entry.path)))
    except FileNotFoundError:
        pass
    return sorted(found, reverse=True)


def latest_epoch(directory: Path | str) -> int | None:
    """The epoch of the newest complete state in ``directory``, None if there is none."""
    states = _states(Path(directory))
    return states[0][0] if states else None


def load_state(trainer: Trainer, directory: Path | str) -> int | None:
    """Restore the newest state in ``directory`` into a fresh ``trainer``.

    Returns the epoch it resumes after, or None if there is no saved state. Raises
    CheckpointCorrupt if the state cannot be read or belongs to other hyperparameters.
    """
    states = _states(Path(directory))
    if not states:
        return None
    epoch, path = states[0]
    try:
        document = json.loads((path / JSON_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(path / TENSORS_FILE), device="cpu")
    except (OSError, ValueError, SafetensorError) as exc:
        raise CheckpointCorrupt(f"resumable state {path} is unreadable: {exc}") from exc
    if document.get("format") != FORMAT:
        raise CheckpointCorrupt(f"resumable state {path} has format {document.get('format')!r}")
    if AAEConfig.from_dict(document["config"]) != trainer.cfg:
        raise CheckpointCorrupt(f"resumable state {path} was saved by a run with other "
                                "hyperparameters")
    try:
        weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        trainer.model.load_state_dict(weights, strict=True)
        if trainer.average is not None:
            trainer.average.load_state_dict(
                {k[len("average."):]: v for k, v in tensors.items() if k.startswith("average.")},
                strict=True)
        for name, optimizer in trainer.optimizers.named().items():
            _load_optimizer(name, optimizer, document["optimizers"][name], tensors)
        _restore_rng(trainer, tensors)
        if document.get("best_epoch") is not None:
            best = {k[len("best."):]: v.to(trainer.device) for k, v in tensors.items()
                    if k.startswith("best.")}
            if best.keys() != trainer.evaluated.state_dict().keys():
                raise KeyError("the best epoch's weights do not match the model")
            trainer.best_epoch, trainer.best = document["best_epoch"], best
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointCorrupt(f"resumable state {path} does not fit the model: {exc}") from exc
    trainer.epoch, trainer.step = document["epoch"], document["step"]
    trainer.elapsed_s = document["elapsed_s"]
    trainer.losses = document["losses"]
    trainer.history = document["history"]
    logger.info("resuming at epoch %d (step %d) from %s", epoch, trainer.step, path)
    return epoch
