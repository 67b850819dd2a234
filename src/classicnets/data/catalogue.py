"""The dataset catalogue: what each dataset is, where its files live and how they are read.

In-memory datasets (digits, MNIST family, CIFAR, SVHN, synthetic) are read from their
original on-disk formats into one ``uint8`` tensor ``(N, C, H, W)`` plus ``int64`` labels;
both data paths (per-image DataLoader and on-device batches) start from that. Folder datasets
(ImageNet, a user's image tree) are read lazily by :class:`torchvision.datasets.ImageFolder`.

Readers check what they read (magic numbers, shapes, label ranges) so a truncated or corrupt
file is reported with its path and the fix, instead of surfacing as a shape error later.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["CATALOGUE", "ArrayData", "DatasetError", "DatasetSpec", "get_spec"]


class DatasetError(RuntimeError):
    """A dataset is missing, corrupt or misconfigured; the message names the fix."""


@dataclass
class ArrayData:
    """An in-memory split: ``images`` uint8 ``(N, C, H, W)``, ``labels`` int64 ``(N,)``."""

    images: Tensor
    labels: Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise DatasetError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                               f"{tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise DatasetError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class DatasetSpec:
    """Facts about one dataset kind.

    ``recipe`` names the standard augmentation: ``"crop_flip"`` (pad-4 random crop + flip,
    CIFAR), ``"none"`` (digits: flips would change their meaning), ``"imagenet"``
    (random-resized-crop + flip; eval resize 256/224 + centre crop).
    """

    name: str
    num_classes: int | None
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    recipe: str
    in_memory: bool
    layout: str  # the expected files, for error messages
    reader: Callable[..., ArrayData] | None = None
    downloader: Callable[[Path], None] | None = None
    splits: tuple[str, ...] = field(default=("train", "test"))


# --------------------------------------------------------------------------- readers


def _require(path: Path, spec_name: str, layout: str) -> Path:
    if not path.exists():
        raise DatasetError(
            f"{spec_name}: expected {path} but it does not exist. Expected layout under "
            f"data.root: {layout}. Put the files there, point data.root=/path/to/datasets at "
            f"the folder that holds them, or set data.download=true where downloading is possible."
        )
    return path


def _corrupt(path: Path, why: str) -> DatasetError:
    return DatasetError(
        f"{path} is corrupt or not the expected format ({why}); delete it and download or copy "
        f"it again"
    )


def read_digits(root: Path, split: str) -> ArrayData:
    """scikit-learn's bundled 8×8 digits, split 80/20 by a fixed seed (no official split)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).mul(255.0 / 16.0).round().to(torch.uint8)
    labels = torch.from_numpy(bunch.target)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    n_test = len(labels) // 5
    idx = order[n_test:] if split == "train" else order[:n_test]
    return ArrayData(images[idx, None], labels[idx], [str(i) for i in range(10)])


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format), optionally gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise _corrupt(path, str(err)) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise _corrupt(path, "bad IDX magic number (expected unsigned-byte data)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if len(raw) != header + int(np.prod(dims)):
        raise _corrupt(path, f"size {len(raw)} bytes does not match the header dims {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _mnist_reader(folder: str, classes: list[str]) -> Callable[[Path, str], ArrayData]:
    def read(root: Path, split: str) -> ArrayData:
        prefix = "train" if split == "train" else "t10k"
        raw = root / folder / "raw"
        layout = f"{folder}/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz]"
        paths = []
        for kind in ("images-idx3", "labels-idx1"):
            plain = raw / f"{prefix}-{kind}-ubyte"
            paths.append(plain if plain.exists() else _require(
                plain.with_name(plain.name + ".gz"), folder, layout))
        images, labels = _read_idx(paths[0]), _read_idx(paths[1])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise _corrupt(paths[0], f"images {images.shape} and labels {labels.shape} disagree")
        if labels.max(initial=0) >= len(classes):
            raise _corrupt(paths[1], f"label {labels.max()} outside 0..{len(classes) - 1}")
        return ArrayData(torch.from_numpy(images.copy())[:, None],
                         torch.from_numpy(labels.astype(np.int64)), classes)

    return read


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise _corrupt(path, f"cannot unpickle: {err}") from None


def _cifar_reader(folder: str, files: dict[str, list[str]], label_key: bytes,
                  meta: tuple[str, bytes], num_classes: int) -> Callable[[Path, str], ArrayData]:
    def read(root: Path, split: str) -> ArrayData:
        names = [n for split_files in files.values() for n in split_files]
        base = _require(root / folder, folder, f"{folder}/{{{','.join(names)}}}")
        images, labels = [], []
        for name in files[split]:
            path = _require(base / name, folder, f"{folder}/{name}")
            entry = _unpickle(path)
            if b"data" not in entry or label_key not in entry:
                raise _corrupt(path, f"missing b'data' or {label_key!r}")
            data = np.asarray(entry[b"data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(entry[label_key]):
                raise _corrupt(path, f"data of shape {data.shape} is not N×3072")
            images.append(data.reshape(-1, 3, 32, 32))
            labels.extend(entry[label_key])
        lab = torch.tensor(labels, dtype=torch.int64)
        if lab.numel() and (lab.min() < 0 or lab.max() >= num_classes):
            raise _corrupt(base, f"labels outside 0..{num_classes - 1}")
        classes = [str(i) for i in range(num_classes)]
        meta_path = base / meta[0]
        if meta_path.exists():
            names = _unpickle(meta_path).get(meta[1])
            if names and len(names) == num_classes:
                classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        return ArrayData(torch.from_numpy(np.concatenate(images)), lab, classes)

    return read


def read_svhn(root: Path, split: str) -> ArrayData:
    """SVHN cropped digits (``{split}_32x32.mat``); label 10 stands for digit 0."""
    from scipy.io import loadmat

    path = _require(root / "svhn" / f"{split}_32x32.mat", "svhn",
                    "svhn/{train,test}_32x32.mat")
    try:
        mat = loadmat(path)
    except Exception as err:  # scipy raises several types for a bad file
        raise _corrupt(path, f"cannot read MATLAB file: {err}") from None
    if "X" not in mat or "y" not in mat or mat["X"].shape[:3] != (32, 32, 3):
        raise _corrupt(path, "expected X of shape (32, 32, 3, N) and y")
    images = torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1)))
    labels = torch.from_numpy(mat["y"].reshape(-1).astype(np.int64)) % 10
    if len(images) != len(labels):
        raise _corrupt(path, f"{len(images)} images but {len(labels)} labels")
    return ArrayData(images.to(torch.uint8), labels, [str(i) for i in range(10)])


def read_synthetic(root: Path, split: str, *, num_samples: int = 512, num_classes: int = 10,
                   in_channels: int = 3, image_size: int = 32, seed: int = 0) -> ArrayData:
    """Seeded random images with a per-class pattern, so a network can actually learn them."""
    g = torch.Generator().manual_seed(seed * 2 + (split == "test"))
    templates = torch.rand(num_classes, in_channels, image_size, image_size,
                           generator=torch.Generator().manual_seed(seed)) * 255
    n = num_samples if split == "train" else max(num_classes, num_samples // 4)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    noise = torch.randn(n, in_channels, image_size, image_size, generator=g) * 48
    images = (templates[labels] * 0.6 + 51 + noise).clamp(0, 255).to(torch.uint8)
    return ArrayData(images, labels, [str(i) for i in range(num_classes)])


def _torchvision_download(cls_name: str, sub: str = "") -> Callable[[Path], None]:
    def download(root: Path) -> None:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        target = root / sub if sub else root
        for split_kw in ({"train": True}, {"train": False}) if cls_name != "SVHN" else (
                {"split": "train"}, {"split": "test"}):
            cls(str(target), download=True, **split_kw)

    return download


_CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
            "Sneaker", "Bag", "Ankle boot"]
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

CATALOGUE: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("digits", 10, 1, 8, (0.3, ), (0.37, ), "none", True,
                    "bundled with scikit-learn (no files needed)", read_digits),
        DatasetSpec("mnist", 10, 1, 28, (0.1307,), (0.3081,), "none", True,
                    "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
                    _mnist_reader("MNIST", [str(i) for i in range(10)]),
                    _torchvision_download("MNIST")),
        DatasetSpec("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), "none", True,
                    "FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
                    _mnist_reader("FashionMNIST", _FASHION),
                    _torchvision_download("FashionMNIST")),
        DatasetSpec("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                    "crop_flip", True, "cifar-10-batches-py/{data_batch_1..5,test_batch}",
                    _cifar_reader("cifar-10-batches-py", _CIFAR10_FILES, b"labels",
                                  ("batches.meta", b"label_names"), 10),
                    _torchvision_download("CIFAR10")),
        DatasetSpec("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                    "crop_flip", True, "cifar-100-python/{train,test}",
                    _cifar_reader("cifar-100-python", {"train": ["train"], "test": ["test"]},
                                  b"fine_labels", ("meta", b"fine_label_names"), 100),
                    _torchvision_download("CIFAR100")),
        DatasetSpec("svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                    "none", True, "svhn/{train,test}_32x32.mat", read_svhn,
                    _torchvision_download("SVHN", "svhn")),
        DatasetSpec("synthetic", None, 3, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "crop_flip",
                    True, "generated in memory (no files needed)", read_synthetic),
        DatasetSpec("imagenet", 1000, 3, 224, _IMAGENET_MEAN, _IMAGENET_STD, "imagenet", False,
                    "imagenet/{train,val}/<wnid>/*.JPEG (ILSVRC-2012, val sorted into class "
                    "folders; obtain it from image-net.org, it cannot be downloaded for you)",
                    splits=("train", "val")),
        DatasetSpec("imagefolder", None, 3, 224, _IMAGENET_MEAN, _IMAGENET_STD, "imagenet",
                    False, "<data.path>/train/<class>/*.{jpg,png,...} and optionally "
                    "<data.path>/val/<class>/... and <data.path>/test/<class>/...",
                    splits=("train", "val", "test")),
    ]
}


def get_spec(name: str) -> DatasetSpec:
    """The catalogue entry for ``name``; unknown names list the known ones."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset {name!r}; known: {', '.join(CATALOGUE)} (choose with data=<name>)"
        ) from None
