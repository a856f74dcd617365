"""Serving throughput and latency under real HTTP load on loopback (wrk).

Publishes a semi-supervised model (the seed's sizes, trained briefly on the committed
digits: speed does not depend on accuracy) into a temporary store, then, one server at
a time with one uvicorn process each, loads it with wrk at several concurrencies:

- the service (dynamic batching, raw multipart parsing) and
- the obvious FastAPI server a user would write first (benchmarks/obvious_server.py),

for ``POST /classify`` with a PNG digit (multipart) and ``GET /sample?label=7``;
then the service again with more uvicorn worker processes. Needs ``wrk`` (Debian's
package). Prints a Markdown table.

    python -m benchmarks.serve_load
    python -m benchmarks.serve_load --duration 10 --concurrency 1 16 64 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from aae.checkpoints import publish_model
from aae.config import AAEConfig, Mode
from aae.data import load_splits
from aae.store import CheckpointStore
from aae.training import Trainer
from service.core.connections import PROTOCOL

ROOT = Path(__file__).resolve().parents[1]

FIXTURE = ROOT / "tests" / "fixtures" / "mnist"
MODEL = "bench"
LUA = """
wrk.method = "POST"
local f = io.open("{png}", "rb")
local png = f:read("*all")
f:close()
local b = "aaebenchboundary"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. b
wrk.body = "--" .. b .. "\\r\\nContent-Disposition: form-data; name=\\"file\\"; " ..
  "filename=\\"digit.png\\"\\r\\nContent-Type: image/png\\r\\n\\r\\n" .. png ..
  "\\r\\n--" .. b .. "--\\r\\n"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(workdir: Path) -> tuple[Path, Path]:
    store = CheckpointStore(workdir / "models")
    cfg = AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=100, max_steps=30,
                    validation_size=300)
    splits = load_splits(FIXTURE, n_labels=100, validation_size=300, seed=cfg.seed)
    publish_model(store, MODEL, Trainer(cfg, splits).fit().model, {})
    digit = (splits.test.images[0].reshape(28, 28).numpy() * 255).astype(np.uint8)
    png = workdir / "digit.png"
    Image.fromarray(digit, mode="L").save(png)
    lua = workdir / "classify.lua"
    lua.write_text(LUA.format(png=png))
    return store.root, lua


class Server:
    """A uvicorn process; ``access_log``: at ``--log-level info`` with its access log on,
    the lines written to ``log`` (a file, as under a supervisor), else warnings only;
    ``http``: uvicorn's ``--http`` (the service's is ``PROTOCOL``, as ``aae serve`` runs it)."""

    def __init__(self, app: str, env: dict[str, str], workers: int, factory: bool,
                 access_log: bool = False, http: str | None = None,
                 log: Path | None = None) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port",
               str(self.port), "--workers", str(workers)]
        cmd += ["--log-level", "info"] if access_log else ["--log-level", "warning",
                                                           "--no-access-log"]
        if factory:
            cmd.append("--factory")
        if http:
            cmd += ["--http", http]
        if workers > 1:  # as `aae serve --workers` does: metrics shared through files
            self.metrics_dir = tempfile.mkdtemp(prefix="aae-bench-metrics-")
            env = {**env, "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir}
        out = log.open("ab") if log is not None else None
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=out,
                                     stderr=subprocess.STDOUT if out else None)
        if out is not None:
            out.close()
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, path: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server on {self.url} did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def wrk(url: str, concurrency: int, duration: int, lua: Path | None) -> dict[str, float]:
    cmd = ["wrk", "-t", "1", "-c", str(concurrency), "-d", f"{duration}s", "--latency"]
    if lua is not None:
        cmd += ["-s", str(lua)]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} failed requests against {url}:\n{out}")

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {"rps": rps, "p50": percentile("50"), "p99": percentile("99"), "requests": requests}


def measure(server: Server, endpoint: str, concurrency: list[int], duration: int,
            lua: Path) -> dict[int, dict[str, float]]:
    url = server.url + ("/classify" if endpoint == "classify" else "/sample?label=7")
    wrk(url, 8, 2, lua if endpoint == "classify" else None)  # warm-up
    return {c: wrk(url, c, duration, lua if endpoint == "classify" else None)
            for c in concurrency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--workers", type=int, nargs="*", default=[2, 4],
                        help="uvicorn worker processes for the scaling runs")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="aae-bench-"))
    model_dir, lua = prepare(work)
    env = {"AAE_MODEL_DIR": str(model_dir), "AAE_DEFAULT_MODEL": MODEL,
           "BENCH_MODEL_DIR": str(model_dir), "BENCH_MODEL": MODEL}
    servers = [("service", "service.app:create_app", True, "/readyz"),
               ("obvious", "benchmarks.obvious_server:app", False, "/docs")]
    results: dict[tuple[str, str, int], dict[int, dict[str, float]]] = {}
    runs = [(label, app, factory, ready, 1) for label, app, factory, ready in servers]
    runs += [("service", servers[0][1], True, "/readyz", w) for w in args.workers]
    for label, app, factory, ready, workers in runs:
        server = Server(app, env, workers, factory, http=PROTOCOL if factory else None)
        try:
            server.wait_ready(ready)
            for endpoint in ("classify", "sample"):
                results[(label, endpoint, workers)] = measure(
                    server, endpoint, args.concurrency if workers == 1 else [64],
                    args.duration, lua)
                for c, r in results[(label, endpoint, workers)].items():
                    print(f"{label:8} {endpoint:9} workers {workers} c={c:<3} "
                          f"{r['rps']:8.0f} req/s  p50 {r['p50']:6.2f} ms  "
                          f"p99 {r['p99']:6.2f} ms", flush=True)
        finally:
            server.stop()

    print("\n| endpoint | concurrency | service req/s | p50 / p99 ms | obvious req/s "
          "| p50 / p99 ms | ratio |\n|---|---:|---:|---:|---:|---:|---:|")
    for endpoint in ("classify", "sample"):
        for c in args.concurrency:
            s, o = results[("service", endpoint, 1)][c], results[("obvious", endpoint, 1)][c]
            print(f"| {endpoint} | {c} | {s['rps']:.0f} | {s['p50']:.1f} / {s['p99']:.1f} | "
                  f"{o['rps']:.0f} | {o['p50']:.1f} / {o['p99']:.1f} | "
                  f"{s['rps'] / o['rps']:.2f}x |")
    print("\n| endpoint | uvicorn workers | req/s at c=64 | p50 / p99 ms |\n|---|---:|---:|---:|")
    for endpoint in ("classify", "sample"):
        for w in [1, *args.workers]:
            r = results[("service", endpoint, w)][64]
            print(f"| {endpoint} | {w} | {r['rps']:.0f} | {r['p50']:.1f} / {r['p99']:.1f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
