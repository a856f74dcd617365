"""Fault injection: ``aae serve``, two ``python -m worker`` and a Redis with an append-only
file, N short training jobs on the committed digits, and ``kill -9`` of a random
component (a job's process, a worker, Redis, the API) at random moments for a bounded
time; each killed component but the job is started again after a random pause (the job
is the workers' to resume). Every random choice comes from the printed seed, so a run
can be repeated (timings on a shared machine still differ).

Then it waits for every accepted job to end and counts, from the API, the checkpoint
store and Redis (never from log lines):

- accepted: jobs answered 202 (submissions during an outage that got 503 are retried);
- finished / failed / lost (accepted, but unknown or never ended);
- duplicate versions: versions beyond one per job (the store's ``job_id`` of each);
- trained twice: jobs seen with two live training processes at once (every start of
  training is recorded with its pid in ``starts_key``; sampled every 0.2 s);
- leftover temp dirs: ``.tmp-*`` anywhere in the store, and scratch directories of
  ended jobs.

    python -m benchmarks.chaos                      # 16 jobs, 150 s of kills
    python -m benchmarks.chaos --seed 1234 --jobs 8 --duration 60
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from redis import Redis
from redis.exceptions import RedisError

from aae.store import CheckpointStore
from aae_jobs.contract import starts_key
from cli.embedded_redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]

FIXTURE = ROOT / "tests" / "fixtures" / "mnist"
JOB = {"mode": "semi_supervised", "n_labels": 100, "epochs": 3, "batch_size": 20,
       "hidden": 64, "validation_size": 300, "name": "chaos"}
VICTIMS = ("job", "worker", "redis", "api")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class System:
    """The processes under test, each startable again after a kill."""

    def __init__(self, base: Path, log: Path) -> None:
        self.model_dir = base / "models"
        self.redis = EmbeddedRedis(data_dir=base / "redis")
        self.port = free_port()
        self.log = log.open("a")
        self.env: dict[str, str] = {}
        self.api: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen | None] = [None, None]

    def start(self) -> None:
        url = self.redis.start()
        self.env = {**os.environ, "AAE_REDIS_URL": url, "AAE_MODEL_DIR": str(self.model_dir),
                    "AAE_DATA_DIR": str(FIXTURE), "AAE_LEASE_TTL_S": "3",
                    "AAE_MAINTENANCE_INTERVAL_S": "1", "AAE_CHECKPOINT_EVERY": "1",
                    "AAE_PROGRESS_EVERY": "10", "AAE_JOB_RETRIES": "100",
                    "AAE_WORKER_TORCH_THREADS": "1", "AAE_API_TORCH_THREADS": "1",
                    "OMP_NUM_THREADS": "1"}
        self.start_api()
        for i in range(len(self.workers)):
            self.start_worker(i)

    def _spawn(self, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=self.log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def start_api(self) -> None:
        self.api = self._spawn([sys.executable, "-m", "cli.main", "serve", "--port",
                                str(self.port)])

    def start_worker(self, i: int) -> None:
        self.workers[i] = self._spawn([sys.executable, "-m", "worker"])

    def horses(self) -> list[int]:
        pids = []
        for worker in self.workers:
            try:
                pids += [c.pid for c in psutil.Process(worker.pid).children()
                         if c.status() != psutil.STATUS_ZOMBIE]
            except (psutil.Error, AttributeError):
                continue
        return pids

    def stop(self) -> None:
        for process in [self.api, *self.workers]:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.redis.stop()


def kill(system: System, victim: str, rng: random.Random) -> bool:
    """``kill -9`` one component; returns whether there was one to kill."""
    if victim == "job":
        horses = system.horses()
        if not horses:
            return False
        os.kill(rng.choice(horses), signal.SIGKILL)
    elif victim == "worker":
        i = rng.randrange(len(system.workers))
        system.workers[i].kill()  # its job runs on, orphaned, in its own group
        system.workers[i].wait()
    elif victim == "redis":
        system.redis.kill()
    else:
        system.api.kill()
        system.api.wait()
    return True


def revive(system: System, victim: str) -> None:
    if victim == "redis":
        system.redis.restart()
    elif victim == "api":
        system.start_api()
    elif victim == "worker":
        for i, worker in enumerate(system.workers):
            if worker.poll() is not None:
                system.start_worker(i)


class Watcher:
    """Samples every job's live training processes (pids from ``starts_key``)."""

    def __init__(self, redis_url: str) -> None:
        self.connection = Redis.from_url(redis_url, socket_timeout=1)
        self.twice: set[str] = set()

    def sample(self, job_ids: list[str]) -> None:
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.lrange(starts_key(job_id), 0, -1)
                lists = pipe.execute()
        except RedisError:
            return
        for job_id, tokens in zip(job_ids, lists, strict=True):
            pids = {int(t.decode().split(":")[1]) for t in tokens}
            live = [p for p in pids if psutil.pid_exists(p) and
                    psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
            if len(live) > 1:
                self.twice.add(job_id)


def submit(client: httpx.Client, deadline: float) -> str | None:
    """POST a job until it is answered 202 (or the deadline passes)."""
    while time.monotonic() < deadline:
        try:
            answer = client.post("/jobs/train", json=JOB)
            if answer.status_code == 202:
                return answer.json()["id"]
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    return None


def status(client: httpx.Client, job_id: str) -> str | None:
    try:
        answer = client.get(f"/jobs/{job_id}")
    except httpx.TransportError:
        return None
    if answer.status_code == 404:
        return "unknown"
    return answer.json()["status"] if answer.status_code == 200 else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of kills")
    parser.add_argument("--pause", type=float, nargs=2, default=(2.0, 6.0),
                        help="seconds between two kills (uniform)")
    parser.add_argument("--drain", type=float, default=600.0, help="seconds to wait for ends")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    rng = random.Random(seed)
    print(f"seed {seed}: {args.jobs} jobs, {args.duration:.0f} s of kills", flush=True)

    base = Path(tempfile.mkdtemp(prefix="aae-chaos-"))
    system = System(base, base / "processes.log")
    system.start()
    watcher = Watcher(system.redis.url)
    client = httpx.Client(base_url=f"http://127.0.0.1:{system.port}", timeout=5)
    job_ids: list[str] = []
    kills = {victim: 0 for victim in VICTIMS}
    try:
        deadline = time.monotonic() + 120
        while status(client, "none") is None and time.monotonic() < deadline:
            time.sleep(0.3)  # the API's first answer (the 404)
        for _ in range(args.jobs // 2):
            job_ids.append(submit(client, time.monotonic() + 60))
        submit_at = sorted(rng.uniform(0, args.duration) for _ in range(args.jobs - len(job_ids)))
        start = time.monotonic()
        next_kill = start + rng.uniform(*args.pause)
        while time.monotonic() - start < args.duration:
            now = time.monotonic()
            if submit_at and now - start >= submit_at[0]:
                submit_at.pop(0)
                job_ids.append(submit(client, now + 30))
            if now >= next_kill:
                victim = rng.choice(VICTIMS)
                if kill(system, victim, rng):
                    kills[victim] += 1
                    print(f"{now - start:6.1f} s: killed {victim}", flush=True)
                    time.sleep(rng.uniform(0.0, 2.0))
                    revive(system, victim)
                next_kill = time.monotonic() + rng.uniform(*args.pause)
            watcher.sample([j for j in job_ids if j])
            time.sleep(0.2)
        for when in submit_at:  # any left (submissions took long)
            job_ids.append(submit(client, time.monotonic() + 30))

        accepted = [j for j in job_ids if j]
        final: dict[str, str | None] = {}
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline:
            final = {j: status(client, j) for j in accepted}
            watcher.sample(accepted)
            if all(s in ("finished", "failed", "stopped", "canceled") for s in final.values()):
                break
            time.sleep(0.5)
        time.sleep(2.0)  # the last scratch clean-ups
    finally:
        client.close()
        system.stop()

    store = CheckpointStore(system.model_dir)
    versions: dict[str, int] = {}
    for version in store.versions("chaos") if "chaos" in store.models() else []:
        owner = store.info("chaos", version).metrics.get("job_id")
        versions[owner] = versions.get(owner, 0) + 1
    leftovers = [p for p in system.model_dir.rglob(".tmp-*")]
    leftovers += [p for p in (system.model_dir / ".jobs").glob("*")
                  if p.name in final and final[p.name] in ("finished", "failed")]
    finished = sum(s == "finished" for s in final.values())
    failed = sum(s == "failed" for s in final.values())
    lost = sum(s not in ("finished", "failed", "stopped", "canceled") for s in final.values())
    print(f"seed {seed}; kills: {sum(kills.values())} "
          f"({', '.join(f'{v} {n}' for v, n in kills.items())})")
    print(f"accepted {len(accepted)}, finished {finished}, failed {failed}, lost {lost}, "
          f"duplicate versions {sum(n - 1 for n in versions.values() if n > 1)}, "
          f"finished without a version {sum(1 for j, s in final.items() if s == 'finished' and j not in versions)}, "
          f"trained twice {len(watcher.twice)}, leftover temp dirs {len(leftovers)}")
    print(f"(logs: {base / 'processes.log'})")
    return 0 if lost == 0 and not watcher.twice and not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
