"""Fault injection: ``aae serve``, two ``python -m worker`` and a Redis with an append-only
file, the checkpoint store on a small tmpfs of its own, N short training jobs on the
committed digits, and one fault at a time, at random moments, for a bounded time:

- kill: ``kill -9`` of a job's training process, a worker, Redis or the API, each but the
  job started again after up to 2 s (the job is the workers' to resume);
- hang: ``SIGSTOP`` of Redis, a worker or a job's training process, held past the lease
  (2 to 4 leases of 3 s: a job paused longer than about two is handed to another worker,
  and its paused attempt, once continued, must exit writing nothing), then ``SIGCONT``;
- full disk: the store's file system filled to its last byte, held 5 to 15 s, then the
  filler removed;
- damage: 4 KiB overwritten in the middle of a published version's
  ``weights.safetensors`` (a version the API has never been asked for), which is then
  asked for (``POST /encode``) every 2 s until the end.

Jobs are submitted with an ``Idempotency-Key`` of their own and retried with it until
answered 202 or 200 (a 503, a 507, a connection the API dropped). Every random choice
comes from the printed seed, so a run can be repeated (timings on a shared machine still
differ). Then it waits for every accepted job to end and counts, from the API, the
checkpoint store and Redis (never from log lines):

- accepted: jobs answered 202 (or 200: the first answer's job, for a retried key);
- finished / failed (by reason) / lost (accepted, but unknown or never ended);
- duplicated: versions beyond one per job, and versions of jobs never accepted;
- served damaged: answers 200 for a damaged version (every other answer is counted by its
  status); the damaged versions ``CheckpointStore.verify`` finds at the end;
- trained twice: jobs seen with two running training processes (neither stopped) for
  longer than a lease (each start of training is recorded with its pid in
  ``starts_key``; sampled every 0.2 s): a paused attempt that was superseded is
  continued and must exit within a lease, writing nothing;
- leftover temp dirs: ``.tmp-*`` anywhere in the store, and scratch directories of
  ended jobs.

The tmpfs needs root (or CAP_SYS_ADMIN).

    python -m benchmarks.chaos                      # 16 jobs, 150 s of faults
    python -m benchmarks.chaos --seed 1234 --jobs 8 --duration 60
"""

from __future__ import annotations

import argparse
import errno
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
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
MODEL = JOB["name"]
LEASE_S = 3.0
FAULTS = ("kill job", "kill worker", "kill redis", "kill api",
          "hang job", "hang worker", "hang redis", "full disk", "damage")
ENDED = ("finished", "failed", "stopped", "canceled")
PROBE_EVERY_S = 2.0
NOTHING_TO_HIT_S = 30.0  # a job fault waits this long for a running job, then another is drawn
DAMAGE_BYTES = 4096


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class System:
    """The processes under test, each startable again after a kill; the store on a tmpfs
    of ``disk_bytes``."""

    def __init__(self, base: Path, disk_bytes: int) -> None:
        self.disk = base / "disk"
        self.disk.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={disk_bytes}", "tmpfs",
                               str(self.disk)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"cannot mount the store's tmpfs (run as root): {done.stderr}")
        self.model_dir = self.disk / "models"
        self.filler = self.disk / ".filler"
        self.redis = EmbeddedRedis(data_dir=base / "redis")
        self.port = free_port()
        self.log_path = base / "processes.log"
        self.log = self.log_path.open("a")
        self.env: dict[str, str] = {}
        self.api: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen | None] = [None, None]

    def start(self) -> None:
        url = self.redis.start()
        self.env = {**os.environ, "AAE_REDIS_URL": url, "AAE_MODEL_DIR": str(self.model_dir),
                    "AAE_DATA_DIR": str(FIXTURE), "AAE_LEASE_TTL_S": str(LEASE_S),
                    "AAE_MAINTENANCE_INTERVAL_S": "1", "AAE_CHECKPOINT_EVERY": "1",
                    "AAE_PROGRESS_EVERY": "10", "AAE_JOB_RETRIES": "100",
                    # every kill here is the benchmark's, none the system's: let a job be
                    # killed as often as the run kills it (a real out-of-memory kill
                    # fails it at the second, AAE_MAX_JOB_KILLS' default)
                    "AAE_MAX_JOB_KILLS": "100",
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
                         if c.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_STOPPED)]
            except (psutil.Error, AttributeError):
                continue
        return pids

    def fill(self) -> None:
        """Write the filler until the kernel says no space is left."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 1 << 12, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
        finally:
            os.close(fd)

    def stop(self) -> None:
        for process in [self.api, *self.workers]:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.redis.stop()

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.disk)], check=False)


class Faults:
    """One fault at a time: ``inject`` starts one, and returns how to end it (or None if
    there was nothing to inject it into)."""

    def __init__(self, system: System, rng: random.Random) -> None:
        self.system, self.rng = system, rng
        self.damaged: list[int] = []
        self.asked: set[int] = set()  # versions the benchmark has asked the API for

    def inject(self, fault: str) -> Callable[[], None] | None:
        if fault == "full disk":
            return self.fill()
        if fault == "damage":
            return self.damage()
        action, victim = fault.split(" ")
        return self.kill(victim) if action == "kill" else self.hang(victim)

    def kill(self, victim: str) -> Callable[[], None] | None:
        system = self.system
        if victim == "job":
            horses = system.horses()
            if not horses:
                return None
            os.kill(self.rng.choice(horses), signal.SIGKILL)
            return lambda: None
        if victim == "worker":
            i = self.rng.randrange(len(system.workers))
            system.workers[i].kill()  # its job dies with it (PR_SET_PDEATHSIG)
            system.workers[i].wait()
            return lambda: system.start_worker(i)
        if victim == "redis":
            system.redis.kill()
            return lambda: system.redis.restart()
        system.api.kill()
        system.api.wait()
        return system.start_api

    def hang(self, victim: str) -> Callable[[], None] | None:
        system = self.system
        if victim == "job":
            horses = system.horses()
            if not horses:
                return None
            pid = self.rng.choice(horses)
        elif victim == "worker":
            pid = system.workers[self.rng.randrange(len(system.workers))].pid
        else:
            pid = system.redis.process.pid
        os.kill(pid, signal.SIGSTOP)

        def resume() -> None:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        return resume

    def fill(self) -> Callable[[], None] | None:
        self.system.fill()
        return lambda: self.system.filler.unlink()

    def damage(self) -> Callable[[], None] | None:
        """Overwrite bytes of a version nobody has asked the API for (so that it cannot
        be in the API's memory from before the damage)."""
        store = CheckpointStore(self.system.model_dir)
        try:
            fresh = [v for v in store.versions(MODEL) if v not in self.asked]
        except Exception:  # no version yet
            return None
        if not fresh:
            return None
        version = self.rng.choice(fresh)
        weights = self.system.model_dir / MODEL / str(version) / "weights.safetensors"
        size = weights.stat().st_size
        with open(weights, "r+b") as f:
            f.seek(max(0, size // 2 - DAMAGE_BYTES // 2))
            f.write(self.rng.randbytes(min(DAMAGE_BYTES, size)))
        self.damaged.append(version)
        self.asked.add(version)
        return lambda: None


class Watcher:
    """Samples every job's running training processes (pids from ``starts_key``): a job
    with two running (not stopped) for longer than a lease was trained twice."""

    def __init__(self, redis_url: str) -> None:
        self.connection = Redis.from_url(redis_url, socket_timeout=1)
        self.since: dict[str, float] = {}
        self.twice: set[str] = set()

    def sample(self, job_ids: list[str]) -> None:
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.lrange(starts_key(job_id), 0, -1)
                lists = pipe.execute()
        except RedisError:
            return
        now = time.monotonic()
        for job_id, tokens in zip(job_ids, lists, strict=True):
            running = 0
            for pid in {int(t.decode().split(":")[1]) for t in tokens}:
                try:
                    running += psutil.Process(pid).status() not in (
                        psutil.STATUS_ZOMBIE, psutil.STATUS_STOPPED)
                except psutil.Error:
                    continue
            if running < 2:
                self.since.pop(job_id, None)
            elif now - self.since.setdefault(job_id, now) > LEASE_S:
                self.twice.add(job_id)


class Submitter:
    """Submissions, each with an Idempotency-Key of its own, retried with it until
    answered 202 or 200; one request per call of ``step``, never waiting in between."""

    def __init__(self, client: httpx.Client, seed: int) -> None:
        self.client, self.seed = client, seed
        self.waiting: list[str] = []  # keys not yet accepted
        self.accepted: dict[str, str] = {}  # key -> job id
        self.answers: Counter[str] = Counter()
        self.made = 0

    def add(self) -> None:
        self.waiting.append(f"chaos-{self.seed}-{self.made}")
        self.made += 1

    def step(self) -> None:
        if not self.waiting:
            return
        key = self.waiting[0]
        try:
            answer = self.client.post("/jobs/train", json=JOB, headers={"Idempotency-Key": key})
        except httpx.TransportError:
            self.answers["no answer"] += 1
            return
        self.answers[str(answer.status_code)] += 1
        if answer.status_code in (200, 202):
            self.accepted[key] = answer.json()["id"]
            self.waiting.pop(0)


def job_status(client: httpx.Client, job_id: str) -> tuple[str | None, str | None, int]:
    """The job's status, error and attempts (None, None, 0: no answer now)."""
    try:
        answer = client.get(f"/jobs/{job_id}")
    except httpx.TransportError:
        return None, None, 0
    if answer.status_code == 404:
        return "unknown", None, 0
    if answer.status_code != 200:
        return None, None, 0
    body = answer.json()
    return body["status"], body.get("error"), body.get("attempts") or 0


def probe(client: httpx.Client, version: int, answers: Counter[str]) -> None:
    try:
        answer = client.post(f"/encode?model={MODEL}&version={version}",
                             json={"pixels": [0.0] * 784})
    except httpx.TransportError:
        return
    answers[str(answer.status_code)] += 1


def reason(error: str | None) -> str:
    text = (error or "").lower()
    if "no space" in text:
        return "no space"
    if "killed by signal" in text:
        return "kill limit"
    return error or "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of faults")
    parser.add_argument("--pause", type=float, nargs=2, default=(2.0, 6.0),
                        help="seconds between the end of a fault and the next (uniform)")
    parser.add_argument("--drain", type=float, default=600.0, help="seconds to wait for ends")
    parser.add_argument("--disk-mib", type=int, default=64, help="size of the store's tmpfs")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    rng = random.Random(seed)
    print(f"seed {seed}: {args.jobs} jobs, {args.duration:.0f} s of faults", flush=True)

    base = Path(tempfile.mkdtemp(prefix="aae-chaos-"))
    system = System(base, args.disk_mib << 20)
    faults = Faults(system, rng)
    injected: Counter[str] = Counter()
    damaged_answers: Counter[str] = Counter()
    final: dict[str, tuple[str | None, str | None, int]] = {}
    try:
        system.start()
        watcher = Watcher(system.redis.url)
        client = httpx.Client(base_url=f"http://127.0.0.1:{system.port}", timeout=5)
        submitter = Submitter(client, seed)
        deadline = time.monotonic() + 120
        while job_status(client, "none")[0] is None and time.monotonic() < deadline:
            time.sleep(0.3)  # the API's first answer (the 404)
        for _ in range(args.jobs // 2):
            submitter.add()
        submit_at = sorted(rng.uniform(0, args.duration) for _ in range(args.jobs // 2,
                                                                          args.jobs))
        start = time.monotonic()
        next_fault = start + rng.uniform(*args.pause)
        ending: tuple[float, str, Callable[[], None]] | None = None
        fault: str | None = None
        fault_until = 0.0
        next_probe = start
        while time.monotonic() - start < args.duration or ending is not None:
            now = time.monotonic()
            while submit_at and now - start >= submit_at[0]:
                submit_at.pop(0)
                submitter.add()
            if ending is None and now >= next_fault and now - start < args.duration:
                if fault is None or now > fault_until:
                    fault, fault_until = rng.choice(FAULTS), now + NOTHING_TO_HIT_S
                end = faults.inject(fault)
                if end is None:  # nothing to inject it into now (no job runs, no version)
                    next_fault = now + 0.5
                else:
                    injected[fault] += 1
                    held = {"kill": (0.0, 2.0), "hang": (2 * LEASE_S, 4 * LEASE_S),
                            "full": (5.0, 15.0), "damage": (0.0, 0.0)}[fault.split()[0]]
                    ending = (now + rng.uniform(*held), fault, end)
                    print(f"{now - start:6.1f} s: {fault}", flush=True)
                    fault = None
            if ending is not None and now >= ending[0]:
                ending[2]()
                print(f"{now - start:6.1f} s: {ending[1]} ended", flush=True)
                ending = None
                next_fault = time.monotonic() + rng.uniform(*args.pause)
            submitter.step()
            if now >= next_probe:
                for version in faults.damaged:
                    probe(client, version, damaged_answers)
                next_probe = now + PROBE_EVERY_S
            watcher.sample(list(submitter.accepted.values()))
            time.sleep(0.2)
        submitter.waiting += [f"chaos-{seed}-late-{i}" for i in range(len(submit_at))]
        deadline = time.monotonic() + args.drain
        while submitter.waiting and time.monotonic() < deadline:
            submitter.step()
            time.sleep(0.3)

        accepted = list(submitter.accepted.values())
        while time.monotonic() < deadline:
            final = {j: job_status(client, j) for j in accepted}
            watcher.sample(accepted)
            if all(s in ENDED for s, _, _ in final.values()):
                break
            time.sleep(0.5)
        for version in faults.damaged:  # a last ask, after every restart
            probe(client, version, damaged_answers)
        time.sleep(2.0)  # the last scratch clean-ups
        client.close()
    except BaseException:
        system.stop()
        system.unmount()
        raise
    system.stop()

    try:
        store = CheckpointStore(system.model_dir)
        versions: Counter[str | None] = Counter()
        found_damaged = []
        for version in store.versions(MODEL) if MODEL in store.models() else []:
            versions[store.info(MODEL, version).metrics.get("job_id")] += 1
            if not store.verify(MODEL, version).ok:
                found_damaged.append(version)
        leftovers = list(system.model_dir.rglob(".tmp-*"))
        leftovers += [p for p in (system.model_dir / ".jobs").glob("*")
                      if p.name in final and final[p.name][0] in ("finished", "failed")]
    finally:
        system.unmount()

    statuses = Counter(s for s, _, _ in final.values())
    failed = Counter(reason(e) for s, e, _ in final.values() if s == "failed")
    lost = sum(s not in ENDED for s, _, _ in final.values())
    restarts = sum(max(0, n - 1) for _, _, n in final.values())
    duplicated = (sum(n - 1 for j, n in versions.items() if j in final and n > 1)
                  + sum(n for j, n in versions.items() if j not in final))
    served_damaged = damaged_answers["200"]
    unversioned = sum(1 for j, (s, _, _) in final.items()
                      if s == "finished" and j not in versions)
    print(f"seed {seed}; faults: {sum(injected.values())} ("
          f"{', '.join(f'{f} {injected[f]}' for f in FAULTS)})")
    print(f"submissions answered: {dict(sorted(submitter.answers.items()))}")
    print(f"accepted {len(accepted)}, finished {statuses['finished']}, "
          f"failed {sum(failed.values())} {dict(failed) or ''}, lost {lost}, "
          f"duplicated {duplicated}, finished without a version {unversioned}, "
          f"trained twice {len(watcher.twice)}, leftover temp dirs {len(leftovers)}; "
          f"{restarts} attempts after the first")
    print(f"damaged versions {sorted(faults.damaged)}, found by verify "
          f"{sorted(found_damaged)}; their answers {dict(sorted(damaged_answers.items()))}, "
          f"served damaged {served_damaged}")
    print(f"(logs: {system.log_path})")
    ok = (lost == 0 and duplicated == 0 and served_damaged == 0 and not watcher.twice
          and not leftovers and sorted(found_damaged) == sorted(faults.damaged))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
