"""A version's manifest: every file of the version with its size and sha256, written last
when the version is published, so that damage to any byte is found before it is served.

    <name>/<version>/manifest.json
    {"format": 1, "files": {"weights.safetensors": {"bytes": 1234, "sha256": "..."}, ...}}

``check`` compares a version directory with its manifest: a file listed but missing, of
another size or another hash is damage; so is a manifest that cannot be read. Versions
published before manifests existed have none: they load, and ``aae store verify`` lists
them as unverified (no manifest), since a manifest written after the fact would bless
whatever damage they already have.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

MANIFEST_FILE = "manifest.json"
FORMAT = 1
_CHUNK = 1 << 20


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> tuple[int, str]:
    """The size and sha256 of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def build(directory: Path) -> dict:
    """The manifest of every regular file in ``directory`` (the manifest itself aside)."""
    files = {}
    for path in sorted(directory.iterdir()):
        if path.name != MANIFEST_FILE and path.is_file():
            size, digest = file_sha256(path)
            files[path.name] = {"bytes": size, "sha256": digest}
    return {"format": FORMAT, "files": files}


@dataclass(frozen=True)
class Damage:
    """One damaged file of a version, and how it differs from its manifest."""

    file: str
    reason: str


class Manifest:
    """A version's manifest as read back: file name -> (bytes, sha256)."""

    def __init__(self, files: dict[str, tuple[int, str]]) -> None:
        self.files = files

    @classmethod
    def read(cls, directory: Path) -> Manifest | None:
        """The manifest of a version directory; None if it has none (published before
        manifests); ``Damage`` of the manifest itself, raised, if it is unreadable."""
        path = directory / MANIFEST_FILE
        try:
            document = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ManifestUnreadable(Damage(MANIFEST_FILE, f"unreadable: {exc}")) from exc
        try:
            files = {name: (int(entry["bytes"]), str(entry["sha256"]))
                     for name, entry in document["files"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestUnreadable(Damage(MANIFEST_FILE, f"malformed: {exc!r}")) from exc
        return cls(files)

    def check_bytes(self, name: str, data: bytes) -> Damage | None:
        """Whether ``data``, read from the file ``name``, is what the manifest lists."""
        if name not in self.files:
            return Damage(name, "not listed in its manifest")
        size, digest = self.files[name]
        if len(data) != size:
            return Damage(name, f"{len(data)} bytes where its manifest says {size}")
        if sha256(data) != digest:
            return Damage(name, "its sha256 differs from its manifest's")
        return None

    def check(self, directory: Path) -> list[Damage]:
        """Every listed file of ``directory`` that is missing or differs."""
        found = []
        for name, (size, digest) in sorted(self.files.items()):
            try:
                actual_size, actual = file_sha256(directory / name)
            except FileNotFoundError:
                found.append(Damage(name, "missing"))
                continue
            except OSError as exc:
                found.append(Damage(name, f"unreadable: {exc.strerror or exc}"))
                continue
            if actual_size != size:
                found.append(Damage(name, f"{actual_size} bytes where its manifest says "
                                          f"{size}"))
            elif actual != digest:
                found.append(Damage(name, "its sha256 differs from its manifest's"))
        return found


class ManifestUnreadable(Exception):
    """The manifest itself is damaged (its ``damage`` says how)."""

    def __init__(self, damage: Damage) -> None:
        super().__init__(f"{damage.file}: {damage.reason}")
        self.damage = damage
