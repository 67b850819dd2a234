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

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

__all__ = ["BatchTransform", "crop_padding", "folder_transform", "sample_transform"]


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


def folder_transform(*, train: bool, image_size: int, in_channels: int,
                     mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """ImageNet-style transform for PIL images read from a folder tree."""
    ops: list[torch.nn.Module] = [v2.ToImage()]
    if in_channels == 1:
        ops.append(v2.Grayscale(1))
    if train:
        ops += [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        ops += [v2.Resize(round(image_size * 256 / 224), antialias=True),
                v2.CenterCrop(image_size)]
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(ops)


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

    def random_crop_flip(self, x: Tensor, generator: torch.Generator) -> Tensor:
        b, c, h, w = x.shape
        p = self.pad
        hp, wp = h + 2 * p, w + 2 * p
        padded = F.pad(x, (p, p, p, p)).view(b, c, hp * wp)
        dev = x.device
        oy = torch.randint(0, 2 * p + 1, (b, 1, 1), device=dev, generator=generator)
        ox = torch.randint(0, 2 * p + 1, (b, 1, 1), device=dev, generator=generator)
        flip = torch.rand(b, 1, 1, device=dev, generator=generator) < 0.5
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
