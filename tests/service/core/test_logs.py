"""The API's log lines are written off the event loop (``service.core.logs``), against a
real ``aae serve`` process whose log is a pipe: while nobody reads the pipe (full, so a
write to it blocks) the server goes on answering; once it is read, every request's one
access line is there (uvicorn's own line is not written: ours replaces it)."""

from __future__ import annotations

import fcntl
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[3]
F_GETPIPE_SZ = 1032  # fcntl.F_GETPIPE_SZ on Linux (Python 3.11 lacks the name on some builds)
ACCESS = re.compile(rb"INFO service\.access \[(\w+)\]: 127\.0\.0\.1:\d+ GET /healthz 200 ")


def test_a_log_nobody_reads_does_not_stop_the_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "AAE_MODEL_DIR": str(tmp_path / "models"), "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    lines: list[bytes] = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                assert server.poll() is None
                try:
                    client.get("/healthz")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "aae serve did not start"
                    time.sleep(0.2)
            # twice what the pipe holds in access lines (about 130 bytes each): the pipe
            # fills and stays full, and a write to it blocks until someone reads
            requests = 2 * fcntl.fcntl(server.stdout.fileno(), F_GETPIPE_SZ) // 100
            ids = [client.get("/healthz").headers["x-request-id"] for _ in range(requests)]
            # the pipe is full (nothing has read it): the loop is not waiting on it
            assert client.get("/healthz").status_code == 200

        reader = threading.Thread(target=lambda: lines.extend(server.stdout), daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while sum(1 for line in list(lines) if ACCESS.search(line)) < requests + 2:
            assert time.monotonic() < deadline, lines[-3:]
            time.sleep(0.1)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:  # stuck writing to its full pipe
            server.kill()
            server.wait()
    logged = [m.group(1).decode() for line in lines if (m := ACCESS.search(line))]
    assert set(ids) <= set(logged)
    assert len(logged) == len(set(logged))  # one line per request
    assert not any(b'"GET /healthz HTTP/1.1" 200' in line for line in lines)  # uvicorn's
