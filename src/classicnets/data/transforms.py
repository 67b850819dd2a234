"""Augmentation recipes, in two forms that draw from the same distribution.

* per image (:func:`sample_transform`, :func:`folder_transform`): torchvision v2 transforms
  run in DataLoader workers — the ordinary path;
* per batch on the training device (:class:`BatchTransform`): the fast path for in-memory data.

Recipes: ``crop_flip`` = zero-pad by 1/8 of the side (4 px at 32) then a uniformly random crop
back to the native size, and a horizontal flip with probability 1/2; ``distort`` = a small random
affine distortion (:class:`Distortion`: rotation, shift, scale, horizontal shear; never a flip),
the distortions LeCun et al. (1998) trained LeNet-5 with; ``none``; ``imagenet`` =
random-resized-crop + flip for training, resize to 256/224 of the size + centre crop for eval.
In-memory images are cropped/flipped at their native size and then resized to ``image_size``;
distortions are applied after the resize, so an 8-px digit is resampled at the network's 32 px.

On top of a recipe, training may add an augmentation policy (:mod:`classicnets.data.policies`:
TrivialAugmentWide, RandAugment, AutoAugment, AugMix) on the uint8 image after the crop and
flip, and random erasing after normalisation, where torchvision's reference recipe puts them;
in-memory images get the policy at their native size, before any resize.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from classicnets.data.policies import AugmentPolicy, BatchPolicy, BatchRandomErasing

__all__ = [
    "RECIPES",
    "BatchTransform",
    "Distortion",
    "EvalTransform",
    "crop_padding",
    "eval_resize",
    "folder_transform",
    "folder_uint8_ops",
    "sample_transform",
]


# augmentation recipes of in-memory datasets (``imagenet`` is the folder datasets' own)
RECIPES = ("none", "crop_flip", "distort")


@dataclass(frozen=True)
class Distortion:
    """The ``distort`` recipe's random affine map, drawn per image as torchvision's
    ``RandomAffine`` draws it: an angle uniform in ±``degrees``, a shift of each axis uniform in
    ±``translate`` × side rounded to whole pixels, a scale uniform in ``scale``, a horizontal
    shear angle uniform in ±``shear`` degrees; about the image centre, bilinear, zero fill.

    LeCun et al. (1998, §III.C) trained LeNet-5 on such distortions (translations, scaling,
    squeezing, horizontal shearing); no reflection is possible — a mirrored digit is another
    symbol or none.
    """

    degrees: float = 10.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.9, 1.1)
    shear: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", tuple(map(float, self.scale)))
        if not (0 <= self.degrees < 90 and 0 <= self.shear < 90 and 0 <= self.translate <= 1):
            raise ValueError(f"distortion needs 0 <= degrees, shear < 90 and 0 <= translate "
                             f"<= 1, got {self}")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"distortion.scale must be [low, high] with 0 < low <= high, "
                             f"got {list(self.scale)}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | Distortion | None) -> Distortion:
        """From ``data.distortion`` (missing keys: the defaults)."""
        if cfg is None or isinstance(cfg, Distortion):
            return cfg or cls()
        unknown = set(cfg) - {"degrees", "translate", "scale", "shear"}
        if unknown:
            raise ValueError(f"unknown data.distortion keys {sorted(unknown)}; known: "
                             "degrees, translate, scale, shear")
        return cls(**{k: (tuple(v) if k == "scale" else float(v)) for k, v in cfg.items()})

    def torchvision(self) -> v2.RandomAffine:
        """The per-image form (for float images; fill 0 is black before normalisation)."""
        return v2.RandomAffine(self.degrees, translate=(self.translate, self.translate),
                               scale=self.scale, shear=self.shear,
                               interpolation=v2.InterpolationMode.BILINEAR, fill=0)


def crop_padding(native_size: int) -> int:
    """Padding of the random-crop recipe: 4 px at 32 px (CIFAR), scaled with the side."""
    return max(1, round(native_size / 8))


def _erasing(p: float) -> list[torch.nn.Module]:
    """Random erasing with random-value fill (timm's "pixel" mode), on normalised images."""
    return [v2.RandomErasing(p=p, value="random")] if p > 0 else []


def _policy(policy: AugmentPolicy | None) -> list[torch.nn.Module]:
    t = policy.per_image() if policy is not None else None
    return [t] if t is not None else []


def sample_transform(recipe: str, *, train: bool, native_size: int, image_size: int,
                     mean: Sequence[float], std: Sequence[float],
                     distortion: Distortion | None = None,
                     policy: AugmentPolicy | None = None,
                     random_erasing: float = 0.0) -> v2.Compose:
    """Per-image transform for a uint8 ``(C, H, W)`` tensor from an in-memory dataset
    (``policy`` and ``random_erasing``: training only, on top of the recipe)."""
    ops: list[torch.nn.Module] = []
    if train and recipe == "crop_flip":
        ops += [v2.RandomCrop(native_size, padding=crop_padding(native_size)),
                v2.RandomHorizontalFlip()]
    if train:
        ops += _policy(policy)
    ops.append(v2.ToDtype(torch.float32, scale=True))
    if image_size != native_size:
        ops.append(v2.Resize(image_size, antialias=True))
    if train and recipe == "distort":
        ops.append((distortion or Distortion()).torchvision())
    ops.append(v2.Normalize(list(mean), list(std)))
    if train:
        ops += _erasing(random_erasing)
    return v2.Compose(ops)


def eval_resize(image_size: int) -> int:
    """Shorter side an image is resized to before the centre crop of ``image_size`` (the
    ImageNet convention: 256 for 224)."""
    return round(image_size * 256 / 224)


def folder_transform(*, train: bool, image_size: int, in_channels: int,
                     mean: Sequence[float], std: Sequence[float],
                     resize_size: int | None = None, policy: AugmentPolicy | None = None,
                     random_erasing: float = 0.0) -> v2.Compose:
    """ImageNet-style transform for PIL images read from a folder tree (evaluation: resize
    the shorter side to ``resize_size``, default :func:`eval_resize`, then centre-crop).
    Training crops to ``image_size`` (the caller passes ``train_crop_size`` there: FixRes)."""
    ops = [v2.ToImage(), *folder_uint8_ops(train=train, image_size=image_size,
                                           in_channels=in_channels, resize_size=resize_size,
                                           policy=policy)]
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    return v2.Compose(ops + _erasing(random_erasing))


def folder_uint8_ops(*, train: bool, image_size: int, in_channels: int,
                     resize_size: int | None = None,
                     policy: AugmentPolicy | None = None) -> list[torch.nn.Module]:
    """The geometric part of :func:`folder_transform` on a uint8 ``(3, H, W)`` image, without
    float conversion and normalisation: shared by the PIL path and the torchvision-decoder
    path (:mod:`classicnets.data.decode`), which normalises whole batches later. ``policy``
    (training) follows the crop and flip, as in torchvision's reference recipe."""
    ops: list[torch.nn.Module] = [v2.Grayscale(1)] if in_channels == 1 else []
    if train:
        ops += [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        ops += [v2.Resize(resize_size or eval_resize(image_size), antialias=True),
                v2.CenterCrop(image_size)]
    return ops + _policy(policy)  # given for training only (with or without the crop/flip)


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
    probability 1/2, and distortions as :class:`Distortion` says — exactly the distributions
    of :func:`sample_transform` — from the caller's generator, one draw per image; so are a
    policy (:class:`~classicnets.data.policies.BatchPolicy`, after the crop and flip, at the
    native size) and random erasing (after normalisation), training only.
    """

    def __init__(self, recipe: str, *, train: bool, native_size: int, image_size: int,
                 mean: Sequence[float], std: Sequence[float],
                 channels_last: bool = False, distortion: Distortion | None = None,
                 policy: AugmentPolicy | None = None, random_erasing: float = 0.0) -> None:
        if recipe not in RECIPES:
            raise ValueError(f"unknown augmentation recipe {recipe!r}; known: "
                             f"{', '.join(RECIPES)}")
        self.augment = train and recipe == "crop_flip"
        self.distortion = (distortion or Distortion()) if train and recipe == "distort" else None
        self.native_size, self.image_size = native_size, image_size
        self.pad = crop_padding(native_size)
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        self.channels_last = channels_last
        self.policy = (BatchPolicy(policy, height=native_size, width=native_size)
                       if train and policy is not None and policy.enabled else None)
        self.erasing = BatchRandomErasing(random_erasing) if train and random_erasing > 0 else None
        self.channels = len(mean)

    @property
    def random(self) -> bool:
        """Whether a call draws random numbers (and so needs a generator)."""
        return (self.augment or self.distortion is not None or self.policy is not None
                or self.erasing is not None)

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
        if self.policy is not None:
            self.policy.skip(batch_size, generator)
        if self.distortion is not None:
            self._draw_affine(batch_size, generator.device, generator)
        if self.erasing is not None:
            size = self.image_size
            self.erasing.skip((batch_size, self.channels, size, size), generator)

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

    def _draw_affine(self, b: int, device: torch.device, generator: torch.Generator) -> Tensor:
        """A batch's inverse affine maps ``(b, 2, 3)`` in ``affine_grid``'s normalised units.

        Built as torchvision's ``_get_inverse_affine_matrix`` builds it (centre at the origin),
        so each image gets the map ``RandomAffine`` would give it for the same angle, shift,
        scale and shear.
        """
        d, size = self.distortion, self.image_size
        assert d is not None
        u = torch.rand(b, 5, device=device, generator=generator, dtype=torch.float64)
        rot = torch.deg2rad((2 * u[:, 0] - 1) * d.degrees)
        max_shift = d.translate * size
        # whole pixels, rounded half to even as Python's round() in RandomAffine
        tx = torch.round((2 * u[:, 1] - 1) * max_shift)
        ty = torch.round((2 * u[:, 2] - 1) * max_shift)
        scale = d.scale[0] + u[:, 3] * (d.scale[1] - d.scale[0])
        sx = torch.deg2rad((2 * u[:, 4] - 1) * d.shear)
        # rotation × horizontal shear (determinant 1), inverted, then divided by the scale
        a, b_ = torch.cos(rot), -torch.cos(rot) * torch.tan(sx) - torch.sin(rot)
        c, d_ = torch.sin(rot), -torch.sin(rot) * torch.tan(sx) + torch.cos(rot)
        inv = torch.stack([torch.stack([d_, -b_], -1), torch.stack([-c, a], -1)], -2)
        inv = inv / scale.view(-1, 1, 1)
        shift = -(inv @ torch.stack([tx, ty], -1).unsqueeze(-1))  # pixels
        # pixel offsets from the centre → [-1, 1] units (align_corners=False: half a side)
        theta = torch.cat([inv, shift / (size / 2)], -1)
        return theta.float()

    def random_affine(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Float images (0 = black) resampled through each one's random affine map."""
        theta = self._draw_affine(len(x), x.device, generator)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.random and generator is None:
            raise ValueError("training augmentation needs a generator for reproducibility")
        if self.augment:
            x = self.random_crop_flip(x, generator)
        if self.policy is not None:
            x = self.policy(x, generator)
        if self.distortion is not None:
            x = x.float().div_(255.0)
            if self.image_size != self.native_size:
                x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                                  antialias=True, align_corners=False)
            x = self.random_affine(x, generator)
            x = x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))
        elif self.image_size != self.native_size:
            x = F.interpolate(x.float().div_(255.0), size=(self.image_size, self.image_size),
                              mode="bilinear", antialias=True, align_corners=False)
            x = x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))
        else:  # (x / 255 - mean) / std as one multiply-add pass over the batch
            scale = (1.0 / (255.0 * self.std)).to(x.device)
            x = torch.addcmul((-self.mean / self.std).to(x.device), x.float(), scale)
        if self.erasing is not None:
            x = self.erasing(x, generator)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x
