"""Datasets in their real on-disk formats, loaded through the DataModule a user runs."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from classicnets.data import DatasetError, ImageDataModule
from classicnets.data.catalogue import CATALOGUE
from formats import (
    write_cifar10,
    write_cifar100,
    write_image_folder,
    write_mnist,
    write_svhn,
)


def _batches(dm: ImageDataModule) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    dm.setup("fit")
    return {s: next(iter(getattr(dm, f"{s}_dataloader")()))
            for s in ("train", "val", "test")}


def _check(dm: ImageDataModule, channels: int, size: int, classes: int) -> None:
    for split, (x, y) in _batches(dm).items():
        assert x.dtype == torch.float32 and y.dtype == torch.int64, split
        assert x.shape[1:] == (channels, size, size), (split, x.shape)
        assert len(x) == len(y) and int(y.min()) >= 0 and int(y.max()) < classes
        assert torch.isfinite(x).all()


@pytest.mark.parametrize("loader", ["fast", "torch"])
def test_cifar10_pickles(tmp_path: Path, loader: str) -> None:
    write_cifar10(tmp_path)
    dm = ImageDataModule("cifar10", root=tmp_path, batch_size=8, loader=loader, num_workers=0)
    _check(dm, 3, 32, 10)
    assert len(dm.train_set) + len(dm.val_set) == 50 and len(dm.test_set) == 20
    assert dm.classes[0] == "airplane"


def test_cifar10_images_and_labels_match_the_file(tmp_path: Path) -> None:
    import pickle

    write_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    dm = ImageDataModule("cifar10", root=tmp_path, batch_size=4)
    dm.setup("test")
    first = torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32))
    assert torch.equal(dm.test_set.images[0], first)
    assert dm.test_set.labels.tolist() == raw[b"labels"]


def test_cifar100_pickles(tmp_path: Path) -> None:
    write_cifar100(tmp_path)
    dm = ImageDataModule("cifar100", root=tmp_path, batch_size=4, val_fraction=0.25)
    _check(dm, 3, 32, 100)
    assert (len(dm.train_set), len(dm.val_set)) == (30, 10)


@pytest.mark.parametrize(("name", "folder", "gz"),
                         [("mnist", "MNIST", False), ("fashion_mnist", "FashionMNIST", True)])
def test_mnist_family_idx_files(tmp_path: Path, name: str, folder: str, gz: bool) -> None:
    write_mnist(tmp_path, folder, gz=gz)
    dm = ImageDataModule(name, root=tmp_path, batch_size=8, loader="torch", num_workers=0)
    _check(dm, 1, 28, 10)
    dm3 = ImageDataModule(name, root=tmp_path, batch_size=8, in_channels=3, image_size=32)
    _check(dm3, 3, 32, 10)


def test_svhn_mat_files_map_label_10_to_0(tmp_path: Path) -> None:
    from scipy.io import loadmat

    write_svhn(tmp_path)
    dm = ImageDataModule("svhn", root=tmp_path, batch_size=5)
    _check(dm, 3, 32, 10)
    y = loadmat(tmp_path / "svhn" / "test_32x32.mat")["y"].reshape(-1)
    assert dm.test_set.labels.tolist() == [int(v) % 10 for v in y]
    x = loadmat(tmp_path / "svhn" / "test_32x32.mat")["X"]
    assert torch.equal(dm.test_set.images[0], torch.from_numpy(x[..., 0]).permute(2, 0, 1))


def test_image_folder_with_val_fraction_split(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "pets")
    dm = ImageDataModule("imagefolder", path=tmp_path / "pets", num_classes=3, batch_size=4,
                         image_size=32, val_fraction=0.25, num_workers=0)
    _check(dm, 3, 32, 3)
    assert dm.classes == ["cat", "dog", "fox"]
    assert (len(dm.train_set), len(dm.val_set)) == (14, 4)  # round(18 · 0.25)
    tr, va = set(dm.train_set.indices), set(dm.val_set.indices)
    assert not tr & va  # the split is a partition


def test_imagenet_layout_is_read_and_class_count_checked(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "imagenet", classes=("n01", "n02"), splits=("train", "val"))
    dm = ImageDataModule("imagenet", root=tmp_path, batch_size=4, image_size=24, num_workers=0)
    with pytest.raises(DatasetError, match="2 class folders.*num_classes=1000"):
        dm.setup("fit")


def test_image_folder_with_val_and_test_folders_grayscale(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "x", splits=("train", "val", "test"), per_class=4)
    dm = ImageDataModule("imagefolder", path=tmp_path / "x", num_classes=3, batch_size=4,
                         image_size=24, in_channels=1, num_workers=0)
    _check(dm, 1, 24, 3)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (12, 12, 12)


def test_image_folder_class_count_must_match(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "x")
    dm = ImageDataModule("imagefolder", path=tmp_path / "x", num_classes=5, batch_size=4)
    with pytest.raises(DatasetError, match=r"3 class folders.*data.num_classes=3"):
        dm.setup("fit")


def test_digits_is_offline_and_split_is_deterministic() -> None:
    a = ImageDataModule("digits", image_size=32, batch_size=16, seed=1)
    b = ImageDataModule("digits", image_size=32, batch_size=16, seed=1)
    c = ImageDataModule("digits", image_size=32, batch_size=16, seed=2)
    for dm in (a, b, c):
        dm.setup("fit")
    assert torch.equal(a.val_set.labels, b.val_set.labels)
    assert torch.equal(a.val_set.images, b.val_set.images)
    assert not torch.equal(a.val_set.images, c.val_set.images)
    assert len(a.train_set) + len(a.val_set) + len(a.test_set) == 1797
    _check(a, 1, 32, 10)


def test_synthetic_any_shape() -> None:
    dm = ImageDataModule("synthetic", num_classes=7, in_channels=1, image_size=20,
                         num_samples=40, batch_size=8)
    _check(dm, 1, 20, 7)


# ------------------------------------------------------------------ bad input


def test_missing_dataset_names_path_and_override(tmp_path: Path) -> None:
    dm = ImageDataModule("cifar10", root=tmp_path / "nowhere", batch_size=8, download=False)
    with pytest.raises(DatasetError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg and "data.root" in msg


def test_failed_download_is_one_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    spec = CATALOGUE["mnist"]

    def offline(root: Path) -> None:
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setitem(CATALOGUE, "mnist", type(spec)(**{**spec.__dict__, "downloader": offline}))
    dm = ImageDataModule("mnist", root=tmp_path, batch_size=8, download=True)
    with pytest.raises(DatasetError, match=r"(?s)MNIST/raw.*Downloading it also failed.*data.root"):
        dm.prepare_data()


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_cifar_file_is_reported(tmp_path: Path, damage: str) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2] if damage == "truncate" else b"not a pickle")
    dm = ImageDataModule("cifar10", root=tmp_path, batch_size=8)
    with pytest.raises(DatasetError, match="data_batch_3 is corrupt"):
        dm.setup("fit")


def test_corrupt_idx_file_is_reported(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=True)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as fh:
        blob = fh.read()
    with gzip.open(path, "wb") as fh:
        fh.write(blob[:-100])
    dm = ImageDataModule("mnist", root=tmp_path, batch_size=8)
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz is corrupt.*size"):
        dm.setup("fit")


def test_unknown_dataset_lists_known_ones() -> None:
    with pytest.raises(DatasetError, match="unknown dataset 'cifar11'.*cifar10"):
        ImageDataModule("cifar11")


@pytest.mark.parametrize(("kwargs", "pattern"), [
    ({"loader": "turbo"}, "data.loader='turbo'"),
    ({"num_classes": 12}, "data.num_classes=12 but cifar10 has 10"),
    ({"val_fraction": 1.5}, "val_fraction"),
    ({"in_channels": 2}, "in_channels must be 1 or 3"),
])
def test_bad_options_are_named(kwargs: dict, pattern: str) -> None:
    with pytest.raises(DatasetError, match=pattern):
        ImageDataModule("cifar10", **kwargs)


def test_batch_size_must_divide_by_world_size() -> None:
    dm = ImageDataModule("digits", batch_size=33)

    class FakeTrainer:
        world_size = 2

    dm.trainer = FakeTrainer()  # type: ignore[assignment]
    with pytest.raises(DatasetError, match="batch_size=33.*not divisible by the world size 2"):
        dm.setup("fit")


def test_towers_split_the_batch_over_replicas_not_processes() -> None:
    """4 processes of trainer=towers are 2 replicas: the batch divides by 2, not 4."""
    dm = ImageDataModule("digits", batch_size=66)

    class FakeStrategy:
        distributed_sampler_kwargs = {"num_replicas": 2, "rank": 1}  # noqa: RUF012

    class FakeTrainer:
        world_size, global_rank, strategy = 4, 3, FakeStrategy()

    dm.trainer = FakeTrainer()  # type: ignore[assignment]
    assert dm.per_device_batch_size == 33
    assert dm._replica() == (2, 1)


def test_fast_loader_refused_for_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="data.loader=torch"):
        ImageDataModule("imagefolder", path=tmp_path, num_classes=2, loader="fast")
