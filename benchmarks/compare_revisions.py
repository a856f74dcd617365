"""Serving and training speed of this tree against an earlier revision, side by side in
one run: no regression is a ratio, not two numbers taken on different days.

The earlier revision is checked out into a temporary git worktree. Serving: each tree's
service under uvicorn (one process, with the HTTP protocol ``aae serve`` gives it where the
tree has one), all started at once, wrk on loopback at concurrency 64 against ``POST
/classify`` (one PNG) and ``GET /sample?label=7``, the servers taking turns for
``--rounds`` rounds. Training: each tree's ``benchmarks/train_speed.py`` step in its own
process (the library step only, the seed's recipe), alternating likewise (``--steps 0``:
none). Medians.

``--access-log both`` serves each tree twice per round, with uvicorn's access log on
(``--log-level info``, the lines written to a file, as under a supervisor) and off;
``--litserve`` adds the same model served by LitServe (``benchmarks/litserve_server.py``,
``/classify`` only) to every round: what the access log costs, and the lead over LitServe,
in one run on one machine. Besides requests per second, each server's CPU time per
request (its processes', every thread's), which a busy machine disturbs far less.

    python -m benchmarks.compare_revisions --before fa2d6cc
    python -m benchmarks.compare_revisions --before 35d50d6 --access-log both --litserve \
        --endpoints classify --steps 0 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from benchmarks.serve_load import MODEL, Server, free_port, prepare, wrk
from service.core.connections import PROTOCOL

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
    """``Server`` run from another source tree, with the tree's HTTP protocol if it has one."""

    def __init__(self, tree: Path, env: dict[str, str], access_log: bool = False,
                 log: Path | None = None) -> None:
        self.tree = tree
        http = PROTOCOL if (tree / "service" / "core" / "connections.py").exists() else None
        cwd = os.getcwd()
        os.chdir(tree)
        try:
            super().__init__("service.app:create_app", {**env, "PYTHONPATH": str(tree)}, 1,
                             True, access_log=access_log, http=http, log=log)
        finally:
            os.chdir(cwd)


class LitServeServer(Server):
    """The same model under LitServe (its API server and inference worker processes)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.litserve_server", "--port", str(self.port)],
                cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def train_speed(tree: Path, steps: int) -> float:
    code = TRAIN.format(fixture=str(ROOT / "tests" / "fixtures" / "mnist"), steps=steps)
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONPATH": str(tree)})
    return float(re.search(r"steps/s ([\d.]+)", out.stdout).group(1))


ENDPOINTS = {"classify": "/classify", "sample": "/sample?label=7"}


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system, every thread) of a server and its child processes: per
    request, it varies far less with what else the machine runs than requests per second."""
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="the earlier revision (git rev)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6, help="seconds per wrk run")
    parser.add_argument("--steps", type=int, default=150,
                        help="training steps per round (0: no training comparison)")
    parser.add_argument("--endpoints", nargs="+", choices=list(ENDPOINTS),
                        default=list(ENDPOINTS))
    parser.add_argument("--access-log", choices=["off", "on", "both"], default="off",
                        help="serve with uvicorn's access log off, on, or each way")
    parser.add_argument("--litserve", action="store_true",
                        help="LitServe on the same model as well (POST /classify)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="aae-compare-"))
    before = work / "before"
    subprocess.run(["git", "worktree", "add", "--detach", str(before), args.before],
                   cwd=ROOT, check=True, capture_output=True)
    try:
        model_dir, lua = prepare(work)
        env = {"AAE_MODEL_DIR": str(model_dir), "AAE_DEFAULT_MODEL": MODEL,
               "BENCH_MODEL_DIR": str(model_dir), "BENCH_MODEL": MODEL}
        trees = {"before": before, "after": ROOT}
        logs = {"off": [False], "on": [True], "both": [True, False]}[args.access_log]
        configs = [(name, log) for name in trees for log in logs]
        label = {(name, log): name + ("" if args.access_log != "both" else
                                      ", log on" if log else ", log off")
                 for name, log in configs}
        serve: dict[tuple[str, str], list[dict]] = {}
        train: dict[str, list[float]] = {name: [] for name in trees}
        # every server runs for the whole run (idle while another is measured), so that a
        # round is only the measurements: short, many, interleaved
        servers = [(label[c], TreeServer(trees[c[0]], env, c[1], work / "access.log"),
                    "/healthz", args.endpoints) for c in configs]
        if args.litserve:
            servers.append(("LitServe", LitServeServer(env, work / "litserve.log"), "/health",
                            ["classify"]))
        try:
            for _, server, ready, _ in servers:
                server.wait_ready(ready)
            for name, server, _, endpoints in servers:  # warm-up
                for endpoint in endpoints:
                    wrk(server.url + ENDPOINTS[endpoint], 8, 1,
                        lua if endpoint == "classify" else None)
            for _ in range(args.rounds):
                for name, server, _, endpoints in servers:
                    for endpoint in endpoints:
                        script = lua if endpoint == "classify" else None
                        cpu = cpu_seconds(server.proc.pid)
                        result = wrk(server.url + ENDPOINTS[endpoint], 64, args.duration,
                                     script)
                        cpu = cpu_seconds(server.proc.pid) - cpu
                        result["cpu_us"] = cpu / result["requests"] * 1e6
                        serve.setdefault((name, endpoint), []).append(result)
                    print(f"{name}: " + ", ".join(
                        f"{e} {serve[(name, e)][-1]['rps']:.0f} req/s" for e in endpoints),
                        flush=True)
        finally:
            for _, server, _, _ in servers:
                server.stop()
        for _ in range(args.rounds if args.steps else 0):
            for tree_name, tree in trees.items():
                train[tree_name].append(train_speed(tree, args.steps))
                print(f"{tree_name}: training {train[tree_name][-1]:.1f} steps/s", flush=True)

        def median(name: str, endpoint: str, key: str = "rps") -> float:
            return statistics.median(r[key] for r in serve[(name, endpoint)])

        print(f"\nbefore = {args.before}, after = this tree; medians of {args.rounds} "
              "interleaved rounds, wrk at concurrency 64\n")
        names = [label[c] for c in configs] + (["LitServe"] if args.litserve else [])
        print("| server | " + " | ".join(f"{e} req/s | p99 ms | CPU us/req"
                                         for e in args.endpoints)
              + " |\n|---|" + "---:|---:|---:|" * len(args.endpoints))
        for name in names:
            cells = [f"{median(name, e):.0f} | {median(name, e, 'p99'):.1f} | "
                     f"{median(name, e, 'cpu_us'):.0f}"
                     if (name, e) in serve else "- | - | -" for e in args.endpoints]
            print(f"| {name} | " + " | ".join(cells) + " |")
        ratios = [(label[("after", logs[0])], label[("before", logs[0])])]
        if args.access_log == "both":
            ratios += [(label[(t, True)], label[(t, False)]) for t in trees]
        if args.litserve:
            ratios += [(label[(t, logs[0])], "LitServe") for t in trees]
        print("\n| ratio of medians | " + " | ".join(f"{e} req/s | {e} CPU per request"
                                                    for e in args.endpoints)
              + " |\n|---|" + "---:|---:|" * len(args.endpoints))
        for a, b in ratios:
            cells = [f"{median(a, e) / median(b, e):.2f}x | "
                     f"{median(a, e, 'cpu_us') / median(b, e, 'cpu_us'):.2f}x"
                     if (b, e) in serve else "- | -" for e in args.endpoints]
            print(f"| {a} / {b} | " + " | ".join(cells) + " |")
        if args.steps:
            b, a = statistics.median(train["before"]), statistics.median(train["after"])
            print(f"\ntraining steps/s (seed recipe): before {b:.1f}, after {a:.1f}, "
                  f"{a / b:.2f}x")
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT,
                       capture_output=True)


if __name__ == "__main__":
    main()
