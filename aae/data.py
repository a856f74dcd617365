"""MNIST in its four-file IDX layout: download, read, validate and split.

Any directory holding the four files below is a dataset, so users can bring
their own MNIST-like digits; checksums are verified only on what we download.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import struct
import tempfile
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aae.config import DATASET_CLASSES, AAEConfig
from aae.errors import DatasetCorrupt, DatasetNotFound

logger = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"

MNIST_FILES: dict[str, tuple[int, str]] = {
    TRAIN_IMAGES: (9912422, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    TRAIN_LABELS: (28881, "d53e105ee54ea40749a09fcbcd1e9432"),
    TEST_IMAGES: (1648877, "9fb629c4189551a2d022fa330f9573f3"),
    TEST_LABELS: (4542, "ec29112dd5afa0611ce80d1b7f02629c"),
}
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

NUM_CLASSES = DATASET_CLASSES
IMAGE_SIDE = 28
_IDX_DIMS = {0x00000803: 3, 0x00000801: 1}  # magic -> number of dimensions (uint8 data)
_CHUNK = 1 << 16


def default_data_dir() -> Path:
    """The per-user cache: ``$XDG_CACHE_HOME/aae/mnist``, else ``~/.cache/aae/mnist``."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "aae" / "mnist"


# --- download ----------------------------------------------------------------


def download_mnist(
    data_dir: Path,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    files: Mapping[str, tuple[int, str]] = MNIST_FILES,
    timeout: float = 30.0,
) -> None:
    """Download the files of ``files`` missing from ``data_dir``, trying ``mirrors`` in order."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, (size, md5) in files.items():
        if not (data_dir / name).exists():
            _download_file(data_dir, name, size, md5, mirrors, timeout)


def _download_file(
    data_dir: Path, name: str, size: int, md5: str, mirrors: Sequence[str], timeout: float
) -> None:
    """Fetch one file into a temporary file, check its md5, then move it into place."""
    mismatches: list[str] = []
    unreachable: list[str] = []
    for mirror in mirrors:
        url = mirror if mirror.endswith("/") else mirror + "/"
        url += name
        logger.info("downloading %s (%d bytes) from %s", name, size, url)
        try:
            tmp, got = _fetch(url, data_dir, timeout)
        except (OSError, http.client.HTTPException) as exc:
            logger.warning("cannot download %s: %s", url, exc)
            unreachable.append(f"{mirror} ({exc})")
            continue
        if got == md5:
            os.replace(tmp, data_dir / name)
            return
        tmp.unlink()
        logger.warning("md5 mismatch for %s: got %s, expected %s", url, got, md5)
        mismatches.append(f"md5 {got} from {mirror}")
    if mismatches:
        raise DatasetCorrupt(f"{name}: expected md5 {md5}, got {'; '.join(mismatches)}")
    raise DatasetNotFound(f"{name}: no mirror reachable, tried {'; '.join(unreachable) or 'none'}")


def _fetch(url: str, data_dir: Path, timeout: float) -> tuple[Path, str]:
    """Stream ``url`` into a temporary file in ``data_dir``; return its path and md5."""
    digest = hashlib.md5()
    fd, tmp_name = tempfile.mkstemp(dir=data_dir, prefix=".", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest.hexdigest()


# --- reading -----------------------------------------------------------------


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file of unsigned bytes (gzipped if its name ends in ``.gz``)."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DatasetCorrupt(f"{path.name}: not a readable gzip file ({exc})") from exc
    if len(raw) < 4:
        raise DatasetCorrupt(f"{path.name}: too short for an IDX header ({len(raw)} bytes)")
    (magic,) = struct.unpack(">I", raw[:4])
    ndim = _IDX_DIMS.get(magic)
    if ndim is None:
        raise DatasetCorrupt(f"{path.name}: unknown IDX magic number 0x{magic:08x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetCorrupt(f"{path.name}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DatasetCorrupt(
            f"{path.name}: payload is {len(raw) - header} bytes, header {shape} says {expected}"
        )
    array = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)
    return torch.from_numpy(array.copy())


@dataclass(frozen=True)
class Digits:
    """Flattened digits: ``images`` float32 (N, 784) in [0, 1], ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def take(self, index: torch.Tensor) -> Digits:
        """The digits at ``index`` (a 1-D tensor of row numbers)."""
        return Digits(self.images[index], self.labels[index])


def neighbor_distances(images: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Each image's Euclidean distance to its ``k``-th nearest other image of the set, (N,):
    a local scale of the data (IMSAT's per-digit VAT radius). Exact (no approximate
    search), in chunks of rows so that memory stays at ``chunk`` x N distances."""
    n = images.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"the {k}-th nearest neighbour needs more than {k} images (have {n})")
    flat = images.flatten(1).float()
    squares = (flat * flat).sum(1)
    out = torch.empty(n)
    for start in range(0, n, chunk):
        rows = flat[start:start + chunk]
        d2 = squares[start:start + chunk, None] - 2 * rows @ flat.T + squares[None, :]
        d2[torch.arange(rows.shape[0]), torch.arange(start, start + rows.shape[0])] = 0
        # the k+1 smallest include the image itself (distance 0)
        out[start:start + chunk] = d2.topk(k + 1, dim=1, largest=False).values[:, k]
    return out.clamp_(min=0).sqrt_()


@dataclass(frozen=True)
class MNISTSplits:
    """Everything a run trains and evaluates on, cut from one data directory."""

    train: Digits  # training file minus the validation split; all of it is used unlabeled
    labeled: Digits  # balanced subset of ``train`` (may have 0 rows)
    validation: Digits  # held out of the training file
    test: Digits  # the t10k files
    source: str  # the data directory


def load_digits(data_dir: Path, download: bool = True) -> tuple[Digits, Digits]:
    """The training-file and test-file digits of ``data_dir``, downloading missing files."""
    data_dir = Path(data_dir)
    missing = [name for name in MNIST_FILES if not (data_dir / name).is_file()]
    if missing and not download:
        raise DatasetNotFound(f"missing {', '.join(missing)} in {data_dir} (download disabled)")
    if missing:
        download_mnist(data_dir, MNIST_MIRRORS, {name: MNIST_FILES[name] for name in missing})
    train = _read_digits(data_dir / TRAIN_IMAGES, data_dir / TRAIN_LABELS)
    test = _read_digits(data_dir / TEST_IMAGES, data_dir / TEST_LABELS)
    logger.debug("loaded %d training and %d test digits from %s", len(train), len(test), data_dir)
    return train, test


def _read_digits(images_path: Path, labels_path: Path) -> Digits:
    """Read and validate one images/labels pair."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dim() != 3 or tuple(images.shape[1:]) != (IMAGE_SIDE, IMAGE_SIDE):
        raise DatasetCorrupt(
            f"{images_path.name}: expected 28x28 images, got {tuple(images.shape)}"
        )
    if labels.dim() != 1:
        raise DatasetCorrupt(
            f"{labels_path.name}: expected labels, got shape {tuple(labels.shape)}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DatasetCorrupt(
            f"{images_path.name} has {images.shape[0]} images "
            f"but {labels_path.name} has {labels.shape[0]} labels"
        )
    if labels.numel() and int(labels.max()) >= NUM_CLASSES:
        raise DatasetCorrupt(f"{labels_path.name}: label {int(labels.max())} is not a digit 0..9")
    return Digits(images.reshape(-1, IMAGE_SIDE * IMAGE_SIDE).float().div_(255), labels.long())


# --- splits ------------------------------------------------------------------


def load_splits(
    data_dir: Path, *, n_labels: int | None, validation_size: int, seed: int, download: bool = True
) -> MNISTSplits:
    """Cut train / labeled / validation / test splits, deterministically from ``seed``.

    ``n_labels=None`` keeps every training label (``labeled`` is ``train``); otherwise
    ``n_labels // 10`` digits of each class are drawn from the train split.
    """
    if n_labels is not None and (n_labels < 0 or n_labels % NUM_CLASSES):
        raise ValueError(
            f"n_labels must be a non-negative multiple of {NUM_CLASSES}, got {n_labels}"
        )
    if validation_size < 0:
        raise ValueError(f"validation_size must be non-negative, got {validation_size}")
    train_file, test = load_digits(data_dir, download=download)
    if validation_size >= len(train_file):
        raise ValueError(
            f"validation_size {validation_size} must be below the {len(train_file)} training digits"
        )
    order = torch.randperm(len(train_file), generator=torch.Generator().manual_seed(seed))
    validation_index, train_index = order[:validation_size], order[validation_size:]
    train = train_file.take(train_index.sort().values)
    if n_labels is None:
        labeled = train
    else:
        labeled_index = _balanced(train_index, train_file.labels, n_labels // NUM_CLASSES)
        labeled = train_file.take(labeled_index.sort().values)
    return MNISTSplits(
        train=train,
        labeled=labeled,
        validation=train_file.take(validation_index.sort().values),
        test=test,
        source=str(data_dir),
    )


def splits_for(cfg: AAEConfig, data_dir: Path, *, download: bool = True) -> MNISTSplits:
    """The splits a run of ``cfg`` trains and is measured on: its labeled and validation
    digits drawn by ``cfg.split_seed``, or by ``cfg.seed`` where that is unset."""
    seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    return load_splits(data_dir, n_labels=cfg.n_labels, validation_size=cfg.validation_size,
                       seed=seed, download=download)


def _balanced(candidates: torch.Tensor, labels: torch.Tensor, per_class: int) -> torch.Tensor:
    """The first ``per_class`` candidates of each class, in the candidates' (random) order."""
    chosen = []
    for digit in range(NUM_CLASSES):
        members = candidates[labels[candidates] == digit]
        if len(members) < per_class:
            raise ValueError(
                f"class {digit} has only {len(members)} digits in the train split, "
                f"{per_class} labels per class were asked for"
            )
        chosen.append(members[:per_class])
    return torch.cat(chosen)
