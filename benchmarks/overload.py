"""Serving under overload, admission control on against off, side by side in one run.

1. Open loop: requests to ``GET /sample?n=256&scale=16`` (a 51 M pixel PNG) sent at a
   fixed arrival rate whatever the answers' latency (asyncio; wrk is closed-loop), at 8x
   the sustainable rate (measured first, closed-loop), for 20 s, while ``/healthz`` is
   probed every 50 ms: the accepted requests' p99, the share shed with 503, /healthz p99,
   and the share still unanswered 20 s after the last arrival (then given up).
2. Flood: 32 clients sending ``/sample?n=256&scale=16`` back to back for 10 s while
   ``/healthz``, ``/readyz`` and ``/metrics`` are probed: their p99.

Each with admission control on (the defaults) and off (``AAE_MAX_QUEUE=0``,
``AAE_REQUEST_DEADLINE_MS=0``); one uvicorn process over a model of the seed's sizes, a
real Redis beside it (``/metrics`` reads the job metrics from it).

The probes run in a process of their own, as a kubelet's do. In the load's own client
they measured that client: with shedding on it handles hundreds of 503s a second, and a
probe's answer waited behind them and behind its garbage collector (one collection of
82 ms was seen in a 10 s flood). ``--probes-in-load-client`` probes from the load's
client instead, as the first version of this benchmark did.

    python -m benchmarks.overload
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.serve_load import free_port
from cli.embedded_redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]

OPEN_LOOP = "/sample?n=256&scale=16"
FLOOD = "/sample?n=256&scale=16"
GRACE_S = 20.0  # after the last arrival; requests still unanswered then are counted so
MODES = {"on": {}, "off": {"AAE_MAX_QUEUE": "0", "AAE_REQUEST_DEADLINE_MS": "0"}}


def make_store(root: Path) -> Path:
    from aae.checkpoints import publish_model
    from aae.config import AAEConfig, Mode
    from aae.model import AdversarialAutoencoder
    from aae.store import CheckpointStore

    store = CheckpointStore(root / "models")
    publish_model(store, "m", AdversarialAutoencoder(
        AAEConfig(mode=Mode.SEMI_SUPERVISED, n_labels=100)).eval(), {})
    return store.root


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * 0.99))] * 1000


class Server:
    def __init__(self, model_dir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
             "--port", str(self.port), "--log-level", "warning", "--no-access-log"],
            cwd=ROOT, env={**os.environ, "AAE_MODEL_DIR": str(model_dir),
                           "AAE_DEFAULT_MODEL": "m", "OMP_NUM_THREADS": "1", **env})
        for _ in range(600):
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the API did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def probe(client: httpx.AsyncClient, path: str, stop: asyncio.Event,
                out: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        try:
            await client.get(path, timeout=30)
        except httpx.HTTPError:
            pass
        out.append(time.perf_counter() - start)
        await asyncio.sleep(0.05)


PROBES = ("/healthz", "/readyz", "/metrics")


class Prober:
    """Probes of ``paths`` (each every 50 ms) from a process of its own, from ``start``
    until ``stop``, which returns each path's latencies (seconds). With ``in_process``,
    from the caller's event loop and client instead (``client`` given to ``start``)."""

    def __init__(self, url: str, paths: tuple[str, ...], in_process: bool = False) -> None:
        self.url, self.paths, self.in_process = url, paths, in_process
        self.out: dict[str, list[float]] = {p: [] for p in paths}

    async def start(self, client: httpx.AsyncClient) -> None:
        if self.in_process:
            self.stopped = asyncio.Event()
            self.tasks = [asyncio.create_task(probe(client, p, self.stopped, self.out[p]))
                          for p in self.paths]
            return
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.overload", "--probe",
                                      self.url, *self.paths], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout.readline().strip() == "probing"

    async def stop(self) -> dict[str, list[float]]:
        if self.in_process:
            self.stopped.set()
            await asyncio.gather(*self.tasks)
            return self.out
        out, _ = await asyncio.to_thread(self.proc.communicate, "")  # EOF: stop
        return json.loads(out)


async def probe_until_stdin_closes(url: str, paths: list[str]) -> dict[str, list[float]]:
    """The prober's process: probe until the parent closes our stdin."""
    out: dict[str, list[float]] = {p: [] for p in paths}
    stop, loop = asyncio.Event(), asyncio.get_running_loop()

    def wait_for_eof() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=wait_for_eof, daemon=True).start()
    async with httpx.AsyncClient(base_url=url) as client:
        await client.get("/healthz", timeout=30)  # connected before the load starts
        print("probing", flush=True)
        await asyncio.gather(*(probe(client, p, stop, out[p]) for p in paths))
    return out


async def sustainable_rate(url: str, seconds: float = 4.0, clients: int = 4) -> float:
    done = 0
    end = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url) as client:
        async def one() -> None:
            nonlocal done
            while time.monotonic() < end:
                if (await client.get(OPEN_LOOP, timeout=30)).status_code == 200:
                    done += 1
        await asyncio.gather(*(one() for _ in range(clients)))
    return done / seconds


async def open_loop(url: str, rate: float, seconds: float,
                    probes_in_load_client: bool = False) -> dict[str, float]:
    accepted, shed, failed = [], 0, 0
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:
        prober = Prober(url, ("/healthz",), probes_in_load_client)
        await prober.start(client)

        async def one() -> None:
            nonlocal shed, failed
            start = time.perf_counter()
            try:
                response = await client.get(OPEN_LOOP, timeout=60)
            except httpx.HTTPError:
                failed += 1
                return
            if response.status_code == 200:
                accepted.append(time.perf_counter() - start)
            elif response.status_code == 503:
                shed += 1
            else:
                failed += 1

        tasks, start = [], time.perf_counter()
        for i in range(int(rate * seconds)):  # fixed arrival times, whatever the answers
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        _, late = await asyncio.wait(tasks, timeout=GRACE_S)  # then the backlog is given up
        for task in late:
            task.cancel()
        health = (await prober.stop())["/healthz"]
    sent = len(tasks)
    return {"sent": sent, "accepted_p99": p99(accepted), "shed": shed / sent,
            "failed": failed / sent, "unanswered": len(late) / sent,
            "health_p99": p99(health), "accepted_per_s": len(accepted) / seconds}


async def flood(url: str, clients: int, seconds: float,
                probes_in_load_client: bool = False) -> dict[str, float]:
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=None)
                                 ) as client:
        prober = Prober(url, PROBES, probes_in_load_client)
        await prober.start(client)
        end = time.monotonic() + seconds

        async def one() -> None:
            while time.monotonic() < end:
                try:
                    statuses.append((await client.get(FLOOD, timeout=120)).status_code)
                except httpx.HTTPError:
                    statuses.append(0)
        await asyncio.gather(*(one() for _ in range(clients)))
        probes = await prober.stop()
    return {**{p: p99(v) for p, v in probes.items()},
            "shed": statuses.count(503) / max(1, len(statuses))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--factor", type=float, default=8.0)
    parser.add_argument("--probes-in-load-client", action="store_true",
                        help="probe from the load's own client (see the docstring)")
    parser.add_argument("--deadline-ms", type=float,
                        help="AAE_REQUEST_DEADLINE_MS with admission control on (default: "
                        "the service's); a short one makes the flood shed most requests")
    parser.add_argument("--probe", nargs="+", metavar=("URL", "PATH"),
                        help=argparse.SUPPRESS)  # the prober's process
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(asyncio.run(probe_until_stdin_closes(args.probe[0],
                                                              args.probe[1:]))))
        return 0
    in_client = args.probes_in_load_client
    with tempfile.TemporaryDirectory(prefix="aae-overload-") as tmp, EmbeddedRedis() as redis:
        model_dir = make_store(Path(tmp))
        rate, rows, floods = None, {}, {}
        modes = dict(MODES)
        if args.deadline_ms is not None:
            modes["on"] = {"AAE_REQUEST_DEADLINE_MS": str(args.deadline_ms)}
        for mode, env in modes.items():
            server = Server(model_dir, {**env, "AAE_REDIS_URL": redis.url})
            try:
                if rate is None:  # the same arrival rate for both
                    rate = asyncio.run(sustainable_rate(server.url)) * args.factor
                rows[mode] = asyncio.run(open_loop(server.url, rate, args.seconds, in_client))
                floods[mode] = asyncio.run(flood(server.url, 32, 10.0, in_client))
            finally:
                server.stop()
    print(f"\nopen loop: GET {OPEN_LOOP} at {rate:.0f} req/s ({args.factor:g}x the "
          f"sustainable rate) for {args.seconds:g} s\n")
    print("| admission control | accepted req/s | accepted p99 ms | shed (503) | unanswered "
          f"{GRACE_S:g} s on | failed | /healthz p99 ms |\n|---|---:|---:|---:|---:|---:|---:|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['accepted_per_s']:.0f} | {r['accepted_p99']:.0f} | "
              f"{r['shed']:.0%} | {r['unanswered']:.0%} | {r['failed']:.0%} | "
              f"{r['health_p99']:.1f} |")
    print(f"\nflood: 32 clients on GET {FLOOD} for 10 s\n")
    print("| admission control | /healthz p99 ms | /readyz p99 ms | /metrics p99 ms | shed |"
          "\n|---|---:|---:|---:|---:|")
    for mode, f in floods.items():
        print(f"| {mode} | {f['/healthz']:.1f} | {f['/readyz']:.1f} | {f['/metrics']:.1f} | "
              f"{f['shed']:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
