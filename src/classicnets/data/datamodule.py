"""One LightningDataModule for every dataset of the catalogue."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import default_loader

from classicnets.data.catalogue import ArrayData, DatasetError, DatasetSpec, get_spec
from classicnets.data.decode import (
    DECODERS,
    BatchNormalize,
    FinishingLoader,
    read_rgb,
    stack_uint8,
    uint8_folder_transform,
)
from classicnets.data.fast import DeviceLoader, pair_to_device
from classicnets.data.gpu_decode import (
    GpuBatchDecoder,
    GpuDecodeLoader,
    collate_encoded,
    read_encoded,
    require_cuda,
)
from classicnets.data.policies import Ingredients
from classicnets.data.repeated import RepeatedAugmentationSampler
from classicnets.data.transforms import (
    RECIPES,
    BatchTransform,
    Distortion,
    EvalTransform,
    eval_resize,
    folder_transform,
    sample_transform,
)

__all__ = ["ArrayDataset", "ImageDataModule"]

log = logging.getLogger(__name__)
LOADERS = ("auto", "fast", "torch")
# unreadable images in a row after which a folder counts as damaged rather than one file
MAX_UNREADABLE_IN_A_ROW = 10


class ArrayDataset(Dataset):
    """Per-image view of an :class:`ArrayData` split for the ordinary DataLoader path."""

    def __init__(self, data: ArrayData, transform: Any) -> None:
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.data.images[i]), int(self.data.labels[i])


class CheckedImageFolder(ImageFolder):
    """``ImageFolder`` that skips an unreadable image (truncated, corrupt, not an image) with a
    warning naming the file, and serves the next readable one of the split in its place: one
    damaged file among a million does not end a run hours in. Checking every file up front
    would mean decoding the whole dataset at each start. Ten unreadable files in a row are an
    error instead: the folder is damaged, not a file."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skipped: set[str] = set()

    def __getitem__(self, index: int) -> tuple[Any, int]:
        for attempt in range(MAX_UNREADABLE_IN_A_ROW):
            i = (index + attempt) % len(self.samples)
            try:
                return super().__getitem__(i)
            except (OSError, SyntaxError) as err:  # PIL's errors for a damaged or foreign file
                path = self.samples[i][0]
                if path not in self.skipped:  # once per file (per DataLoader worker)
                    self.skipped.add(path)
                    log.warning("skipped unreadable image %s (%s: %s); delete or replace it",
                                path, type(err).__name__, err)
        raise DatasetError(
            f"{MAX_UNREADABLE_IN_A_ROW} unreadable images in a row from "
            f"{self.samples[index][0]} on: the folder {self.root} looks damaged; check the "
            f"files (copy them again) or point data.path elsewhere")


def _match_channels(data: ArrayData, want: int) -> ArrayData:
    have = data.images.shape[1]
    if have == want:
        return data
    if have == 1 and want == 3:  # grey → RGB by repetition
        return ArrayData(data.images.expand(-1, 3, -1, -1).contiguous(), data.labels, data.classes)
    if have == 3 and want == 1:  # RGB → luminance (ITU-R 601), as PIL's "L" mode
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        grey = (data.images.float() * w).sum(1, keepdim=True).round().to(torch.uint8)
        return ArrayData(grey, data.labels, data.classes)
    raise DatasetError(f"cannot convert {have}-channel images to {want} channels "
                       "(data.in_channels must be 1 or 3)")


class ImageDataModule(L.LightningDataModule):
    """Train/val/test loaders for a catalogue dataset (``name``), any size and channel count.

    ``batch_size`` is the global batch: each of W DDP processes loads ``batch_size / W``.
    ``loader``: ``fast`` keeps in-memory datasets on the training device and augments whole
    batches there; ``torch`` is the ordinary per-image DataLoader; ``auto`` (default) picks
    ``fast`` for in-memory datasets and ``torch`` for folder datasets.
    ``decoder`` (folder datasets): ``torchvision`` decodes with ``torchvision.io`` and augments
    uint8 tensors in the workers, then normalises whole batches on the training device (the
    CPU included; :mod:`classicnets.data.decode`); ``pil`` is the ordinary
    per-image PIL path; ``gpu`` decodes JPEG batches with nvJPEG and augments them on the GPU
    (CUDA only; :mod:`classicnets.data.gpu_decode`); ``auto`` (default) is ``torchvision``.
    ``augment``: true = the dataset's standard recipe, false = none, or a recipe name for
    in-memory data (``distort``: random affine distortions shaped by ``distortion``).
    On top of it, training may add ``policy`` (none, trivialaugment, randaugment, autoaugment,
    augmix; knobs in ``policy_options``), ``random_erasing`` (probability), repeated
    augmentation (``repeated_augmentation`` = k copies of each image an epoch) and FixRes
    (``train_crop_size``: train at that size, evaluate at ``image_size``) on both loaders.
    The train/val split is drawn from ``seed`` so it is the same on every rank and every run.
    """

    def __init__(
        self,
        name: str = "digits",
        *,
        root: str | os.PathLike = "data",
        path: str | os.PathLike | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        val_fraction: float = 0.1,
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
        loader: str = "auto",
        decoder: str = "auto",
        download: bool = False,
        seed: int = 42,
        num_samples: int = 512,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        channels_last: bool = False,
    ) -> None:
        # plain floats in the hyperparameters: a checkpoint must not hold OmegaConf lists
        mean = None if mean is None else [float(m) for m in mean]
        std = None if std is None else [float(s) for s in std]
        if distortion is not None:
            distortion = {k: [float(x) for x in v] if k == "scale" else v
                          for k, v in distortion.items()}
        if policy_options is not None:
            policy_options = {str(k): v for k, v in dict(policy_options).items()}
        super().__init__()
        self.save_hyperparameters(logger=False)  # the run logs the full config itself
        # a subclass's own **kwargs reach the hyperparameters too (Lightning collects every
        # __init__ frame of the hierarchy), as Hydra gave them: keep the plain versions
        for key, plain in (("mean", mean), ("std", std), ("distortion", distortion),
                           ("policy_options", policy_options)):
            if key in self.hparams:
                self.hparams[key] = plain
        self.spec: DatasetSpec = self.dataset_spec(name)
        spec = self.spec
        if loader not in LOADERS:
            raise DatasetError(f"data.loader={loader!r} is not one of {', '.join(LOADERS)}")
        if loader == "fast" and not spec.in_memory:
            raise DatasetError(f"data.loader=fast needs an in-memory dataset; {name} is read from "
                               "image files: use data.loader=torch (or auto)")
        if decoder not in DECODERS:
            raise DatasetError(f"data.decoder={decoder!r} is not one of {', '.join(DECODERS)}")
        if decoder != "auto" and spec.in_memory:
            raise DatasetError(f"data.decoder={decoder} applies to image folders; {name} is held "
                               "in memory: remove the override (or use data.decoder=auto)")
        if decoder == "gpu":
            require_cuda()  # refused before training, naming data.decoder=torchvision
        # the image-file decoder of folder datasets (None: in memory, nothing to decode)
        self.decoder = None if spec.in_memory else ("torchvision" if decoder == "auto"
                                                    else decoder)
        if not 0.0 <= val_fraction < 1.0:
            raise DatasetError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if batch_size < 1:
            raise DatasetError(f"data.batch_size must be positive, got {batch_size}")
        if spec.num_classes is not None and num_classes not in (None, spec.num_classes):
            raise DatasetError(f"data.num_classes={num_classes} but {name} has "
                               f"{spec.num_classes} classes; remove the override")
        if spec.num_classes is None and num_classes is None:
            raise DatasetError(f"{name} needs data.num_classes (the number of classes)")
        if name == "imagefolder" and path is None:
            raise DatasetError("data=imagefolder needs data.path=/path/to/images "
                               f"(layout: {spec.layout})")
        # true: the dataset's standard recipe; false: none; a name: that in-memory recipe
        if isinstance(augment, str) and (augment not in RECIPES or not spec.in_memory):
            raise DatasetError(f"data.augment={augment!r}: use true, false or one of "
                               f"{', '.join(RECIPES)} (named recipes: in-memory datasets only)")
        self.recipe = augment if isinstance(augment, str) else spec.recipe if augment else "none"
        try:
            self.distortion = Distortion.from_config(distortion)
        except (TypeError, ValueError) as err:
            raise DatasetError(str(err)) from None
        try:
            ing = Ingredients.from_config(
                policy=policy, policy_options=policy_options, random_erasing=random_erasing,
                repeated_augmentation=repeated_augmentation, train_crop_size=train_crop_size)
        except (TypeError, ValueError) as err:
            raise DatasetError(str(err)) from None
        self.policy, self.random_erasing, self.repeats = ing.policy, ing.random_erasing, ing.repeats
        if batch_size >= 1 and batch_size < self.repeats:
            raise DatasetError(f"data.repeated_augmentation={self.repeats} needs a batch of at "
                               f"least {self.repeats} images; data.batch_size={batch_size}: "
                               "raise the batch or lower the repeats")
        self.num_classes = int(num_classes or spec.num_classes)  # type: ignore[arg-type]
        self.in_channels = int(in_channels or spec.in_channels)
        if self.in_channels not in (1, 3):
            raise DatasetError(f"data.in_channels must be 1 or 3, got {self.in_channels}")
        self.image_size = int(image_size or spec.image_size)
        # FixRes: the training crop (evaluation stays at image_size, after resize_size)
        self.train_crop_size = ing.train_crop_size or self.image_size
        if spec.in_memory:
            most = max(spec.image_size, self.image_size)
            if self.train_crop_size > most:
                raise DatasetError(
                    f"data.train_crop_size={self.train_crop_size} is larger than {name} can "
                    f"give: its images are {spec.image_size} px (resized to data.image_size="
                    f"{self.image_size}); use at most {most}")
        self.root = Path(root).expanduser()
        self.loader = ("fast" if spec.in_memory else "torch") if loader == "auto" else loader
        if (mean is None) != (std is None):
            raise DatasetError("set both data.mean and data.std, or neither (null: the "
                               "dataset's statistics)")
        # given (the pretrained weights' or the user's) or the dataset's own statistics
        mean, std = (spec.mean, spec.std) if mean is None else (
            tuple(map(float, mean)), tuple(map(float, std)))  # type: ignore[arg-type]
        if len(mean) != self.in_channels:  # converted channels: averaged / repeated stats
            mean = (sum(mean) / len(mean),) * self.in_channels
            std = (sum(std) / len(std),) * self.in_channels
        self.mean, self.std = mean, std
        # folder datasets: shorter side before the evaluation centre crop
        self.resize_size = int(resize_size or eval_resize(self.image_size))
        if self.resize_size < self.image_size:
            raise DatasetError(f"data.resize_size={resize_size} is below data.image_size="
                               f"{self.image_size}: the centre crop would not fit")
        self.train_set: ArrayData | Dataset | None = None
        self.val_set: ArrayData | Dataset | None = None
        self.test_set: ArrayData | Dataset | None = None
        self.classes: list[str] = []

    def dataset_spec(self, name: str) -> DatasetSpec:
        """The facts about the dataset ``name``: its catalogue entry here; the DataModules of
        other sources (:mod:`classicnets.data.torchvision_sets`,
        :mod:`classicnets.data.huggingface`) describe theirs."""
        return get_spec(name)

    # ------------------------------------------------------------------ preparation
    def prepare_data(self) -> None:
        """Download where allowed and possible (rank 0 only); otherwise check files exist."""
        if self.spec.reader is None or self.spec.downloader is None:
            return
        try:
            self._read("test")
        except DatasetError as missing:
            if not self.hparams.download:
                raise
            try:
                self.spec.downloader(self.root)
            except Exception as err:  # network errors come in many types
                raise DatasetError(
                    f"{missing}\nDownloading it also failed ({type(err).__name__}: "
                    f"{str(err).splitlines()[0] if str(err) else ''}). Copy the files to "
                    f"{self.root} or set data.root to where they are."
                ) from None

    def _read(self, split: str) -> ArrayData:
        reader = self.spec.reader
        assert reader is not None
        if self.spec.name == "synthetic":
            data = reader(self.root, split, num_samples=self.hparams.num_samples,
                          num_classes=self.num_classes, in_channels=self.in_channels,
                          image_size=self.image_size, seed=self.hparams.seed)
        else:
            data = reader(self.root, split)
        return _match_channels(data, self.in_channels)

    def _replica(self) -> tuple[int, int]:
        """(data-parallel replicas, this process's replica): the world size and rank under DDP;
        under tower parallelism the two towers of a replica share one shard of the data."""
        trainer = self.trainer
        if trainer is None:
            return 1, 0
        kwargs = getattr(getattr(trainer, "strategy", None), "distributed_sampler_kwargs",
                         None) or {}
        if kwargs:
            return int(kwargs["num_replicas"]), int(kwargs["rank"])
        return int(trainer.world_size), int(getattr(trainer, "global_rank", 0))

    @property
    def world_size(self) -> int:
        """Data-parallel replicas the global batch is split over."""
        return self._replica()[0]

    @property
    def per_device_batch_size(self) -> int:
        ws = self.world_size
        if self.hparams.batch_size % ws:
            raise DatasetError(
                f"data.batch_size={self.hparams.batch_size} (the global batch) is not divisible "
                f"by the world size {ws} (data-parallel processes; the two towers of trainer="
                f"towers count once); choose a multiple of {ws}"
            )
        return self.hparams.batch_size // ws

    def setup(self, stage: str | None = None) -> None:
        per_device = self.per_device_batch_size  # fail before any data is read
        if self.repeats > 1 and per_device < self.repeats:
            raise DatasetError(
                f"data.repeated_augmentation={self.repeats} needs at least {self.repeats} images "
                f"per process and batch; data.batch_size={self.hparams.batch_size} over "
                f"{self.world_size} processes gives {per_device}: raise data.batch_size to at "
                f"least {self.repeats * self.world_size} or lower the repeats")
        if self.train_set is not None:
            return
        if self.spec.in_memory:
            self._setup_in_memory()
        else:
            self._setup_folders()
        log.info("%s: %d train / %d val / %d test samples, %d classes, loader=%s",
                 self.spec.name, len(self.train_set), len(self.val_set), len(self.test_set),
                 self.num_classes, self.loader)

    def _split(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.hparams.seed)
        order = torch.randperm(n, generator=g)
        n_val = round(n * self.hparams.val_fraction)
        return order[n_val:], order[:n_val]

    def _setup_in_memory(self) -> None:
        full, test = self._read("train"), self._read("test")
        if full.images.shape[-1] != full.images.shape[-2]:
            raise DatasetError(f"{self.spec.name}: images must be square")
        if int(full.labels.max()) >= self.num_classes:
            raise DatasetError(f"{self.spec.name}: label {int(full.labels.max())} found but "
                               f"data.num_classes={self.num_classes}")
        self.classes = full.classes
        if self.hparams.val_fraction == 0:
            log.warning("data.val_fraction=0: validating on the test split")
            self.train_set, self.val_set = full, test
        else:
            tr, va = self._split(len(full))
            self.train_set = ArrayData(full.images[tr], full.labels[tr], full.classes)
            self.val_set = ArrayData(full.images[va], full.labels[va], full.classes)
        self.test_set = test

    def _setup_folders(self) -> None:
        base = Path(self.hparams.path).expanduser() if self.spec.name == "imagefolder" else (
            self.root / "imagenet")
        train_dir = base / "train"
        if not train_dir.is_dir():
            raise DatasetError(
                f"{self.spec.name}: expected {train_dir} but it does not exist. Expected layout: "
                f"{self.spec.layout}. Point "
                f"{'data.path' if self.spec.name == 'imagefolder' else 'data.root'} at it."
            )

        def folder(split_dir: Path, train: bool) -> ImageFolder:
            augment = train and bool(self.hparams.augment)
            geometry = dict(train=augment,
                            image_size=self.train_crop_size if train else self.image_size,
                            in_channels=self.in_channels, resize_size=self.resize_size)
            policy = self.policy if train else None
            if self.decoder == "gpu":  # file bytes out; decoded + augmented per batch (_loader)
                tf, read = None, read_encoded
            elif self.decoder == "torchvision":  # uint8 out; normalised per batch (_loader)
                tf, read = uint8_folder_transform(**geometry, policy=policy), read_rgb
            else:
                tf = folder_transform(**geometry, mean=self.mean, std=self.std, policy=policy,
                                      random_erasing=self.random_erasing if train else 0.0)
                read = default_loader
            try:
                return CheckedImageFolder(str(split_dir), transform=tf, loader=read)
            except (FileNotFoundError, RuntimeError) as err:
                fix = (" Add images to the empty class folders or remove them (data.num_classes "
                       "counts the class folders)." if "no valid file" in str(err) else "")
                raise DatasetError(f"{split_dir}: {err}{fix}") from None

        train_aug = folder(train_dir, True)
        self.classes = train_aug.classes
        if len(self.classes) != self.num_classes:
            raise DatasetError(
                f"{train_dir} has {len(self.classes)} class folders ({', '.join(self.classes[:10])}"
                f"{', ...' if len(self.classes) > 10 else ''}) but data.num_classes="
                f"{self.num_classes}; set data.num_classes={len(self.classes)}"
            )
        val_dir, test_dir = base / "val", base / "test"
        if val_dir.is_dir():
            self.train_set, self.val_set = train_aug, folder(val_dir, False)
        else:
            tr, va = self._split(len(train_aug))
            self.train_set = Subset(train_aug, tr.tolist())
            self.val_set = Subset(folder(train_dir, False), va.tolist())
        for part in (self.val_set,):
            if len(part) == 0:
                raise DatasetError(f"{self.spec.name}: the validation split is empty; raise "
                                   "data.val_fraction or add a val/ folder")
        if test_dir.is_dir():
            self.test_set = folder(test_dir, False)
        else:
            log.warning("%s has no test/ folder: testing on the validation split", base)
            self.test_set = self.val_set

    # ------------------------------------------------------------------ checkpoints
    @property
    def eval_transform(self) -> EvalTransform:
        """The evaluation transform for an image of any size (prediction, export)."""
        # in-memory images are square and resized whole; folder images as folder_transform does
        folder = not self.spec.in_memory
        resize = self.resize_size if folder else self.image_size
        return EvalTransform(image_size=self.image_size, resize_size=resize,
                             in_channels=self.in_channels, mean=tuple(self.mean),
                             std=tuple(self.std), resize_uint8=folder)

    def state_dict(self) -> dict[str, Any]:
        """Saved by Lightning into every checkpoint (under this class's name): the class names
        and the evaluation transform, so `src/predict.py` needs no dataset."""
        return {"classes": list(self.classes), "eval_transform": self.eval_transform.to_dict()}

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
        # image files are decoded in the workers: every core but the main process's is busy;
        # in-memory data needs few (beyond 8 the workers only add start-up time)
        cap = 8 if self.spec.in_memory else cpus
        return max(0, min(cap, cpus // local - 1))

    def _loader(self, data: Any, train: bool) -> DataLoader | DeviceLoader:
        bs = self.per_device_batch_size if train else (
            self.hparams.eval_batch_size or self.per_device_batch_size)
        n_local = len(data) // self.world_size
        # a last batch of one sample breaks BatchNorm; drop it only when a full batch exists
        drop_last = train and n_local > bs
        size = self.train_crop_size if train else self.image_size
        extras: dict[str, Any] = dict(policy=self.policy if train else None,
                                      random_erasing=self.random_erasing if train else 0.0)
        repeats = self.repeats if train else 1
        if self.loader == "fast":
            tf = BatchTransform(self.recipe, train=train,
                                native_size=data.images.shape[-1], image_size=size,
                                mean=self.mean, std=self.std,
                                channels_last=self.hparams.channels_last,
                                distortion=self.distortion, **extras)
            return DeviceLoader(data, batch_size=bs, transform=tf, device=self._device(),
                                shuffle=train, drop_last=drop_last, seed=self.hparams.seed,
                                rank=self._replica()[1], world_size=self.world_size,
                                repeats=repeats)
        if isinstance(data, ArrayData):
            data = ArrayDataset(data, sample_transform(
                self.recipe, train=train,
                native_size=data.images.shape[-1], image_size=size,
                mean=self.mean, std=self.std, distortion=self.distortion, **extras))
        workers = self._num_workers()
        pin = self.hparams.pin_memory
        sampler = None
        if repeats > 1:  # sharded by itself: Lightning leaves a DistributedSampler in place
            sampler = RepeatedAugmentationSampler(
                data, repeats=repeats, num_replicas=self.world_size, rank=self._replica()[1],
                seed=self.hparams.seed)
        kwargs: dict[str, Any] = dict(
            batch_size=bs, shuffle=train and sampler is None, sampler=sampler,
            drop_last=drop_last, num_workers=workers,
            pin_memory=torch.cuda.is_available() if pin is None else pin,
            persistent_workers=workers > 0 and self.hparams.persistent_workers,
            generator=torch.Generator().manual_seed(self.hparams.seed) if train else None,
        )
        if self.decoder == "gpu":  # JPEG bytes, decoded in batches on the GPU (gpu_decode.py)
            gpu = GpuBatchDecoder(train=train and bool(self.hparams.augment),
                                  image_size=size, in_channels=self.in_channels,
                                  resize_size=self.resize_size, mean=self.mean, std=self.std,
                                  channels_last=self.hparams.channels_last,
                                  device=self._device(), **extras,
                                  seed=self.hparams.seed * 4099 + self._replica()[1])
            return GpuDecodeLoader(data, finish=gpu, device=self._device(),
                                   collate_fn=collate_encoded, **kwargs)
        if self.decoder == "torchvision":  # uint8 samples, normalised per batch
            finish = BatchNormalize(self.mean, self.std, channels_last=self.hparams.channels_last,
                                    random_erasing=extras["random_erasing"],
                                    seed=self.hparams.seed * 4099 + self._replica()[1])
            # on every device, the CPU included: a worker ships a quarter of the bytes and
            # faults in a quarter of the fresh shared memory of a float batch, and it is the
            # workers that bound a folder dataset's throughput; normalising costs the main
            # process ~0.2 ms an image, little next to a 224-px training step on a CPU
            return FinishingLoader(data, finish=finish, device=self._device(),
                                   collate_fn=stack_uint8, **kwargs)
        return DataLoader(data, **kwargs)

    def transfer_batch_to_device(self, batch: Any, device: torch.device,
                                 dataloader_idx: int) -> Any:
        moved = pair_to_device(batch, device)  # our loaders yield (images, labels) pairs
        if moved is None:
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        return moved

    def train_dataloader(self) -> DataLoader | DeviceLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader | DeviceLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader | DeviceLoader:
        return self._loader(self.test_set, False)
