"""Sharded streaming: any dataset config written once as litdata chunks, trained from a local
folder or an object store.

Why litdata (Lightning's own) and not WebDataset tars: its ``StreamingDataLoader`` is a stateful
loader that Lightning's loop saves in every checkpoint (``state_dict``: plain ints and strings)
and restores mid-epoch; its ``StreamingDataset`` splits chunks over every rank of every node
and every DataLoader worker, reshuffles per epoch from a seed, and reads ``s3://``, ``gs://``
and ``azure://`` URLs with a local chunk cache. WebDataset would need each of those written here.

A shard directory (``python src/shard.py data=<config> out=<dir>``)::

    <dir>/manifest.json          what the shards hold: the source dataset, the version (a hash
                                 of its data config), classes, channels, sizes, augmentation
                                 recipe, and per split the sample count and index.json's hash
    <dir>/{train,val,test}/      litdata's optimize output: index.json + chunk-*.bin

Each sample is ``{"index": int, "image": bytes, "label": int, "name": str}``: an image file's
bytes as they are (JPEG/PNG of an image folder), or an in-memory image encoded once as PNG
(lossless), with its position in the split and, for warnings, its name (the source file and
position: ``/photos/train/cat/1.jpg (train sample #7)``). The manifest is
written last, so a conversion that did not finish is refused.

Training (``data=shards data.path=<dir or URL>``) decodes in the DataLoader workers and applies
the same transforms as the source's own loader: the folder path's (torchvision decode,
random-resized-crop + flip on uint8, per-batch normalisation) for image folders, the in-memory
recipes' per-image transforms (:func:`~classicnets.data.transforms.sample_transform`) for
in-memory datasets.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import Subset, default_collate
from torchvision.io import ImageReadMode, encode_png

from classicnets.data.catalogue import ArrayData, DatasetError
from classicnets.data.decode import BatchNormalize, stack_uint8, uint8_folder_transform
from classicnets.data.fast import pair_to_device
from classicnets.data.gpu_decode import (
    GpuBatchDecoder,
    check_decoder,
    collate_encoded,
    decode_bytes,
    encoded_or_decoded,
    finish_encoded,
)
from classicnets.data.policies import AugmentPolicy, Ingredients
from classicnets.data.transforms import (
    RECIPES,
    Distortion,
    EvalTransform,
    eval_resize,
    sample_transform,
)

__all__ = [
    "MANIFEST",
    "Manifest",
    "ShardDataModule",
    "check_credentials",
    "config_version",
    "read_manifest",
    "write_shards",
]

log = logging.getLogger(__name__)
# litdata logs its cache budget at INFO for every dataset it opens (six per run), local ones too
logging.getLogger("litdata.utilities.format").setLevel(logging.WARNING)


class _EvalDropLastNote(logging.Filter):
    """litdata warns under DDP whenever drop_last is off, that collectives may hang on uneven
    batches; the evaluation loaders turn it off on purpose (no collective per step there)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "disabled the `drop_last` option" not in record.getMessage()


logging.getLogger("litdata.streaming.dataset").addFilter(_EvalDropLastNote())
MANIFEST = "manifest.json"
INDEX = "index.json"  # litdata's index of a split's chunks
FORMAT = 1
SPLITS = ("train", "val", "test")
# data-config keys that change how samples are loaded, not which samples there are: a shard
# directory's version leaves them out (batch size, workers, loader and augmentation options)
NOT_CONTENT = frozenset({"batch_size", "eval_batch_size", "num_workers", "pin_memory",
                         "persistent_workers", "loader", "decoder", "download", "channels_last",
                         "augment", "distortion", "root", "_target_"})
# object stores litdata reads, and how each finds credentials without network access
CREDENTIALS: dict[str, tuple[str, ...]] = {
    "s3": ("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", "AWS_PROFILE (a profile of "
           "~/.aws/credentials)", "AWS_WEB_IDENTITY_TOKEN_FILE (IRSA)",
           "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (ECS)", "data.storage_options="
           "{aws_access_key_id: ..., aws_secret_access_key: ..., endpoint_url: ...} (boto3's "
           "client arguments)"),
    "gs": ("GOOGLE_APPLICATION_CREDENTIALS (a service-account key file)",
           "gcloud auth application-default login "
           "(~/.config/gcloud/application_default_credentials.json)"),
    "azure": ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME and "
              "AZURE_STORAGE_ACCOUNT_KEY", "data.storage_options={account_url: ..., "
              "credential: ...} (BlobServiceClient's arguments)"),
}


# --------------------------------------------------------------------------- the manifest


@dataclass
class Manifest:
    """What a shard directory holds (``manifest.json``)."""

    source: str  # the catalogue dataset the shards were written from
    version: str  # config_version() of its data config
    kind: str  # "array" (in-memory images, PNG-encoded) or "folder" (image files as they were)
    classes: list[str]
    in_channels: int
    image_size: int  # the source config's network input side
    native_size: int | None  # in-memory images' side (None: folder images of any size)
    recipe: str  # the source's standard augmentation ("imagenet" for folders)
    mean: list[float]
    std: list[float]
    resize_size: int | None = None
    distortion: dict[str, Any] | None = None
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    format: int = FORMAT

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> Manifest:
        if d.get("format") != FORMAT:
            raise DatasetError(f"{where}: shard format {d.get('format')!r}, this version reads "
                               f"format {FORMAT}; write the shards again with python src/shard.py")
        try:
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except TypeError as err:
            raise DatasetError(f"{where} is not a classicnets shard manifest ({err}); write the "
                               "shards again with python src/shard.py") from None


def config_version(data_cfg: Mapping[str, Any]) -> str:
    """A short hash of a data config's content-defining keys (dataset, path, split seed, val
    fraction, sizes, ...): shards written from another version of the data get another one."""
    plain = {k: v for k, v in sorted(data_cfg.items()) if k not in NOT_CONTENT}
    blob = json.dumps(plain, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- object stores


def is_remote(path: str) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def check_credentials(url: str, storage_options: Mapping[str, Any] | None = None,
                      env: Mapping[str, str] | None = None, home: Path | None = None) -> None:
    """Refuse an object-store URL whose credentials cannot be found, naming what to set.

    Checks only what the store's client would look at first (environment variables, the usual
    credential files; explicit ``data.storage_options``, passed to the store's client, are taken
    as given): no network access."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    scheme = urlparse(url).scheme
    known = ", ".join(f"{s}://" for s in CREDENTIALS)
    if scheme not in CREDENTIALS:
        raise DatasetError(f"data.path={url}: unsupported URL scheme {scheme}://; use a local "
                           f"directory or one of {known}")
    if storage_options:  # the user passes credentials (or anon) explicitly
        return
    if scheme == "s3":
        found = (("AWS_ACCESS_KEY_ID" in env and "AWS_SECRET_ACCESS_KEY" in env)
                 or "AWS_PROFILE" in env or "AWS_WEB_IDENTITY_TOKEN_FILE" in env
                 or "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI" in env
                 or "AWS_CONTAINER_CREDENTIALS_FULL_URI" in env
                 or Path(env.get("AWS_SHARED_CREDENTIALS_FILE",
                                 home / ".aws" / "credentials")).is_file())
    elif scheme == "gs":
        found = ("GOOGLE_APPLICATION_CREDENTIALS" in env or (
            home / ".config" / "gcloud" / "application_default_credentials.json").is_file())
    else:
        found = "AZURE_STORAGE_CONNECTION_STRING" in env or (
            "AZURE_STORAGE_ACCOUNT_NAME" in env and "AZURE_STORAGE_ACCOUNT_KEY" in env)
    if not found:
        ways = "; or ".join(CREDENTIALS[scheme])
        raise DatasetError(f"data.path={url}: no {scheme}:// credentials found. Set {ways}")


@functools.lru_cache(maxsize=16)
def _fetch_remote_manifest(url: str, options: str) -> str:
    """The manifest of a remote shard directory, through litdata's downloader for its store."""
    from litdata.streaming.downloader import get_downloader

    with tempfile.TemporaryDirectory(prefix="classicnets-manifest-") as tmp:
        local = Path(tmp) / MANIFEST
        downloader = get_downloader(url, tmp, [], json.loads(options) or None)
        try:
            downloader.download_file(f"{url.rstrip('/')}/{MANIFEST}", str(local))
        except Exception as err:  # every store's client raises its own types
            raise DatasetError(f"data.path={url}: cannot read {MANIFEST} ({type(err).__name__}: "
                               f"{err}); check the URL and the credentials") from None
        if not local.is_file():
            raise DatasetError(f"data.path={url}: no {MANIFEST} there (not a classicnets shard "
                               "directory, or its conversion did not finish)")
        return local.read_text()


# --------------------------------------------------------------------------- checking


def read_manifest(path: str | os.PathLike, *, storage_options: Mapping[str, Any] | None = None,
                  version: str | None = None, check: bool = True) -> Manifest:
    """The manifest of a shard directory, after checking the directory is whole.

    Local directories: every split's ``index.json`` is the one the manifest was written with
    (its hash), holds the manifest's sample count, and every chunk file it lists is there with
    its size. Remote URLs: credentials first (:func:`check_credentials`), then the manifest.
    ``version``: the data version the run expects (``data.version``); another one is refused.
    ``check=False``: the manifest only (the config's ``${shards:...}`` values).
    """
    where = str(path)
    if is_remote(where):
        check_credentials(where, storage_options)
        manifest = Manifest.from_dict(json.loads(_fetch_remote_manifest(
            where, json.dumps(dict(storage_options or {}), sort_keys=True, default=str))), where)
    else:
        base = Path(path).expanduser()
        file = base / MANIFEST
        if not file.is_file():
            raise DatasetError(
                f"data.path={where}: no {MANIFEST} in it"
                + (" (the folder does not exist)" if not base.is_dir() else
                   " (not a classicnets shard directory, or its conversion did not finish)")
                + "; write shards with python src/shard.py data=<dataset config> out=<dir>")
        try:
            raw = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise DatasetError(f"{file} is damaged ({err}); write the shards again") from None
        manifest = Manifest.from_dict(raw, str(file))
        if check:
            _check_local_splits(base, manifest)
    if version is not None and str(version) != manifest.version:
        raise DatasetError(
            f"data.path={where} holds {manifest.source} shards of version {manifest.version}, "
            f"but data.version={version}: they were written from another version of the data "
            f"config. Point data.path at shards of version {version}, write them again, or set "
            f"data.version={manifest.version} (null: accept any)")
    return manifest


def _check_local_splits(base: Path, manifest: Manifest) -> None:
    problems: list[str] = []
    for split in SPLITS:
        meta = manifest.splits.get(split)
        if meta is None:
            problems.append(f"the manifest lists no {split} split")
            continue
        index = base / split / INDEX
        if not index.is_file():
            problems.append(f"{index} is missing")
            continue
        if _sha256(index) != meta["index_sha256"]:
            problems.append(f"{index} is not the one written with this manifest (another "
                            "conversion's split, or the manifest of another dataset version)")
            continue
        chunks = json.loads(index.read_text())["chunks"]
        count = sum(int(c["chunk_size"]) for c in chunks)
        if count != meta["num_samples"]:
            problems.append(f"{index} lists {count} samples, the manifest {meta['num_samples']}")
        for chunk in chunks:
            file = base / split / chunk["filename"]
            if not file.is_file():
                problems.append(f"chunk {file} is missing")
            elif file.stat().st_size < int(chunk["chunk_bytes"]):
                problems.append(f"chunk {file} is truncated ({file.stat().st_size} of "
                                f"{chunk['chunk_bytes']} bytes)")
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if
                                           len(problems) > 8 else "")
        raise DatasetError(f"data.path={base} is an incomplete shard directory: {shown}. Copy "
                           "the missing files again or write the shards again (python "
                           "src/shard.py)")


# --------------------------------------------------------------------------- writing


# a sample's name is never a bare path: litdata stores a string naming an existing file as
# that file's content (its FileSerializer), not as the string


def _array_sample(i: int, images: Tensor, labels: Tensor, where: str) -> dict[str, Any]:
    return {"index": i, "image": encode_png(images[i]).numpy().tobytes(),
            "label": int(labels[i]), "name": f"{where} #{i}"}


def _file_sample(item: tuple[int, str, int], where: str) -> dict[str, Any]:
    i, path, label = item
    return {"index": i, "image": Path(path).read_bytes(), "label": int(label),
            "name": f"{path} ({where} #{i})"}


def _folder_items(data: Any) -> list[tuple[int, str, int]]:
    """(position, file, label) of a folder split: an ImageFolder or a Subset of one."""
    if isinstance(data, Subset):
        samples = [data.dataset.samples[i] for i in data.indices]
    else:
        samples = list(data.samples)
    return [(i, str(p), int(y)) for i, (p, y) in enumerate(samples)]


def _optimize(fn: Any, inputs: Sequence[Any], out: Path, chunk_bytes: str | int,
              num_workers: int) -> None:
    """``litdata.optimize`` with fork-started workers where the platform has fork (spawn
    re-imports torch in every worker: seconds per split), and without its side effect on the
    process: it sets the global multiprocessing start method, which every later DataLoader of
    the process would inherit."""
    import multiprocessing

    from litdata import optimize

    before = multiprocessing.get_start_method(allow_none=True)
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    try:
        optimize(fn=fn, inputs=inputs, output_dir=str(out), chunk_bytes=chunk_bytes,
                 num_workers=num_workers, mode="overwrite", verbose=False, start_method=method)
    finally:
        multiprocessing.set_start_method(before, force=True)


def write_shards(datamodule: Any, out: str | os.PathLike, *, data_config: Mapping[str, Any],
                 chunk_bytes: str | int = "64MB", num_workers: int = 1,
                 overwrite: bool = False) -> Manifest:
    """Write ``datamodule``'s train/val/test splits (exactly the splits it trains on) as litdata
    chunks under ``out`` (``litdata.optimize``), then the manifest."""
    require_litdata()
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DatasetError(f"out={out} exists and is not empty; choose another directory or "
                               "set overwrite=true to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    datamodule.setup("fit")
    spec = datamodule.spec
    splits = {"train": datamodule.train_set, "val": datamodule.val_set,
              "test": datamodule.test_set}
    meta: dict[str, dict[str, Any]] = {}
    for split, data in splits.items():
        if isinstance(data, ArrayData):
            fn: Any = functools.partial(_array_sample, images=data.images, labels=data.labels,
                                        where=f"{spec.name} {split}")
            inputs: Sequence[Any] = list(range(len(data)))
        else:
            fn = functools.partial(_file_sample, where=f"{split} sample")
            inputs = _folder_items(data)
        _optimize(fn, inputs, out / split, chunk_bytes, max(1, min(num_workers, len(inputs))))
        meta[split] = {"num_samples": len(inputs),
                       "index_sha256": _sha256(out / split / INDEX)}
    array = spec.in_memory
    manifest = Manifest(
        source=spec.name, version=config_version(data_config),
        kind="array" if array else "folder", classes=list(datamodule.classes),
        in_channels=datamodule.in_channels, image_size=datamodule.image_size,
        native_size=int(datamodule.train_set.images.shape[-1]) if array else None,
        recipe=datamodule.recipe if array else "imagenet",
        mean=[float(m) for m in datamodule.mean], std=[float(s) for s in datamodule.std],
        resize_size=None if array else datamodule.resize_size,
        distortion=datamodule.hparams.get("distortion"), splits=meta)
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(manifest.to_json())
    tmp.replace(out / MANIFEST)  # last and atomically: its presence means the shards are whole
    return manifest


# --------------------------------------------------------------------------- reading


def _to_channels(image: Tensor, want: int) -> Tensor:
    """One uint8 image to ``want`` channels, as the DataModule converts in-memory datasets
    (grey → RGB by repetition, RGB → luminance)."""
    have = image.shape[0]
    if have == want:
        return image
    if have == 1:
        return image.expand(3, -1, -1).contiguous()
    w = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)  # ITU-R 601 luminance, as PIL's "L"
    return (image.float() * w).sum(0, keepdim=True).round().to(torch.uint8)


class ShardSample:
    """A shard sample → ``(image, label)`` as the source's own loader gives it (picklable: it
    runs in the DataLoader workers). ``with_index`` adds the sample's position (tests)."""

    def __init__(self, manifest: Manifest, *, train: bool, augment: bool | str,
                 image_size: int, in_channels: int, mean: Sequence[float],
                 std: Sequence[float], resize_size: int, distortion: Distortion | None,
                 encoded: bool = False, policy: AugmentPolicy | None = None,
                 random_erasing: float = 0.0) -> None:
        self.array = manifest.kind == "array"
        self.in_channels, self.encoded, self.with_index = in_channels, encoded, False
        if self.array:
            recipe = augment if isinstance(augment, str) else (
                manifest.recipe if augment else "none")
            self.tf: Any = sample_transform(recipe, train=train,
                                            native_size=int(manifest.native_size or image_size),
                                            image_size=image_size, mean=mean, std=std,
                                            distortion=distortion,
                                            policy=policy if train else None,
                                            random_erasing=random_erasing if train else 0.0)
            self.mode = ImageReadMode.GRAY if manifest.in_channels == 1 else ImageReadMode.RGB
        else:
            # random erasing follows the normalisation: the loader's BatchNormalize
            self.tf = uint8_folder_transform(train=train and bool(augment),
                                             image_size=image_size, in_channels=in_channels,
                                             resize_size=resize_size,
                                             policy=policy if train else None)
            self.mode = ImageReadMode.RGB

    def __call__(self, item: dict[str, Any]) -> tuple[Any, ...]:
        label, name = int(item["label"]), str(item["name"])
        if self.encoded:  # GPU decoding: the main process decodes (gpu_decode.py)
            out: tuple[Any, ...] = ((encoded_or_decoded(item["image"], name), name), label)
        else:
            image = decode_bytes(item["image"], name, self.mode)
            if self.array:
                image = _to_channels(image, self.in_channels)
            out = (self.tf(image), label)
        return (*out, int(item["index"])) if self.with_index else out


def collate_floats(samples: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """Float samples of in-memory shards: ``(images, labels[, index])`` batches."""
    return tuple(default_collate(list(part)) for part in zip(*samples))


def _stack_uint8_with_extras(samples: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    images, labels = stack_uint8([(s[0], s[1]) for s in samples])
    return (images, labels, *(default_collate([s[k] for s in samples])
                              for k in range(2, len(samples[0]))))


def require_litdata() -> None:
    """Shards need the ``shards`` extra; say so instead of an ImportError deep in a run."""
    try:
        import litdata  # noqa: F401
    except ImportError:
        raise DatasetError("data=shards and python src/shard.py need litdata: pip install "
                           "'classicnets[shards]' (or pip install litdata)") from None


@functools.cache
def _streaming_loader_class() -> type:
    """Defined on first use, so that importing this module needs no litdata."""
    from litdata import StreamingDataLoader

    class ShardLoader(StreamingDataLoader):
        """litdata's ``StreamingDataLoader`` (resumable state, rank/worker sharding) that hands
        each batch out on ``device``: normalised there when ``finish`` is given (uint8 batches of
        folder shards, as :class:`~classicnets.data.decode.FinishingLoader`), else moved."""

        def __init__(self, *args: Any, finish: Any = None,
                     device: torch.device | str = "cpu", **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.finish, self.device = finish, torch.device(device)

        def __iter__(self) -> Iterator[Any]:
            non_blocking = self.device.type not in ("cpu", "mps")
            for batch in super().__iter__():
                if self.finish is None:
                    yield batch
                    continue
                if isinstance(batch[0], list):  # encoded JPEGs: decoded on the device
                    yield finish_encoded(self.finish, batch, self.device)
                    continue
                images, *rest = batch
                yield (self.finish(images.to(self.device, non_blocking=non_blocking)),
                       *(r.to(self.device, non_blocking=non_blocking) if isinstance(r, Tensor)
                         else r for r in rest))

    return ShardLoader


class ShardDataModule(L.LightningDataModule):
    """Train/val/test loaders streaming a shard directory written by ``python src/shard.py``.

    ``path``: the directory, or an ``s3://`` / ``gs://`` / ``azure://`` URL (chunks are cached
    in ``cache_dir``, litdata's default when null). Classes, channels, sizes, normalisation
    and augmentation come from the manifest; an override that changes the data (num_classes)
    is refused, one that changes the loading (image_size, in_channels, mean/std, augment) is
    applied as the source's own DataModule would. ``version``: refuse shards of another data
    version. ``batch_size`` is the global batch (``batch_size / world size`` per process).
    Under DDP every rank streams its own chunks: each training sample once per epoch across all
    ranks and workers, the order reshuffled each epoch from ``seed``; the remainder that does
    not fill one batch on every rank (fewer than world size × per-process batch samples) is
    left out of that epoch (litdata's ``drop_last``: every rank must take the same steps).
    """

    def __init__(
        self,
        path: str | os.PathLike = "???",
        *,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        image_size: int | None = None,
        num_classes: int | None = None,
        in_channels: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        resize_size: int | None = None,
        augment: bool | str = True,
        distortion: Mapping[str, Any] | None = None,
        policy: str = "none",
        policy_options: Mapping[str, Any] | None = None,
        random_erasing: float = 0.0,
        repeated_augmentation: int = 1,
        train_crop_size: int | None = None,
        decoder: str = "auto",
        version: str | None = None,
        cache_dir: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        shuffle: bool = True,
        seed: int = 42,
        pin_memory: bool | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        # plain values in the hyperparameters: a checkpoint must load weights-only
        path = str(path)
        mean = None if mean is None else [float(m) for m in mean]
        std = None if std is None else [float(s) for s in std]
        if distortion is not None:
            distortion = {k: [float(x) for x in v] if k == "scale" else float(v)
                          for k, v in distortion.items()}
        if policy_options is not None:  # Hydra gives a DictConfig: not weights-only loadable
            policy_options = {str(k): v for k, v in dict(policy_options).items()}
        # storage options may hold secrets: never in a checkpoint's hyperparameters
        self.save_hyperparameters(ignore=["storage_options"], logger=False)
        require_litdata()
        self.storage_options = dict(storage_options or {})
        self.path = str(path)
        if batch_size < 1:
            raise DatasetError(f"data.batch_size must be positive, got {batch_size}")
        m = self.manifest = read_manifest(self.path, storage_options=self.storage_options,
                                          version=version)
        if num_classes not in (None, m.num_classes):
            raise DatasetError(f"data.num_classes={num_classes} but the shards at {self.path} "
                               f"hold {m.num_classes} classes; remove the override")
        self.num_classes = m.num_classes
        self.classes = list(m.classes)
        self.in_channels = int(in_channels or m.in_channels)
        if self.in_channels not in (1, 3):
            raise DatasetError(f"data.in_channels must be 1 or 3, got {self.in_channels}")
        self.image_size = int(image_size or m.image_size)
        if isinstance(augment, str) and (augment not in RECIPES or m.kind != "array"):
            raise DatasetError(f"data.augment={augment!r}: use true, false or one of "
                               f"{', '.join(RECIPES)} (named recipes: shards of in-memory data)")
        if (mean is None) != (std is None):
            raise DatasetError("set both data.mean and data.std, or neither (null: the "
                               "shards' statistics)")
        mean_, std_ = (m.mean, m.std) if mean is None else (mean, std)
        if len(mean_) != self.in_channels:
            mean_ = [sum(mean_) / len(mean_)] * self.in_channels
            std_ = [sum(std_) / len(std_)] * self.in_channels
        self.mean, self.std = tuple(mean_), tuple(std_)
        # the source's evaluation resize while the size is the source's, else the convention's
        same = m.kind == "folder" and self.image_size == m.image_size
        self.resize_size = int(resize_size or (m.resize_size if same else None)
                               or eval_resize(self.image_size))
        if self.resize_size < self.image_size:
            raise DatasetError(f"data.resize_size={resize_size} is below data.image_size="
                               f"{self.image_size}: the centre crop would not fit")
        try:
            self.distortion = Distortion.from_config(distortion if distortion is not None
                                                     else m.distortion)
        except (TypeError, ValueError) as err:
            raise DatasetError(str(err)) from None
        # the recipes' data-side ingredients (conf/recipe/), checked as ImageDataModule does
        try:
            ing = Ingredients.from_config(
                policy=policy, policy_options=policy_options, random_erasing=random_erasing,
                repeated_augmentation=repeated_augmentation, train_crop_size=train_crop_size)
        except (TypeError, ValueError) as err:
            raise DatasetError(str(err)) from None
        if ing.repeats != 1:
            # a StreamingDataset serves each sample once per epoch (its own sharding over
            # ranks and workers); repeating samples would need a sampler it does not take
            raise DatasetError(
                f"data.repeated_augmentation={ing.repeats}: data=shards streams each sample once "
                f"per epoch and cannot repeat samples; set data.repeated_augmentation=1, or "
                f"train from the source data config")
        self.policy, self.random_erasing = ing.policy, ing.random_erasing
        self.train_crop_size = ing.train_crop_size or self.image_size
        self.decoder = check_decoder(decoder, folder=m.kind == "folder",
                                     what=f"the shards at {self.path} hold in-memory images "
                                          "(PNG)")
        self.train_set: Any = None
        self.val_set: Any = None
        self.test_set: Any = None

    # ------------------------------------------------------------------ data
    @property
    def world_size(self) -> int:
        """Processes the data is split over (litdata splits over every rank)."""
        trainer = self.trainer
        if trainer is None:
            return 1
        kwargs = getattr(getattr(trainer, "strategy", None), "distributed_sampler_kwargs",
                         None) or {}
        if kwargs and int(kwargs["num_replicas"]) != int(trainer.world_size):
            # trainer=towers: the two towers of a replica must see the same samples, but a
            # StreamingDataset gives every rank its own
            raise DatasetError("data=shards streams a different part of the data to every "
                               "process, and the two towers of trainer=towers need the same "
                               "batch: use trainer=ddp (or a folder/in-memory data config)")
        return int(trainer.world_size)

    @property
    def per_device_batch_size(self) -> int:
        ws = self.world_size
        if self.hparams.batch_size % ws:
            raise DatasetError(f"data.batch_size={self.hparams.batch_size} (the global batch) "
                               f"is not divisible by the world size {ws}; choose a multiple "
                               f"of {ws}")
        return self.hparams.batch_size // ws

    def _url(self, split: str) -> str:
        return f"{self.path.rstrip('/')}/{split}" if is_remote(self.path) else str(
            Path(self.path).expanduser() / split)

    def _sample(self, train: bool) -> ShardSample:
        return ShardSample(self.manifest, train=train, augment=self.hparams.augment,
                           image_size=self.train_crop_size if train else self.image_size,
                           in_channels=self.in_channels,
                           mean=self.mean, std=self.std, resize_size=self.resize_size,
                           distortion=self.distortion, encoded=self.decoder == "gpu",
                           policy=self.policy, random_erasing=self.random_erasing)

    def _erasing_seed(self) -> int:
        """Each rank its own erasing stream (torch's default generator is alike on every rank)."""
        rank = self.trainer.global_rank if self.trainer is not None else 0
        return int(self.hparams.seed) * 4099 + int(rank)

    def _dataset(self, split: str, train: bool) -> Any:
        from litdata import StreamingDataset

        shuffle = train and self.hparams.shuffle
        # training: whole batches only (as the other loaders: a last batch of one sample
        # breaks BatchNorm; under DDP every rank must take the same steps), so fewer than
        # world size × batch samples, others each epoch, sit out an epoch; evaluation keeps
        # every sample (uneven last batches are fine: no collective per step there)
        return StreamingDataset(self._url(split), cache_dir=self.hparams.cache_dir,
                                shuffle=shuffle, seed=int(self.hparams.seed), drop_last=train,
                                storage_options=self.storage_options or None,
                                transform=self._sample(train))

    def setup(self, stage: str | None = None) -> None:
        self.per_device_batch_size  # noqa: B018 — fail before any data is read
        if self.train_set is None:
            self.train_set = self._dataset("train", True)
            self.val_set = self._dataset("val", False)
            self.test_set = self._dataset("test", False)

    # ------------------------------------------------------------------ checkpoints
    @property
    def eval_transform(self) -> EvalTransform:
        folder = self.manifest.kind == "folder"
        return EvalTransform(image_size=self.image_size,
                             resize_size=self.resize_size if folder else self.image_size,
                             in_channels=self.in_channels, mean=tuple(self.mean),
                             std=tuple(self.std), resize_uint8=folder)

    def state_dict(self) -> dict[str, Any]:
        """As :meth:`ImageDataModule.state_dict`, plus the shards' data version."""
        return {"classes": list(self.classes), "eval_transform": self.eval_transform.to_dict(),
                "shards": {"source": self.manifest.source, "version": self.manifest.version}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A resumed run must stream the data it was trained on: shards of another version
        would make the saved loader position point at other samples."""
        saved = (state or {}).get("shards") or {}
        if saved and saved.get("version") != self.manifest.version:
            raise DatasetError(
                f"the checkpoint was trained on {saved.get('source')} shards of version "
                f"{saved.get('version')}, but data.path={self.path} holds "
                f"{self.manifest.source} shards of version {self.manifest.version}; resume "
                f"with the shards it was trained on")

    # ------------------------------------------------------------------ loaders
    def _device(self) -> torch.device:
        trainer = self.trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def _num_workers(self) -> int:
        if self.hparams.num_workers is not None:
            return int(self.hparams.num_workers)
        local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        return max(0, cpus // local - 1)

    def _loader(self, data: Any, train: bool) -> Any:
        bs = self.per_device_batch_size if train else (
            self.hparams.eval_batch_size or self.per_device_batch_size)
        pin = self.hparams.pin_memory
        kwargs: dict[str, Any] = dict(batch_size=bs, num_workers=self._num_workers(),
                                      pin_memory=torch.cuda.is_available() if pin is None
                                      else pin)
        cls = _streaming_loader_class()
        if self.decoder == "gpu":
            finish = GpuBatchDecoder(train=train and bool(self.hparams.augment),
                                     image_size=self.train_crop_size if train
                                     else self.image_size,
                                     in_channels=self.in_channels,
                                     resize_size=self.resize_size, mean=self.mean, std=self.std,
                                     channels_last=self.hparams.channels_last,
                                     device=self._device(),
                                     policy=self.policy if train else None,
                                     random_erasing=self.random_erasing if train else 0.0,
                                     seed=self._erasing_seed())
            return cls(data, collate_fn=collate_encoded, finish=finish, device=self._device(),
                       **kwargs)
        if self.manifest.kind == "folder":
            finish = BatchNormalize(self.mean, self.std,
                                    channels_last=self.hparams.channels_last,
                                    random_erasing=self.random_erasing if train else 0.0,
                                    seed=self._erasing_seed())
            return cls(data, collate_fn=_stack_uint8_with_extras, finish=finish,
                       device=self._device(), **kwargs)
        return cls(data, collate_fn=collate_floats, **kwargs)

    def transfer_batch_to_device(self, batch: Any, device: torch.device,
                                 dataloader_idx: int) -> Any:
        moved = pair_to_device(batch, device)
        if moved is None:
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        return moved

    def train_dataloader(self) -> Any:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> Any:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> Any:
        return self._loader(self.test_set, False)


# --------------------------------------------------------------------------- config glue


def manifest_setting(key: str, root: Any) -> Any:
    """``${shards:<key>}`` in ``conf/data/shards.yaml``: the manifest's ``key`` (num_classes,
    in_channels, image_size) of the shards at ``data.path``, so the network is built for them."""
    from omegaconf import OmegaConf

    data = root.get("data")
    if data is None or OmegaConf.is_missing(data, "path"):
        raise DatasetError("data=shards needs data.path=<shard directory or s3://, gs://, "
                           "azure:// URL> (written by python src/shard.py data=<config> "
                           "out=<dir>)")
    options = data.get("storage_options")
    options = OmegaConf.to_container(options) if OmegaConf.is_config(options) else options
    manifest = read_manifest(str(data.path), storage_options=options, check=False)
    return getattr(manifest, key)


def shard_dataset(cfg: Any) -> Manifest:
    """``python src/shard.py data=<config> out=<dir>``: the DataModule of ``data`` builds its
    splits as training would, and :func:`write_shards` writes them."""
    from omegaconf import OmegaConf

    from classicnets.instantiate import instantiate_clean

    if str(cfg.data.get("_target_", "")).endswith("ShardDataModule"):
        raise DatasetError("data=shards is already sharded: give the source dataset's config "
                           "(data=imagefolder data.path=..., data=cifar10, ...)")
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = instantiate_clean(cfg.data)
    out = Path(str(cfg.out)).expanduser().resolve()
    manifest = write_shards(datamodule, out, data_config=data_cfg,
                            chunk_bytes=cfg.get("chunk_bytes", "64MB"),
                            num_workers=int(cfg.get("num_workers", 1)),
                            overwrite=bool(cfg.get("overwrite", False)))
    counts = " / ".join(f"{m['num_samples']} {s}" for s, m in manifest.splits.items())
    log.info("wrote %s shards (version %s: %s samples, %d classes) to %s; train from them with"
             "\n    python src/train.py data=shards data.path=%s", manifest.source,
             manifest.version, counts, manifest.num_classes, out, out)
    return manifest
