"""Any classification dataset of ``torchvision.datasets`` by its class name.

``data=torchvision data.dataset=KMNIST`` (or a config of its own: ``data=flowers102``) builds
the dataset with torchvision's own class, which reads (and, with ``data.download=true``,
downloads) the dataset's files, and maps its splits to train/val/test:

* a ``train=`` flag (the MNIST family, CIFAR, USPS, ...): train and test;
* a ``split=`` argument: its train split (``trainval`` where the dataset calls it so), its
  ``val`` split where it has one, its ``test`` split (or, as for ImageNet and Imagenette, its
  ``val`` split where that is the only held-out one);
* neither (EuroSAT, Caltech-101): ``data.test_fraction`` of it is held out as the test split,
  drawn by a fixed seed; ``data.val_fraction`` of train is held out for validation wherever
  the dataset has no val split.

Datasets whose images all have one size (STL-10, EuroSAT, KMNIST, EMNIST) are read into one
uint8 tensor and take both data paths (the on-device fast path and the per-image DataLoader),
as CIFAR does; the others are decoded per image in the DataLoader workers. Channels, sizes,
class counts and recipes of the common datasets come from :data:`KNOWN`; mean/std where not
known are computed once from the training images and cached under the data root.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from classicnets.data.catalogue import ArrayData, DatasetError, DatasetSpec
from classicnets.data.datamodule import ImageDataModule, _match_channels
from classicnets.data.splits import (
    PER_IMAGE_RECIPES,
    TEST_SPLIT_SEED,
    ImageSplit,
    cached_stats,
    held_out,
    image_transform,
    match_stats,
    pixel_stats,
)

__all__ = [
    "KNOWN",
    "NOT_CLASSIFICATION",
    "KnownSet",
    "TorchvisionDataModule",
    "dataset_class",
    "describe",
]

log = logging.getLogger(__name__)

_IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# images decoded to compute statistics of a per-image dataset (a seeded sample)
STATS_SAMPLES = 1000


@dataclass(frozen=True)
class KnownSet:
    """What is known about a torchvision dataset before reading it.

    ``native_size``: the side of its (square, equal-sized) images, or ``None`` where they vary
    (then it is decoded per image); ``recipe``: an in-memory recipe (``crop_flip``, ``none``)
    or a per-image one (``imagenet``, ``resize``); ``stats``: ``(mean, std)``, ``None`` =
    computed from the training images and cached; ``splits``: keyword arguments of the
    train/val/test splits (a missing key: the split is drawn from train, or from the whole
    dataset for test); ``layout``: the files under ``data.root``, for error messages.
    """

    num_classes: int | None
    in_channels: int
    image_size: int
    native_size: int | None
    recipe: str
    layout: str
    splits: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    classes: tuple[str, ...] | None = None  # where the dataset object carries none
    options: Mapping[str, Any] = field(default_factory=dict)  # default constructor options


_TRAIN_TEST = {"train": {"train": True}, "test": {"train": False}}


def _split_kw(**names: str) -> dict[str, dict[str, str]]:
    return {ours: {"split": theirs} for ours, theirs in names.items()}


# natural photographs are normalised with ImageNet's statistics, as the transfer-learning
# literature evaluates them; the others are computed from their own training images
KNOWN: dict[str, KnownSet] = {
    "STL10": KnownSet(10, 3, 96, 96, "crop_flip",
                      "stl10_binary/{train_X.bin,train_y.bin,test_X.bin,test_y.bin,"
                      "class_names.txt} (torchvision checks their MD5s: the extracted "
                      "stl10_binary.tar.gz)", _split_kw(train="train", test="test")),
    "Imagenette": KnownSet(10, 3, 224, None, "imagenet",
                           "imagenette2/{train,val}/<wnid>/*.JPEG (data.options.size=320px: "
                           "imagenette2-320/, 160px: imagenette2-160/)",
                           _split_kw(train="train", test="val"), _IMAGENET_STATS),
    "Flowers102": KnownSet(102, 3, 224, None, "imagenet",
                           "flowers-102/{jpg/image_00001.jpg..., imagelabels.mat, setid.mat} "
                           "(torchvision checks the MD5s of the .mat files)",
                           _split_kw(train="train", val="val", test="test"), _IMAGENET_STATS),
    "OxfordIIITPet": KnownSet(37, 3, 224, None, "imagenet",
                              "oxford-iiit-pet/{images/<Breed>_<n>.jpg, annotations/"
                              "{trainval,test}.txt}",
                              _split_kw(train="trainval", test="test"), _IMAGENET_STATS),
    "Food101": KnownSet(101, 3, 224, None, "imagenet",
                        "food-101/{images/<class>/<id>.jpg, meta/{classes.txt,train.json,"
                        "test.json}}", _split_kw(train="train", test="test"), _IMAGENET_STATS),
    "Caltech101": KnownSet(101, 3, 224, None, "imagenet",
                           "caltech101/101_ObjectCategories/<category>/image_0001.jpg ... "
                           "(one split: data.test_fraction is held out for testing)",
                           {}, _IMAGENET_STATS),
    "GTSRB": KnownSet(43, 3, 32, None, "resize",
                      "gtsrb/GTSRB/Training/<00000..00042>/*.ppm; gtsrb/GTSRB/Final_Test/"
                      "Images/*.ppm with gtsrb/GT-final_test.csv",
                      _split_kw(train="train", test="test"),
                      classes=tuple(f"{i:05d}" for i in range(43))),
    "EuroSAT": KnownSet(10, 3, 64, 64, "crop_flip",
                        "eurosat/2750/<class>/<class>_<n>.jpg (one split: data.test_fraction "
                        "is held out for testing)"),
    "EMNIST": KnownSet(None, 1, 28, 28, "none",
                       "EMNIST/raw/emnist-<split>-{train,test}-{images-idx3,labels-idx1}-ubyte "
                       "(data.options.split: byclass, bymerge, balanced, letters, digits, "
                       "mnist)", _TRAIN_TEST, options={"split": "balanced"}),
    "KMNIST": KnownSet(10, 1, 28, 28, "none",
                       "KMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte", _TRAIN_TEST),
    "DTD": KnownSet(47, 3, 224, None, "imagenet",
                    "dtd/dtd/{images/<class>/<name>.jpg, labels/{train,val,test}1.txt} "
                    "(data.options.partition: 1..10)",
                    _split_kw(train="train", val="val", test="test"), _IMAGENET_STATS),
    "FGVCAircraft": KnownSet(100, 3, 224, None, "imagenet",
                             "fgvc-aircraft-2013b/data/{images/<id>.jpg, variants.txt, "
                             "images_variant_{train,val,test}.txt} (data.options."
                             "annotation_level: variant, family, manufacturer)",
                             _split_kw(train="train", val="val", test="test"),
                             _IMAGENET_STATS),
}
_ANNOTATION_CLASSES = {"variant": 100, "family": 70, "manufacturer": 30}

# torchvision datasets that are not single-label image classification, and why
NOT_CLASSIFICATION: dict[str, str] = {
    **dict.fromkeys(("CocoDetection", "VOCDetection", "WIDERFace", "Kitti"),
                    "an object-detection dataset (its targets are boxes)"),
    **dict.fromkeys(("VOCSegmentation", "Cityscapes", "SBDataset"),
                    "a segmentation dataset (its targets are masks)"),
    **dict.fromkeys(("CocoCaptions", "SBU", "Flickr8k", "Flickr30k"),
                    "a captioning dataset (its targets are sentences)"),
    **dict.fromkeys(("Kinetics", "HMDB51", "UCF101", "MovingMNIST"),
                    "a video dataset (its samples are clips)"),
    **dict.fromkeys(("KittiFlow", "Sintel", "FlyingChairs", "FlyingThings3D", "HD1K"),
                    "an optical-flow dataset (its samples are image pairs and flow fields)"),
    **dict.fromkeys(("Kitti2012Stereo", "Kitti2015Stereo", "CarlaStereo",
                     "Middlebury2014Stereo", "CREStereo", "FallingThingsStereo",
                     "SceneFlowStereo", "SintelStereo", "InStereo2k", "ETH3DStereo"),
                    "a stereo-matching dataset (its samples are image pairs and disparities)"),
    "PhotoTour": "a patch-matching dataset (its samples are patch pairs)",
    "LFWPairs": "a face-verification dataset (its samples are image pairs)",
    "CelebA": "a multi-label attribute dataset (its targets are 40 binary attributes)",
    "LSUNClass": "one class of LSUN (use LSUN)",
    "VisionDataset": "the base class of torchvision's datasets",
    "DatasetFolder": "a generic folder reader: use data=imagefolder data.path=...",
    "ImageFolder": "a generic folder reader: use data=imagefolder data.path=...",
    "wrap_dataset_for_transforms_v2": "a wrapper function, not a dataset",
}


def dataset_class(name: str) -> type:
    """The ``torchvision.datasets`` class ``name``; an unknown name lists the close ones, a
    dataset that is not image classification is refused saying what it is."""
    import torchvision.datasets as tvd

    if name in NOT_CLASSIFICATION:
        raise DatasetError(f"data.dataset={name}: torchvision's {name} is "
                           f"{NOT_CLASSIFICATION[name]}, not single-label image classification, "
                           "which is what this project trains")
    cls = getattr(tvd, name, None) if name in tvd.__all__ else None
    if not isinstance(cls, type):
        names = [n for n in tvd.__all__ if n not in NOT_CLASSIFICATION]
        by_case = {n.lower(): n for n in names}
        close = difflib.get_close_matches(name.lower(), list(by_case), n=5, cutoff=0.5)
        hint = (f"did you mean {', '.join(by_case[c] for c in close)}? " if close else "")
        raise DatasetError(f"data.dataset={name!r} is not a dataset of torchvision.datasets "
                           f"(torchvision {_tv_version()}); {hint}the classification datasets "
                           f"are: {', '.join(sorted(names))}")
    return cls


def _tv_version() -> str:
    import torchvision

    return torchvision.__version__


def _known(name: str) -> KnownSet | None:
    return KNOWN.get(name)


def _constructor_args(cls: type) -> set[str]:
    try:
        return set(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return set()


# split names a torchvision dataset may use, by the split they stand for here
_SPLIT_NAMES = {"train": ("train", "trainval", "training"), "val": ("val", "valid", "validation"),
                "test": ("test", "testing")}


class _Opener:
    """Constructs the splits of one torchvision dataset, turning a missing dataset into an
    error that names the expected path and layout."""

    def __init__(self, name: str, root: Path, options: Mapping[str, Any], download: bool) -> None:
        self.name, self.cls = name, dataset_class(name)
        self.known = _known(name)
        self.root, self.download = root, download
        self.options = {**(self.known.options if self.known else {}), **dict(options or {})}
        self.args = _constructor_args(self.cls)
        # set here, never by data.options (EMNIST's split= is its subset, not a split)
        ours = {"root", "download", "transform", "target_transform", "transforms", "loader",
                "train"} | ({"split"} if name != "EMNIST" else set())
        unknown = set(self.options) - (self.args - ours) if self.args else set()
        if unknown:
            raise DatasetError(
                f"data.options has {sorted(unknown)}, which torchvision's {name} does not take "
                f"(or which the data module sets itself); its options: "
                f"{', '.join(sorted(self.args - ours)) or 'none'}")

    @property
    def layout(self) -> str:
        return self.known.layout if self.known else (
            f"the files torchvision's {self.name} reads (see its documentation)")

    def open(self, split_kwargs: Mapping[str, Any], *, download: bool | None = None) -> Dataset:
        kwargs: dict[str, Any] = {**self.options, **split_kwargs}
        if "root" in self.args:
            kwargs["root"] = str(self.root)
        if "download" in self.args:
            kwargs["download"] = self.download if download is None else download
        try:
            return self.cls(**kwargs)
        except (RuntimeError, FileNotFoundError, OSError) as err:  # missing, corrupt, offline
            fix = ("Put the files there, or point data.root=/path/to/datasets at the folder "
                   "that holds them")
            if "download" in self.args and not kwargs.get("download"):
                fix += ", or set data.download=true (torchvision downloads it)"
            why = str(err).splitlines()[0] if str(err) else repr(err)
            raise DatasetError(
                f"{self.name}: cannot read it under {self.root} ({type(err).__name__}: {why}). "
                f"Expected layout under data.root: {self.layout}. {fix}.") from None

    def split_kwargs(self) -> dict[str, dict[str, Any] | None]:
        """Keyword arguments of train/val/test (``None``: not defined by the dataset)."""
        if self.known is not None and (self.known.splits or not (
                {"train", "split"} & self.args)):
            found = {s: dict(self.known.splits[s]) if s in self.known.splits else None
                     for s in ("train", "val", "test")}
            found["train"] = found["train"] or {}  # one split: the dataset itself
            return found
        if "train" in self.args and self.name != "EMNIST":
            return {"train": {"train": True}, "val": None, "test": {"train": False}}
        if "split" in self.args:
            return self._probe_split_names()
        return {"train": {}, "val": None, "test": None}

    def _probe_split_names(self) -> dict[str, dict[str, Any] | None]:
        """The split names an unknown dataset accepts: torchvision checks them
        (``verify_str_arg``) before it reads any file, so a refused name is a ``ValueError``."""
        found: dict[str, dict[str, Any] | None] = {"train": None, "val": None, "test": None}
        for ours, candidates in _SPLIT_NAMES.items():
            for theirs in candidates:
                try:
                    self.open({"split": theirs}, download=False)
                except ValueError:
                    continue
                except DatasetError:
                    pass  # a valid name whose files are missing: reported when it is read
                found[ours] = {"split": theirs}
                break
        if found["train"] is None:
            raise DatasetError(f"torchvision's {self.name} takes split= but none of "
                               f"{', '.join(_SPLIT_NAMES['train'])}: name its training split "
                               "with data.options or choose another dataset")
        if found["test"] is None and found["val"] is not None:
            found["test"], found["val"] = found["val"], None  # its only held-out split
        return found


def _labels_of(ds: Any) -> list[int] | None:
    """The labels of a torchvision dataset without decoding its images, where it keeps them."""
    for attr in ("targets", "labels", "_labels", "y"):
        value = getattr(ds, attr, None)
        if value is not None and not isinstance(value, (str, bytes)):
            try:
                return [int(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]
            except (TypeError, ValueError):
                return None
    for attr in ("_samples", "samples", "imgs"):
        value = getattr(ds, attr, None)
        if isinstance(value, list) and (not value or isinstance(value[0], tuple)):
            return [int(v[1]) for v in value]
    return None


def _classes_of(ds: Any, known: KnownSet | None, labels: list[int]) -> list[str]:
    for attr in ("classes", "categories"):
        value = getattr(ds, attr, None)
        if isinstance(value, (list, tuple)) and value:
            # Imagenette: a tuple of synonyms per class; the first names it
            return [str(v[0]) if isinstance(v, (list, tuple)) else str(v) for v in value]
    if known is not None and known.classes:
        return list(known.classes)
    return [str(i) for i in range(max(labels, default=-1) + 1)]


def _check_target(ds: Any, name: str) -> None:
    """A classification dataset's target is one integer; anything else is refused."""
    if len(ds) == 0:
        return
    _, target = ds[0]
    if isinstance(target, (bool, str)) or (not isinstance(target, (int, np.integer)) and not (
            isinstance(target, torch.Tensor) and target.numel() == 1)):
        raise DatasetError(f"data.dataset={name}: its targets are {type(target).__name__} "
                           f"({str(target)[:60]}), not one class index: not an image "
                           "classification dataset (or its options ask for another target type)")


def _array_attr(ds: Any) -> np.ndarray | None:
    """The dataset's uint8 image array where it keeps one (MNIST family, CIFAR, STL-10, SVHN,
    USPS): reading it costs no decoding."""
    data = getattr(ds, "data", None)
    if isinstance(data, torch.Tensor):
        data = data.numpy()
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or len(data) != len(ds):
        return None
    if data.ndim == 3:
        return data[:, None]
    if data.ndim == 4 and data.shape[1] in (1, 3):
        return data
    if data.ndim == 4 and data.shape[-1] in (1, 3):
        return data.transpose(0, 3, 1, 2)
    return None


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _to_array(ds: Any, name: str, split: str, side: int, channels: int) -> ArrayData:
    """A whole split as one uint8 tensor (refused, naming the size, where it does not fit)."""
    labels = _labels_of(ds)
    need = len(ds) * channels * side * side
    avail = _available_memory()
    if avail is not None and need > avail // 2:
        raise DatasetError(
            f"{name} {split}: {len(ds)} images of {channels}×{side}×{side} need "
            f"{need / 2**30:.1f} GiB in memory, more than half of the {avail / 2**30:.1f} GiB "
            f"available; the in-memory loaders cannot hold it. Use a machine with more memory "
            f"or a subset of the dataset")
    array = _array_attr(ds)
    if array is None:  # decode each image (EuroSAT: 27,000 small JPEGs, a few seconds)
        from torchvision.transforms.v2.functional import pil_to_tensor

        out = torch.empty((len(ds), channels, side, side), dtype=torch.uint8)
        found = []
        for i in range(len(ds)):
            image, label = ds[i]
            x = image if isinstance(image, torch.Tensor) else pil_to_tensor(
                image.convert("L" if channels == 1 else "RGB"))
            if tuple(x.shape) != (channels, side, side):
                raise DatasetError(f"{name} {split}: image {i} is {tuple(x.shape)}, not "
                                   f"{(channels, side, side)}; its images vary in size, so it "
                                   "cannot be held in memory: use data.loader=torch")
            out[i] = x
            found.append(int(label))
        images, labels = out, found
    else:
        images = torch.from_numpy(np.ascontiguousarray(array))
    if labels is None:
        raise DatasetError(f"{name} {split}: its labels cannot be read")
    classes = _classes_of(ds, _known(name), labels)
    return ArrayData(images, torch.tensor(labels, dtype=torch.int64), classes)


_DESCRIBED: dict[str, dict[str, int]] = {}


def _describe(name: str, options: Mapping[str, Any], root: str, download: bool
              ) -> dict[str, int]:
    opener = _Opener(name, Path(root), options, download)
    known = opener.known
    if name == "FGVCAircraft":  # the class count follows the annotation level
        level = opener.options.get("annotation_level", "variant")
        if level not in _ANNOTATION_CLASSES:
            raise DatasetError(f"data.options.annotation_level={level!r}: choose one of "
                               f"{', '.join(_ANNOTATION_CLASSES)}")
        return {"num_classes": _ANNOTATION_CLASSES[level], "in_channels": 3, "image_size": 224}
    if known is not None and known.num_classes is not None:
        return {"num_classes": known.num_classes, "in_channels": known.in_channels,
                "image_size": known.image_size}
    if name == "EMNIST":
        from torchvision.datasets import EMNIST

        split = opener.options.get("split", "balanced")
        if split not in EMNIST.classes_split_dict:
            raise DatasetError(f"data.options.split={split!r} is not an EMNIST split; "
                               f"choose one of {', '.join(EMNIST.classes_split_dict)}")
        return {"num_classes": len(EMNIST.classes_split_dict[split]), "in_channels": 1,
                "image_size": 28}
    ds = opener.open(opener.split_kwargs()["train"] or {})
    _check_target(ds, name)
    labels = _labels_of(ds)
    if labels is None:
        labels = [int(ds[i][1]) for i in range(len(ds))]
    classes = _classes_of(ds, known, labels)
    image = ds[0][0] if len(ds) else None
    if isinstance(image, torch.Tensor):
        channels, side = int(image.shape[0]), int(min(image.shape[-2:]))
    elif image is not None:
        channels, side = (1 if image.mode in ("L", "1", "I", "F") else 3), min(image.size)
    else:
        channels, side = 3, 224
    return {"num_classes": max(len(classes), max(labels, default=-1) + 1),
            "in_channels": channels, "image_size": side if side <= 64 else 224}


def describe(name: str, options: Mapping[str, Any] | None = None, root: str | os.PathLike = "data",
             download: bool = False) -> dict[str, int]:
    """``num_classes``, ``in_channels`` and ``image_size`` (the default network input) of the
    torchvision dataset ``name``: from :data:`KNOWN`, else read from its training split
    (which is then downloaded where ``download``). Cached per process."""
    options = dict(options or {})
    root = str(Path(root).expanduser())
    key = repr((name, sorted(options.items()), root, bool(download)))
    if key not in _DESCRIBED:
        _DESCRIBED[key] = _describe(name, options, root, bool(download))
    return dict(_DESCRIBED[key])


class TorchvisionDataModule(ImageDataModule):
    """:class:`ImageDataModule` for any classification dataset of ``torchvision.datasets``.

    ``dataset``: the class name (``Flowers102``); ``options``: further constructor
    arguments (EMNIST's ``split``, DTD's ``partition``, FGVC-Aircraft's ``annotation_level``,
    Imagenette's ``size``); ``test_fraction``: held out for testing where the dataset defines
    no test split. Everything else is :class:`ImageDataModule`'s.
    """

    def __init__(self, name: str = "torchvision", *, dataset: str,
                 options: Mapping[str, Any] | None = None, test_fraction: float = 0.2,
                 **kwargs: Any) -> None:
        from omegaconf import Container, OmegaConf

        # plain containers: the hyper-parameters go into checkpoints (weights-only loading)
        if isinstance(options, Container):
            options = OmegaConf.to_container(options, resolve=True)  # type: ignore[assignment]
        options = {str(k): (list(v) if isinstance(v, (list, tuple)) else v)
                   for k, v in dict(options or {}).items()}
        if not 0.0 < test_fraction < 1.0:
            raise DatasetError(f"data.test_fraction must be in (0, 1), got {test_fraction}")
        root = Path(kwargs.get("root", "data")).expanduser()
        self.opener = _Opener(dataset, root, options, bool(kwargs.get("download", False)))
        known = self.opener.known
        self.native_size = known.native_size if known else None
        if known is None:  # an array attribute: equal-sized images, held in memory
            probe = None
            # missing files are reported by prepare_data/setup, with the layout
            with contextlib.suppress(DatasetError):
                probe = self.opener.open(self.opener.split_kwargs()["train"] or {})
            if probe is not None and (arr := _array_attr(probe)) is not None \
                    and arr.shape[-1] == arr.shape[-2]:
                self.native_size = int(arr.shape[-1])
        loader, decoder = kwargs.get("loader", "auto"), kwargs.get("decoder", "auto")
        if loader == "fast" and self.native_size is None:
            raise DatasetError(
                f"data.loader=fast: {dataset}'s images vary in size, and the fast path keeps "
                f"a dataset as one fixed-size uint8 tensor on the device; use data.loader=torch "
                f"(or auto): its images are decoded per image in the DataLoader workers")
        if decoder not in ("auto", "pil"):
            raise DatasetError(f"data.decoder={decoder}: torchvision's {dataset} decodes its "
                               "own files (with PIL); remove the override")
        kwargs.pop("decoder", None)
        self.dataset_name, self.options, self.test_fraction = dataset, options, test_fraction
        self.augment_asked = kwargs.get("augment", True)
        super().__init__(name, **kwargs)
        self.decoder = None  # images reach the workers' transforms decoded by torchvision
        self.stats_given = kwargs.get("mean") is not None
        if self.spec.recipe == "resize" and kwargs.get("resize_size") is None:
            self.resize_size = self.image_size  # square images: resize and keep all of it
        self.info: dict[str, Any] = {}

    def dataset_spec(self, name: str) -> DatasetSpec:
        known = self.opener.known
        facts = describe(self.opener.name, self.opener.options, self.opener.root,
                         self.opener.download)
        channels = facts["in_channels"]
        in_memory = self.native_size is not None
        recipe = known.recipe if known else ("none" if in_memory else "imagenet")
        mean, std = known.stats if known and known.stats else ((0.5,) * 3, (0.25,) * 3)
        mean, std = match_stats(mean, std, channels)
        return DatasetSpec(
            f"{self.opener.name}", facts["num_classes"], channels,
            self.native_size if in_memory and self.native_size <= 64 else facts["image_size"],
            mean, std, recipe, in_memory, self.opener.layout,
            splits=tuple(s for s, kw in self.opener.split_kwargs().items() if kw is not None))

    # ------------------------------------------------------------------ reading
    def prepare_data(self) -> None:
        """Download every split where asked (rank 0 only); nothing otherwise."""
        if not self.hparams.download or "download" not in self.opener.args:
            return
        for kw in self.opener.split_kwargs().values():
            if kw is not None:
                self.opener.open(kw, download=True)

    def _open_splits(self) -> dict[str, Dataset | None]:
        kwargs = self.opener.split_kwargs()
        opened = {s: (self.opener.open(kw, download=False) if kw is not None else None)
                  for s, kw in kwargs.items()}
        _check_target(opened["train"], self.opener.name)
        return opened

    def _parts(self, n_train: int, has_val: bool, has_test: bool, n_test: int = 0
               ) -> dict[str, list[int]]:
        """Positions in the training split of train / val / test (test: a fixed-seed cut
        where the dataset has no test split; val: a run-seed cut where it has no val)."""
        rest = list(range(n_train))
        parts: dict[str, list[int]] = {}
        if not has_test:
            kept, parts["test"] = held_out(n_train, self.test_fraction, TEST_SPLIT_SEED)
            rest = kept
        if not has_val:
            if self.hparams.val_fraction == 0:
                raise DatasetError(f"{self.opener.name} has no validation split: "
                                   "data.val_fraction must be above 0")
            kept, va = held_out(len(rest), self.hparams.val_fraction, self.hparams.seed)
            parts["val"] = [rest[i] for i in va]
            rest = [rest[i] for i in kept]
        parts["train"] = rest
        return parts

    def _check_classes(self, classes: list[str]) -> None:
        if len(classes) != self.num_classes:
            raise DatasetError(f"{self.opener.name} has {len(classes)} classes but "
                               f"data.num_classes={self.num_classes}; set data.num_classes="
                               f"{len(classes)}")

    def _stats_key(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.opener.options.items()))
        return f"{self.opener.name}{'-' + opts if opts else ''}-train"

    def _set_stats(self, compute: Any) -> None:
        known = self.opener.known
        if self.stats_given or (known is not None and known.stats is not None):
            return
        mean, std = cached_stats(self.root, self._stats_key(), compute)
        self.mean, self.std = match_stats(mean, std, self.in_channels)

    def _setup_in_memory(self) -> None:
        opened = self._open_splits()
        side, native_channels = self.native_size, self._native_channels()
        assert side is not None
        arrays = {s: _to_array(ds, self.opener.name, s, side, native_channels)
                  for s, ds in opened.items() if ds is not None}
        full = arrays["train"]
        self._check_classes(full.classes)
        parts = self._parts(len(full), "val" in arrays, "test" in arrays)

        def take(idx: list[int]) -> ArrayData:
            t = torch.tensor(idx, dtype=torch.long)
            return ArrayData(full.images[t], full.labels[t], full.classes)

        train = take(parts["train"])
        self._set_stats(lambda: pixel_stats(train.images[i:i + 4096]
                                            for i in range(0, len(train), 4096)))
        self.classes = full.classes
        sets = {s: arrays.get(s) or take(parts[s]) for s in ("val", "test")}
        self.train_set = _match_channels(train, self.in_channels)
        self.val_set = _match_channels(sets["val"], self.in_channels)
        self.test_set = _match_channels(sets["test"], self.in_channels)

    def _native_channels(self) -> int:
        known = self.opener.known
        return known.in_channels if known else self.spec.in_channels

    def _setup_folders(self) -> None:
        """Per-image: each split a view of torchvision's dataset, decoded in the workers."""
        opened = self._open_splits()
        train_ds = opened["train"]
        labels = _labels_of(train_ds)
        if labels is None:
            labels = [int(train_ds[i][1]) for i in range(len(train_ds))]
        classes = _classes_of(train_ds, self.opener.known, labels)
        self._check_classes(classes)
        self.classes = classes
        parts = self._parts(len(train_ds), opened["val"] is not None,
                            opened["test"] is not None)
        recipe = self.spec.recipe if self.spec.recipe in PER_IMAGE_RECIPES else "imagenet"

        def sample() -> Any:
            g = torch.Generator().manual_seed(TEST_SPLIT_SEED)
            pick = torch.randperm(len(parts["train"]), generator=g)[:STATS_SAMPLES].tolist()
            for i in pick:
                image = train_ds[parts["train"][i]][0]
                yield image_transform("resize", train=False, image_size=64, in_channels=3,
                                      resize_size=64, mean=(0.0,) * 3, std=(1 / 255,) * 3)(
                    image).round().clamp(0, 255).to(torch.uint8)

        self._set_stats(lambda: pixel_stats(sample()))

        def view(ds: Dataset, idx: list[int] | None, train: bool) -> ImageSplit:
            aug = train and bool(self.hparams.augment)
            tf = image_transform(recipe, train=aug,
                                 image_size=self.train_crop_size if train else self.image_size,
                                 in_channels=self.in_channels, resize_size=self.resize_size,
                                 mean=self.mean, std=self.std,
                                 policy=self.policy if train else None,
                                 random_erasing=self.random_erasing if train else 0.0)
            return ImageSplit(ds.__getitem__, list(range(len(ds))) if idx is None else idx, tf)

        self.train_set = view(train_ds, parts["train"], True)
        self.val_set = (view(opened["val"], None, False) if opened["val"] is not None
                        else view(train_ds, parts["val"], False))
        self.test_set = (view(opened["test"], None, False) if opened["test"] is not None
                         else view(train_ds, parts["test"], False))
        if len(self.val_set) == 0:
            raise DatasetError(f"{self.opener.name}: the validation split is empty; raise "
                               "data.val_fraction")

    def state_dict(self) -> dict[str, Any]:
        """The base's (class names, evaluation transform) with the dataset's name."""
        return {**super().state_dict(), "dataset": self.opener.name}
