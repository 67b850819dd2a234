"""Augmentation recipes, in two forms that draw from the same distribution.

* per image (:func:`sample_transform`, :func:`folder_transform`): torchvision v2 transforms
  run in DataLoader workers — the ordinary path;
* per batch on the training device (:class:`BatchTransform`): the fast path for in-memory data.

Recipes: ``crop_flip`` = zero-pad by 1/8 of the side (4 px at 32) then a uniformly random crop
back to the native size, and a horizontal flip with probability 1/2; ``none``; ``imagenet`` =
random-resized-crop + flip for training, resize to 256/224 of the size + centre crop for eval.
In-memory images are augmented at their native size and then resized to ``image_size``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

__all__ = [
    "BatchTransform",
    "EvalTransform",
    "crop_padding",
    "eval_resize",
    "folder_transform",
    "sample_transform",
]


def crop_padding(native_size: int) -> int:
    """Padding of the random-crop recipe: 4 px at 32 px (CIFAR), scaled with the side."""
    return max(1, round(native_size / 8))


def sample_transform(recipe: str, *, train: bool, native_size: int, image_size: int,
                     mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Per-image transform for a uint8 ``(C, H, W)`` tensor from an in-memory dataset."""
    ops: list[torch.nn.Module] = []
    if train and recipe == "crop_flip":
        ops += [v2.RandomCrop(native_size, padding=crop_padding(native_size)),
                v2.RandomHorizontalFlip()]
    ops.append(v2.ToDtype(torch.float32, scale=True))
    if image_size != native_size:
        ops.append(v2.Resize(image_size, antialias=True))
    ops.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose(ops)


def eval_resize(image_size: int) -> int:
    """Shorter side an image is resized to before the centre crop of ``image_size`` (the
    ImageNet convention: 256 for 224)."""
    return round(image_size * 256 / 224)


def folder_transform(*, train: bool, image_size: int, in_channels: int,
                     mean: Sequence[float], std: Sequence[float],
                     resize_size: int | None = None) -> v2.Compose:
    """ImageNet-style transform for PIL images read from a folder tree (evaluation: resize
    the shorter side to ``resize_size``, default :func:`eval_resize`, then centre-crop)."""
    ops: list[torch.nn.Module] = [v2.ToImage()]
    if in_channels == 1:
        ops.append(v2.Grayscale(1))
    if train:
        ops += [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        ops += [v2.Resize(resize_size or eval_resize(image_size), antialias=True),
                v2.CenterCrop(image_size)]
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(ops)


@dataclass(frozen=True)
class EvalTransform:
    """How an evaluation image reaches the network, for images of any size and mode.

    Stored in checkpoints (the DataModule's ``state_dict``) so prediction and export need
    nothing else: convert to ``in_channels`` (grey or RGB), resize the shorter side to
    ``resize_size``, centre-crop ``image_size``, scale to [0, 1], normalise with
    ``mean``/``std``. In-memory datasets (square images) use
    ``resize_size == image_size`` and resize [0, 1] floats, as their loaders do; folder
    datasets resize the 8-bit image (``resize_uint8``) to their ``resize_size`` (by default
    :func:`eval_resize`), as :func:`folder_transform` does — so a training image gives exactly
    its evaluation input.
    """

    image_size: int
    resize_size: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize_uint8: bool = False
    interpolation: str = "bilinear"  # a torchvision InterpolationMode value (pretrained: bicubic)

    def __post_init__(self) -> None:
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if not len(self.mean) == len(self.std) == self.in_channels:
            raise ValueError(f"mean {self.mean} and std {self.std} need {self.in_channels} "
                             "values each")
        if not 0 < self.image_size <= self.resize_size:
            raise ValueError(f"need 0 < image_size ({self.image_size}) <= resize_size "
                             f"({self.resize_size})")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalTransform:
        return cls(image_size=int(d["image_size"]), resize_size=int(d["resize_size"]),
                   in_channels=int(d["in_channels"]), mean=tuple(map(float, d["mean"])),
                   std=tuple(map(float, d["std"])),
                   resize_uint8=bool(d.get("resize_uint8", False)),
                   interpolation=str(d.get("interpolation", "bilinear")))

    def pixel_transform(self) -> v2.Compose:
        """PIL image (RGB or L) → float ``(C, image_size, image_size)`` in [0, 1], not yet
        normalised: the input of an exported model, whose normalisation is inside."""
        ops: list[torch.nn.Module] = [v2.ToImage()]
        # to the network's channels: grey → RGB repeats, RGB → grey as folder_transform does
        ops.append(v2.Grayscale(1) if self.in_channels == 1 else v2.RGB())
        mode = v2.InterpolationMode(self.interpolation)
        resize = [v2.Resize(self.resize_size, interpolation=mode, antialias=True),
                  v2.CenterCrop(self.image_size)]
        to_float = [v2.ToDtype(torch.float32, scale=True)]
        return v2.Compose(ops + (resize + to_float if self.resize_uint8 else to_float + resize))


class BatchTransform:
    """The in-memory recipes applied to a whole uint8 batch on its own device.

    Crop offsets are drawn uniformly from ``[0, 2·pad]`` per image and per axis and flips with
    probability 1/2, exactly the distribution of :func:`sample_transform`.
    """

    def __init__(self, recipe: str, *, train: bool, native_size: int, image_size: int,
                 mean: Sequence[float], std: Sequence[float],
                 channels_last: bool = False) -> None:
        self.augment = train and recipe == "crop_flip"
        self.native_size, self.image_size = native_size, image_size
        self.pad = crop_padding(native_size)
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.channels_last = channels_last

    def _draw(self, b: int, device: torch.device, generator: torch.Generator
              ) -> tuple[Tensor, Tensor, Tensor]:
        """A batch's random numbers: row and column offsets of the crop, and the flips."""
        p = self.pad
        oy = torch.randint(0, 2 * p + 1, (b, 1, 1), device=device, generator=generator)
        ox = torch.randint(0, 2 * p + 1, (b, 1, 1), device=device, generator=generator)
        flip = torch.rand(b, 1, 1, device=device, generator=generator) < 0.5
        return oy, ox, flip

    def skip(self, batch_size: int, generator: torch.Generator) -> None:
        """Advance ``generator`` past one batch exactly as :meth:`__call__` would, without
        touching images: a resumed epoch then draws what the uninterrupted one drew."""
        if self.augment:
            self._draw(batch_size, generator.device, generator)

    def random_crop_flip(self, x: Tensor, generator: torch.Generator) -> Tensor:
        b, c, h, w = x.shape
        p = self.pad
        hp, wp = h + 2 * p, w + 2 * p
        padded = F.pad(x, (p, p, p, p)).view(b, c, hp * wp)
        dev = x.device
        oy, ox, flip = self._draw(b, dev, generator)
        cols = torch.arange(w, device=dev).view(1, 1, w)
        cols = torch.where(flip, w - 1 - cols, cols) + ox  # a flip is reversed columns
        rows = torch.arange(h, device=dev).view(1, h, 1) + oy
        # one gather of flat pixel indices does crop and flip together, for every channel
        index = (rows * wp + cols).view(b, 1, h * w).expand(b, c, h * w)
        return padded.gather(2, index).view(b, c, h, w)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.augment:
            if generator is None:
                raise ValueError("training augmentation needs a generator for reproducibility")
            x = self.random_crop_flip(x, generator)
        if self.image_size != self.native_size:
            x = F.interpolate(x.float().div_(255.0), size=(self.image_size, self.image_size),
                              mode="bilinear", antialias=True, align_corners=False)
            x = x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))
        else:  # (x / 255 - mean) / std as one multiply-add pass over the batch
            scale = (1.0 / (255.0 * self.std)).to(x.device)
            x = torch.addcmul((-self.mean / self.std).to(x.device), x.float(), scale)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
