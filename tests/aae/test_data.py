"""aae.data against real digits: the committed fixture, real gzip files, a real HTTP server."""

import functools
import gzip
import hashlib
import http.server
import shutil
import socket
import struct
import threading
from pathlib import Path

import pytest
import torch

from aae import data
from aae.data import (
    MNIST_FILES,
    Digits,
    default_data_dir,
    download_mnist,
    load_digits,
    load_splits,
    read_idx,
    splits_for,
)
from aae.config import AAEConfig
from aae.errors import DatasetCorrupt, DatasetNotFound

FILE_NAMES = list(MNIST_FILES)
CANONICAL_DIR = Path(__file__).resolve().parents[2].parent / "shared/data/mnist"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_idx(path: Path, magic: int, shape: tuple[int, ...], payload: bytes) -> None:
    """Write a gzipped IDX file with the given header, whatever its consistency."""
    header = struct.pack(f">I{len(shape)}I", magic, *shape)
    path.write_bytes(gzip.compress(header + payload))


def row_keys(digits: Digits) -> list[bytes]:
    """One hashable key per digit: its pixels and its label."""
    pixels = (digits.images * 255).round().to(torch.uint8)
    return [
        p.numpy().tobytes() + bytes([int(y)]) for p, y in zip(pixels, digits.labels, strict=True)
    ]


@pytest.fixture
def data_copy(fixture_data_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the fixture, to damage."""
    target = tmp_path / "mnist"
    shutil.copytree(fixture_data_dir, target)
    return target


@pytest.fixture
def serve():
    """Start real HTTP servers on 127.0.0.1; ``serve(directory)`` returns the mirror URL."""
    servers = []

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args):
            pass

    def start(directory: Path) -> str:
        handler = functools.partial(QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def fixture_files(fixture_data_dir: Path) -> dict[str, tuple[int, str]]:
    """The fixture's own sizes and md5s, in ``MNIST_FILES``' format."""
    return {
        name: ((fixture_data_dir / name).stat().st_size, md5(fixture_data_dir / name))
        for name in FILE_NAMES
    }


def dead_mirror() -> str:
    """A URL on a local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# --- loading the fixture -------------------------------------------------------


def test_fixture_loads(fixture_data_dir: Path) -> None:
    train, test = load_digits(fixture_data_dir, download=False)
    assert (len(train), len(test)) == (2000, 500)
    for digits in (train, test):
        assert digits.images.shape == (len(digits), 784)
        assert digits.images.dtype == torch.float32
        assert digits.labels.dtype == torch.int64
        assert digits.images.min() == 0.0 and digits.images.max() == 1.0
        assert set(digits.labels.tolist()) == set(range(10))


def test_read_idx_plain_and_gzipped_agree(fixture_data_dir: Path, tmp_path: Path) -> None:
    gzipped = fixture_data_dir / "t10k-images-idx3-ubyte.gz"
    plain = tmp_path / "t10k-images-idx3-ubyte"
    plain.write_bytes(gzip.decompress(gzipped.read_bytes()))
    images = read_idx(gzipped)
    assert images.dtype == torch.uint8 and images.shape == (500, 28, 28)
    assert torch.equal(images, read_idx(plain))
    labels = read_idx(fixture_data_dir / "t10k-labels-idx1-ubyte.gz")
    assert labels.dtype == torch.uint8 and labels.shape == (500,)


@pytest.mark.skipif(not CANONICAL_DIR.is_dir(), reason=f"{CANONICAL_DIR} not present")
def test_canonical_files_match_checksums_and_fixture(fixture_data_dir: Path) -> None:
    for name, (size, digest) in MNIST_FILES.items():
        assert (CANONICAL_DIR / name).stat().st_size == size
        assert md5(CANONICAL_DIR / name) == digest
    # The fixture is the head of the canonical files, in order.
    for name, count in [("train-images-idx3-ubyte.gz", 2000), ("t10k-labels-idx1-ubyte.gz", 500)]:
        assert torch.equal(
            read_idx(CANONICAL_DIR / name)[:count], read_idx(fixture_data_dir / name)
        )


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "aae" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_data_dir() == Path.home() / ".cache" / "aae" / "mnist"


# --- splits --------------------------------------------------------------------


def test_splits_are_deterministic(fixture_data_dir: Path) -> None:
    def split(seed: int):
        return load_splits(
            fixture_data_dir, n_labels=100, validation_size=300, seed=seed, download=False
        )

    a, b, other = split(0), split(0), split(1)
    for name in ("train", "labeled", "validation", "test"):
        assert torch.equal(getattr(a, name).images, getattr(b, name).images)
        assert torch.equal(getattr(a, name).labels, getattr(b, name).labels)
    assert not torch.equal(a.validation.images, other.validation.images)
    assert not torch.equal(a.labeled.images, other.labeled.images)
    assert a.source == str(fixture_data_dir)


def test_a_runs_splits_are_drawn_by_its_split_seed_else_its_seed(fixture_data_dir: Path) -> None:
    def labeled(**seeds):
        cfg = AAEConfig(mode="semi_supervised", n_labels=100, validation_size=300, **seeds)
        return splits_for(cfg, fixture_data_dir, download=False).labeled.images

    assert torch.equal(labeled(seed=1), labeled(seed=2, split_seed=1))
    assert torch.equal(labeled(seed=2, split_seed=1), labeled(seed=3, split_seed=1))
    assert not torch.equal(labeled(seed=1), labeled(seed=2))
    assert not torch.equal(labeled(seed=1, split_seed=2), labeled(seed=1))


def test_splits_are_balanced_and_disjoint(fixture_data_dir: Path) -> None:
    splits = load_splits(
        fixture_data_dir, n_labels=100, validation_size=300, seed=7, download=False
    )
    train_file, test = load_digits(fixture_data_dir, download=False)
    assert (len(splits.train), len(splits.labeled), len(splits.validation)) == (1700, 100, 300)
    assert torch.equal(torch.bincount(splits.labeled.labels, minlength=10), torch.full((10,), 10))
    assert torch.equal(splits.test.images, test.images)

    all_rows = row_keys(train_file)
    assert len(set(all_rows)) == len(all_rows), (
        "the fixture's digits are distinct, so rows identify them"
    )
    train, labeled, validation = (
        set(row_keys(d)) for d in (splits.train, splits.labeled, splits.validation)
    )
    assert labeled <= train
    assert not validation & train
    assert not validation & labeled
    assert train | validation == set(all_rows)


def test_all_labels_and_no_labels(fixture_data_dir: Path) -> None:
    everything = load_splits(
        fixture_data_dir, n_labels=None, validation_size=100, seed=0, download=False
    )
    assert torch.equal(everything.labeled.images, everything.train.images)
    assert torch.equal(everything.labeled.labels, everything.train.labels)
    nothing = load_splits(fixture_data_dir, n_labels=0, validation_size=100, seed=0, download=False)
    assert len(nothing.labeled) == 0 and nothing.labeled.images.shape == (0, 784)
    assert len(nothing.train) == 1900


@pytest.mark.parametrize(
    ("n_labels", "validation_size", "match"),
    [
        (15, 100, "multiple of 10"),
        (-10, 100, "multiple of 10"),
        (2000, 100, "labels per class"),  # ~190 digits per class in the 1900-digit train split
        (100, 2000, "validation_size"),
        (100, -1, "validation_size"),
    ],
)
def test_bad_split_arguments(
    fixture_data_dir: Path, n_labels: int, validation_size: int, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        load_splits(
            fixture_data_dir,
            n_labels=n_labels,
            validation_size=validation_size,
            seed=0,
            download=False,
        )


# --- broken data directories ---------------------------------------------------


@pytest.mark.parametrize("name", FILE_NAMES)
def test_missing_file_without_download(data_copy: Path, name: str) -> None:
    (data_copy / name).unlink()
    with pytest.raises(DatasetNotFound, match=name):
        load_digits(data_copy, download=False)


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"])
def test_truncated_gzip(data_copy: Path, name: str) -> None:
    path = data_copy / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetCorrupt, match=name):
        load_digits(data_copy, download=False)


def test_not_gzip(data_copy: Path) -> None:
    (data_copy / "train-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip data")
    with pytest.raises(DatasetCorrupt, match="train-labels-idx1-ubyte.gz"):
        load_digits(data_copy, download=False)


def test_wrong_magic(data_copy: Path) -> None:
    write_idx(data_copy / "t10k-images-idx3-ubyte.gz", 0x00000802, (500, 28, 28), bytes(500 * 784))
    with pytest.raises(DatasetCorrupt, match=r"t10k-images-idx3-ubyte.gz.*magic"):
        load_digits(data_copy, download=False)


@pytest.mark.parametrize("extra", [-1, 1])
def test_payload_length_disagrees_with_header(tmp_path: Path, extra: int) -> None:
    path = tmp_path / "labels.gz"
    write_idx(path, 0x00000801, (10,), bytes(10 + extra))
    with pytest.raises(DatasetCorrupt, match="labels.gz"):
        read_idx(path)


def test_image_and_label_counts_disagree(data_copy: Path) -> None:
    labels = read_idx(data_copy / "train-labels-idx1-ubyte.gz")[:1999]
    write_idx(
        data_copy / "train-labels-idx1-ubyte.gz", 0x00000801, (1999,), labels.numpy().tobytes()
    )
    with pytest.raises(DatasetCorrupt, match="1999 labels"):
        load_digits(data_copy, download=False)


def test_label_out_of_range(data_copy: Path) -> None:
    write_idx(data_copy / "t10k-labels-idx1-ubyte.gz", 0x00000801, (500,), bytes([10]) * 500)
    with pytest.raises(DatasetCorrupt, match="t10k-labels-idx1-ubyte.gz"):
        load_digits(data_copy, download=False)


def test_images_not_28x28(data_copy: Path) -> None:
    write_idx(
        data_copy / "t10k-images-idx3-ubyte.gz", 0x00000803, (500, 28, 27), bytes(500 * 28 * 27)
    )
    with pytest.raises(DatasetCorrupt, match="28x28"):
        load_digits(data_copy, download=False)


# --- downloading over real HTTP -------------------------------------------------


def test_download_from_local_mirror(
    serve, fixture_data_dir: Path, fixture_files, tmp_path: Path
) -> None:
    target = tmp_path / "downloaded"  # does not exist yet
    download_mnist(target, mirrors=(serve(fixture_data_dir),), files=fixture_files)
    assert sorted(p.name for p in target.iterdir()) == sorted(FILE_NAMES)  # no temporary files left
    for name in FILE_NAMES:
        assert (target / name).read_bytes() == (fixture_data_dir / name).read_bytes()
    train, test = load_digits(target, download=False)
    assert (len(train), len(test)) == (2000, 500)


def test_download_fetches_only_missing_files(
    serve, data_copy: Path, fixture_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "t10k-labels-idx1-ubyte.gz"
    only_one = tmp_path / "mirror"
    only_one.mkdir()
    shutil.copy(data_copy / name, only_one / name)  # any other request would 404
    (data_copy / name).unlink()
    monkeypatch.setattr(data, "MNIST_MIRRORS", (serve(only_one),))
    monkeypatch.setattr(data, "MNIST_FILES", fixture_files)
    train, test = load_digits(data_copy, download=True)
    assert (len(train), len(test)) == (2000, 500)
    assert md5(data_copy / name) == fixture_files[name][1]


@pytest.mark.parametrize("first", ["dead port", "corrupt copy", "missing files"])
def test_download_falls_back_to_next_mirror(
    serve, fixture_data_dir: Path, fixture_files, tmp_path: Path, first: str
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    if first == "corrupt copy":
        for name in FILE_NAMES:
            payload = bytearray((fixture_data_dir / name).read_bytes())
            payload[len(payload) // 2] ^= 0xFF
            (bad / name).write_bytes(bytes(payload))
    first_mirror = dead_mirror() if first == "dead port" else serve(bad)
    target = tmp_path / "downloaded"
    download_mnist(target, mirrors=(first_mirror, serve(fixture_data_dir)), files=fixture_files)
    assert sorted(p.name for p in target.iterdir()) == sorted(FILE_NAMES)
    assert all(md5(target / name) == fixture_files[name][1] for name in FILE_NAMES)


def test_download_every_mirror_corrupt(serve, fixture_files, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in FILE_NAMES:
        (bad / name).write_bytes(b"not the file you are looking for")
    mirrors = (serve(bad), serve(bad))
    target = tmp_path / "downloaded"
    name = FILE_NAMES[0]
    with pytest.raises(DatasetCorrupt, match=name) as raised:
        download_mnist(target, mirrors=mirrors, files=fixture_files)
    message = str(raised.value)
    assert fixture_files[name][1] in message  # the expected md5
    assert (
        hashlib.md5(b"not the file you are looking for").hexdigest() in message
    )  # the md5 received
    assert list(target.iterdir()) == []  # neither the final name nor a temporary file


def test_download_no_mirror_reachable(tmp_path: Path, fixture_files) -> None:
    mirrors = (dead_mirror(), dead_mirror())
    target = tmp_path / "downloaded"
    with pytest.raises(DatasetNotFound, match=FILE_NAMES[0]) as raised:
        download_mnist(target, mirrors=mirrors, files=fixture_files, timeout=5.0)
    assert all(m in str(raised.value) for m in mirrors)
    assert list(target.iterdir()) == []


def test_neighbor_distances_are_each_images_kth_nearest_other_image(fixture_data_dir: Path) -> None:
    from aae.data import neighbor_distances

    images = load_digits(fixture_data_dir, download=False)[0].images[:400]
    brute = torch.cdist(images.double(), images.double()).sort(dim=1).values
    for k in (1, 10):
        # column 0 is the image itself; chunks smaller than the set change nothing
        got = neighbor_distances(images, k, chunk=64)
        assert torch.allclose(got.double(), brute[:, k], atol=1e-4)
    twins = torch.cat([images[:5], images[:5]])
    assert torch.all(neighbor_distances(twins, 1) < 0.05)  # a duplicate: a neighbour at 0
    with pytest.raises(ValueError, match="more than 10 images"):
        neighbor_distances(images[:10], 10)
