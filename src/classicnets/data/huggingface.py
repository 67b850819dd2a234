"""Image-classification datasets of the Hugging Face hub, or local ones, through ``datasets``.

``data=huggingface data.name=uoft-cs/cifar10`` loads a hub dataset with
:func:`datasets.load_dataset` (into ``HF_HOME``'s cache, or ``data.cache_dir``; offline with
``HF_DATASETS_OFFLINE=1`` when it is cached); ``data.name`` may also be a local path: a folder
written by ``save_to_disk``, a Parquet file or a folder of them, or an image folder
(``<class>/<image>`` or ``<split>/<class>/<image>``, read by the ``imagefolder`` builder).

The image and label columns are found by their feature types (``Image``, ``ClassLabel``) or
names (``image``/``img``, ``label``/``labels``/...), or named by ``data.image_column`` /
``data.label_column``; class names come from the ``ClassLabel`` feature (string labels are
encoded with the training split's sorted names). The dataset's splits map to train / val /
test (``validation``, ``valid``, ``val`` or ``dev`` for val); ``data.val_fraction`` of train is
held out where there is no validation split, ``data.test_fraction`` (by a fixed seed) where
there is no test split. Images are decoded in the DataLoader workers, per image.

``data.streaming=true`` reads an :class:`datasets.IterableDataset` instead — nothing is
downloaded beforehand — shuffled through a buffer (``data.shuffle_buffer``) with a seed that
changes every epoch, and split between DDP ranks by :func:`datasets.distributed.
split_dataset_by_node` (and between DataLoader workers by ``datasets`` itself). Without a
validation split the first ``data.val_samples`` examples of train are the validation split.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from classicnets.data.catalogue import DatasetError, DatasetSpec
from classicnets.data.datamodule import ImageDataModule
from classicnets.data.splits import (
    TEST_SPLIT_SEED,
    ImageSplit,
    cached_stats,
    held_out,
    image_transform,
    match_stats,
    pixel_stats,
)

__all__ = ["HuggingFaceDataModule", "describe", "open_dataset"]

log = logging.getLogger(__name__)

IMAGE_NAMES = ("image", "img", "picture", "photo", "pixel_values")
LABEL_NAMES = ("label", "labels", "fine_label", "target", "class", "category", "coarse_label")
VAL_NAMES = ("validation", "valid", "val", "dev")
STATS_SAMPLES = 1000
_OPENED: dict[tuple, dict[str, Any]] = {}


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or name.endswith(
        (".parquet", ".arrow")) or os.sep + os.sep in name


def _offline() -> bool:
    import datasets

    return bool(datasets.config.HF_HUB_OFFLINE)


def _hub_error(name: str, cache_dir: str | None, err: Exception) -> DatasetError:
    import datasets

    cache = cache_dir or str(datasets.config.HF_DATASETS_CACHE)
    why = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    if _offline():
        return DatasetError(
            f"data.name={name}: offline mode is on (HF_DATASETS_OFFLINE or HF_HUB_OFFLINE is "
            f"set) and the dataset is not in the cache {cache} ({why}). Run once with network "
            f"access and HF_DATASETS_OFFLINE unset to download it, or point data.cache_dir (or "
            f"HF_HOME) at a cache that holds it")
    return DatasetError(
        f"data.name={name}: cannot load it from the Hugging Face hub ({why}). Check the id "
        f"(owner/name, as on the hub), data.subset for a dataset with several configurations, "
        f"the network, and HF_TOKEN for a gated dataset; or give a local path")


def _load(name: str, subset: str | None, revision: str | None, cache_dir: str | None,
          streaming: bool) -> dict[str, Any]:
    """The dataset's splits by name (``Dataset`` or, streaming, ``IterableDataset``)."""
    import datasets

    path = Path(name).expanduser()
    common: dict[str, Any] = {"cache_dir": cache_dir, "streaming": streaming}
    if path.exists():
        if path.is_dir() and ((path / "dataset_dict.json").is_file()
                              or (path / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(path))  # memory-mapped Arrow files
            if streaming:
                loaded = ({k: v.to_iterable_dataset() for k, v in loaded.items()}
                          if isinstance(loaded, datasets.DatasetDict)
                          else loaded.to_iterable_dataset())
        elif path.is_file() and path.suffix == ".parquet":
            loaded = datasets.load_dataset("parquet", data_files={"train": str(path)}, **common)
        elif path.is_dir() and next(path.rglob("*.parquet"), None) is not None:
            # split names from the file names (train-*.parquet, test/...), as the hub does
            loaded = datasets.load_dataset("parquet", data_dir=str(path), **common)
        elif path.is_dir():
            loaded = datasets.load_dataset("imagefolder", data_dir=str(path), **common)
        else:
            raise DatasetError(f"data.name={name}: {path} is a file but not a Parquet file; "
                               "give a save_to_disk folder, a Parquet file or folder, or an "
                               "image folder")
    elif _looks_like_path(name):
        raise DatasetError(f"data.name={name}: {path} does not exist. Give an existing folder "
                           "written by save_to_disk, a Parquet file or folder, an image folder, "
                           "or a hub id (owner/name)")
    else:
        try:
            loaded = datasets.load_dataset(name, subset, revision=revision, **common)
        except DatasetError:
            raise
        except Exception as err:  # the hub's, the cache's and the network's errors differ
            raise _hub_error(name, cache_dir, err) from None
    if not isinstance(loaded, Mapping):
        loaded = {"train": loaded}
    return dict(loaded)


def open_dataset(name: str, *, subset: str | None = None, revision: str | None = None,
                 cache_dir: str | os.PathLike | None = None, streaming: bool = False
                 ) -> dict[str, Any]:
    """:func:`_load`, once per process for the same arguments (the config's resolver and the
    DataModule both ask)."""
    key = (str(name), subset, revision, str(cache_dir) if cache_dir else None, bool(streaming))
    if key not in _OPENED:
        _OPENED[key] = _load(*key[:3], key[3], key[4])
    return _OPENED[key]


def _features(ds: Any) -> Mapping[str, Any]:
    feats = getattr(ds, "features", None)
    if feats is None:  # a stream without declared features: the first example's columns
        first = next(iter(ds), None)
        return {k: type(v).__name__ for k, v in (first or {}).items()}
    return feats


def _describe_columns(feats: Mapping[str, Any]) -> str:
    def kind(f: Any) -> str:
        name = type(f).__name__
        if name == "Value":
            return f"Value({f.dtype})"
        if name == "ClassLabel":
            return f"ClassLabel({f.num_classes} classes)"
        return name if not isinstance(f, str) else f

    return ", ".join(f"{k} ({kind(f)})" for k, f in feats.items()) or "none"


def find_columns(feats: Mapping[str, Any], image_column: str | None, label_column: str | None,
                 name: str) -> tuple[str, str]:
    """The image and label column names (given, or found by type, then by name)."""
    cols = list(feats)

    def typed(kind: str) -> list[str]:
        return [c for c in cols if type(feats[c]).__name__ == kind]

    def pick(given: str | None, kind: str, names: tuple[str, ...], what: str) -> str:
        if given is not None:
            if given not in feats:
                raise DatasetError(f"data.{what}_column={given}: {name} has no such column; "
                                   f"its columns: {_describe_columns(feats)}")
            return given
        # of several typed columns (CIFAR-100: fine_label, coarse_label) the best-named one
        of_type = typed(kind)
        found = sorted(of_type, key=lambda c: names.index(c) if c in names else len(names)) \
            or [c for c in names if c in feats]
        if not found:
            raise DatasetError(
                f"{name} has no {what} column (none of type {kind}, none named "
                f"{'/'.join(names)}); its columns: {_describe_columns(feats)}. Name it with "
                f"data.{what}_column=<column>" + (
                    "" if what == "image" else " (a column of class indices or names)"))
        return found[0]

    image = pick(image_column, "Image", IMAGE_NAMES, "image")
    label = pick(label_column, "ClassLabel", LABEL_NAMES, "label")
    if image == label:
        raise DatasetError(f"{name}: data.image_column and data.label_column are both {image}")
    return image, label


def _as_image(value: Any) -> Any:
    """A PIL image or a uint8 ``(C, H, W)`` tensor from what an image column holds."""
    if hasattr(value, "convert"):  # PIL, decoded by the Image feature
        return value
    if isinstance(value, Mapping) and value.get("bytes") is not None:  # undecoded Image
        from PIL import Image

        return Image.open(io.BytesIO(value["bytes"]))
    if isinstance(value, Mapping) and value.get("path"):
        from PIL import Image

        return Image.open(value["path"])
    array = np.asarray(value)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise DatasetError(f"an image column value of shape {array.shape} is not an image")
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8) if array.max() <= 1 \
            else np.clip(array, 0, 255).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class _Rows:
    """Position → ``(image, label)`` of a ``datasets.Dataset``; picklable (the Arrow files are
    memory-mapped by path), so each DataLoader worker decodes the images it serves."""

    def __init__(self, ds: Any, image: str, label: str, to_index: Mapping[str, int] | None
                 ) -> None:
        self.ds, self.image, self.label, self.to_index = ds, image, label, to_index

    def __call__(self, i: int) -> tuple[Any, int]:
        row = self.ds[int(i)]
        y = row[self.label]
        return _as_image(row[self.image]), int(self.to_index[y] if self.to_index else y)


class StreamSplit(IterableDataset):
    """``(transform(image), label)`` from a ``datasets.IterableDataset``; ``datasets`` gives
    each DataLoader worker its own shards."""

    def __init__(self, ds: Any, image: str, label: str, to_index: Mapping[str, int] | None,
                 transform: Any) -> None:
        super().__init__()
        self.ds, self.image, self.label = ds, image, label
        self.to_index, self.transform = to_index, transform

    def set_epoch(self, epoch: int) -> None:
        """A new shuffle (shard order and buffer) for each epoch."""
        if hasattr(self.ds, "set_epoch"):
            self.ds.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[Tensor, int]]:
        for row in self.ds:
            y = row[self.label]
            yield (self.transform(_as_image(row[self.image])),
                   int(self.to_index[y] if self.to_index else y))


class EpochLoader(DataLoader):
    """A DataLoader of a :class:`StreamSplit` that sets the stream's epoch before each pass
    (Lightning sets epochs on samplers, which an iterable dataset has none of), from
    ``epoch()``: the trainer's current epoch, so a resumed run shuffles as the first did."""

    def __init__(self, *args: Any, epoch: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.epoch, self.passes = epoch, 0

    def __iter__(self) -> Any:
        epoch = self.epoch() if callable(self.epoch) else self.passes
        self.dataset.set_epoch(int(epoch))
        self.passes += 1
        return super().__iter__()


def _label_names(feats: Mapping[str, Any], label: str, train: Any, streaming: bool,
                 name: str) -> tuple[list[str] | None, dict[str, int] | None]:
    """(class names or None when only the count is known, a str → index map for string
    labels)."""
    feat = feats[label]
    kind = type(feat).__name__
    if kind == "ClassLabel":
        return list(feat.names), None
    dtype = str(getattr(feat, "dtype", ""))
    if streaming:
        if dtype.startswith(("int", "uint")):
            return None, None
        raise DatasetError(
            f"{name}: the label column {label} is {_describe_columns({label: feat})}; streaming "
            f"needs class indices or a ClassLabel column (string labels need the whole split "
            f"to name the classes): use data.streaming=false or another label column")
    values = train[label]
    if dtype in ("string", "large_string") or (values and isinstance(values[0], str)):
        names = sorted({str(v) for v in values})
        return names, {n: i for i, n in enumerate(names)}
    if dtype.startswith(("int", "uint")) or (values and isinstance(values[0], (int,
                                                                              np.integer))):
        top = max((int(v) for v in values), default=-1)
        if min((int(v) for v in values), default=0) < 0:
            raise DatasetError(f"{name}: the label column {label} holds negative values "
                               "(unlabelled examples?); choose a labelled split or column")
        return [str(i) for i in range(top + 1)], None
    raise DatasetError(f"{name}: the label column {label} is {_describe_columns({label: feat})}, "
                       f"not class indices or names; name another with data.label_column "
                       f"(columns: {_describe_columns(feats)})")


def known_count(ds: Any) -> int | None:
    """The number of examples of a (streamed) split where its metadata records it."""
    splits = getattr(getattr(ds, "info", None), "splits", None)
    name = str(getattr(ds, "split", "") or "")
    if not splits or name not in splits:
        return None
    count = getattr(splits[name], "num_examples", None)
    return int(count) if count else None


def _map_splits(splits: Mapping[str, Any], name: str) -> dict[str, str | None]:
    """Our train/val/test → the dataset's split names (None: drawn from train)."""
    keys = list(splits)
    train = "train" if "train" in splits else (keys[0] if len(keys) == 1 else None)
    if train is None:
        raise DatasetError(f"{name} has no train split (its splits: {', '.join(keys)}); "
                           "save it with a split named train")
    val = next((k for k in VAL_NAMES if k in splits), None)
    return {"train": train, "val": val, "test": "test" if "test" in splits else None}


def _first_image(ds: Any, image: str) -> Any:
    import datasets

    if isinstance(ds, datasets.IterableDataset):
        first = next(iter(ds), None)
    else:
        first = ds[0] if len(ds) else None
    return None if first is None else _as_image(first[image])


class _Described:
    """What a Hugging Face dataset is, worked out once (columns, classes, shape)."""

    def __init__(self, name: str, *, subset: str | None, revision: str | None,
                 cache_dir: str | None, streaming: bool, image_column: str | None,
                 label_column: str | None) -> None:
        self.name, self.streaming = name, streaming
        self.splits = open_dataset(name, subset=subset, revision=revision, cache_dir=cache_dir,
                                   streaming=streaming)
        self.names = _map_splits(self.splits, name)
        train = self.splits[self.names["train"]]
        feats = _features(train)
        self.image, self.label = find_columns(feats, image_column, label_column, name)
        self.classes, self.to_index = _label_names(feats, self.label, train, streaming, name)
        image = _first_image(train, self.image)
        if isinstance(image, Tensor):
            self.channels, side = int(image.shape[0]), int(min(image.shape[-2:]))
        elif image is not None:
            self.channels = 1 if image.mode in ("L", "1", "I", "I;16", "F") else 3
            side = min(image.size)
        else:
            self.channels, side = 3, 224
        self.image_size = side if side <= 64 else 224

    def info(self) -> dict[str, Any]:
        return {"num_classes": len(self.classes) if self.classes else None,
                "in_channels": self.channels, "image_size": self.image_size}


def _described(cfg: Mapping[str, Any]) -> _Described:
    return _Described(str(cfg["name"]), subset=cfg.get("subset"), revision=cfg.get("revision"),
                      cache_dir=cfg.get("cache_dir"), streaming=bool(cfg.get("streaming")),
                      image_column=cfg.get("image_column"), label_column=cfg.get("label_column"))


def describe(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``num_classes``, ``in_channels``, ``image_size`` of a ``data=huggingface`` config's
    dataset (``num_classes`` is ``None`` where a stream has bare integer labels)."""
    info = _described(cfg).info()
    if info["num_classes"] is None:
        raise DatasetError(f"{cfg['name']}: the label column has no ClassLabel feature, so the "
                           "number of classes is unknown while streaming; set "
                           "data.num_classes=<count>")
    return info


class HuggingFaceDataModule(ImageDataModule):
    """:class:`ImageDataModule` for a Hugging Face dataset ``name`` (hub id or local path).

    ``subset``/``revision``: :func:`datasets.load_dataset`'s configuration name and revision;
    ``cache_dir``: its cache (default: ``HF_HOME``'s); ``image_column``/``label_column``:
    found when ``None``; ``streaming``: an iterable dataset, shuffled through
    ``shuffle_buffer`` examples, with ``val_samples`` held out where there is no validation
    split; ``test_fraction``: held out for testing where there is no test split.
    Everything else is :class:`ImageDataModule`'s (per-image path only).
    """

    def __init__(self, name: str, *, subset: str | None = None, revision: str | None = None,
                 cache_dir: str | os.PathLike | None = None, image_column: str | None = None,
                 label_column: str | None = None, streaming: bool = False,
                 shuffle_buffer: int = 1000, val_samples: int = 1000,
                 test_fraction: float = 0.2, **kwargs: Any) -> None:
        if not 0.0 < test_fraction < 1.0:
            raise DatasetError(f"data.test_fraction must be in (0, 1), got {test_fraction}")
        if kwargs.get("loader", "auto") == "fast":
            raise DatasetError("data.loader=fast: data=huggingface decodes each image in the "
                               "DataLoader workers; use data.loader=torch (or auto)")
        if kwargs.get("decoder", "auto") not in ("auto", "pil"):
            raise DatasetError(f"data.decoder={kwargs['decoder']}: the datasets library "
                               "decodes a Hugging Face dataset's images; remove the override")
        kwargs.pop("decoder", None)
        if shuffle_buffer < 1 or val_samples < 1:
            raise DatasetError("data.shuffle_buffer and data.val_samples must be positive")
        self.described = _Described(
            str(name), subset=subset, revision=revision,
            cache_dir=None if cache_dir is None else str(Path(cache_dir).expanduser()),
            streaming=streaming, image_column=image_column, label_column=label_column)
        self.test_fraction = test_fraction
        super().__init__(str(name), **kwargs)
        self.decoder = None  # decoded by datasets' Image feature, in the workers
        self.stats_given = kwargs.get("mean") is not None

    def dataset_spec(self, name: str) -> DatasetSpec:
        d = self.described
        mean, std = match_stats((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), d.channels)
        n = len(d.classes) if d.classes else None
        return DatasetSpec(name, n, d.channels, d.image_size, mean, std, "imagenet", False,
                           "a Hugging Face dataset: a hub id, a save_to_disk folder, a Parquet "
                           "file or folder, or an image folder",
                           splits=tuple(k for k, v in d.names.items() if v))

    def prepare_data(self) -> None:
        """Nothing: ``datasets`` downloaded (or found in its cache) when the module was made."""

    def _transform(self, train: bool) -> Any:
        return image_transform("imagenet", train=train and bool(self.hparams.augment),
                               image_size=self.train_crop_size if train else self.image_size,
                               in_channels=self.in_channels,
                               resize_size=self.resize_size, mean=self.mean, std=self.std,
                               policy=self.policy if train else None,
                               random_erasing=self.random_erasing if train else 0.0)

    def _classes(self) -> list[str]:
        d = self.described
        return d.classes or [str(i) for i in range(self.num_classes)]

    def _set_stats(self, images: Any) -> None:
        if self.stats_given:
            return
        h = self.hparams
        key = f"hf-{h.name}-{h.subset or ''}-{h.revision or ''}-train"
        mean, std = cached_stats(self.root, key, lambda: pixel_stats(images()))
        self.mean, self.std = match_stats(mean, std, self.in_channels)

    def setup(self, stage: str | None = None) -> None:
        self.per_device_batch_size  # noqa: B018 — fail before any data is read
        if self.train_set is not None:
            return
        if self.described.streaming:
            self._setup_stream()
            log.info("%s (streaming): %d classes, %s", self.hparams.name, self.num_classes,
                     {k: v for k, v in self.described.names.items()})
            return
        super().setup(stage)

    def _small(self, image: Any) -> Tensor:
        """An image at 64 px in uint8, for the statistics."""
        return image_transform("resize", train=False, image_size=64, in_channels=3,
                               resize_size=64, mean=(0.0,) * 3, std=(1 / 255,) * 3)(
            image).round().clamp(0, 255).to(torch.uint8)

    def _setup_folders(self) -> None:
        d = self.described
        self.classes = self._classes()
        if len(self.classes) != self.num_classes:
            raise DatasetError(f"{self.hparams.name} has {len(self.classes)} classes but "
                               f"data.num_classes={self.num_classes}; set data.num_classes="
                               f"{len(self.classes)}")
        splits = {k: (d.splits[v].select_columns([d.image, d.label]) if v else None)
                  for k, v in d.names.items()}
        train = splits["train"]
        rest = list(range(len(train)))
        parts: dict[str, list[int]] = {}
        if splits["test"] is None:
            rest, parts["test"] = held_out(len(train), self.test_fraction, TEST_SPLIT_SEED)
        if splits["val"] is None:
            if self.hparams.val_fraction == 0:
                raise DatasetError(f"{self.hparams.name} has no validation split: "
                                   "data.val_fraction must be above 0")
            kept, va = held_out(len(rest), self.hparams.val_fraction, self.hparams.seed)
            parts["val"], rest = [rest[i] for i in va], [rest[i] for i in kept]
        parts["train"] = rest
        rows = {k: _Rows(v, d.image, d.label, d.to_index) for k, v in splits.items() if v}

        def sample() -> Iterator[Tensor]:
            g = torch.Generator().manual_seed(TEST_SPLIT_SEED)
            pick = torch.randperm(len(rest), generator=g)[:STATS_SAMPLES].tolist()
            for i in pick:
                yield self._small(rows["train"](rest[i])[0])

        self._set_stats(sample)

        def view(split: str, train_: bool) -> ImageSplit:
            if split in parts:
                return ImageSplit(rows["train"], parts[split], self._transform(train_))
            return ImageSplit(rows[split], range(len(splits[split])), self._transform(train_))

        self.train_set, self.val_set, self.test_set = (
            view("train", True), view("val", False), view("test", False))
        for s, part in (("validation", self.val_set), ("training", self.train_set)):
            if len(part) == 0:
                raise DatasetError(f"{self.hparams.name}: the {s} split is empty; lower "
                                   "data.val_fraction/data.test_fraction or add examples")

    def _setup_stream(self) -> None:
        from datasets.distributed import split_dataset_by_node

        d, h = self.described, self.hparams
        self.classes = self._classes()
        world, rank = self._replica()
        train = d.splits[d.names["train"]]
        if d.names["val"] is not None:
            val = d.splits[d.names["val"]]
        else:  # the stream's first examples; the rest trains
            val, train = train.take(h.val_samples), train.skip(h.val_samples)
        test = d.splits[d.names["test"]] if d.names["test"] else None
        if test is None:
            log.warning("%s has no test split: testing on the validation split (streaming)",
                        h.name)

        if self.repeats != 1:
            # an IterableDataset takes no sampler: it cannot serve an example k times an epoch
            raise DatasetError(
                f"data.repeated_augmentation={self.repeats}: a streamed dataset "
                f"(data.streaming=true) serves each example once per epoch and cannot repeat "
                f"examples; set data.repeated_augmentation=1, or data.streaming=false")
        if next(iter(train.take(1)), None) is None:  # nothing to train on: say why, before
            held = (f"the first data.val_samples={h.val_samples} examples are held out for "
                    f"validation (it has no validation split); lower data.val_samples"
                    if d.names["val"] is None else "check the dataset's training split")
            raise DatasetError(f"{h.name} (streaming): the training stream is empty: {held}")

        def first_images() -> Iterator[Tensor]:
            for row in train.take(STATS_SAMPLES):
                yield self._small(_as_image(row[d.image]))

        self._set_stats(first_images)
        train = train.shuffle(seed=h.seed, buffer_size=h.shuffle_buffer)
        # examples per split where the dataset's metadata says (hub datasets): every rank is
        # cut to the same number, so DDP ranks run the same steps and none waits forever
        n_train = known_count(d.splits[d.names["train"]])
        if d.names["val"] is None:
            n_val: int | None = h.val_samples
            n_train = None if n_train is None else max(0, n_train - h.val_samples)
        else:
            n_val = known_count(val)
        n_test = known_count(test) if test is not None else None

        def shard(ds: Any, count: int | None) -> Any:
            if world == 1:
                return ds
            part = split_dataset_by_node(ds, rank=rank, world_size=world)
            if count is None:
                return part
            # datasets deals out whole shards where their number divides by the world size
            # (take() then counts this rank's examples; equal shares need equal shards), else
            # every world-th example (take() counts them before they are dealt out)
            by_shards = ds.num_shards % world == 0
            return part.take(count // world if by_shards else count // world * world)

        self.train_set = StreamSplit(shard(train, n_train), d.image, d.label, d.to_index,
                                     self._transform(True))
        self.val_set = StreamSplit(shard(val, n_val), d.image, d.label, d.to_index,
                                   self._transform(False))
        self.test_set = self.val_set if test is None else StreamSplit(
            shard(test, n_test), d.image, d.label, d.to_index, self._transform(False))
        if world > 1 and n_train is None:
            log.warning("%s: the stream's size is unknown (no split sizes in its metadata); "
                        "DDP ranks may get one batch more or fewer than each other", h.name)

    def _loader(self, data: Any, train: bool) -> Any:
        if not isinstance(data, StreamSplit):
            return super()._loader(data, train)
        bs = self.per_device_batch_size if train else (
            self.hparams.eval_batch_size or self.per_device_batch_size)
        workers = self._num_workers()
        pin = self.hparams.pin_memory
        trainer = self.trainer
        return EpochLoader(
            data, batch_size=bs, num_workers=workers,
            pin_memory=torch.cuda.is_available() if pin is None else pin,
            persistent_workers=workers > 0 and self.hparams.persistent_workers,
            epoch=(lambda: trainer.current_epoch) if trainer is not None else None)

    def state_dict(self) -> dict[str, Any]:
        """The base's (class names, evaluation transform) with the dataset's name."""
        return {**super().state_dict(), "dataset": str(self.hparams.name)}
