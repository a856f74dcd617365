"""Anomaly scores of a published version: MNIST test digits against Fashion-MNIST items.

Scores both test sets (10,000 each) with ``aae.anomaly`` and prints the ROC AUC of
telling them apart, and how many of each the version's calibrated threshold flags;
draws their score histograms with the threshold to ``--figure``.

    python -m benchmarks.anomaly_auc --store runs/models --model default-published \\
        --data-dir ../shared/data/mnist --fashion /usr/share/datasets/fashion-mnist
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from aae import anomaly
from aae.checkpoints import load_model
from aae.data import load_digits
from aae.store import CheckpointStore


def auc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """ROC AUC through ranks (ties count half)."""
    both = np.concatenate([negatives, positives])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # average ranks, 1-based
    n, p = len(negatives), len(positives)
    return float((ranks[n:].sum() - p * (p + 1) / 2) / (n * p))


def scores_of(model, images: torch.Tensor) -> np.ndarray:
    return torch.cat([anomaly.score(model, images[i:i + 1000]).score
                      for i in range(0, len(images), 1000)]).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--version")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--fashion", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--figure", type=Path, default=Path("docs/img/anomaly.png"))
    args = parser.parse_args()
    info, model = load_model(CheckpointStore(args.store), args.model, args.version)
    digits = scores_of(model, load_digits(args.data_dir, download=False)[1].images)
    clothes = scores_of(model, load_digits(args.fashion, download=False)[1].images)
    threshold = (info.metrics.get("anomaly") or {}).get("threshold")
    print(f"{info.name} version {info.version}: ROC AUC {auc(digits, clothes):.4f} "
          f"(MNIST test {len(digits)} against Fashion-MNIST test {len(clothes)})")
    if threshold is not None:
        print(f"threshold {threshold:.4f}: flags {np.mean(digits > threshold):.2%} of the "
              f"digits and {np.mean(clothes > threshold):.2%} of the clothes")
    figure = Figure(figsize=(7, 4), dpi=100)
    ax = figure.add_subplot()
    bins = np.linspace(min(digits.min(), clothes.min()), np.percentile(clothes, 99.5), 80)
    ax.hist(digits, bins=bins, alpha=0.6, label="MNIST test digits")
    ax.hist(clothes, bins=bins, alpha=0.6, label="Fashion-MNIST test items")
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label="threshold (99th pct.)")
    ax.set_xlabel("anomaly score (nats per pixel)")
    ax.set_ylabel("images")
    ax.set_title(f"{info.name} v{info.version}: ROC AUC {auc(digits, clothes):.3f}")
    ax.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    args.figure.write_bytes(buffer.getvalue())
    print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
