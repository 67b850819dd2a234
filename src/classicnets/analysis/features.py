"""What a layer holds: its filters (weights) and its feature maps for an input."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from classicnets.analysis.layers import LayerError, find_layer

__all__ = ["feature_maps", "filter_tiles"]


def filter_tiles(conv: nn.Module, name: str, max_filters: int = 64) -> tuple[Tensor, int]:
    """The filters of a convolution as image tiles, each scaled to [0, 1] on its own (as
    AlexNet's Fig. 3 and ZFNet's Fig. 6 show them), and the number of tiles per grid row.

    Filters on 1 or 3 input channels are one grey or colour tile each; a deeper layer's filters
    are one grey tile per (filter, input channel), a row per filter (at most 16 channels).
    """
    if not isinstance(conv, nn.Conv2d):
        raise LayerError(f"layer={name} is a {type(conv).__name__}, not a convolution "
                         "(nn.Conv2d): only convolutions have filters to show")
    weight = conv.weight.detach().float().cpu()[:max_filters]
    n, c = weight.shape[:2]
    deep = c not in (1, 3)
    if deep:
        c = min(c, 16)
        weight = weight[:, :c].reshape(n * c, 1, *weight.shape[-2:])
    flat = weight.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    span = (high - low).clamp_min(1e-12).view(-1, 1, 1, 1)
    tiles = (weight - low.view(-1, 1, 1, 1)) / span
    per_row = c if deep else min(8, n)
    return tiles, per_row


def feature_maps(net: nn.Module, x: Tensor, layer: str) -> Tensor:
    """The output of ``layer`` for one input ``x`` (normalised as ``net`` expects):
    ``(C, h, w)``."""
    module = find_layer(net, layer)
    seen: list[Tensor] = []

    def hook(_m: nn.Module, _args: tuple, out: object) -> None:
        if isinstance(out, Tensor):
            seen.append(out.detach().clone())  # before an in-place ReLU after it

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            net(x)
    finally:
        handle.remove()
    if not seen:
        raise LayerError(f"layer={layer} did not run in the forward pass (an auxiliary head "
                         "runs only in training); choose a layer on the main path")
    maps = seen[0][0]
    if maps.ndim != 3:
        raise LayerError(f"layer={layer} gives shape {tuple(seen[0].shape)}, not feature maps "
                         "(N, C, H, W); choose a convolutional or pooling layer")
    return maps
