"""A one-line progress bar for training runs on a terminal."""

from __future__ import annotations

import sys
from typing import TextIO

from aae.training import Progress

SHORT = {"reconstruction": "rec", "discriminator": "D", "generator": "G",
         "classification": "cls"}


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def render(p: Progress, width: int = 24) -> str:
    done = int(width * p.step / max(1, p.total_steps))
    losses = " ".join(f"{SHORT.get(k, k)} {v:.3f}" for k, v in p.losses.items())
    line = (f"epoch {p.epoch}/{p.epochs} [{'#' * done}{'.' * (width - done)}] "
            f"step {p.step}/{p.total_steps} {losses}")
    if p.validation_error is not None:
        line += f" val err {p.validation_error:.2%}"
    elif p.validation_loss is not None:
        line += f" val rec {p.validation_loss:.4f}"
    return line + f" elapsed {duration(p.elapsed_s)} ETA {duration(p.eta_s)}"


class ProgressBar:
    """Redraws one line on a terminal; on anything else writes a line per epoch."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last_validation: Progress | None = None

    def __call__(self, p: Progress) -> None:
        if p.event == "epoch":
            self.last_validation = p
        elif self.last_validation is not None and p.validation_error is None:
            # keep showing the latest validation figure on step updates
            p = Progress(**{**p.to_dict(), "validation_error": self.last_validation.validation_error,
                            "validation_loss": self.last_validation.validation_loss})
        if self.tty:
            self.stream.write("\r\033[K" + render(p))
            if p.step == p.total_steps and p.event == "epoch":
                self.stream.write("\n")
        elif p.event == "epoch":
            self.stream.write(render(p) + "\n")
        self.stream.flush()
