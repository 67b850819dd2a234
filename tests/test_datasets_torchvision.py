"""``data=torchvision``: small files in the real on-disk layouts of torchvision datasets (IDX
binaries, image folders, annotation files), read by torchvision's own dataset classes through
:class:`TorchvisionDataModule`.

Not built here: STL-10 and Flowers-102, whose torchvision classes check the MD5 of the real
files even with ``download=False`` (so no small stand-in passes), and Food-101 and
Caltech-101, whose layouts are of the kinds tested (folders, annotation files); their configs
are composed and built in tests/test_configs.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from classicnets.data import DatasetError, TorchvisionDataModule
from classicnets.data.torchvision_sets import describe
from formats import _idx, write_mnist

EUROSAT = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
           "PermanentCrop", "Residential", "River", "SeaLake")


def _jpeg(path: Path, h: int, w: int, seed: int, mode: str = "RGB") -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def write_emnist(root: Path, split: str = "balanced", classes: int = 47, n: int = 50) -> None:
    """``EMNIST/raw/emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte``."""
    rng = np.random.default_rng(1)
    raw = root / "EMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for part, count in (("train", n), ("test", n // 2)):
        (raw / f"emnist-{split}-{part}-images-idx3-ubyte").write_bytes(
            _idx(rng.integers(0, 256, (count, 28, 28))))
        (raw / f"emnist-{split}-{part}-labels-idx1-ubyte").write_bytes(
            _idx(np.arange(count) % classes))


def write_eurosat(root: Path, per_class: int = 3) -> None:
    """``eurosat/2750/<class>/<class>_<n>.jpg``, 64×64 (one split)."""
    for ci, cls in enumerate(EUROSAT):
        for i in range(per_class):
            _jpeg(root / "eurosat" / "2750" / cls / f"{cls}_{i + 1}.jpg", 64, 64, ci * 10 + i)


def write_gtsrb(root: Path, n_test: int = 10) -> None:
    """``gtsrb/GTSRB/Training/<00000..00042>/*.ppm`` and ``Final_Test/Images/*.ppm`` with
    ``GT-final_test.csv`` (semicolon-separated, as the archive has it)."""
    base = root / "gtsrb"
    for c in range(43):
        d = base / "GTSRB" / "Training" / f"{c:05d}"
        d.mkdir(parents=True)
        Image.fromarray(np.full((30 + c % 5, 28 + c % 7, 3), c * 5, np.uint8)).save(
            d / f"00000_{c:05d}.ppm")
    test = base / "GTSRB" / "Final_Test" / "Images"
    test.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i in range(n_test):
        Image.fromarray(np.full((40, 36 + i, 3), i * 20, np.uint8)).save(test / f"{i:05d}.ppm")
        rows.append(f"{i:05d}.ppm;{36 + i};40;5;5;30;35;{(i * 7) % 43}")
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")


DTD_CLASSES = tuple(f"texture{c:02d}" for c in range(47))


def write_dtd(root: Path) -> None:
    """``dtd/dtd/images/<class>/<name>.jpg`` and ``labels/{train,val,test}1.txt`` (two images a
    class for train, one each for val and test)."""
    data = root / "dtd" / "dtd"
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for ci, cls in enumerate(DTD_CLASSES):
        for i, split in enumerate(("train", "train", "val", "test")):
            name = f"{cls}_{i:04d}.jpg"
            _jpeg(data / "images" / cls / name, 20 + i, 24, ci * 4 + i)
            lines[split].append(f"{cls}/{name}")
    (data / "labels").mkdir(parents=True)
    for split, rows in lines.items():
        (data / "labels" / f"{split}1.txt").write_text("\n".join(rows) + "\n")


def write_pets(root: Path, per_breed: int = 2) -> list[str]:
    """``oxford-iiit-pet/images/<Breed>_<n>.jpg`` and ``annotations/{trainval,test}.txt``
    (``<image id> <class 1..37> <species> <breed id>``)."""
    base = root / "oxford-iiit-pet"
    breeds = [f"breed_{chr(97 + c // 26)}{chr(97 + c % 26)}" for c in range(37)]
    rows: dict[str, list[str]] = {"trainval": [], "test": []}
    for c, breed in enumerate(breeds):
        for i in range(per_breed + 1):
            image_id = f"{breed}_{i + 1}"
            _jpeg(base / "images" / f"{image_id}.jpg", 30, 26 + i, c * 5 + i,
                  mode="L" if c == 0 else "RGB")  # a grey one: converted to RGB
            split = "test" if i == per_breed else "trainval"
            rows[split].append(f"{image_id} {c + 1} {1 + c % 2} {c + 1}")
    (base / "annotations").mkdir(parents=True)
    for split, r in rows.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(r) + "\n")
    return breeds


def _batch(loader: object) -> tuple[torch.Tensor, torch.Tensor]:
    return next(iter(loader))  # type: ignore[call-overload]


# ------------------------------------------------------------------ binary (IDX) files


@pytest.mark.parametrize("loader", ["fast", "torch"])
def test_kmnist_idx_files_both_loaders(tmp_path: Path, loader: str) -> None:
    write_mnist(tmp_path, "KMNIST", n_train=60, n_test=20)
    dm = TorchvisionDataModule(dataset="KMNIST", root=tmp_path, batch_size=8, loader=loader,
                               num_workers=0)
    dm.setup("fit")
    assert dm.loader == loader and dm.spec.in_memory
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (54, 6, 20)
    assert dm.classes[:3] == ["o", "ki", "su"]  # torchvision's own class names
    for split in ("train", "val", "test"):
        x, y = _batch(getattr(dm, f"{split}_dataloader")())
        n = min(8, len(getattr(dm, f"{split}_set")))
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    # the test split is the t10k files, image for image
    raw = (tmp_path / "KMNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()
    first = torch.frombuffer(bytearray(raw[16:16 + 784]), dtype=torch.uint8).view(1, 28, 28)
    assert torch.equal(dm.test_set.images[0], first)
    # statistics computed from the training images and cached under the data root
    cache = tmp_path / ".classicnets_stats" / "KMNIST-train.json"
    mean = dm.train_set.images.double().mean().item() / 255
    assert json.loads(cache.read_text())["mean"] == pytest.approx([mean], abs=1e-4)
    assert dm.mean == pytest.approx((mean,), abs=1e-4)


def test_statistics_come_from_the_cache_once_written(tmp_path: Path) -> None:
    write_mnist(tmp_path, "KMNIST", n_train=30, n_test=10)
    cache = tmp_path / ".classicnets_stats" / "KMNIST-train.json"
    cache.parent.mkdir()
    cache.write_text(json.dumps({"mean": [0.25], "std": [0.5]}))
    dm = TorchvisionDataModule(dataset="KMNIST", root=tmp_path, batch_size=8, in_channels=3,
                               image_size=32)
    dm.setup("fit")
    assert dm.mean == (0.25, 0.25, 0.25) and dm.std == (0.5, 0.5, 0.5)
    assert dm.train_set.images.shape[1:] == (3, 28, 28)  # grey repeated to RGB


def test_emnist_split_option_sets_files_and_classes(tmp_path: Path) -> None:
    write_emnist(tmp_path, "balanced", 47)
    dm = TorchvisionDataModule(dataset="EMNIST", options={"split": "balanced"}, root=tmp_path,
                               batch_size=5, val_fraction=0.2, num_workers=0)
    dm.setup("fit")
    assert dm.num_classes == 47 and len(dm.classes) == 47
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (40, 10, 25)
    x, _ = _batch(dm.train_dataloader())
    assert x.shape == (5, 1, 28, 28)
    # class counts of the other subsets come from torchvision, without their files
    assert describe("EMNIST", {"split": "byclass"})["num_classes"] == 62
    assert describe("EMNIST", {"split": "digits"})["num_classes"] == 10
    with pytest.raises(DatasetError, match="'bycolour' is not an EMNIST split.*balanced"):
        describe("EMNIST", {"split": "bycolour"})


# ------------------------------------------------------------------ folder layouts


def test_eurosat_folder_single_split_holds_out_a_fixed_test_split(tmp_path: Path) -> None:
    write_eurosat(tmp_path)
    sets = {}
    for seed in (1, 2):
        dm = TorchvisionDataModule(dataset="EuroSAT", root=tmp_path, batch_size=4, seed=seed,
                                   num_workers=0)
        dm.setup("fit")
        sets[seed] = dm
        assert dm.spec.in_memory and dm.loader == "fast" and dm.classes == list(EUROSAT)
        assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (22, 2, 6)
        x, _ = _batch(dm.train_dataloader())
        assert x.shape == (4, 3, 64, 64)
    a, b = sets[1], sets[2]
    assert torch.equal(a.test_set.images, b.test_set.images)  # the same test images every seed
    assert not torch.equal(a.val_set.images, b.val_set.images)  # validation follows the seed
    every = torch.cat([a.train_set.images, a.val_set.images, a.test_set.images])
    assert len({bytes(im.flatten().numpy()) for im in every}) == 30  # a partition of all 30
    # the tensors hold the decoded JPEGs themselves
    with Image.open(tmp_path / "eurosat/2750/AnnualCrop/AnnualCrop_1.jpg") as im:
        first = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
    assert any(torch.equal(first, im) for im in every)


def test_gtsrb_ppm_folders_and_csv_per_image_without_flips(tmp_path: Path) -> None:
    write_gtsrb(tmp_path)
    dm = TorchvisionDataModule(dataset="GTSRB", root=tmp_path, batch_size=4, num_workers=0)
    dm.setup("fit")
    assert not dm.spec.in_memory and dm.loader == "torch" and dm.spec.recipe == "resize"
    assert dm.resize_size == dm.image_size == 32
    assert len(dm.test_set) == 10 and len(dm.train_set) + len(dm.val_set) == 43
    x, y = _batch(dm.test_dataloader())
    assert x.shape == (4, 3, 32, 32)
    assert y.tolist() == [0, 7, 14, 21]  # ClassId of the csv, in order
    # training applies no random crop or flip: an image gives the same tensor every time
    assert torch.equal(dm.train_set[0][0], dm.train_set[0][0])
    # statistics of the train images, computed once (a sample) and cached
    assert (tmp_path / ".classicnets_stats" / "GTSRB-train.json").is_file()
    with pytest.raises(DatasetError, match="vary in size.*data.loader=torch"):
        TorchvisionDataModule(dataset="GTSRB", root=tmp_path, loader="fast")


# ------------------------------------------------------------------ annotation files


def test_dtd_label_files_give_train_val_test(tmp_path: Path) -> None:
    write_dtd(tmp_path)
    dm = TorchvisionDataModule(dataset="DTD", root=tmp_path, batch_size=8, image_size=24,
                               num_workers=0)
    dm.setup("fit")
    # the dataset's own val split, not a fraction of train
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (94, 47, 47)
    assert dm.classes == sorted(DTD_CLASSES)
    x, y = _batch(dm.val_dataloader())
    assert x.shape == (8, 3, 24, 24) and torch.isfinite(x).all()
    assert y.tolist() == list(range(8))  # val1.txt lists one image of each class in order
    # natural photographs: ImageNet's statistics (the known table), nothing computed
    assert dm.mean == (0.485, 0.456, 0.406)
    assert not (tmp_path / ".classicnets_stats").exists()


def test_per_image_datasets_take_the_recipes_data_ingredients(tmp_path: Path) -> None:
    """A per-image torchvision dataset (DTD) trains with data.policy, data.random_erasing and
    the FixRes training size as the folder path does; evaluation is untouched."""
    from torchvision.transforms import v2

    write_dtd(tmp_path)
    dm = TorchvisionDataModule(dataset="DTD", root=tmp_path, batch_size=8, image_size=24,
                               num_workers=0, policy="trivialaugment", random_erasing=0.5,
                               train_crop_size=16)
    dm.setup("fit")
    train_ops = [type(t) for t in dm.train_set.transform.transforms]
    assert v2.TrivialAugmentWide in train_ops and v2.RandomErasing in train_ops
    assert train_ops.index(v2.TrivialAugmentWide) < train_ops.index(v2.Normalize) < \
        train_ops.index(v2.RandomErasing)  # policy on uint8, erasing after normalising
    val_ops = [type(t) for t in dm.val_set.transform.transforms]
    assert v2.TrivialAugmentWide not in val_ops and v2.RandomErasing not in val_ops
    assert _batch(dm.train_dataloader())[0].shape[-2:] == (16, 16)
    assert _batch(dm.val_dataloader())[0].shape[-2:] == (24, 24)


def test_oxford_pets_trainval_and_test_files(tmp_path: Path) -> None:
    breeds = write_pets(tmp_path)
    dm = TorchvisionDataModule(dataset="OxfordIIITPet", root=tmp_path, batch_size=6,
                               image_size=16, val_fraction=0.25, num_workers=0)
    dm.setup("fit")
    assert dm.classes[0] == "Breed Aa" and len(dm.classes) == 37 == len(breeds)
    # trainval (74 lines) → train + a val_fraction cut (round(74 · 0.25) = 18); test.txt → test
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (56, 18, 37)
    assert not set(dm.train_set.indices) & set(dm.val_set.indices)
    x, y = _batch(dm.test_dataloader())
    assert x.shape == (6, 3, 16, 16) and y.tolist() == [0, 1, 2, 3, 4, 5]


def test_fgvc_aircraft_annotation_level_sets_files_and_class_count(tmp_path: Path) -> None:
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    families = [f"Family {i}" for i in range(70)]
    (data / "images").mkdir(parents=True)
    (data / "families.txt").write_text("\n".join(families) + "\n")
    for i in range(70):
        _jpeg(data / "images" / f"{1000000 + i}.jpg", 22, 30, i)
    for split, ids in (("train", range(70)), ("val", range(0, 70, 10)),
                       ("test", range(5, 70, 10))):
        (data / f"images_family_{split}.txt").write_text(
            "".join(f"{1000000 + i} {families[i]}\n" for i in ids))
    assert describe("FGVCAircraft")["num_classes"] == 100  # variants, by default
    assert describe("FGVCAircraft", {"annotation_level": "manufacturer"})["num_classes"] == 30
    dm = TorchvisionDataModule(dataset="FGVCAircraft", options={"annotation_level": "family"},
                               root=tmp_path, batch_size=7, image_size=16, num_workers=0)
    dm.setup("fit")
    assert dm.num_classes == 70 and dm.classes == families
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (70, 7, 7)
    _, y = _batch(dm.test_dataloader())
    assert y.tolist() == list(range(5, 70, 10))


def test_imagenette_val_folder_is_the_test_split(tmp_path: Path) -> None:
    from torchvision.datasets import Imagenette

    wnids = list(Imagenette._WNID_TO_CLASS)
    for split, n in (("train", 3), ("val", 1)):
        for c, wnid in enumerate(wnids):
            for i in range(n):
                _jpeg(tmp_path / "imagenette2-160" / split / wnid / f"{wnid}_{i}.JPEG", 24, 28,
                      c * 5 + i)
    dm = TorchvisionDataModule(dataset="Imagenette", options={"size": "160px"}, root=tmp_path,
                               batch_size=5, image_size=16, num_workers=0)
    dm.setup("fit")
    assert dm.classes[0] == "tench" and len(dm.classes) == 10
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (27, 3, 10)


def test_fakedata_without_files_any_class_count() -> None:
    """A dataset of no known table and no files: its facts are read from it."""
    opts = {"size": 30, "image_size": [1, 20, 20], "num_classes": 5}
    assert describe("FakeData", opts) == {"num_classes": 5, "in_channels": 1, "image_size": 20}
    dm = TorchvisionDataModule(dataset="FakeData", options=opts, batch_size=4, num_workers=0,
                               root="/nonexistent/never-written", image_size=20)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (22, 2, 6)
    x, _ = _batch(dm.train_dataloader())
    assert x.shape == (4, 1, 20, 20)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(("name", "close"), [("Flowers101", "Flowers102"),
                                             ("kmnist", "KMNIST"), ("Food-101", "Food101")])
def test_unknown_dataset_lists_close_names(name: str, close: str) -> None:
    with pytest.raises(DatasetError, match=rf"not a dataset of torchvision.datasets.*did you "
                                           rf"mean [^?]*\b{close}\b"):
        TorchvisionDataModule(dataset=name)


@pytest.mark.parametrize(("name", "why"), [("CocoDetection", "object-detection"),
                                           ("VOCSegmentation", "segmentation"),
                                           ("UCF101", "video")])
def test_non_classification_dataset_is_refused_saying_why(name: str, why: str) -> None:
    with pytest.raises(DatasetError, match=f"{name} is an? {why} dataset.*not single-label"):
        TorchvisionDataModule(dataset=name)


def test_missing_files_name_the_path_and_layout(tmp_path: Path) -> None:
    dm = TorchvisionDataModule(dataset="DTD", root=tmp_path, download=False)
    with pytest.raises(DatasetError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert str(tmp_path) in msg and "dtd/dtd/{images/<class>" in msg
    assert "data.root" in msg and "data.download=true" in msg


def test_unknown_option_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"\['partitoin'\].*its options: .*partition"):
        TorchvisionDataModule(dataset="DTD", root=tmp_path, options={"partitoin": 2})


def test_in_memory_dataset_too_large_for_memory_is_refused(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    import classicnets.data.torchvision_sets as tvs

    write_mnist(tmp_path, "KMNIST", n_train=60, n_test=20)
    monkeypatch.setattr(tvs, "_available_memory", lambda: 60 * 784)  # half of it: 30 images
    dm = TorchvisionDataModule(dataset="KMNIST", root=tmp_path, batch_size=8)
    with pytest.raises(DatasetError, match=r"KMNIST train: 60 images of 1×28×28 need .* more "
                                           r"than half .* available"):
        dm.setup("fit")
