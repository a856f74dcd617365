"""The checkpoint store: real files, real tensors, real concurrent processes."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import pickle
from datetime import datetime
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from aae.errors import AliasInUse, CheckpointCorrupt, CheckpointNotFound, InvalidName
from aae.store import CheckpointStore, VersionInfo, validate_name

CONFIG = {"input_dim": 784, "latent_dim": 8, "hidden": [1000, 1000], "prior": "gaussian"}


def make_tensors(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "encoder.weight": torch.randn(16, 12, generator=g),
        "encoder.bias": torch.randn(16, generator=g, dtype=torch.float64),
        "decoder.weight": torch.randn(12, 16, generator=g).t(),  # not contiguous
        "steps": torch.tensor([seed], dtype=torch.int64),
        "half": torch.randn(3, 5, generator=g).to(torch.bfloat16),
    }


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), key


@pytest.fixture
def store(tmp_path: Path) -> CheckpointStore:
    return CheckpointStore(tmp_path / "store")


def publish(store: CheckpointStore, seed: int, name: str = "mnist") -> int:
    return store.publish(name, make_tensors(seed), CONFIG, {"loss": 0.1 * seed, "seed": seed})


# -- round trip and versions ----------------------------------------------------------

def test_round_trip_is_bit_identical(store: CheckpointStore) -> None:
    tensors = make_tensors(1)
    metrics = {"recon_loss": 0.0123456789, "accuracy": 0.97, "epochs": 3, "nested": {"a": [1, 2]}}
    version = store.publish("mnist", tensors, CONFIG, metrics)
    assert version == 1

    info, loaded = store.load("mnist", 1)
    assert_identical(tensors, loaded)
    assert isinstance(info, VersionInfo)
    assert (info.name, info.version, info.path) == ("mnist", 1, store.root / "mnist" / "1")
    assert info.config == CONFIG
    assert info.metrics == {**metrics, "created_at": info.created_at}
    assert datetime.fromisoformat(info.created_at).utcoffset().total_seconds() == 0
    assert info.aliases == ("latest",)
    assert sorted(os.listdir(info.path)) == ["config.json", "manifest.json", "metrics.json",
                                             "weights.safetensors"]


def test_caller_created_at_is_kept(store: CheckpointStore) -> None:
    store.publish("m", make_tensors(0), CONFIG, {"created_at": "2020-01-01T00:00:00+00:00"})
    assert store.info("m").created_at == "2020-01-01T00:00:00+00:00"


def test_versions_count_up_and_latest_moves(store: CheckpointStore) -> None:
    for seed in (1, 2, 3):
        assert publish(store, seed) == seed
        assert store.resolve("mnist") == seed
        assert store.resolve("mnist", "latest") == seed
        assert store.aliases("mnist") == {"latest": seed}
    assert store.versions("mnist") == [1, 2, 3]
    assert store.models() == ["mnist"]
    for seed in (1, 2, 3):
        info, tensors = store.load("mnist", seed)
        assert_identical(tensors, make_tensors(seed))
        assert info.metrics["seed"] == seed
    assert store.info("mnist", 2).aliases == ()
    assert store.info("mnist", "2").version == 2


def test_unknown_things_are_not_found_with_precise_messages(store: CheckpointStore) -> None:
    with pytest.raises(CheckpointNotFound, match="no model named 'ghost'"):
        store.resolve("ghost")
    with pytest.raises(CheckpointNotFound, match="no model named 'ghost'"):
        store.versions("ghost")
    with pytest.raises(CheckpointNotFound, match="no model named 'ghost'"):
        store.load("ghost", 1)
    publish(store, 1, "x")
    with pytest.raises(CheckpointNotFound, match="model 'x' has no version 7"):
        store.resolve("x", 7)
    with pytest.raises(CheckpointNotFound, match="model 'x' has no alias 'prod'"):
        store.resolve("x", "prod")
    with pytest.raises(CheckpointNotFound, match="model 'x' has no alias 'prod'"):
        store.delete_alias("x", "prod")
    assert store.models() == ["x"]


# -- concurrency and atomicity --------------------------------------------------------

N_WORKERS, PER_WORKER = 4, 3


def _publisher(root: str, worker: int, barrier, results) -> None:
    """Runs in a spawned process: publish PER_WORKER versions as soon as all are ready."""
    store = CheckpointStore(root)
    barrier.wait()
    for i in range(PER_WORKER):
        seed = 100 * worker + i
        version = store.publish("shared", make_tensors(seed), CONFIG, {"seed": seed})
        results.put((worker, seed, version))


def test_concurrent_publishers_in_processes_get_distinct_complete_versions(
        store: CheckpointStore) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(N_WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_publisher, args=(str(store.root), w, barrier, results))
             for w in range(N_WORKERS)]
    for p in procs:
        p.start()
    published = [results.get(timeout=60) for _ in range(N_WORKERS * PER_WORKER)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    versions = sorted(v for _, _, v in published)
    assert versions == list(range(1, N_WORKERS * PER_WORKER + 1))
    assert store.versions("shared") == versions
    for _, seed, version in published:
        info, tensors = store.load("shared", version)
        assert sorted(os.listdir(info.path)) == ["config.json", "manifest.json",
                                                 "metrics.json", "weights.safetensors"]
        assert info.metrics["seed"] == seed
        assert_identical(tensors, make_tensors(seed))
    leftovers = [n for n in os.listdir(store.root / "shared") if n.startswith(".tmp-")]
    assert leftovers == []


def test_publisher_that_loses_the_race_takes_the_next_number(
        store: CheckpointStore, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(store, 1)
    real = CheckpointStore._next_version
    stale = iter([1])  # as if version 1 appeared between our listing and our rename
    monkeypatch.setattr(CheckpointStore, "_next_version",
                        lambda self, d: next(stale, None) or real(self, d))
    assert publish(store, 2) == 2
    assert_identical(store.load("mnist", 1)[1], make_tensors(1))
    assert_identical(store.load("mnist", 2)[1], make_tensors(2))


def test_publisher_never_revives_a_deleted_number(
        store: CheckpointStore, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(store, 1)
    publish(store, 2)
    store.delete_version("mnist", 2)
    real = CheckpointStore._next_version
    stale = iter([2])  # as if 2 was published and deleted between our listing and rename
    monkeypatch.setattr(CheckpointStore, "_next_version",
                        lambda self, d: next(stale, None) or real(self, d))
    assert publish(store, 3) == 3
    assert store.versions("mnist") == [1, 3]
    assert not (store.root / "mnist" / "2").exists()
    assert_identical(store.load("mnist", 3)[1], make_tensors(3))


def test_alias_set_while_version_is_deleted_is_withdrawn(
        store: CheckpointStore, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(store, 1)
    publish(store, 2)
    real_resolve = CheckpointStore.resolve

    def resolve_then_concurrent_delete(self, name, version=None):
        number = real_resolve(self, name, version)
        monkeypatch.setattr(CheckpointStore, "resolve", real_resolve)
        self.delete_version(name, number)  # another machine, between resolve and write
        return number

    monkeypatch.setattr(CheckpointStore, "resolve", resolve_then_concurrent_delete)
    with pytest.raises(CheckpointNotFound, match="has no version 1"):
        store.set_alias("mnist", "production", 1)
    assert store.aliases("mnist") == {"latest": 2}


def test_alias_set_while_deleting_blocks_the_delete(
        store: CheckpointStore, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(store, 1)
    publish(store, 2)
    real = CheckpointStore._aliases_of
    calls = iter([[]])  # the first check misses an alias set by another machine meanwhile
    monkeypatch.setattr(CheckpointStore, "_aliases_of",
                        lambda self, d, v: next(calls, None) or real(self, d, v))
    store.set_alias("mnist", "production", 1)
    with pytest.raises(AliasInUse, match="production"):
        store.delete_version("mnist", 1)
    assert store.versions("mnist") == [1, 2]
    assert store.resolve("mnist") == 1
    assert not (store.root / "mnist" / ".deleted" / "1").exists()


def test_crashed_publish_is_invisible(store: CheckpointStore) -> None:
    publish(store, 1)
    crashed = store.root / "mnist" / ".tmp-xyz"
    crashed.mkdir()
    (crashed / "config.json").write_text("{}")
    (crashed / "weights.safetensors").write_bytes(b"\x00" * 10)
    (store.root / "orphan" / ".tmp-abc").mkdir(parents=True)  # first publish that crashed

    assert store.versions("mnist") == [1]
    assert store.resolve("mnist") == 1
    assert store.models() == ["mnist"]
    with pytest.raises(CheckpointNotFound):
        store.versions("orphan")
    assert publish(store, 2) == 2


def test_failed_publish_removes_its_temporary_dir(store: CheckpointStore) -> None:
    publish(store, 1)
    with pytest.raises(TypeError):
        store.publish("mnist", make_tensors(2), {"not json": object()}, {})
    assert [n for n in os.listdir(store.root / "mnist") if n.startswith(".")] == []
    assert store.versions("mnist") == [1]


def test_publish_does_not_change_callers_metrics(store: CheckpointStore) -> None:
    metrics = {"loss": 1.0}
    store.publish("m", make_tensors(0), CONFIG, metrics)
    assert metrics == {"loss": 1.0}


# -- aliases and deletion -------------------------------------------------------------

def test_aliases_and_default_resolution(store: CheckpointStore) -> None:
    for seed in (1, 2, 3):
        publish(store, seed)
    assert store.set_alias("mnist", "staging", 2) == 2
    assert store.resolve("mnist") == 3  # no production: latest
    assert store.set_alias("mnist", "production", "staging") == 2  # alias to alias
    assert store.resolve("mnist") == 2  # production beats latest
    assert store.load("mnist")[0].version == 2
    assert store.set_alias("mnist", "best", "latest") == 3
    assert store.aliases("mnist") == {"staging": 2, "production": 2, "best": 3, "latest": 3}
    assert store.info("mnist", 2).aliases == ("production", "staging")
    assert store.info("mnist", 3).aliases == ("best", "latest")

    publish(store, 4)
    assert store.resolve("mnist") == 2  # production does not move
    assert store.resolve("mnist", "best") == 3
    assert store.aliases("mnist")["latest"] == 4

    assert store.set_alias("mnist", "production", 4) == 4  # replaced
    aliases_dir = store.root / "mnist" / "aliases"
    assert (aliases_dir / "production").read_text().strip() == "4"
    assert sorted(os.listdir(aliases_dir)) == ["best", "production", "staging"]  # no temp left
    store.delete_alias("mnist", "production")
    assert store.resolve("mnist") == 4


@pytest.mark.parametrize("call", [
    lambda s: s.set_alias("mnist", "latest", 1),
    lambda s: s.delete_alias("mnist", "latest"),
])
def test_latest_cannot_be_set_or_deleted(store: CheckpointStore, call) -> None:
    publish(store, 1)
    with pytest.raises(InvalidName):
        call(store)
    assert not (store.root / "mnist" / "aliases" / "latest").exists()


def test_alias_replacement_is_atomic(store: CheckpointStore) -> None:
    """os.replace swaps the inode: a reader holding the old file still reads it whole."""
    publish(store, 1)
    publish(store, 2)
    store.set_alias("mnist", "production", 1)
    path = store.root / "mnist" / "aliases" / "production"
    with open(path) as old:
        store.set_alias("mnist", "production", 2)
        assert old.read().strip() == "1"
    assert path.read_text().strip() == "2"


def test_delete_version_refused_while_aliased(store: CheckpointStore) -> None:
    for seed in (1, 2, 3):
        publish(store, seed)
    store.set_alias("mnist", "production", 2)
    store.set_alias("mnist", "canary", 2)
    with pytest.raises(AliasInUse, match="'canary', 'production'"):
        store.delete_version("mnist", 2)
    assert store.versions("mnist") == [1, 2, 3]

    store.delete_alias("mnist", "production")
    store.delete_alias("mnist", "canary")
    store.delete_version("mnist", 2)
    assert store.versions("mnist") == [1, 3]
    with pytest.raises(CheckpointNotFound, match="has no version 2"):
        store.resolve("mnist", 2)
    with pytest.raises(CheckpointNotFound):
        store.load("mnist", 2)
    with pytest.raises(CheckpointNotFound):
        store.delete_version("mnist", 2)
    assert (store.root / "mnist" / ".deleted" / "2").exists()
    assert [n for n in os.listdir(store.root / "mnist") if n.startswith(".trash-")] == []


def test_latest_does_not_block_deletion_and_numbers_are_not_reused(
        store: CheckpointStore) -> None:
    publish(store, 1)
    publish(store, 2)
    store.delete_version("mnist", 2)  # it is "latest"
    assert store.resolve("mnist") == 1
    assert publish(store, 3) == 3  # not 2 again
    store.delete_version("mnist", 3)
    store.delete_version("mnist", 1)
    with pytest.raises(CheckpointNotFound, match="no model named 'mnist'"):
        store.versions("mnist")
    assert store.models() == []
    assert publish(store, 4) == 4


def test_alias_to_deleted_version_is_not_found(store: CheckpointStore) -> None:
    publish(store, 1)
    publish(store, 2)
    # e.g. an alias written by hand, or set while another machine deleted the version
    (store.root / "mnist" / "aliases").mkdir()
    (store.root / "mnist" / "aliases" / "production").write_text("1\n")
    (store.root / "mnist" / ".deleted").mkdir()
    (store.root / "mnist" / ".deleted" / "1").write_text("")
    with pytest.raises(CheckpointNotFound, match="no longer exists"):
        store.resolve("mnist")
    with pytest.raises(CheckpointNotFound):
        store.set_alias("mnist", "staging", 1)
    assert store.versions("mnist") == [2]


# -- validation -----------------------------------------------------------------------

BAD_NAMES = ["../etc", "a/b", ".x", "", "x" * 65, "..", "a..b", "/abs", "a\\b", "é", "a b",
             "-x", "x\x00"]


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize("call", [
    lambda s, n: s.publish(n, make_tensors(0), CONFIG, {}),
    lambda s, n: s.versions(n),
    lambda s, n: s.aliases(n),
    lambda s, n: s.resolve(n),
    lambda s, n: s.load(n, 1),
    lambda s, n: s.set_alias(n, "production", 1),
    lambda s, n: s.delete_alias(n, "production"),
    lambda s, n: s.delete_version(n, 1),
], ids=["publish", "versions", "aliases", "resolve", "load", "set_alias", "delete_alias",
        "delete_version"])
def test_invalid_model_names_are_refused_before_touching_disk(
        tmp_path: Path, bad: str, call) -> None:
    store = CheckpointStore(tmp_path / "store")
    with pytest.raises(InvalidName):
        call(store, bad)
    assert os.listdir(tmp_path) == ["store"]
    assert os.listdir(store.root) == []


def _tree(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*"))


@pytest.mark.parametrize("bad", BAD_NAMES + ["12", "007", "latest"])
@pytest.mark.parametrize("call", [
    lambda s, a: s.set_alias("mnist", a, 1),
    lambda s, a: s.delete_alias("mnist", a),
], ids=["set_alias", "delete_alias"])
def test_invalid_alias_names_are_refused(
        store: CheckpointStore, tmp_path: Path, bad: str, call) -> None:
    publish(store, 1)
    before = _tree(tmp_path)
    with pytest.raises(InvalidName):
        call(store, bad)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_invalid_alias_targets_are_refused(
        store: CheckpointStore, tmp_path: Path, bad: str) -> None:
    publish(store, 1)
    before = _tree(tmp_path)
    with pytest.raises(InvalidName):
        store.resolve("mnist", bad)
    with pytest.raises(InvalidName):
        store.set_alias("mnist", "ok", bad)
    assert _tree(tmp_path) == before


BAD_VERSIONS = [0, -1, True, 1.0, "0", "-1", "\u0663", [1]]


@pytest.mark.parametrize("bad", BAD_VERSIONS)
def test_invalid_versions_are_refused_by_resolve(store: CheckpointStore, bad) -> None:
    publish(store, 1)
    with pytest.raises(InvalidName):
        store.resolve("mnist", bad)


@pytest.mark.parametrize("bad", BAD_VERSIONS + [None, "1.5", "latest"])
def test_invalid_versions_are_refused_by_delete_version(store: CheckpointStore, bad) -> None:
    publish(store, 1)
    with pytest.raises(InvalidName):
        store.delete_version("mnist", bad)
    assert store.versions("mnist") == [1]


def test_validate_name_accepts_good_names() -> None:
    for good in ("mnist", "MNIST_v2", "aae-semi.supervised", "9", "x" * 64):
        assert validate_name(good) == good
    assert validate_name("prod-2", "alias") == "prod-2"
    with pytest.raises(InvalidName, match="alias"):
        validate_name("42", "alias")


# -- corrupt files --------------------------------------------------------------------

class _Boom:
    """Unpickling this would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _pickle_bomb(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"encoder.weight": _Boom(marker)}))


def _torch_save(path: Path, marker: Path) -> None:
    torch.save({"encoder.weight": torch.ones(3)}, path)


def _truncated(path: Path, marker: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def _bad_header(path: Path, marker: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:8] + b"{" * 20 + data[28:])


def _empty(path: Path, marker: Path) -> None:
    path.write_bytes(b"")


def _missing(path: Path, marker: Path) -> None:
    path.unlink()


def _directory(path: Path, marker: Path) -> None:
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("damage", [_pickle_bomb, _torch_save, _truncated, _bad_header, _empty,
                                    _missing, _directory])
def test_unreadable_weights_are_corrupt_and_never_unpickled(
        store: CheckpointStore, tmp_path: Path, damage) -> None:
    publish(store, 1)
    marker = tmp_path / "unpickled"
    damage(store.root / "mnist" / "1" / "weights.safetensors", marker)
    with pytest.raises(CheckpointCorrupt, match="weights.safetensors"):
        store.load("mnist", 1)
    assert not marker.exists()


@pytest.mark.parametrize("filename", ["config.json", "metrics.json"])
@pytest.mark.parametrize("content", [None, b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_unreadable_json_is_corrupt(store: CheckpointStore, filename: str, content) -> None:
    publish(store, 1)
    path = store.root / "mnist" / "1" / filename
    if content is None:
        path.unlink()
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointCorrupt, match=filename):
        store.info("mnist", 1)
    with pytest.raises(CheckpointCorrupt):
        store.load("mnist", 1)


def test_garbage_alias_file_is_corrupt_when_resolved_and_skipped_when_listed(
        store: CheckpointStore) -> None:
    publish(store, 1)
    store.set_alias("mnist", "good", 1)
    (store.root / "mnist" / "aliases" / "bad").write_text("../../etc/passwd")
    with pytest.raises(CheckpointCorrupt):
        store.resolve("mnist", "bad")
    assert store.aliases("mnist") == {"good": 1, "latest": 1}


def test_extra_safetensors_written_by_hand_load(store: CheckpointStore) -> None:
    """The weights file is plain safetensors, readable by any safetensors client; a
    version written by hand (no manifest, as before manifests) loads unverified."""
    publish(store, 1)
    path = store.root / "mnist" / "1" / "weights.safetensors"
    save_file({"w": torch.arange(6.0).reshape(2, 3)}, str(path))
    (path.parent / "manifest.json").unlink()
    assert torch.equal(store.load("mnist", 1)[1]["w"], torch.arange(6.0).reshape(2, 3))
    assert json.loads((path.parent / "config.json").read_text()) == CONFIG


def test_every_file_of_a_version_is_readable_by_other_users(tmp_path):
    """The API and the workers may run as different users: weights as readable as JSON."""
    store = CheckpointStore(tmp_path)
    version = store.publish("m", {"w": torch.zeros(2)}, {"mode": "unsupervised"}, {})
    files = list((tmp_path / "m" / str(version)).iterdir())
    assert {f.name for f in files} == {"weights.safetensors", "config.json", "metrics.json",
                                       "manifest.json"}
    assert {f.stat().st_mode & 0o777 for f in files} == {0o644}


# -- a full disk: a real tmpfs filled to its last byte (and inode) ----------------------------

def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory (None) under ``root``."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def full_store(small_disk) -> tuple[CheckpointStore, Path]:
    """A store on a 4 MiB tmpfs with versions 1 and 2 of "mnist" (alias production -> 1)
    and version 1 of "other" (no aliases), then filled: no byte left, inodes left."""
    disk = small_disk.mount(4 << 20)
    store = CheckpointStore(disk / "store")
    publish(store, 1)
    publish(store, 2)
    publish(store, 3, name="other")
    store.set_alias("mnist", "production", 1)
    small_disk.fill(disk)
    return store, disk


def test_a_full_disk_fails_alias_moves_and_publishes_leaving_the_store_as_it_was(
        full_store, small_disk) -> None:
    store, disk = full_store
    before = snapshot(store.root)
    for name, alias, version in (("mnist", "production", 2), ("mnist", "staging", 2),
                                 ("other", "production", 1)):  # "other": no aliases yet
        with pytest.raises(OSError) as caught:
            store.set_alias(name, alias, version)
        assert caught.value.errno == errno.ENOSPC
        assert snapshot(store.root) == before, (name, alias)
    with pytest.raises(OSError) as caught:
        publish(store, 4)
    assert caught.value.errno == errno.ENOSPC
    assert snapshot(store.root) == before  # no .tmp-* left behind
    assert store.aliases("mnist") == {"production": 1, "latest": 2}


def test_a_version_is_deleted_on_a_full_disk_and_frees_its_space(full_store) -> None:
    """A tombstone is an empty file: deleting needs an inode but no free block."""
    store, disk = full_store
    free = os.statvfs(disk).f_bfree
    store.delete_version("mnist", 2)
    assert store.versions("mnist") == [1]
    assert (store.root / "mnist" / ".deleted" / "2").stat().st_size == 0
    assert os.statvfs(disk).f_bfree > free
    assert publish(store, 5) == 3  # and there is room again; number 2 is never reused


def test_a_delete_without_an_inode_left_leaves_the_store_as_it_was(full_store,
                                                                    small_disk) -> None:
    """The issue's fault: an empty tombstone (the version gone from listings) and its
    directory in place. Now nothing of the delete remains."""
    store, disk = full_store
    small_disk.fill(disk, inodes=True)
    before = snapshot(store.root)
    assert not (store.root / "mnist" / ".deleted").exists()
    with pytest.raises(OSError) as caught:
        store.delete_version("mnist", 2)
    assert caught.value.errno == errno.ENOSPC
    assert snapshot(store.root) == before
    assert store.versions("mnist") == [1, 2]
    assert_identical(store.load("mnist", 2)[1], make_tensors(2))
