"""Idempotency keys of submissions (``POST /jobs/train``, ``POST /sweeps``): a request that
repeats the key and the body of an earlier one gets the job (or sweep) that one made,
never a second; the same key with another body is refused.

    <model_dir>/.queue/keys/<sha256 of the queue, the kind and the key>.json

holds the sha256 of the request's body (as parsed: ``body_hash``) and the id it made. The
API writes it just before the job's durable record (so a failure to write the key, a full
disk say, leaves no record that a worker would run; a key whose job has no record is
free), under a lock of its own (``locked``), so a retry sent while the first request is
still in flight waits for its outcome. A key lives as long as the job's record does: the API forgets a key
whose job it no longer knows (expired from Redis, its record gone) or whose job it
refused (answered 503: nothing was made, the key is free), and the workers' maintenance
removes the files of such keys (``worker.recovery``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from aae.atomic import file_lock
from aae_jobs.records import records_dir, write_document

logger = logging.getLogger(__name__)

KEYS_DIR = "keys"  # under the records' directory

Kind = Literal["job", "sweep"]


class KeyEntry(BaseModel):
    kind: Kind
    queue: str
    body: str = Field(description="sha256 of the request's body, as parsed")
    id: str = Field(description="the job's or the sweep's id")
    created_at: float = Field(default_factory=time.time)


def keys_dir(model_dir: Path) -> Path:
    return records_dir(model_dir) / KEYS_DIR


def key_name(queue: str, kind: Kind, key: str) -> str:
    return hashlib.sha256(f"{queue}\0{kind}\0{key}".encode()).hexdigest()


def body_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


@contextmanager
def locked(model_dir: Path, name: str) -> Iterator[None]:
    with file_lock(keys_dir(model_dir) / f".{name}.lock"):
        yield


def read_key(model_dir: Path, name: str) -> KeyEntry | None:
    try:
        return KeyEntry.model_validate_json((keys_dir(model_dir) / f"{name}.json")
                                            .read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        logger.error("idempotency key %s is unreadable: %s", name, exc)
        return None


def write_key(model_dir: Path, name: str, entry: KeyEntry) -> None:
    write_document(keys_dir(model_dir), name, entry)


def remove_key(model_dir: Path, name: str) -> None:
    (keys_dir(model_dir) / f"{name}.json").unlink(missing_ok=True)
    (keys_dir(model_dir) / f".{name}.lock").unlink(missing_ok=True)


def key_entries(model_dir: Path) -> list[tuple[str, KeyEntry]]:
    try:
        names = [p.stem for p in keys_dir(model_dir).glob("*.json")]
    except OSError:
        return []
    entries = ((name, read_key(model_dir, name)) for name in names)
    return [(name, entry) for name, entry in entries if entry is not None]
