"""Classify images with a checkpoint: `python src/predict.py ckpt_path=... input=<images>`.

A checkpoint carries its class names and evaluation transform (the DataModule's ``state_dict``),
so nothing else is needed. Images of any size and mode are converted as in training (RGB by
dropping alpha, as torchvision's ImageFolder does; grey through the transform), loaded in
batches, and classified on the device; a file that cannot be read as an image gets its error in
the CSV and the others go on. :func:`load_trained` also serves `classicnets.inference.export`.
"""

from __future__ import annotations

import csv
import glob
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from classicnets.callbacks.ema import apply_ema_weights
from classicnets.checkpoints import CheckpointError, load_file
from classicnets.data import ImageDataModule
from classicnets.data.transforms import EvalTransform
from classicnets.instantiate import instantiate_clean
from classicnets.training.module import ImageClassifier

__all__ = [
    "ImageFiles",
    "NormalizedClassifier",
    "Trained",
    "find_images",
    "inference_device",
    "load_trained",
    "predict",
    "predict_files",
]

log = logging.getLogger(__name__)

# the weights a checkpoint gives for inference: the trained ones, or their moving average
WEIGHTS = ("model", "ema")


class NormalizedClassifier(nn.Module):
    """A network with its input normalisation inside: takes float images in [0, 1]
    ``(N, C, S, S)`` and returns logits ``(N, num_classes)``. Prediction and export both run
    this, so an exported model computes exactly what `predict.py` does."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


@dataclass
class Trained:
    """A checkpoint made ready for inference."""

    model: NormalizedClassifier  # in eval mode, on the CPU
    classes: list[str]
    transform: EvalTransform
    model_name: str
    checkpoint: Path

    @property
    def input_shape(self) -> tuple[int, int, int]:
        t = self.transform
        return (t.in_channels, t.image_size, t.image_size)

    def metadata(self) -> dict[str, Any]:
        """What an exported model needs beside its weights (written into it and beside it)."""
        return {"model": self.model_name, "classes": self.classes,
                "eval_transform": self.transform.to_dict(),
                "checkpoint": str(self.checkpoint.resolve()),
                "input": f"float32 (batch, {', '.join(map(str, self.input_shape))}) in [0, 1], "
                         "resized and centre-cropped as eval_transform says; normalisation "
                         "is inside", "output": "logits (batch, num_classes)"}


def _saved_data(path: Path, trust: bool | None
                ) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(the DataModule's saved state, its saved hyper-parameters) from a checkpoint, without
    reading the weights again (memory-mapped)."""
    raw = load_file(path, trust=trust, mmap=True)
    # Lightning files it under the DataModule's class name: ImageDataModule, a subclass of it
    # (TorchvisionDataModule, HuggingFaceDataModule) or ShardDataModule, whose states have
    # the same keys
    state = raw.get(ImageDataModule.__qualname__) or next(
        (v for k, v in raw.items() if isinstance(k, str) and k.endswith("DataModule")
         and isinstance(v, Mapping) and "eval_transform" in v), {})
    hparams = raw.get(ImageDataModule.CHECKPOINT_HYPER_PARAMS_KEY) or {}
    del raw
    return state, hparams


def _from_data_config(data_cfg: DictConfig) -> tuple[list[str], EvalTransform]:
    """Class names and transform of the dataset a checkpoint was trained on (older checkpoints)."""
    datamodule: ImageDataModule = instantiate_clean(data_cfg)
    datamodule.setup("predict")  # reads the dataset: class names come from its files
    return list(datamodule.classes), datamodule.eval_transform


def _check_matches(model_cfg: Mapping[str, Any], classes: Sequence[str],
                   transform: EvalTransform, *, override: bool) -> None:
    """The network must take the transform's channels and give one logit per class name."""
    wants = {"num_classes": len(classes), "in_channels": transform.in_channels}
    if override:  # a saved transform is what the network saw, even at another input_size
        wants["input_size"] = transform.image_size
    for key, have in wants.items():
        want = model_cfg.get(key)
        if want is None or int(want) == have:
            continue
        if override:
            data_key = {"input_size": "image_size"}.get(key, key)
            raise ValueError(
                f"the checkpoint's network was built for {key}={want} but data gives "
                f"{data_key}={have}; pass the data it was trained on (data=... "
                f"data.{data_key}={want})")
        raise CheckpointError(
            f"the checkpoint's network was built for {key}={want} but its saved data settings "
            f"give {have}: the checkpoint is inconsistent; pass data=<the dataset it was "
            "trained on> to override them")


def load_trained(ckpt_path: str | os.PathLike, data_cfg: DictConfig | None = None, *,
                 trust: bool | None = None, weights: str = "model") -> Trained:
    """Load a checkpoint for inference with its class names and evaluation transform.

    ``weights``: ``model`` (the trained weights) or ``ema`` (their moving average, in
    checkpoints of runs with ``callbacks=ema``; :mod:`classicnets.callbacks.ema`).

    ``data_cfg`` (a ``conf/data`` config) is needed only for checkpoints written before
    checkpoints carried these; given anyway, it replaces them and must fit the network.
    The file is read weights-only unless ``trust`` (``None``: the ``trust_checkpoint``
    setting of the running entry point; see :mod:`classicnets.checkpoints`).
    """
    path = Path(ckpt_path).expanduser()
    if weights not in WEIGHTS:
        raise ValueError(f"weights={weights!r} is not one of {', '.join(WEIGHTS)}")
    module = ImageClassifier.load_checkpoint(path, trust=trust)
    if weights == "ema":
        apply_ema_weights(module.net, path, trust=trust)
    model_cfg = module.hparams.get("model") or {}
    state, data_hparams = _saved_data(path, trust)
    if data_cfg is not None:
        classes, transform = _from_data_config(data_cfg)
        log.info("class names and transform from data=%s (not from the checkpoint)",
                 data_cfg.get("name"))
        _check_matches(model_cfg, classes, transform, override=True)
    elif state.get("classes") and state.get("eval_transform"):
        classes = [str(c) for c in state["classes"]]
        transform = EvalTransform.from_dict(state["eval_transform"])
        _check_matches(model_cfg, classes, transform, override=False)
    else:
        trained_on = data_hparams.get("name")
        was = f"; it was trained on data={trained_on}" if trained_on else ""
        raise CheckpointError(
            f"{path} carries no class names or evaluation transform (it was written before "
            f"classicnets stored them{was}); pass the data it was trained on, e.g. "
            f"data={trained_on or '<dataset>'} with the same data.* overrides as in training")
    net = module.net.eval()
    return Trained(model=NormalizedClassifier(net, transform.mean, transform.std).eval(),
                   classes=classes, transform=transform,
                   model_name=str(model_cfg.get("name", type(net).__name__)), checkpoint=path)


# ---------------------------------------------------------------------------- inputs


def find_images(spec: str | os.PathLike) -> list[Path]:
    """The files ``input=`` names: one file, every file under a folder (recursively, hidden ones
    skipped), or a glob (``**`` recurses). Non-images stay in: they are reported, not dropped."""
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(path).parts)]
        if not found:
            raise FileNotFoundError(f"input={text}: the folder holds no files")
        return sorted(found)
    if glob.has_magic(text):
        found = [Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True)]
        found = [p for p in found if p.is_file()]
        if not found:
            raise FileNotFoundError(f"input={text}: the pattern matches no file")
        return sorted(found)
    raise FileNotFoundError(f"input={text} is not a file, a folder or a glob pattern that "
                            "matches files; give an image, a folder of images or e.g. "
                            "'photos/*.jpg' (quoted)")


class ImageFiles(Dataset):
    """Image files as ``(pixels in [0, 1], error message)``; an unreadable file gives zeros and
    its error, so one bad file never stops a batch."""

    def __init__(self, files: Sequence[Path], transform: EvalTransform) -> None:
        self.files = list(files)
        self.shape = (transform.in_channels, transform.image_size, transform.image_size)
        self.grey = transform.in_channels == 1
        self.pixels = transform.pixel_transform()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, str]:
        from PIL import Image

        try:
            with Image.open(self.files[i]) as image:
                # a grey image for a grey network stays as it is (through RGB, the transform's
                # truncating grey conversion would lose a level); anything else becomes RGB as
                # in torchvision's ImageFolder loader: alpha dropped, palettes and grey expanded
                keep = self.grey and image.mode in ("L", "LA")
                image = image.convert("L" if keep else "RGB")
            return self.pixels(image), ""
        except Exception as err:  # PIL raises many types for bad files; report, don't stop
            message = str(err).splitlines()[0] if str(err) else "unreadable"
            return torch.zeros(self.shape), f"{type(err).__name__}: {message}"


def inference_device(name: str) -> torch.device:
    """``device=`` of prediction and visualisation: ``auto`` is CUDA, then MPS, then the CPU."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _loader(files: Sequence[Path], transform: EvalTransform, batch_size: int,
            num_workers: int | None, pin: bool) -> DataLoader:
    if num_workers is None:  # decoding is the slow part; but workers cost more than a few files
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        num_workers = min(4, cpus - 1, math.ceil(len(files) / batch_size) - 1)
    return DataLoader(ImageFiles(files, transform), batch_size=batch_size,
                      num_workers=max(0, num_workers), pin_memory=pin)


def _progress(loader: DataLoader, total: int, enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield from loader
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True)) as bar:
        task = bar.add_task("predicting", total=total)
        for batch in loader:
            yield batch
            bar.advance(task, len(batch[1]))


def predict_files(trained: Trained, files: Sequence[Path], *, top_k: int = 5,
                  batch_size: int = 64, device: str = "auto", num_workers: int | None = None,
                  progress: bool = False) -> list[dict[str, Any]]:
    """One row per file: ``file``, ``class_1``/``prob_1`` … ``class_k``/``prob_k``, ``error``."""
    if top_k < 1 or batch_size < 1:
        raise ValueError(f"top_k and batch_size must be positive, got {top_k}, {batch_size}")
    k = min(top_k, len(trained.classes))
    dev = inference_device(device)
    model = trained.model.to(dev)
    rows: list[dict[str, Any]] = []
    loader = _loader(files, trained.transform, batch_size, num_workers, dev.type == "cuda")
    with torch.inference_mode():
        for x, errors in _progress(loader, len(files), progress):
            probs = model(x.to(dev, non_blocking=True)).float().softmax(dim=1)
            top_p, top_i = (t.cpu() for t in probs.topk(k, dim=1))
            for j, error in enumerate(errors):
                row: dict[str, Any] = {"file": str(files[len(rows)])}
                for rank in range(k):
                    ok = not error
                    row[f"class_{rank + 1}"] = trained.classes[top_i[j, rank]] if ok else ""
                    row[f"prob_{rank + 1}"] = float(top_p[j, rank]) if ok else None
                row["error"] = error
                rows.append(row)
    return rows


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: f"{value:.6f}" if isinstance(value, float) else value
                             for key, value in row.items()})
    tmp.replace(path)  # never a half-written CSV


def _print_rows(rows: Sequence[Mapping[str, Any]], limit: int, csv_path: Path) -> None:
    width = min(60, max(len(r["file"]) for r in rows[:limit])) if limit else 0
    for row in rows[:limit]:
        if row["error"]:
            result = f"error: {row['error']}"
        else:
            ranks = sum(1 for key in row if key.startswith("class_"))
            result = "  ".join(f"{row[f'class_{r}']} {row[f'prob_{r}']:.3f}"
                               for r in range(1, ranks + 1))
        print(f"{row['file']:<{width}}  {result}")
    if len(rows) > limit:
        print(f"... {len(rows) - limit} more in {csv_path}")
    print(f"predictions: {csv_path}")


def predict(cfg: DictConfig) -> list[dict[str, Any]]:
    """What `src/predict.py` does: classify `cfg.input`, print, write `cfg.output` (a CSV)."""
    trained = load_trained(cfg.ckpt_path, cfg.get("data"),
                           weights=str(cfg.get("weights", "model")))
    files = find_images(cfg.input)
    log.info("%s (%s, %d classes): %d file(s)", trained.checkpoint, trained.model_name,
             len(trained.classes), len(files))
    rows = predict_files(trained, files, top_k=int(cfg.top_k), batch_size=int(cfg.batch_size),
                         device=str(cfg.device), num_workers=cfg.get("num_workers"),
                         progress=bool(cfg.get("progress", True)) and len(files) > 1)
    out = Path(cfg.output)
    write_csv(rows, out)
    _print_rows(rows, int(cfg.get("print_rows", 20)), out)
    bad = sum(1 for r in rows if r["error"])
    if bad:
        log.warning("%d of %d file(s) could not be read as images (see the error column)",
                    bad, len(rows))
    return rows
