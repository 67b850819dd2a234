"""Network in Network (Lin, Chen & Yan, ICLR 2014): mlpconv layers and global average pooling.

An mlpconv layer is a k×k convolution followed by a small multilayer perceptron shared across
positions, i.e. two 1×1 convolutions ("cascaded cross channel parametric pooling", cccp), every
layer with a ReLU. The last mlpconv outputs one map per class, and global average pooling turns
the maps into class scores: no fully connected layer at all (§3.2).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor, nn

from classicnets.models.alexnet import STEMS, conv_out_size, pool_out_size, smallest_input
from classicnets.models.registry import PaperResult, register_model, require_min_size

__all__ = ["MLPConv", "NiN", "NiNStage"]

_PAPER = "Lin, Chen, Yan: Network In Network, ICLR 2014"


class NiNStage(NamedTuple):
    """One mlpconv layer and what follows it.

    ``widths``: output channels of the k×k conv and the two 1×1 convs; ``pool``: "max", "avg"
    or None (3×3 stride-2 pooling, rounded up as in Caffe); ``dropout``: dropout after the pool.
    """

    widths: tuple[int, int, int]
    kernel: int
    stride: int
    padding: int
    pool: str | None
    dropout: bool


class MLPConv(nn.Sequential):
    """mlpconv: k×k conv → ReLU → 1×1 conv → ReLU → 1×1 conv (→ ReLU), Lin et al. (2014) §3.1."""

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        final_relu: bool = True,
    ) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["conv"] = nn.Conv2d(in_channels, widths[0], kernel_size, stride, padding)
        layers["relu"] = nn.ReLU(inplace=True)
        for i, (c_in, c_out) in enumerate(itertools.pairwise(widths), start=1):
            layers[f"cccp{i}"] = nn.Conv2d(c_in, c_out, 1)
            if i < len(widths) - 1 or final_relu:
                layers[f"relu_cccp{i}"] = nn.ReLU(inplace=True)
        super().__init__(layers)
        self.out_channels = widths[-1]


class NiN(nn.Module):
    """Network in Network — Lin, Chen & Yan, "Network In Network", ICLR 2014.

    A stack of :class:`MLPConv` layers with 3×3 stride-2 pooling between them, dropout 0.5 where
    the released models put it, and global average pooling of the last mlpconv's per-class maps
    (no fully connected layer). The layer tables follow the authors' released Caffe models (the
    paper gives the structure, the prototxts the sizes): ImageNet ``nin`` = 11×11/4 96 (+1×1 96,
    96) / 5×5 256 (+256, 256) / 3×3 384 (+384, 384) / dropout / 3×3 1024 (+1024, classes), max
    pooling, maps 54-27-13-6 at 224 px; CIFAR ``nin_cifar`` = 5×5 192 (+160, 96) / max-pool /
    dropout / 5×5 192 (+192, 192) / average pool / dropout / 3×3 192 (+192, classes).

    Deviations from the paper / released models:

    * weights use He (Kaiming) initialisation instead of the prototxts' fixed-std Gaussians;
    * global average pooling is adaptive (any input size), where the prototxts pool a fixed
      6×6 (ImageNet) or 8×8 (CIFAR) window; identical at the canonical sizes;
    * ``final_relu`` (default on, as in the released models) keeps the ReLU on the class maps
      before the averaging; off gives unbounded class scores;
    * small inputs for the ImageNet net (``stem="small"``, chosen by ``stem="auto"`` below the
      size its stride-4 conv1 can take, 39 px): conv1 runs at stride 1 with "same" padding
      (11×11 kernel kept); at 32 px the maps are 32-16-8-4.
    """

    def __init__(
        self,
        stages: Sequence[NiNStage],
        num_classes: int = 1000,
        in_channels: int = 3,
        *,
        dropout: float = 0.5,
        final_relu: bool = True,
    ) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = in_channels
        for i, stage in enumerate(stages, start=1):
            widths = stage.widths if i < len(stages) else (*stage.widths[:2], num_classes)
            last = i == len(stages)
            layers[f"mlpconv{i}"] = MLPConv(
                c_in,
                widths,
                stage.kernel,
                stage.stride,
                stage.padding,
                final_relu=final_relu or not last,
            )
            c_in = widths[-1]
            if stage.pool == "max":
                layers[f"pool{i}"] = nn.MaxPool2d(3, 2, ceil_mode=True)
            elif stage.pool == "avg":
                layers[f"pool{i}"] = nn.AvgPool2d(3, 2, ceil_mode=True)
            if stage.dropout:
                layers[f"drop{i}"] = nn.Dropout(dropout)
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)  # global average pooling: the classifier
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x)).flatten(1)


def _final_size(stages: Sequence[NiNStage], side: int) -> int:
    n = side
    for stage in stages:
        n = conv_out_size(n, stage.kernel, stage.stride, stage.padding)
        if n < 1:
            return 0
        if stage.pool is not None:
            n = pool_out_size(n, 3, 2, ceil_mode=True)
    return n


_IMAGENET = (
    NiNStage((96, 96, 96), 11, 4, 0, "max", False),
    NiNStage((256, 256, 256), 5, 1, 2, "max", False),
    NiNStage((384, 384, 384), 3, 1, 1, "max", True),
    NiNStage((1024, 1024, 1000), 3, 1, 1, None, False),
)
_CIFAR = (
    NiNStage((192, 160, 96), 5, 1, 2, "max", True),
    NiNStage((192, 192, 192), 5, 1, 2, "avg", True),
    NiNStage((192, 192, 10), 3, 1, 1, None, False),
)


@register_model(
    paper=_PAPER, year=2014, num_classes=1000, in_channels=3, input_size=224,
    result=PaperResult(None, "ImageNet", "paper reports CIFAR/SVHN/MNIST only"),
)
def nin(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    dropout: float = 0.5,
    final_relu: bool = True,
    stem: str = "auto",
) -> nn.Module:
    """The ImageNet NiN of the released Caffe model (4 mlpconv layers, GAP): 7,595,176 params.

    ``stem``: "auto" (stride-4 conv1 from 39 px, stride 1 below), "paper" or "small".
    """
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
    small_stages = (_IMAGENET[0]._replace(stride=1, padding=5), *_IMAGENET[1:])
    paper_min = smallest_input(lambda s: _final_size(_IMAGENET, s))
    if stem == "auto":
        stem = "paper" if input_size >= paper_min else "small"
    if stem == "paper":
        require_min_size(input_size, paper_min, "nin (stem='paper')")
    else:
        require_min_size(input_size, smallest_input(lambda s: _final_size(small_stages, s)), "nin")
    stages = _IMAGENET if stem == "paper" else small_stages
    return NiN(stages, num_classes, in_channels, dropout=dropout, final_relu=final_relu)


@register_model(
    paper=_PAPER, year=2014, num_classes=10, in_channels=3, input_size=32,
    result=PaperResult(91.19, "CIFAR-10", "Table 2: 8.81 % error, with augmentation"),
)
def nin_cifar(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    dropout: float = 0.5,
    final_relu: bool = True,
) -> nn.Module:
    """The CIFAR-10 NiN of the paper (3 mlpconv layers, GAP): 966,986 parameters."""
    require_min_size(input_size, smallest_input(lambda s: _final_size(_CIFAR, s)), "nin_cifar")
    return NiN(_CIFAR, num_classes, in_channels, dropout=dropout, final_relu=final_relu)
