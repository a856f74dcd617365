"""A small grid of samples drawn at every epoch's end of a training job, so that users
can watch the model learn (``GET /jobs/<id>/samples/latest.png``).

The grids live in ``<model_dir>/.samples/<job id>/`` on the shared volume, beside the
store (which ignores names starting with a dot), and outlive the job: ``epoch-<n>.png``
for each epoch and ``latest.png``, each replaced atomically. The draws come from their
own seeded generator, with dropout off, so they neither change nor depend on the
training's random stream (resumed runs stay bit-exact).
"""

from __future__ import annotations

from pathlib import Path

import torch

from aae.atomic import replace_file
from aae.images import png
from aae.training import Trainer
from aae_jobs.contract import samples_dir

ROWS, COLUMNS = 4, 10


@torch.no_grad()
def save_samples(trainer: Trainer, model_dir: Path, job_id: str) -> Path:
    """Draw ROWS x COLUMNS samples (for models with a class input, column j is class j)
    and write them as this epoch's grid and the latest one; returns the latest's path."""
    model = trainer.evaluated
    was_training = model.training
    model.eval()
    try:
        generator = torch.Generator().manual_seed(0)
        n = ROWS * COLUMNS
        labels = torch.arange(n) % COLUMNS if model.cfg.uses_labels else None
        if labels is not None and model.cfg.n_classes < COLUMNS:
            labels = labels % model.cfg.n_classes
        images = model.sample(n, labels=labels, generator=generator).cpu()
    finally:
        model.train(was_training)
    directory = samples_dir(model_dir, job_id)
    data = png(images, columns=COLUMNS)
    replace_file(directory / f"epoch-{trainer.epoch}.png", data)
    latest = directory / "latest.png"
    replace_file(latest, data)
    return latest
