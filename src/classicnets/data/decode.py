"""Folder images decoded by ``torchvision.io`` and augmented as uint8 tensors.

The ordinary folder path decodes each file with PIL, copies it into a tensor, crops and
resizes it, converts the crop to float and normalises it, all per image in a DataLoader worker,
and ships float batches (four bytes a pixel) back to the main process. Here a worker decodes
with ``torchvision.io`` (libjpeg-turbo / libpng straight into a tensor, no PIL image and no
copy), applies the same geometric transform to the uint8 tensor
(:func:`uint8_folder_transform`), and ships uint8 batches in shared memory (:func:`stack_uint8`):
a quarter of the bytes, and of the fresh pages to fault in, of a float batch. Float conversion
and normalisation run once per batch where the batch is handed out — on the training device,
the CPU included (:class:`BatchNormalize`, applied by :class:`FinishingLoader`).

Channels come out as PIL's ``convert("RGB")`` gives them: grey, CMYK and palette images become
RGB, alpha is dropped (``in_channels=1`` then takes the luminance, as the PIL path does).
A file ``torchvision.io`` cannot decode (BMP, TIFF, 16-bit PNG, a JPEG variant this build
refuses, a damaged file) is read by PIL instead, so it loads exactly as before — or fails with
PIL's error, which :class:`~classicnets.data.datamodule.CheckedImageFolder` turns into a
warning naming the file.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, default_collate, get_worker_info
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import pil_to_tensor

from classicnets.data.policies import AugmentPolicy, BatchRandomErasing
from classicnets.data.transforms import folder_uint8_ops

__all__ = [
    "DECODERS",
    "BatchNormalize",
    "FinishingLoader",
    "RandomResizedCropFlip",
    "batch_buffer",
    "read_rgb",
    "stack_uint8",
    "uint8_folder_transform",
]

# auto: torchvision for folder datasets; pil: the ordinary per-image PIL path; gpu: JPEGs
# decoded and augmented in batches on the GPU (classicnets.data.gpu_decode)
DECODERS = ("auto", "torchvision", "pil", "gpu")

# torchvision 0.29 deprecates its decoders in favour of TorchCodec and warns at every call;
# they are still the fastest CPU decoders a torchvision install carries, and the PIL fallback
# below keeps loading working if a later release removes one
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of "
                        "TorchVision are deprecated", category=DeprecationWarning)


def _read_with_pil(path: str) -> Tensor:
    with open(path, "rb") as f, Image.open(f) as img:
        return pil_to_tensor(img.convert("RGB"))


def read_rgb(path: str) -> Tensor:
    """The image at ``path`` as a uint8 ``(3, H, W)`` tensor, as PIL's ``convert("RGB")``.

    Raises PIL's ``OSError`` for a file neither decoder can read.
    """
    with open(path, "rb") as f:
        data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
    try:
        image = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError:  # unsupported format or damaged: PIL decides which
        return _read_with_pil(path)
    if image.dtype != torch.uint8:  # 16-bit PNG: PIL's conversion to 8 bits, as before
        return _read_with_pil(path)
    return image


class RandomResizedCropFlip:
    """torchvision's ``RandomResizedCrop(size)`` (area fraction uniform in ``scale``, log aspect
    ratio uniform in ``log(ratio)``, ten tries then the centre crop; bilinear, antialiased)
    followed by ``RandomHorizontalFlip()``, on a uint8 ``(C, H, W)`` tensor.

    The same distribution as the v2 pair, drawn from torch's global generator as they draw (so
    DataLoader worker seeding applies), but one crop view and one ``interpolate`` call per
    image: on a decoded JPEG (channels-last strides) that is the uint8 AVX2 resize kernel,
    without v2's per-call dispatch, which costs as much again as the resize on small crops.
    """

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        self.size, self.scale, self.ratio = size, scale, ratio

    def params(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(top, left, h, w)`` of one random crop of a ``height × width`` image."""
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * torch.empty(1).uniform_(*self.scale).item()
            aspect = math.exp(torch.empty(1).uniform_(log_lo, log_hi).item())
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,)).item())
                left = int(torch.randint(0, width - w + 1, (1,)).item())
                return top, left, h, w
        # no try fitted: the largest centred crop whose aspect lies within ``ratio``
        if width / height < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif width / height > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: Tensor) -> Tensor:
        top, left, h, w = self.params(image.shape[-2], image.shape[-1])
        # a contiguous channels-last copy of the crop (a few µs): the uint8 AVX2 kernel takes
        # only that layout, and resizes such a crop in half the time of the strided view
        crop = image[..., top:top + h, left:left + w].unsqueeze(0).contiguous(
            memory_format=torch.channels_last)
        out = F.interpolate(crop, size=(self.size, self.size), mode="bilinear",
                            antialias=True, align_corners=False)[0]
        return out.flip(-1) if torch.rand(1).item() < 0.5 else out


def uint8_folder_transform(*, train: bool, image_size: int, in_channels: int,
                           resize_size: int | None = None,
                           policy: AugmentPolicy | None = None) -> v2.Compose:
    """:func:`~classicnets.data.transforms.folder_transform` up to (not including) the float
    conversion, for the uint8 tensors of :func:`read_rgb` (random erasing, which follows the
    normalisation, is :class:`BatchNormalize`'s)."""
    if not train:  # resize + centre crop: the very ops of the PIL path
        return v2.Compose(folder_uint8_ops(train=False, image_size=image_size,
                                           in_channels=in_channels, resize_size=resize_size,
                                           policy=policy))
    grey: list[Any] = [v2.Grayscale(1)] if in_channels == 1 else []
    extra = policy.per_image() if policy is not None else None
    return v2.Compose([*grey, RandomResizedCropFlip(image_size),
                       *([extra] if extra is not None else [])])


def batch_buffer(shape: Sequence[int], dtype: torch.dtype, *, channels_last: bool) -> Tensor:
    """An empty ``(B, C, H, W)`` batch, channels-last or contiguous. In a DataLoader worker
    it lives in shared memory, as the batches ``default_collate`` stacks there do: sending it
    to the main process then copies nothing (a batch in private memory is copied into a new
    shared-memory file first, which costs as much as normalising it)."""
    b, c, h, w = (int(n) for n in shape)
    stride = (c * h * w, 1, w * c, c) if channels_last else (c * h * w, h * w, w, 1)
    if get_worker_info() is None:
        return torch.empty_strided((b, c, h, w), stride, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(b * c * h * w * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, (b, c, h, w), stride)


def _stackable(images: Sequence[Tensor]) -> bool:
    first = images[0]
    return first.dim() == 3 and all(i.shape == first.shape for i in images)


class BatchNormalize:
    """uint8 ``(B, C, H, W)`` batch → float ``(x / 255 - mean) / std`` on the batch's device
    (the last two steps of :func:`folder_transform`, per batch), contiguous or channels-last
    as asked whatever the input's layout: one converting copy and two in-place passes.
    ``random_erasing`` > 0 (training) erases a random rectangle of each normalised image with
    that probability (:class:`~classicnets.data.policies.BatchRandomErasing`), drawn from a
    generator on the batch's device seeded with ``seed`` (give each DDP rank its own: torch's
    default generator holds the same seed on every rank)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float],
                 channels_last: bool = False, random_erasing: float = 0.0,
                 seed: int = 0) -> None:
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale, self.shift = 1.0 / (255.0 * s), -m / s
        self.channels_last = channels_last
        self.erasing = BatchRandomErasing(random_erasing) if random_erasing > 0 else None
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}  # one per device

    def __call__(self, x: Tensor) -> Tensor:
        if x.dtype != torch.uint8:
            raise TypeError(f"BatchNormalize expects a uint8 batch, got {x.dtype}")
        dev = x.device
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        out = torch.empty(x.shape, dtype=torch.float32, device=dev, memory_format=layout)
        # two in-place passes: twice as fast on the CPU as one broadcast addcmul, which does
        # not vectorise over the channel-wise scale
        out = out.copy_(x).mul_(self.scale.to(dev)).add_(self.shift.to(dev))
        if self.erasing is None:
            return out
        if dev not in self._generators:
            self._generators[dev] = torch.Generator(device=dev).manual_seed(self.seed)
        return self.erasing(out, self._generators[dev])


def stack_uint8(samples: list[tuple[Tensor, Any]]) -> tuple[Tensor, Tensor]:
    """``collate_fn`` of uint8 samples: the batch keeps the images' layout (channels-last out
    of the resize: a plain copy, no transposition), in shared memory in a worker;
    :class:`BatchNormalize` sets the network's layout where the batch is normalised."""
    images = [s[0] for s in samples]
    if not _stackable(images):
        return default_collate(samples)  # default_collate's own error names the mismatch
    cl = images[0].shape[0] > 1 and images[0].stride()[0] == 1
    out = batch_buffer((len(images), *images[0].shape), torch.uint8, channels_last=cl)
    for i, image in enumerate(images):
        out[i].copy_(image)
    return out, default_collate([s[1] for s in samples])


class FinishingLoader(DataLoader):
    """A DataLoader of uint8 ``(images, labels)`` batches that hands each batch out on
    ``device`` with :class:`BatchNormalize` applied: normalised floats, as every other loader
    of the DataModule yields. Everything else (workers, samplers, Lightning's distributed
    sampler) is the DataLoader's own."""

    def __init__(self, *args: Any, finish: BatchNormalize, device: torch.device | str = "cpu",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the same names as the arguments: Lightning rebuilds the loader from them under DDP
        self.finish, self.device = finish, torch.device(device)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:  # type: ignore[override]
        non_blocking = self.device.type not in ("cpu", "mps")  # pinned → async copy
        for images, labels in super().__iter__():
            images = images.to(self.device, non_blocking=non_blocking)
            yield self.finish(images), labels.to(self.device, non_blocking=non_blocking)
