"""The independent judge of sample fidelity: a small CNN trained on all 60,000 labelled
MNIST training digits, sharing nothing with the models it judges.

It lives in the benchmarks, not in the package: the service never ships it. Its weights
are committed beside this file (``judge.safetensors``, 1.7 MB) so that
``benchmarks/sample_fidelity.py`` needs no training; this command makes them again:

    python -m benchmarks.judge --data-dir ../shared/data/mnist

Architecture (LeCun-style, with batch norm): two 5x5 convolution blocks of 32 and 64
channels with max pooling, then 128 hidden units and dropout; trained with Adam on
digits shifted by up to 2 pixels, 6 epochs, and its test accuracy printed once.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from aae.data import default_data_dir, load_digits
from aae.phases import shifted

logger = logging.getLogger(__name__)

WEIGHTS = Path(__file__).with_name("judge.safetensors")


class Judge(nn.Module):
    """Digit logits of (N, 784) images in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64 * 7 * 7, 128)
        self.out = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(-1, 1, 28, 28)
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(h))), 2)
        h = F.max_pool2d(F.relu(self.bn2(self.conv2(h))), 2)
        h = F.dropout(F.relu(self.fc(h.flatten(1))), 0.3, self.training)
        return self.out(h)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = 2000) -> torch.Tensor:
        """The digit each image is read as, (N,)."""
        self.eval()
        return torch.cat([self(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def load_judge(path: Path = WEIGHTS) -> Judge:
    if not path.is_file():
        raise SystemExit(f"no judge at {path}: make it with python -m benchmarks.judge "
                         "--data-dir <MNIST directory>")
    judge = Judge()
    judge.load_state_dict(load_file(str(path)))
    return judge.eval()


def train(data_dir: Path, epochs: int, seed: int) -> tuple[Judge, float]:
    """A judge trained on the whole training file, and its test accuracy."""
    torch.manual_seed(seed)
    train_digits, test_digits = load_digits(data_dir)
    judge = Judge()
    opt = torch.optim.Adam(judge.parameters(), lr=1e-3)
    steps = epochs * (len(train_digits) // 128)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    start = time.perf_counter()
    for epoch in range(epochs):
        judge.train()
        order = torch.randperm(len(train_digits))
        for i in range(0, len(order) - 127, 128):
            index = order[i:i + 128]
            x = shifted(train_digits.images[index], 2)
            loss = F.cross_entropy(judge(x), train_digits.labels[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
        logger.info("epoch %d: %.0f s, loss %.4f", epoch + 1, time.perf_counter() - start,
                    loss.item())
    accuracy = (judge.predict(test_digits.images) == test_digits.labels).float().mean()
    return judge, float(accuracy)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    judge, accuracy = train(args.data_dir or default_data_dir(), args.epochs, args.seed)
    save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, str(args.output))
    print(f"judge: {accuracy:.2%} of the 10,000 test digits read right; saved to {args.output}")


if __name__ == "__main__":
    main()
