"""Integrity of published versions: the manifest written at publish, checked at load."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from aae.errors import CheckpointDamaged
from aae.store import CheckpointStore
from tests.aae.test_store import CONFIG, assert_identical, make_tensors, publish

EXTRAS = {"latent": {"z": [[0.5, -0.5]], "labels": [3]}}


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore(tmp_path / "store")


def version_dir(store: CheckpointStore, version: int = 1) -> Path:
    return store.root / "mnist" / str(version)


def overwrite_middle(path: Path, n: int = 4096) -> None:
    """n bytes in the middle of a file replaced by others (its size unchanged)."""
    data = bytearray(path.read_bytes())
    start = max(0, len(data) // 2 - n // 2)
    for i in range(start, min(len(data), start + n)):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x01  # before the final newline of a JSON file
    path.write_bytes(bytes(data))


def test_publish_lists_every_file_with_its_sha256(store: CheckpointStore) -> None:
    store.publish("mnist", make_tensors(1), CONFIG, {"loss": 0.1}, EXTRAS)
    directory = version_dir(store)
    manifest = json.loads((directory / "manifest.json").read_text())
    files = {p.name for p in directory.iterdir()} - {"manifest.json"}
    assert files == {"weights.safetensors", "config.json", "metrics.json", "latent.json"}
    assert manifest["format"] == 1 and set(manifest["files"]) == files
    for name in files:
        data = (directory / name).read_bytes()
        assert manifest["files"][name] == {"bytes": len(data),
                                           "sha256": hashlib.sha256(data).hexdigest()}
    check = store.verify("mnist", 1)
    assert check.verified and check.ok and check.damage == ()


DAMAGES = {
    "weights.safetensors": overwrite_middle,  # the 4 KiB in the middle
    "config.json": flip_last_byte,
    "metrics.json": flip_last_byte,
    "latent.json": flip_last_byte,
}


@pytest.mark.parametrize("filename", sorted(DAMAGES))
def test_a_damaged_file_is_named_and_the_version_never_loads(
        store: CheckpointStore, filename: str) -> None:
    store.publish("mnist", make_tensors(1), CONFIG, {"loss": 0.1}, EXTRAS)
    publish(store, 2)
    DAMAGES[filename](version_dir(store) / filename)
    with pytest.raises(CheckpointDamaged, match=f"version 1 is damaged: {filename}") as caught:
        store.load("mnist", 1)
    assert caught.value.fields == {"model": "mnist", "version": 1, "file": filename}
    check = store.verify("mnist", 1)
    assert check.verified and [d.file for d in check.damage] == [filename]
    assert store.verify("mnist", 2).ok  # the other version is whole and loads
    assert_identical(store.load("mnist", 2)[1], make_tensors(2))
    if filename == "latent.json":
        with pytest.raises(CheckpointDamaged, match="latent.json"):
            store.extra("mnist", 1, "latent")


def test_the_weights_checked_are_the_weights_loaded(store: CheckpointStore,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Read once: the bytes hashed are the bytes deserialized (no second read to race)."""
    publish(store, 1)
    reads = []
    real = Path.read_bytes

    def counting(path: Path) -> bytes:
        reads.append(path.name)
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", counting)
    assert_identical(store.load("mnist", 1)[1], make_tensors(1))
    assert reads.count("weights.safetensors") == 1


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "not listed"])
def test_missing_or_changed_files_and_manifests_are_damage(store: CheckpointStore,
                                                           damage: str) -> None:
    publish(store, 1)
    directory = version_dir(store)
    expected = "weights.safetensors"
    if damage == "missing":
        (directory / "metrics.json").unlink()
        expected = "metrics.json"
    elif damage == "truncated":
        path = directory / "weights.safetensors"
        os.truncate(path, path.stat().st_size - 1)
    elif damage == "garbage":
        (directory / "manifest.json").write_bytes(b"\x00\x01 not json")
        expected = "manifest.json"
    else:  # a manifest that lists another set of files
        manifest = json.loads((directory / "manifest.json").read_text())
        del manifest["files"]["weights.safetensors"]
        (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointDamaged, match=expected):
        store.load("mnist", 1)
    check = store.verify("mnist", 1)
    if damage != "not listed":  # verify checks what the manifest lists
        assert [d.file for d in check.damage] == [expected]


def test_versions_without_a_manifest_load_unverified(store: CheckpointStore) -> None:
    """Published before manifests: they keep loading, and verify says they are unchecked
    (no manifest is written for them: it would bless whatever damage they have)."""
    publish(store, 1)
    (version_dir(store) / "manifest.json").unlink()
    info, tensors = store.load("mnist", 1)
    assert_identical(tensors, make_tensors(1))
    check = store.verify("mnist", 1)
    assert not check.verified and check.ok
    assert not (version_dir(store) / "manifest.json").exists()
