"""The versioned checkpoint store on a shared volume.

Layout under ``root``::

    <name>/<version>/weights.safetensors   one directory per published version (1, 2, ...)
    <name>/<version>/config.json
    <name>/<version>/metrics.json          the caller's metrics plus "created_at" (ISO-8601, UTC)
    <name>/<version>/manifest.json         every other file's size and sha256 (aae.manifest)
    <name>/aliases/<alias>                 a text file holding a version number
    <name>/.deleted/<version>              tombstone (empty): the number is never handed out again
    <name>/.tmp-<uuid>/                    a version being written; never read
    <name>/.trash-<uuid>/                  a version being removed; never read

Several publishers on several machines may write at once and readers never lock.
Everything rests on two atomic operations of the file system: a version appears by
renaming a complete, fsynced temporary directory to its number (the rename fails if
another publisher took that number first, and the loser tries the next one), and an
alias changes by ``os.replace`` of a fsynced file. ``latest`` is not stored: it is the
highest version present. A version is gone as soon as its tombstone exists.

Integrity: ``load`` checks every file of a version against its manifest and serves the
weights from the very bytes it checked; a difference raises ``CheckpointDamaged`` naming
the version and the file. Versions published before manifests load unchecked
(``verify`` says "no manifest").

A full disk: a failed alias move or deletion leaves the store as it was (the files and
directories it made are removed). A tombstone is an empty file, so deleting a version
needs no free blocks: on a full disk it still frees the version's space.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes

from aae import manifest
from aae.atomic import fsync_dir, staged_dir, write_bytes, write_json, write_tensors
from aae.errors import (AliasInUse, CheckpointCorrupt, CheckpointDamaged, CheckpointNotFound,
                        InvalidName)
from aae.manifest import MANIFEST_FILE, Damage, Manifest, ManifestUnreadable

logger = logging.getLogger(__name__)

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
LATEST = "latest"
DEFAULT_ALIAS = "production"

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
ALIASES_DIR = "aliases"
DELETED_DIR = ".deleted"

_NAME_RE = re.compile(NAME_PATTERN)
_VERSION_RE = re.compile(r"[1-9][0-9]*")  # canonical spelling only: "7", never "07"
_MAX_PUBLISH_ATTEMPTS = 1000


def validate_name(name: str, what: str = "model name") -> str:
    """Return ``name`` if it is a safe single path component, else raise InvalidName.

    Names are 1 to 64 characters of letters, digits, '.', '_' and '-', starting with a
    letter or digit and without '..'. Alias names (``what="alias"``) must also not be
    all digits, so that they cannot be mistaken for version numbers.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidName(f"invalid {what} {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit")
    if what == "alias" and name.isdigit():
        raise InvalidName(f"invalid alias {name!r}: an alias cannot be all digits")
    return name


def _validate_version(version: int | str) -> int:
    """A positive version number, given as an int or a string of digits."""
    if isinstance(version, str) and version.isascii() and version.isdigit():
        version = int(version)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidName(f"invalid version {version!r}: versions are positive integers")
    return version


def validate_user_alias(alias: str) -> str:
    """An alias a user may set or delete: a valid alias name other than 'latest'."""
    validate_name(alias, "alias")
    if alias == LATEST:
        raise InvalidName("'latest' is computed by the store and cannot be set or deleted")
    return alias


def _is_race_loss(exc: OSError) -> bool:
    """True if renaming onto a version directory failed because it already exists."""
    return isinstance(exc, FileExistsError) or exc.errno in (errno.EEXIST, errno.ENOTEMPTY)


def _remove_if_empty(directory: Path) -> None:
    """Undo a ``mkdir`` of ours, unless another writer has put something in it since."""
    try:
        directory.rmdir()
    except OSError:
        pass


def _digit_names(path: Path, dirs: bool) -> set[int]:
    """The canonical version numbers named by the entries of ``path`` (empty if missing)."""
    found = set()
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if _VERSION_RE.fullmatch(entry.name) and entry.is_dir() == dirs:
                    found.add(int(entry.name))
    except FileNotFoundError:
        pass
    return found


@dataclass(frozen=True)
class VersionCheck:
    """A version checked against its manifest: ``verified`` False means it has none
    (published before manifests); ``damage`` lists the files that differ."""

    name: str
    version: int
    verified: bool
    damage: tuple[Damage, ...]

    @property
    def ok(self) -> bool:
        return not self.damage


@dataclass(frozen=True)
class VersionInfo:
    """One published version. ``metrics`` is metrics.json as stored (it includes
    "created_at"); ``aliases`` are those pointing at it, "latest" included."""

    name: str
    version: int
    path: Path
    config: dict
    metrics: dict
    created_at: str
    aliases: tuple[str, ...]


class CheckpointStore:
    """Published model versions under ``root``, safe for concurrent publishers and readers."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # -- paths -----------------------------------------------------------------------

    def _model_dir(self, name: str) -> Path:
        return self.root / validate_name(name)

    def _tombstones(self, model_dir: Path) -> set[int]:
        return _digit_names(model_dir / DELETED_DIR, dirs=False)

    def _live_versions(self, model_dir: Path) -> list[int]:
        """Published, not deleted versions, ascending."""
        present = _digit_names(model_dir, dirs=True)
        if present:
            present -= self._tombstones(model_dir)
        return sorted(present)

    def _is_live(self, model_dir: Path, version: int) -> bool:
        return ((model_dir / str(version)).is_dir()
                and not (model_dir / DELETED_DIR / str(version)).exists())

    def _not_found(self, name: str, message: str) -> CheckpointNotFound:
        """``message`` if the model has versions, else that there is no such model."""
        if not self._live_versions(self.root / name):
            return CheckpointNotFound(f"no model named {name!r}")
        return CheckpointNotFound(message)

    # -- publishing ------------------------------------------------------------------

    def publish(self, name: str, tensors: dict[str, torch.Tensor], config: dict,
                metrics: dict, extras: dict[str, dict] | None = None) -> int:
        """Publish weights, config and metrics (and ``extras``, each a JSON document
        saved as ``<key>.json``, read back with ``extra``) as the next version of ``name``.

        Everything is written and fsynced in a private temporary directory first, which
        is then renamed to the version number; readers see the whole version or nothing.
        """
        model_dir = self._model_dir(name)
        if not model_dir.is_dir():
            model_dir.mkdir(exist_ok=True)
            fsync_dir(self.root)
        metrics = dict(metrics)
        metrics.setdefault("created_at", datetime.now(timezone.utc).isoformat())
        with staged_dir(model_dir) as tmp:
            write_tensors(tmp / WEIGHTS_FILE, tensors)
            write_json(tmp / CONFIG_FILE, config)
            write_json(tmp / METRICS_FILE, metrics)
            for key, document in (extras or {}).items():
                write_json(tmp / f"{validate_name(key, 'extra name')}.json", document,
                           indent=None)
            write_json(tmp / MANIFEST_FILE, manifest.build(tmp))  # last: every file above
        try:
            version = self._rename_to_next_version(model_dir, tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(model_dir)
        logger.info("published %s version %d", name, version)
        return version

    def _next_version(self, model_dir: Path) -> int:
        """One more than any number ever handed out, deleted ones included."""
        used = _digit_names(model_dir, dirs=True) | self._tombstones(model_dir)
        return max(used, default=0) + 1

    def _rename_to_next_version(self, model_dir: Path, tmp: Path) -> int:
        version = self._next_version(model_dir)
        for _ in range(_MAX_PUBLISH_ATTEMPTS):
            try:
                os.rename(tmp, model_dir / str(version))
            except OSError as exc:
                if not _is_race_loss(exc):
                    raise
                logger.debug("version %d of %s taken by another publisher", version,
                             model_dir.name)
                version = max(version + 1, self._next_version(model_dir))
                continue
            if not (model_dir / DELETED_DIR / str(version)).exists():
                return version
            # Another process took this number, deleted it and left its tombstone between
            # our listing and our rename. The tombstone hides us; take our files back.
            os.rename(model_dir / str(version), tmp)
            version = max(version + 1, self._next_version(model_dir))
        raise OSError(f"could not allocate a version of {model_dir.name} "
                      f"after {_MAX_PUBLISH_ATTEMPTS} attempts")

    # -- listing and resolving -------------------------------------------------------

    def models(self) -> list[str]:
        """Names of the models with at least one version, sorted."""
        names = []
        with os.scandir(self.root) as entries:
            for entry in entries:
                if (_NAME_RE.fullmatch(entry.name) and ".." not in entry.name
                        and entry.is_dir() and self._live_versions(Path(entry.path))):
                    names.append(entry.name)
        return sorted(names)

    def versions(self, name: str) -> list[int]:
        """The versions of ``name``, ascending; CheckpointNotFound if it has none."""
        found = self._live_versions(self._model_dir(name))
        if not found:
            raise CheckpointNotFound(f"no model named {name!r}")
        return found

    def _read_alias(self, model_dir: Path, alias: str) -> int | None:
        """The version an alias file holds, None if there is no such alias."""
        try:
            text = (model_dir / ALIASES_DIR / alias).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointCorrupt(f"alias {alias!r} of {model_dir.name!r} is unreadable: "
                                    f"{exc}") from exc
        if not _VERSION_RE.fullmatch(text):
            raise CheckpointCorrupt(f"alias {alias!r} of {model_dir.name!r} holds {text!r}, "
                                    "not a version number")
        return int(text)

    def _user_aliases(self, model_dir: Path) -> dict[str, int]:
        """Every readable alias file; unreadable ones are logged and skipped."""
        found = {}
        try:
            with os.scandir(model_dir / ALIASES_DIR) as entries:
                names = [e.name for e in entries if not e.name.startswith(".")]
        except FileNotFoundError:
            return found
        for alias in names:
            try:
                version = self._read_alias(model_dir, alias)
            except CheckpointCorrupt as exc:
                logger.warning("ignoring %s", exc)
                continue
            if version is not None:
                found[alias] = version
        return found

    def aliases(self, name: str) -> dict[str, int]:
        """User aliases of ``name`` plus "latest", alias -> version."""
        latest = self.versions(name)[-1]
        return {**self._user_aliases(self.root / name), LATEST: latest}

    def resolve(self, name: str, version: int | str | None = None) -> int:
        """The version number meant by ``version``.

        None means alias "production" if it is set, else the latest version; an int or a
        string of digits is that version; any other string is an alias ("latest" too).
        """
        model_dir = self._model_dir(name)
        if version is None:
            target = self._read_alias(model_dir, DEFAULT_ALIAS)
            if target is None:
                return self.versions(name)[-1]
            return self._alias_target(name, DEFAULT_ALIAS, target)
        if isinstance(version, str) and not (version.isascii() and version.isdigit()):
            alias = validate_name(version, "alias")
            if alias == LATEST:
                return self.versions(name)[-1]
            return self._alias_target(name, alias, self._read_alias(model_dir, alias))
        number = _validate_version(version)
        if not self._is_live(model_dir, number):
            raise self._not_found(name, f"model {name!r} has no version {number}")
        return number

    def _alias_target(self, name: str, alias: str, target: int | None) -> int:
        """Check the version an alias file holds (None: no such alias) still exists."""
        if target is None:
            raise self._not_found(name, f"model {name!r} has no alias {alias!r}")
        if not self._is_live(self.root / name, target):
            raise CheckpointNotFound(f"alias {alias!r} of model {name!r} points at version "
                                     f"{target}, which no longer exists")
        return target

    # -- reading ---------------------------------------------------------------------

    def _gone_or_corrupt(self, name: str, version: int, what: str,
                         exc: Exception) -> Exception:
        """A read failed: the version was deleted meanwhile, or its files are bad."""
        if not self._is_live(self.root / name, version):
            return CheckpointNotFound(f"model {name!r} has no version {version}")
        return CheckpointCorrupt(f"{what} of {name!r} version {version} is unreadable: {exc}")

    def _read_json(self, name: str, version: int, filename: str) -> dict:
        path = self.root / name / str(version) / filename
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise self._gone_or_corrupt(name, version, filename, exc) from exc
        if not isinstance(obj, dict):
            raise CheckpointCorrupt(f"{filename} of {name!r} version {version} "
                                    "is not a JSON object")
        return obj

    def extra(self, name: str, version: int | str | None, key: str) -> dict | None:
        """The extra document ``key`` published with a version, None if it has none;
        checked against the version's manifest (CheckpointDamaged)."""
        number = self.resolve(name, version)
        filename = f"{validate_name(key, 'extra name')}.json"
        path = self.root / name / str(number) / filename
        if not path.is_file():
            return None
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise self._gone_or_corrupt(name, number, filename, exc) from exc
        self._check_bytes(name, number, filename, data)
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise self._gone_or_corrupt(name, number, filename, exc) from exc
        if not isinstance(obj, dict):
            raise CheckpointCorrupt(f"{filename} of {name!r} version {number} "
                                    "is not a JSON object")
        return obj

    def info(self, name: str, version: int | str | None = None) -> VersionInfo:
        """Config, metrics and aliases of one version (see ``resolve`` for ``version``)."""
        number = self.resolve(name, version)
        model_dir = self.root / name
        config = self._read_json(name, number, CONFIG_FILE)
        metrics = self._read_json(name, number, METRICS_FILE)
        names = [a for a, v in self._user_aliases(model_dir).items() if v == number]
        if number == max(self._live_versions(model_dir), default=None):
            names.append(LATEST)
        return VersionInfo(name=name, version=number, path=model_dir / str(number),
                           config=config, metrics=metrics,
                           created_at=str(metrics.get("created_at", "")),
                           aliases=tuple(sorted(names)))

    # -- integrity -------------------------------------------------------------------

    def _manifest(self, name: str, version: int) -> Manifest | None:
        try:
            return Manifest.read(self.root / name / str(version))
        except ManifestUnreadable as exc:
            if not self._is_live(self.root / name, version):
                raise CheckpointNotFound(f"model {name!r} has no version {version}") from None
            raise CheckpointDamaged(name, version, exc.damage.file, exc.damage.reason) from exc

    def _check_bytes(self, name: str, version: int, filename: str, data: bytes) -> None:
        """CheckpointDamaged if ``data``, read from ``filename``, is not what the
        version's manifest lists (nothing to check without a manifest)."""
        found = self._manifest(name, version)
        damage = found.check_bytes(filename, data) if found is not None else None
        if damage is not None:
            raise CheckpointDamaged(name, version, damage.file, damage.reason)

    def verify(self, name: str, version: int | str) -> VersionCheck:
        """Every file of a version against its manifest (an unreadable manifest is damage
        of ``manifest.json``)."""
        number = self.resolve(name, version)
        try:
            found = Manifest.read(self.root / name / str(number))
        except ManifestUnreadable as exc:
            return VersionCheck(name, number, True, (exc.damage,))
        if found is None:
            return VersionCheck(name, number, False, ())
        return VersionCheck(name, number, True,
                            tuple(found.check(self.root / name / str(number))))

    def load(self, name: str, version: int | str | None = None
             ) -> tuple[VersionInfo, dict[str, torch.Tensor]]:
        """A version's info and its tensors on the CPU, checked against its manifest
        first: CheckpointDamaged names the first file that differs; the weights are
        deserialized from the bytes that were checked. Weights are read with safetensors
        only, never unpickled; unreadable files raise CheckpointCorrupt."""
        number = self.resolve(name, version)
        directory = self.root / name / str(number)
        found = self._manifest(name, number)
        try:
            weights = (directory / WEIGHTS_FILE).read_bytes()
        except OSError as exc:
            raise self._gone_or_corrupt(name, number, WEIGHTS_FILE, exc) from exc
        if found is not None:
            damage = found.check_bytes(WEIGHTS_FILE, weights)
            others = {k: v for k, v in found.files.items() if k != WEIGHTS_FILE}
            damage = damage or next(iter(Manifest(others).check(directory)), None)
            if damage is not None:
                if not self._is_live(self.root / name, number):
                    raise CheckpointNotFound(f"model {name!r} has no version {number}")
                raise CheckpointDamaged(name, number, damage.file, damage.reason)
        else:
            logger.info("%s version %d has no manifest (published before manifests): "
                        "loaded unverified", name, number)
        info = self.info(name, number)
        try:
            tensors = load_bytes(weights)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise self._gone_or_corrupt(name, number, WEIGHTS_FILE, exc) from exc
        return info, tensors

    # -- aliases and deletion --------------------------------------------------------

    def set_alias(self, name: str, alias: str, version: int | str) -> int:
        """Point ``alias`` at ``version`` (a number or another alias); returns the number."""
        validate_user_alias(alias)
        number = self.resolve(name, version)
        aliases_dir = self.root / name / ALIASES_DIR
        made = not aliases_dir.is_dir()
        aliases_dir.mkdir(exist_ok=True)
        tmp = aliases_dir / f".tmp-{uuid.uuid4().hex}"
        try:
            write_bytes(tmp, f"{number}\n".encode("ascii"))
            os.replace(tmp, aliases_dir / alias)
        except BaseException:  # e.g. no space: the alias is as it was
            tmp.unlink(missing_ok=True)
            if made:
                _remove_if_empty(aliases_dir)
            raise
        fsync_dir(aliases_dir)
        if not self._is_live(self.root / name, number):
            # Deleted concurrently, after we resolved it: do not leave the alias dangling.
            if self._read_alias(self.root / name, alias) == number:
                (aliases_dir / alias).unlink(missing_ok=True)
            raise CheckpointNotFound(f"model {name!r} has no version {number}")
        logger.info("alias %s of %s now points at version %d", alias, name, number)
        return number

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove a user alias; CheckpointNotFound if it is not set."""
        validate_user_alias(alias)
        aliases_dir = self._model_dir(name) / ALIASES_DIR
        try:
            (aliases_dir / alias).unlink()
        except FileNotFoundError:
            raise self._not_found(name, f"model {name!r} has no alias {alias!r}") from None
        fsync_dir(aliases_dir)
        logger.info("deleted alias %s of %s", alias, name)

    def _aliases_of(self, model_dir: Path, version: int) -> list[str]:
        return sorted(a for a, v in self._user_aliases(model_dir).items() if v == version)

    def delete_version(self, name: str, version: int) -> None:
        """Delete a version; AliasInUse while a user alias points at it. Its number is
        kept by a tombstone and never published again."""
        model_dir = self._model_dir(name)
        number = _validate_version(version)
        if not self._is_live(model_dir, number):
            raise self._not_found(name, f"model {name!r} has no version {number}")
        in_use = self._aliases_of(model_dir, number)
        if in_use:
            raise AliasInUse(f"model {name!r} version {number} is used by alias(es) "
                             f"{', '.join(repr(a) for a in in_use)}; move or delete them first")
        deleted_dir = model_dir / DELETED_DIR
        made = not deleted_dir.is_dir()
        deleted_dir.mkdir(exist_ok=True)
        tombstone = deleted_dir / str(number)
        try:
            write_bytes(tombstone, b"")  # empty: its name is the record, it needs no blocks
        except FileExistsError:
            raise CheckpointNotFound(f"model {name!r} has no version {number}") from None
        except BaseException:  # e.g. no inode left: nothing changed
            if made:
                _remove_if_empty(deleted_dir)
            raise
        trash = model_dir / f".trash-{uuid.uuid4().hex}"
        try:
            fsync_dir(deleted_dir)
            in_use = self._aliases_of(model_dir, number)  # an alias set while we checked
            if in_use:
                raise AliasInUse(f"model {name!r} version {number} is used by alias(es) "
                                 f"{', '.join(repr(a) for a in in_use)}; move or delete "
                                 "them first")
            os.rename(model_dir / str(number), trash)
        except BaseException:  # the version stays, as it was
            tombstone.unlink(missing_ok=True)
            if made:
                _remove_if_empty(deleted_dir)
            fsync_dir(deleted_dir if deleted_dir.is_dir() else model_dir)
            raise
        fsync_dir(model_dir)
        shutil.rmtree(trash, ignore_errors=True)
        logger.info("deleted %s version %d", name, number)
