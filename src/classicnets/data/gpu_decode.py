"""JPEG decoding on the GPU (``data.decoder=gpu``), for image folders and folder shards.

A DataLoader worker only reads each file (or shard sample): a JPEG's bytes go to the main
process as they are, and the whole batch is decoded there on the training GPU in one
``torchvision.io.decode_jpeg(list, device="cuda")`` call (nvJPEG, batched), then cropped,
resized and flipped on the GPU (:class:`GpuBatchDecoder`: random-resized-crop + flip drawn as
:class:`~classicnets.data.decode.RandomResizedCropFlip` draws them; evaluation: resize the
shorter side + centre crop) and normalised there. What nvJPEG cannot take falls back to the
CPU path with a warning naming the file: a file that is not a JPEG (PNG, BMP, ...) is decoded
in the worker as ``data.decoder=torchvision`` does; a JPEG the batched call refuses is retried
alone on the GPU, then decoded on the CPU, and dropped from its batch (with a warning) only if
no decoder can read it.

Why our own loop rather than a library's: DALI would need its own pipeline and loader outside
Lightning's DataLoader (no resumable state, no ``DistributedSampler``); torchvision's batched
``decode_jpeg`` and v2 functional ops are the library pieces, and only their wiring is here.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import default_collate
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from classicnets.data.catalogue import DatasetError
from classicnets.data.decode import FinishingLoader, RandomResizedCropFlip, read_rgb
from classicnets.data.policies import AugmentPolicy, BatchPolicy, BatchRandomErasing

__all__ = [
    "GPU_DECODERS",
    "GpuBatchDecoder",
    "GpuDecodeLoader",
    "check_decoder",
    "collate_encoded",
    "decode_bytes",
    "encoded_or_decoded",
    "is_jpeg",
    "read_encoded",
]

log = logging.getLogger(__name__)
GPU_DECODERS = ("auto", "torchvision", "gpu")  # data.decoder values of shards
_JPEG_MAGIC = b"\xff\xd8\xff"
_warned: set[str] = set()  # per process: a file's fallback is reported once


def check_decoder(decoder: str, *, folder: bool, what: str = "") -> str:
    """``data.decoder`` of shards (``auto`` = ``torchvision``), refused before training when
    it cannot work: ``gpu`` without CUDA, or for data that holds no JPEG files."""
    if decoder not in GPU_DECODERS:
        raise DatasetError(f"data.decoder={decoder!r} is not one of {', '.join(GPU_DECODERS)}")
    if decoder == "gpu":
        if not folder:
            raise DatasetError(f"data.decoder=gpu decodes JPEG image files; {what or 'this data'}"
                               ": remove the override (or use data.decoder=auto)")
        require_cuda()
    return "torchvision" if decoder == "auto" else decoder


def require_cuda() -> None:
    if not torch.cuda.is_available():
        raise DatasetError("data.decoder=gpu needs a CUDA device (nvJPEG), and this machine has "
                           "none: use data.decoder=torchvision (JPEG decoding in the DataLoader "
                           "workers on the CPU) or run on a GPU (trainer=gpu)")


def is_jpeg(data: bytes | memoryview | Tensor) -> bool:
    head = bytes(data[:3].tolist()) if isinstance(data, Tensor) else bytes(data[:3])
    return head == _JPEG_MAGIC


def _fallback_warning(name: str, why: str) -> None:
    if name not in _warned:
        _warned.add(name)
        log.warning("data.decoder=gpu: %s %s; decoded on the CPU instead", name, why)


def decode_bytes(data: Any, name: str, mode: ImageReadMode = ImageReadMode.RGB) -> Tensor:
    """Encoded image bytes → uint8 ``(C, H, W)``; what ``torchvision.io`` cannot decode goes to
    PIL (as :func:`~classicnets.data.decode.read_rgb` does for files)."""
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        image = decode_image(raw, mode=mode)
        if image.dtype == torch.uint8:
            return image
    except RuntimeError:
        pass
    try:
        with Image.open(io.BytesIO(bytes(data))) as img:
            return TF.pil_to_tensor(img.convert("RGB" if mode == ImageReadMode.RGB else "L"))
    except OSError as err:
        raise DatasetError(f"{name}: cannot decode its image ({err})") from None


def encoded_or_decoded(data: bytes | memoryview, name: str) -> Tensor:
    """In a worker: a JPEG's bytes as a 1-D uint8 tensor (decoded later, on the GPU), anything
    else decoded now on the CPU (uint8 ``(3, H, W)``), with a warning naming it."""
    if is_jpeg(data):
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)
    _fallback_warning(name, "is not a JPEG file (nvJPEG decodes JPEG only)")
    return decode_bytes(data, name)


def read_encoded(path: str) -> tuple[Tensor, str]:
    """The ``loader`` of an image folder under ``data.decoder=gpu``: ``(payload, path)`` (see
    :func:`encoded_or_decoded`); an unreadable non-JPEG raises PIL's ``OSError`` as
    :func:`~classicnets.data.decode.read_rgb` does, so the folder skips it with a warning."""
    with open(path, "rb") as f:
        data = f.read()
    if is_jpeg(data):
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), path
    _fallback_warning(path, "is not a JPEG file (nvJPEG decodes JPEG only)")
    return read_rgb(path), path


def collate_encoded(samples: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """``((payload, name), label, *extras)`` samples → ``(payloads, labels, names, *extras)``:
    payloads stay a list (their sizes differ) for :class:`GpuBatchDecoder`."""
    payloads = [s[0][0] for s in samples]
    names = [str(s[0][1]) for s in samples]
    rest = [default_collate([s[k] for s in samples]) for k in range(1, len(samples[0]))]
    return (payloads, rest[0], names, *rest[1:])


class GpuBatchDecoder:
    """A list of payloads (JPEG bytes, or images the worker already decoded) → a normalised
    float batch ``(B, C, image_size, image_size)`` on ``device``, augmented as the folder path
    augments (random-resized-crop + flip in training; resize + centre crop in evaluation).

    Returns the batch and the positions kept (all of them unless a file could not be decoded
    by any decoder)."""

    def __init__(self, *, train: bool, image_size: int, in_channels: int, resize_size: int,
                 mean: Sequence[float], std: Sequence[float], channels_last: bool = False,
                 device: torch.device | str = "cuda", policy: AugmentPolicy | None = None,
                 random_erasing: float = 0.0, seed: int = 0) -> None:
        self.train, self.image_size, self.in_channels = train, image_size, in_channels
        self.resize_size, self.channels_last = resize_size, channels_last
        self.device = torch.device(device)
        self.crop = RandomResizedCropFlip(image_size)
        # the recipes' ingredients, batched on the device as on the fast path: a policy on the
        # cropped uint8 batch, random erasing after normalisation (training only)
        on = train and policy is not None and policy.enabled
        self.policy = (BatchPolicy(policy, height=image_size, width=image_size)  # type: ignore[arg-type]
                       if on else None)
        self.erasing = BatchRandomErasing(random_erasing) if train and random_erasing > 0 else None
        self.seed = seed
        self._generator: torch.Generator | None = None
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def decode(self, payloads: Sequence[Tensor], names: Sequence[str]) -> list[Tensor | None]:
        """Each payload as a uint8 ``(3, H, W)`` tensor on the device (None: undecodable)."""
        out: list[Tensor | None] = [None] * len(payloads)
        jpegs = [i for i, p in enumerate(payloads) if p.dim() == 1]
        for i, p in enumerate(payloads):
            if p.dim() == 3:  # decoded in the worker (not a JPEG)
                out[i] = p.to(self.device, non_blocking=True)
        if not jpegs:
            return out
        try:  # one batched call: nvJPEG decodes the whole batch at once
            decoded = decode_jpeg([payloads[i] for i in jpegs], mode=ImageReadMode.RGB,
                                  device=self.device)
            for i, image in zip(jpegs, decoded):
                out[i] = image
            return out
        except RuntimeError:  # one bad file fails the batch: find it, decode the rest
            pass
        for i in jpegs:
            try:
                out[i] = decode_jpeg(payloads[i], mode=ImageReadMode.RGB, device=self.device)
            except RuntimeError as err:
                out[i] = self._cpu(payloads[i], names[i], err)
        return out

    def _cpu(self, payload: Tensor, name: str, err: Exception) -> Tensor | None:
        _fallback_warning(name, f"could not be decoded by nvJPEG ({str(err).splitlines()[0]})")
        try:
            return decode_bytes(payload.numpy().tobytes(), name).to(self.device)
        except DatasetError as cpu_err:
            log.warning("data.decoder=gpu: %s is unreadable (%s); left out of its batch — delete "
                        "or replace it", name, cpu_err)
            return None

    def transform(self, image: Tensor) -> Tensor:
        """One decoded uint8 image → float ``(C, S, S)`` in [0, 255], on its device."""
        x = image.float()
        if self.train:
            top, left, h, w = self.crop.params(x.shape[-2], x.shape[-1])
            x = TF.resized_crop(x, top, left, h, w, [self.image_size, self.image_size],
                                antialias=True)
            if torch.rand(1).item() < 0.5:
                x = x.flip(-1)
        else:
            x = TF.center_crop(TF.resize(x, [self.resize_size], antialias=True),
                               [self.image_size, self.image_size])
        if self.in_channels == 1:  # ITU-R 601 luminance, as the other paths' Grayscale
            w = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(3, 1, 1)
            x = (x * w).sum(0, keepdim=True)
        return x

    def __call__(self, payloads: Sequence[Tensor], names: Sequence[str]
                 ) -> tuple[Tensor, list[int]]:
        images = self.decode(payloads, names)
        kept = [i for i, im in enumerate(images) if im is not None]
        if not kept:
            raise DatasetError(f"data.decoder=gpu: no image of a batch could be decoded "
                               f"({', '.join(names[:5])}, ...): check the files")
        batch = torch.stack([self.transform(images[i]) for i in kept])  # type: ignore[arg-type]
        dev = batch.device
        if (self.policy or self.erasing) and self._generator is None:
            self._generator = torch.Generator(device=dev).manual_seed(self.seed)
        if self.policy is not None:  # the policies' kernels take uint8, as torchvision's
            batch = self.policy(batch.round_().clamp_(0, 255).to(torch.uint8),
                                self._generator).float()  # type: ignore[arg-type]
        batch = batch.div_(255.0).sub_(self.mean.to(dev)).div_(self.std.to(dev))
        if self.erasing is not None:
            batch = self.erasing(batch, self._generator)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch, kept


def finish_encoded(decoder: GpuBatchDecoder, batch: tuple[Any, ...],
                   device: torch.device) -> tuple[Any, ...]:
    """``(payloads, labels, names, *extras)`` → ``(images, labels, *extras)`` on ``device``,
    without the samples that could not be decoded."""
    payloads, labels, names, *extras = batch
    images, kept = decoder(payloads, names)
    index = torch.tensor(kept)
    out = [labels[index].to(device)]
    out += [e[index].to(device) if isinstance(e, Tensor) else e for e in extras]
    return (images, *out)


class GpuDecodeLoader(FinishingLoader):
    """An image folder's DataLoader whose batches are decoded and augmented on the GPU
    (:class:`GpuBatchDecoder` as ``finish``); workers, samplers and Lightning's distributed
    sampler are the DataLoader's own."""

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:  # type: ignore[override]
        for batch in super(FinishingLoader, self).__iter__():
            yield finish_encoded(self.finish, batch, self.device)  # type: ignore[arg-type]
