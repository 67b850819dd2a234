"""Small trained checkpoints and image files for the prediction and export tests."""

from __future__ import annotations

import random
from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from PIL import Image, ImageDraw

from classicnets.runs.pipeline import train
from conftest import compose_config

SHAPES = ("circle", "square")
# no console output, no logger or dashboard: only the checkpoints matter here
QUIET = ("extras.print_config=false", "~callbacks.rich_progress_bar",
         "~callbacks.model_summary", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false", "logger=[]",
         "~callbacks.dashboard", "test=false")


def train_checkpoint(out: Path, *overrides: str) -> Path:
    """Train with `conf/train.yaml` + ``overrides`` into ``out``; its ``last.ckpt``."""
    cfg = compose_config([*QUIET, *overrides], out)
    try:
        train(cfg)
    finally:
        GlobalHydra.instance().clear()
    return out / "checkpoints" / "last.ckpt"


def shape_image(kind: str, size: tuple[int, int], rng: random.Random) -> Image.Image:
    """A filled circle or square of a random colour on a random background."""
    w, h = size
    image = Image.new("RGB", size, tuple(rng.randrange(0, 90) for _ in range(3)))
    side = rng.randrange(min(w, h) // 2, min(w, h) - 4)
    x, y = rng.randrange(0, w - side), rng.randrange(0, h - side)
    box = (x, y, x + side, y + side)
    colour = tuple(rng.randrange(150, 256) for _ in range(3))
    draw = ImageDraw.Draw(image)
    (draw.ellipse if kind == "circle" else draw.rectangle)(box, fill=colour)
    return image


def make_image_folder(root: Path, per_class: int = 24, size: tuple[int, int] = (44, 36),
                      seed: int = 0) -> Path:
    """``root/train/<circle|square>/*.png`` (non-square images: the crop matters)."""
    rng = random.Random(seed)
    for kind in SHAPES:
        folder = root / "train" / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape_image(kind, size, rng).save(folder / f"{i:03d}.png")
    return root
