"""A training run's per-epoch log, as committed under ``docs/runs/`` for every row of the
model-quality tables: the command, the config, one line per epoch (training time so far,
validation included; validation error and reconstruction loss; the phases' losses), and
the test error of the finished run (evaluated once, never used to choose anything).
Written by ``benchmarks/quality.py`` and ``aae sweep run --log-dir``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aae.config import AAEConfig
from aae.errors import AAEError
from aae.training import Progress


def refuse_overwrite(paths: list[Path]) -> None:
    """Raise before any training if one of these run logs exists: a committed log is the
    evidence of a table's row, and a new run under an old name would silently replace it.
    Callers skip this check when asked to overwrite (``--overwrite``)."""
    taken = [str(p) for p in paths if p.exists()]
    if taken:
        raise AAEError(f"run log(s) already exist: {', '.join(taken)}; choose another name "
                       "or pass --overwrite")


class RunLog:
    """``RunLog(path, command, cfg)``; pass ``on_progress`` to the Trainer, then
    ``finish(metrics, history)``. Lines are also printed when ``echo``."""

    COLUMNS = "# epoch step train_s validation_error validation_loss losses"

    def __init__(self, path: Path, command: str, cfg: AAEConfig, echo: bool = True,
                 overwrite: bool = False) -> None:
        if not overwrite:
            refuse_overwrite([path])
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.echo = path, echo
        self.file = open(path, "w", encoding="utf-8")
        self.write(f"# {command}")
        self.write("# config " + json.dumps(cfg.to_dict()))
        self.write(self.COLUMNS)

    def write(self, line: str) -> None:
        if self.echo:
            print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()

    def on_progress(self, p: Progress) -> None:
        if p.event == "epoch":
            losses = " ".join(f"{k}={v:.4f}" for k, v in p.losses.items())
            error = "nan" if p.validation_error is None else f"{p.validation_error:.4f}"
            loss = "nan" if p.validation_loss is None else f"{p.validation_loss:.4f}"
            self.write(f"{p.epoch} {p.step} {p.elapsed_s:.1f} {error} {loss} {losses}")

    def finish(self, metrics: dict[str, Any], note: str | None = None) -> None:
        if note:
            self.write(f"# {note}")
        history = [h for h in metrics.get("history", []) if h.get("validation_error") is not None]
        best = min(history, key=lambda h: h["validation_error"]) if history else None
        final = history[-1]["validation_error"] if history else None
        published = metrics.get("selected_epoch", metrics["epochs"])
        self.write(f"# finished: {metrics['steps']} steps, {metrics['train_seconds']:.0f} s "
                   "training (validation included), final validation error "
                   f"{'nan' if final is None else f'{final:.4f}'}, best validation error "
                   + (f"{best['validation_error']:.4f} at epoch {best['epoch']}" if best
                      else "nan")
                   + (f", published epoch {published}" if published != metrics["epochs"]
                      else "")
                   + f", test error {metrics['test_error']:.4f}")
        self.file.close()
