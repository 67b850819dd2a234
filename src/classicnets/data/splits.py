"""What the dataset sources (torchvision, Hugging Face) share: held-out splits drawn from a seed
where a dataset defines none, per-image transforms of decoded images, and channel statistics
computed once and cached."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from classicnets.data.policies import AugmentPolicy
from classicnets.data.transforms import folder_uint8_ops

__all__ = ["PER_IMAGE_RECIPES", "TEST_SPLIT_SEED", "ImageSplit", "cached_stats",
           "held_out", "image_transform", "match_stats", "pixel_stats"]

log = logging.getLogger(__name__)

# recipes of datasets decoded per image: ``imagenet`` = random-resized-crop + flip for
# training, resize + centre crop for evaluation; ``resize`` = resize + centre crop always (no
# random crop or flip: for traffic signs a flip turns "turn left" into "turn right")
PER_IMAGE_RECIPES = ("imagenet", "resize")
# the test split cut from a dataset without one is the same for every run seed, so runs of
# different seeds are scored on the same images
TEST_SPLIT_SEED = 0


def held_out(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(kept, held_out)`` positions of ``n`` samples: ``round(n · fraction)`` held out, drawn
    by a seeded permutation (the same on every rank and every run)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    k = round(n * fraction)
    return sorted(order[k:]), sorted(order[:k])


def image_transform(recipe: str, *, train: bool, image_size: int, in_channels: int,
                    resize_size: int, mean: Sequence[float], std: Sequence[float],
                    policy: AugmentPolicy | None = None,
                    random_erasing: float = 0.0) -> v2.Compose:
    """A decoded image (PIL in any mode, or a uint8 tensor) → normalised float
    ``(in_channels, image_size, image_size)``, by the per-image ``recipe``; ``policy`` and
    ``random_erasing`` (the callers give them for training only) as on the folder path.

    The geometric ops are the image folders' own (:func:`folder_uint8_ops`), so a checkpoint's
    :class:`~classicnets.data.transforms.EvalTransform` reproduces the evaluation input.
    """
    if recipe not in PER_IMAGE_RECIPES:
        raise ValueError(f"unknown per-image recipe {recipe!r}; known: {PER_IMAGE_RECIPES}")
    augment = train and recipe == "imagenet"
    # v2.RGB: grey, palette and RGBA images (Caltech-101 has grey ones) become three channels
    # first, as ImageFolder's PIL loader gives them; Grayscale(1) in the ops then makes one
    ops = [v2.ToImage(), v2.RGB(), *folder_uint8_ops(
        train=augment, image_size=image_size, in_channels=in_channels, resize_size=resize_size,
        policy=policy)]
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if random_erasing > 0:  # after the normalisation, as torchvision's reference recipe
        ops.append(v2.RandomErasing(p=random_erasing, value="random"))
    return v2.Compose(ops)


class ImageSplit(Dataset):
    """``(transform(image), label)`` for the positions ``indices`` of a dataset of decoded
    images; ``read(i)`` gives position ``i``'s ``(image, label)`` (decoding happens here, in
    the DataLoader worker that asks)."""

    def __init__(self, read: Callable[[int], tuple[Any, int]], indices: Sequence[int],
                 transform: Callable[[Any], Tensor]) -> None:
        self.read, self.indices, self.transform = read, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image, label = self.read(self.indices[i])
        return self.transform(image), int(label)


def pixel_stats(images: Iterable[Tensor]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std, in [0, 1] units, over every pixel of uint8 ``(C, H, W)`` or
    ``(N, C, H, W)`` tensors (accumulated in float64, one tensor at a time)."""
    total = total_sq = None
    count = 0
    for x in images:
        x = x if x.ndim == 4 else x.unsqueeze(0)
        flat = x.transpose(0, 1).reshape(x.shape[1], -1).double() / 255.0
        s, sq = flat.sum(1), (flat * flat).sum(1)
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += flat.shape[1]
    if total is None or total_sq is None or count == 0:
        raise ValueError("no images to compute statistics from")
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


def cached_stats(root: Path, key: str, compute: Callable[[], tuple[tuple[float, ...],
                                                                    tuple[float, ...]]]
                 ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``compute()`` once, then read from ``<root>/.classicnets_stats/<key>.json``.

    A cache that cannot be written (a read-only data folder) only costs recomputing next time.
    """
    path = Path(root) / ".classicnets_stats" / (re.sub(r"[^\w.=+-]+", "_", key) + ".json")
    if path.is_file():
        try:
            d = json.loads(path.read_text())
            return tuple(map(float, d["mean"])), tuple(map(float, d["std"]))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring the unreadable statistics cache %s (recomputing it)", path)
    mean, std = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "mean": list(mean), "std": list(std)}))
        tmp.replace(path)
    except OSError as err:
        log.warning("could not cache the dataset statistics at %s (%s)", path, err)
    log.info("%s: mean %s, std %s (cached in %s)", key, mean, std, path)
    return mean, std


def match_stats(mean: Sequence[float], std: Sequence[float], channels: int
                ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Statistics for ``channels`` channels: converted images get averaged (or repeated)
    statistics, as the DataModule does for the catalogue's."""
    if len(mean) == channels:
        return tuple(mean), tuple(std)
    return (sum(mean) / len(mean),) * channels, (sum(std) / len(std),) * channels
