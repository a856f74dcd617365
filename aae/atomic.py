"""Durable files and directories on a local or shared file system: the one home of the
project's file primitives (the store, resumable states, job and sweep records, sample
grids all write through here).

- ``replace_file``: a file that appears whole or not at all, replacing an older copy:
  a temporary file beside it, fsynced, renamed over it, the directory fsynced.
- ``file_lock``: an exclusive ``flock``, released when its holder exits however it
  exits (it holds across NFSv4 mounts too), taken without Redis.
- ``staged_dir`` and ``fsync_dir``: directories that appear whole or not at all.

The one protocol of the checkpoint store and the resumable training states: write every
file into a private temporary directory beside the target (``staged_dir``), fsync the
files and the directory, rename it into place (the caller's rename: the store picks a
free version number, a resumable state replaces an older copy), then fsync the parent
so that the rename itself is durable.

Only the standard library at import (torch is imported where tensors are written), so
that the job contract (``aae_jobs``) can use these primitives without torch. A crash at any moment leaves either the complete
directory or a ``.tmp-*`` one that readers ignore.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
FILE_MODE = 0o644  # readable by the API and the workers, which may run as other users


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some network file systems refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
        logger.debug("fsync of directory %s not supported: %s", path, exc)
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file and fsync it; if that fails (no space, say), the file
    is removed again: a failed write leaves nothing behind."""
    f = open(path, "xb")  # noqa: SIM115 - closed below, before the file may be removed
    try:
        with f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(path, FILE_MODE)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` as ``path``, whole or not at all, durably: a temporary file beside it,
    fsynced, renamed over any older copy, and the directory fsynced. A missing directory
    is made (and its parent fsynced)."""
    directory = path.parent
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        fsync_dir(directory.parent)
    tmp = directory / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    try:
        write_bytes(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(directory)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (made, with its directory, if missing) for the
    block; released when its holder exits, however it exits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def write_json(path: Path, obj: Any, *, indent: int | None = 2) -> None:
    text = json.dumps(obj, indent=indent, sort_keys=indent is not None)
    write_bytes(path, (text + "\n").encode("utf-8"))


def write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Save tensors with safetensors (nothing pickled) as a new file, fsynced. Serialized
    in memory and written here, so that a full disk is the OSError (ENOSPC) every other
    write raises, not safetensors' own error."""
    from safetensors.torch import save  # here: the rest of this module is torch-free

    cpu = {key: t.detach().to("cpu", copy=True).contiguous() for key, t in tensors.items()}
    write_bytes(path, save(cpu, metadata={"format": "pt"}))


@contextmanager
def staged_dir(parent: Path) -> Iterator[Path]:
    """A new private directory under ``parent`` to fill and then rename into place.

    On leaving the block normally, the directory's entries are fsynced (the caller then
    renames it and calls ``fsync_dir(parent)``); on an exception it is removed."""
    tmp = parent / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        yield tmp
        fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
