"""The file primitives every writer of the store goes through."""

import os
import subprocess
import sys

import pytest

from aae.atomic import TMP_PREFIX, file_lock, replace_file


def test_replace_file_writes_whole_files_readable_by_others_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "records" / "job.json"  # the directory is made
    replace_file(path, b"first")
    replace_file(path, b"second")
    assert path.read_bytes() == b"second"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in path.parent.iterdir()] == ["job.json"]


def test_a_failed_replace_leaves_the_old_copy_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "latest.png"
    replace_file(path, b"old")

    def no_space(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OSError):
        replace_file(path, b"new")
    assert path.read_bytes() == b"old"
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*"))


def test_file_lock_excludes_another_process_until_released(tmp_path):
    lock = tmp_path / "locks" / "publish.lock"
    probe = ("import fcntl, sys\n"
             "f = open(sys.argv[1], 'a')\n"
             "try:\n    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
             "except BlockingIOError:\n    sys.exit(1)\n")
    with file_lock(lock):
        held = subprocess.run([sys.executable, "-c", probe, str(lock)])
        assert held.returncode == 1
    free = subprocess.run([sys.executable, "-c", probe, str(lock)])
    assert free.returncode == 0
