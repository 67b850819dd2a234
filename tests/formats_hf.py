"""Small Hugging Face datasets written locally in the formats ``datasets`` reads: a
``save_to_disk`` folder and Parquet files (no hub access in tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ("cat", "dog", "fox")


def tiny_dataset(n: int = 30, *, image_col: str = "img", label_col: str = "label",
                 string_labels: bool = False, grey: bool = False, seed: int = 0) -> Any:
    """A ``datasets.Dataset`` of ``n`` small PNG-encoded images (sizes vary) whose label
    ``i % 3`` is a ``ClassLabel`` (or the class name, with ``string_labels``); the image's
    first pixel encodes its position ``i``, so tests can tell examples apart."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        arr = rng.integers(0, 256, (20 + i % 4, 24, 3), dtype=np.uint8)
        arr[0, 0] = (i, i, i)
        images.append(Image.fromarray(arr[..., 0] if grey else arr))
    labels = [CLASSES[i % 3] if string_labels else i % 3 for i in range(n)]
    label_feature = datasets.Value("string") if string_labels else datasets.ClassLabel(
        names=list(CLASSES))
    features = datasets.Features({image_col: datasets.Image(), label_col: label_feature})
    return datasets.Dataset.from_dict({image_col: images, label_col: labels}, features=features)


def write_saved(path: Path, splits: dict[str, int] | None = None, **kwargs: Any) -> Path:
    """A ``DatasetDict`` written by ``save_to_disk`` (split name → examples)."""
    import datasets

    splits = splits or {"train": 30, "test": 9}
    dd = datasets.DatasetDict({name: tiny_dataset(n, seed=i, **kwargs)
                               for i, (name, n) in enumerate(splits.items())})
    dd.save_to_disk(str(path))
    return path


def write_parquet(path: Path, n: int = 30, **kwargs: Any) -> Path:
    """One Parquet file (images stored as encoded bytes, the hub's own layout)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tiny_dataset(n, **kwargs).to_parquet(str(path))
    return path
