"""Serving and training speed of this tree against an earlier revision, side by side in
one run: no regression is a ratio, not two numbers taken on different days.

The earlier revision is checked out into a temporary git worktree. Serving: each tree's
service under uvicorn (one process), wrk on loopback at concurrency 64 against
``POST /classify`` (one PNG) and ``GET /sample?label=7``, the trees alternating for
``--rounds`` rounds. Training: each tree's ``benchmarks/train_speed.py`` step in its own
process (the library step only, the seed's recipe), alternating likewise. Medians.

    python -m benchmarks.compare_revisions --before fa2d6cc
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.serve_load import MODEL, Server, prepare, wrk

ROOT = Path(__file__).resolve().parents[1]

TRAIN = """
import time, torch
from aae.config import AAEConfig, Mode
from aae.data import load_splits
from aae.device import tune_cpu_allocator
from aae.training import Trainer
from aae.phases import train_step
tune_cpu_allocator()
cfg = AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=1000, validation_size=300, epochs=100)
splits = load_splits({fixture!r}, n_labels=1000, validation_size=300, seed=cfg.seed,
                     download=False)
t = Trainer(cfg, splits)
batches = list(t._batches(0))
opt = getattr(t, "optimizers")
for b in batches[:5]:
    train_step(t.model, opt, b, t.precision, t.prior_rng)
start = time.perf_counter()
for i in range({steps}):
    train_step(t.model, opt, batches[i % len(batches)], t.precision, t.prior_rng)
print("steps/s", {steps} / (time.perf_counter() - start))
"""


class TreeServer(Server):
    """``Server`` run from another source tree."""

    def __init__(self, tree: Path, env: dict[str, str]) -> None:
        self.tree = tree
        cwd = os.getcwd()
        os.chdir(tree)
        try:
            super().__init__("service.app:create_app", {**env, "PYTHONPATH": str(tree)}, 1,
                             True)
        finally:
            os.chdir(cwd)


def train_speed(tree: Path, steps: int) -> float:
    code = TRAIN.format(fixture=str(ROOT / "tests" / "fixtures" / "mnist"), steps=steps)
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(tree)})
    return float(re.search(r"steps/s ([\d.]+)", out.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="the earlier revision (git rev)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6, help="seconds per wrk run")
    parser.add_argument("--steps", type=int, default=150, help="training steps per round")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="aae-compare-"))
    before = work / "before"
    subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before],
                   cwd=ROOT, check=True, capture_output=True)
    try:
        model_dir, lua = prepare(work)
        env = {"AAE_MODEL_DIR": str(model_dir), "AAE_DEFAULT_MODEL": MODEL}
        trees = {"before": before, "after": ROOT}
        serve: dict[tuple[str, str], list[dict]] = {}
        train: dict[str, list[float]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                server = TreeServer(tree, env)
                try:
                    server.wait_ready("/healthz")
                    for endpoint, path, script in (("classify", "/classify", lua),
                                                   ("sample", "/sample?label=7", None)):
                        wrk(server.url + path, 8, 1, script)  # warm-up
                        serve.setdefault((name, endpoint), []).append(
                            wrk(server.url + path, 64, args.duration, script))
                finally:
                    server.stop()
                train[name].append(train_speed(tree, args.steps))
                print(f"{name}: " + ", ".join(
                    f"{e} {serve[(name, e)][-1]['rps']:.0f} req/s"
                    for e in ("classify", "sample")) + f", training {train[name][-1]:.1f} "
                    "steps/s", flush=True)

        def median(name: str, endpoint: str, key: str) -> float:
            return statistics.median(r[key] for r in serve[(name, endpoint)])

        print(f"\nbefore = {args.before}, after = this tree; medians of {args.rounds} "
              "alternating rounds\n")
        print("| measure | before | after | after / before |\n|---|---:|---:|---:|")
        for endpoint in ("classify", "sample"):
            b, a = median("before", endpoint, "rps"), median("after", endpoint, "rps")
            print(f"| {endpoint} req/s at c=64 | {b:.0f} | {a:.0f} | {a / b:.2f}x |")
            b, a = median("before", endpoint, "p99"), median("after", endpoint, "p99")
            print(f"| {endpoint} p99 ms at c=64 | {b:.1f} | {a:.1f} | {a / b:.2f}x |")
        b, a = statistics.median(train["before"]), statistics.median(train["after"])
        print(f"| training steps/s (seed recipe) | {b:.1f} | {a:.1f} | {a / b:.2f}x |")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT,
                       capture_output=True)


if __name__ == "__main__":
    main()
