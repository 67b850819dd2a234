"""Figures of the visualisations (matplotlib, files only: no display, no pyplot state)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["grid_figure", "heat_figure", "save", "signed_to_unit", "tiles_figure"]


def signed_to_unit(t: Tensor) -> Tensor:
    """Signed values to [0, 1] with zero at mid-grey (the paper's way to show projections)."""
    peak = float(t.abs().max())
    return t / (2 * peak) + 0.5 if peak > 0 else t * 0 + 0.5


def _array(image: Tensor) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] → what ``imshow`` takes (``(H, W)`` grey, ``(H, W, 3)`` RGB)."""
    image = image.detach().float().cpu().clamp(0, 1)
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def _show(ax: object, image: Tensor, title: str) -> None:
    ax.imshow(_array(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def heat_figure(image: Tensor, heat: Tensor, title: str, label: str, *,
                signed: bool = False) -> Figure:
    """The image, the map (with its scale) and the map over the image. ``signed``: a diverging
    scale centred on zero (occlusion: a square can also raise the score)."""
    fig = Figure(figsize=(9.6, 3.4))
    axes = fig.subplots(1, 3)
    values = heat.detach().float().cpu().numpy()
    peak = float(np.abs(values).max()) or 1.0
    scale = {"cmap": "RdBu_r", "vmin": -peak, "vmax": peak} if signed else {
        "cmap": "jet", "vmin": 0.0, "vmax": peak}
    _show(axes[0], image, "input")
    shown = axes[1].imshow(values, interpolation="nearest", **scale)
    axes[1].set_title(label, fontsize=8)
    axes[1].axis("off")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04)
    grey = _array(image.mean(0, keepdim=True))  # a grey image under the colours: both readable
    axes[2].imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[2].imshow(values, alpha=0.5, interpolation="bilinear", **scale)
    axes[2].set_title("overlay", fontsize=8)
    axes[2].axis("off")
    fig.suptitle(title, fontsize=9)
    return fig


def tiles_figure(tiles: Sequence[Tensor], captions: Sequence[str], title: str, *,
                 per_row: int = 8) -> Figure:
    """Images ``(C, h, w)`` in [0, 1], one panel each with its caption, ``per_row`` a row."""
    cols = max(1, min(per_row, len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    fig = Figure(figsize=(1.6 * cols + 0.4, 1.7 * rows + 0.6))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, tile, caption in zip(axes, tiles, captions):
        _show(ax, tile, caption)
    for ax in axes[len(tiles):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return fig


def grid_figure(tiles: Tensor, per_row: int, title: str) -> Figure:
    """Tiles ``(N, C, h, w)`` in [0, 1] as one image grid (``torchvision.utils.make_grid``),
    ``per_row`` a row, enlarged without smoothing (a 5×5 filter stays 5×5 blocks)."""
    from torchvision.utils import make_grid

    grid = make_grid(tiles.detach().float().cpu(), nrow=per_row, padding=1, pad_value=1.0)
    if tiles.shape[1] == 1:
        grid = grid[:1]  # make_grid repeats grey to RGB; keep it grey
    side = min(12.0, max(3.0, 0.25 * grid.shape[-1]))  # ~4 screen px per pixel, up to 12 in
    fig = Figure(figsize=(side, side * grid.shape[-2] / grid.shape[-1] + 0.5))
    ax = fig.subplots()
    _show(ax, grid, "")
    fig.suptitle(title, fontsize=9)
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG (written aside, then renamed: never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    tmp.replace(path)
    return path
