"""Writers of small datasets in each dataset's real on-disk format (no network in tests)."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def write_cifar10(root: Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> None:
    """`cifar-10-batches-py/` with 5 training batches and a test batch (pickled dicts)."""
    rng = _rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    per = n_train // 5
    for i in range(1, 6):
        data = rng.integers(0, 256, (per, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, per)]
        with open(base / f"data_batch_{i}", "wb") as fh:
            pickle.dump({b"batch_label": f"training batch {i} of 5".encode(), b"labels": labels,
                         b"data": data, b"filenames": [b"x.png"] * per}, fh)
    with open(base / "test_batch", "wb") as fh:
        pickle.dump({b"labels": [int(x) for x in rng.integers(0, 10, n_test)],
                     b"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)}, fh)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
             b"ship", b"truck"]
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, fh)


def write_cifar100(root: Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> None:
    rng = _rng(seed)
    base = root / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        with open(base / split, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"fine_labels": [int(x) for x in rng.integers(0, 100, n)],
                         b"coarse_labels": [int(x) for x in rng.integers(0, 20, n)]}, fh)
    with open(base / "meta", "wb") as fh:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, fh)


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 60, n_test: int = 20,
                gz: bool = False, seed: int = 0) -> None:
    """`<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte` (optionally gzipped)."""
    rng = _rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, arr in (("images-idx3", rng.integers(0, 256, (n, 28, 28))),
                          ("labels-idx1", rng.integers(0, 10, n))):
            blob = _idx(np.asarray(arr))
            name = raw / f"{prefix}-{kind}-ubyte"
            if gz:
                with gzip.open(name.with_name(name.name + ".gz"), "wb") as fh:
                    fh.write(blob)
            else:
                name.write_bytes(blob)


def write_svhn(root: Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> None:
    """`svhn/{train,test}_32x32.mat` with X (32, 32, 3, N) and y (N, 1), 10 meaning digit 0."""
    from scipy.io import savemat

    rng = _rng(seed)
    base = root / "svhn"
    base.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        savemat(base / f"{split}_32x32.mat",
                {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                 "y": rng.integers(1, 11, (n, 1)).astype(np.uint8)})


def write_image_folder(base: Path, classes: tuple[str, ...] = ("cat", "dog", "fox"),
                       per_class: int = 6, splits: tuple[str, ...] = ("train",),
                       size: int = 40, seed: int = 0) -> None:
    """`<base>/<split>/<class>/<i>.png` (PNG and JPEG mixed) like ImageNet's layout."""
    from PIL import Image

    rng = _rng(seed)
    for split in splits:
        for ci, cls in enumerate(classes):
            d = base / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (size + i, size, 3), dtype=np.uint8)
                arr[..., ci % 3] = 255  # class-coloured so a network could learn it
                ext = "png" if i % 2 else "jpg"
                Image.fromarray(arr).save(d / f"{i}.{ext}")


def write_tiny_shards(out: Path, num_samples: int = 40) -> Path:
    """`<out>/{manifest.json,train,val,test}`: litdata shards (python src/shard.py's format) of
    the synthetic dataset, 32-px RGB, 10 classes."""
    from classicnets.data import ImageDataModule
    from classicnets.data.shards import write_shards

    dm = ImageDataModule("synthetic", num_samples=num_samples, num_classes=10)
    write_shards(dm, out, data_config={"name": "synthetic", "num_samples": num_samples})
    return out
