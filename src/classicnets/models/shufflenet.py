"""ShuffleNet V1 and V2: grouped / split pointwise convolutions with channel shuffle.

- V1 (Zhang et al., 2018): pointwise convs become *grouped* 1×1 convs; a channel shuffle
  after the first one lets information cross the groups.
- V2 (Ma et al., 2018): channel split, plain 1×1 convs, concatenation, then a shuffle.

Small inputs (both): below ``SMALL_INPUT`` px the stem conv uses stride 1 and the 3×3/2
max-pool is dropped, so the total stride falls from 32 to 8 (a 32×32 image ends on 4×4, the
usual CIFAR adaptation of these networks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from classicnets.models.layers import ConvNormAct, channel_shuffle, init_weights
from classicnets.models.registry import PaperResult, register_model

__all__ = [
    "SMALL_INPUT",
    "ChannelShuffle",
    "ShuffleNetV1",
    "ShuffleNetV1Unit",
    "ShuffleNetV2",
    "ShuffleNetV2Unit",
    "shufflenet_v1_g3",
    "shufflenet_v1_g8",
    "shufflenet_v2_x0_5",
    "shufflenet_v2_x1_0",
    "shufflenet_v2_x1_5",
    "shufflenet_v2_x2_0",
]

SMALL_INPUT = 96
"""Inputs smaller than this many pixels get the small-input (total stride 8) layout."""

_V1_PAPER = (
    "Zhang et al., ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile "
    "Devices, CVPR"
)
_V2_PAPER = (
    "Ma et al., ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design, ECCV"
)


def _stem(in_channels: int, out_channels: int, input_size: int) -> nn.Sequential:
    """3×3/2 conv + BN + ReLU and 3×3/2 max-pool; stride 1 and no pool for small inputs."""
    if input_size < SMALL_INPUT:
        return nn.Sequential(ConvNormAct(in_channels, out_channels, 3, 1))
    return nn.Sequential(
        ConvNormAct(in_channels, out_channels, 3, 2), nn.MaxPool2d(3, stride=2, padding=1)
    )


class ChannelShuffle(nn.Module):
    """:func:`~classicnets.models.layers.channel_shuffle` as a module, so it shows in the
    block's structure (and can be inspected)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


# --------------------------------------------------------------------------------------------
# ShuffleNet V1
# --------------------------------------------------------------------------------------------

# (stem width, stage 2/3/4 widths) per (groups, width multiplier). g = 3 and 8: the authors'
# released code (whose stems do not follow s·24 exactly); g = 1, 2, 4: paper Table 1 at 1×.
_V1_CHANNELS: dict[tuple[int, float], tuple[int, tuple[int, int, int]]] = {
    (3, 0.5): (12, (120, 240, 480)),
    (3, 1.0): (24, (240, 480, 960)),
    (3, 1.5): (24, (360, 720, 1440)),
    (3, 2.0): (48, (480, 960, 1920)),
    (8, 0.5): (16, (192, 384, 768)),
    (8, 1.0): (24, (384, 768, 1536)),
    (8, 1.5): (24, (576, 1152, 2304)),
    (8, 2.0): (48, (768, 1536, 3072)),
    (1, 1.0): (24, (144, 288, 576)),
    (2, 1.0): (24, (200, 400, 800)),
    (4, 1.0): (24, (272, 544, 1088)),
}
_V1_REPEATS = (4, 8, 4)


class ShuffleNetV1Unit(nn.Module):
    """ShuffleNet unit (paper Fig. 2b/c).

    Main branch: 1×1 GConv + BN + ReLU → channel shuffle → 3×3 depthwise conv (stride s) + BN
    → 1×1 GConv + BN; bottleneck width = ``out_channels / 4``. Stride 1: added to the identity,
    then ReLU. Stride 2: the shortcut is a 3×3/2 average pool, *concatenated* with the main
    branch (which then produces only ``out_channels - in_channels``), then ReLU.
    ``group_first=False`` leaves the first 1×1 conv ungrouped (first unit of stage 2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int,
        stride: int,
        group_first: bool = True,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError("a stride-1 ShuffleNet unit needs in_channels == out_channels")
        mid = out_channels // 4
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        self.stride = stride
        self.branch = nn.Sequential(
            ConvNormAct(in_channels, mid, 1, groups=groups if group_first else 1),
            # Shuffling before the depthwise conv (as in Fig. 2): the depthwise conv is
            # per-channel, so each group of the second GConv sees channels from every group.
            ChannelShuffle(groups) if groups > 1 else nn.Identity(),
            ConvNormAct(mid, mid, 3, stride, groups=mid, act_layer=None),
            ConvNormAct(mid, branch_out, 1, groups=groups, act_layer=None),
        )
        self.shortcut: nn.Module = (
            nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.branch(x)
        if self.stride == 2:
            return F.relu(torch.cat([self.shortcut(x), out], dim=1))
        return F.relu(x + out)


class ShuffleNetV1(nn.Module):
    """ShuffleNet (V1) — Zhang et al., "ShuffleNet: An Extremely Efficient Convolutional Neural
    Network for Mobile Devices", CVPR 2018.

    Table 1: 3×3/2 conv (24) + 3×3/2 max-pool, stages 2–4 of 4/8/4 ShuffleNet units (the first
    of each with stride 2), global average pooling, FC. The first pointwise conv of stage 2 is
    not grouped (its input has only 24 channels, §3.3). Channel widths per group count and
    width multiplier s ∈ {0.5, 1, 1.5, 2} are the released code's table (g = 3, 8); the paper's
    Table 1 rows give g = 1, 2, 4 at 1×.

    Deviations: the classifier has no bias and the stride-2 concatenation puts the pooled
    shortcut first, as in the released code (the paper states neither); He initialisation.
    Below ``SMALL_INPUT`` px the stem conv has stride 1 and there is no max-pool (total
    stride 8).
    """

    def __init__(
        self,
        groups: int = 3,
        width_mult: float = 1.0,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        key = (groups, float(width_mult))
        if key not in _V1_CHANNELS:
            raise ValueError(
                f"no ShuffleNet V1 channel table for groups={groups}, width_mult={width_mult}; "
                f"available (groups, width_mult): {sorted(_V1_CHANNELS)}"
            )
        stem, widths = _V1_CHANNELS[key]
        self.groups = groups
        self.stem = _stem(in_channels, stem, input_size)
        units: list[nn.Module] = []
        cin = stem
        for stage, (cout, repeats) in enumerate(zip(widths, _V1_REPEATS)):
            for i in range(repeats):
                first = i == 0
                units.append(
                    ShuffleNetV1Unit(
                        cin,
                        cout,
                        groups,
                        stride=2 if first else 1,
                        group_first=not (stage == 0 and first),
                    )
                )
                cin = cout
        self.features = nn.Sequential(*units)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes, bias=False)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(self.stem(x))
        return self.classifier(torch.flatten(self.pool(x), 1))


@register_model(
    paper=_V1_PAPER, year=2018,
    result=PaperResult(67.4, "ImageNet", "Table 2: 32.6 % top-1 error, 1x"),
)
def shufflenet_v1_g3(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    width_mult: float = 1.0,
) -> nn.Module:
    """ShuffleNet 1× (g = 3); ``width_mult`` ∈ {0.5, 1.0, 1.5, 2.0}. 1.0×: 1,864,728 params."""
    return ShuffleNetV1(3, width_mult, num_classes, in_channels, input_size)


@register_model(
    paper=_V1_PAPER, year=2018,
    result=PaperResult(67.6, "ImageNet", "Table 2: 32.4 % top-1 error, 1x"),
)
def shufflenet_v1_g8(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    width_mult: float = 1.0,
) -> nn.Module:
    """ShuffleNet 1× (g = 8); ``width_mult`` ∈ {0.5, 1.0, 1.5, 2.0}. 1.0×: 2,433,768 params."""
    return ShuffleNetV1(8, width_mult, num_classes, in_channels, input_size)


# --------------------------------------------------------------------------------------------
# ShuffleNet V2
# --------------------------------------------------------------------------------------------

# Table 5: stage 2/3/4 widths and the final 1×1 conv (the stem is always 24).
_V2_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "0.5": (48, 96, 192, 1024),
    "1.0": (116, 232, 464, 1024),
    "1.5": (176, 352, 704, 1024),
    "2.0": (244, 488, 976, 2048),
}
_V2_REPEATS = (4, 8, 4)


class ShuffleNetV2Unit(nn.Module):
    """ShuffleNet V2 unit (paper Fig. 3c/d).

    Stride 1: channel split in two halves; the first is kept as is, the second goes through
    1×1 conv + BN + ReLU → 3×3 depthwise + BN → 1×1 conv + BN + ReLU; concatenate, then a
    channel shuffle with 2 groups. Stride 2: no split; both branches see the whole input —
    left: 3×3/2 depthwise + BN → 1×1 conv + BN + ReLU; right: as above with a stride-2
    depthwise conv — each producing ``out_channels / 2``; concatenate, shuffle.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if out_channels % 2:
            raise ValueError(f"out_channels must be even, got {out_channels}")
        half = out_channels // 2
        if stride == 1 and in_channels != out_channels:
            raise ValueError("a stride-1 ShuffleNet V2 unit needs in_channels == out_channels")
        self.stride = stride
        branch_in = in_channels if stride == 2 else half
        self.left: nn.Module = (
            nn.Sequential(
                ConvNormAct(in_channels, in_channels, 3, 2, groups=in_channels, act_layer=None),
                ConvNormAct(in_channels, half, 1),
            )
            if stride == 2
            else nn.Identity()
        )
        self.right = nn.Sequential(
            ConvNormAct(branch_in, half, 1),
            ConvNormAct(half, half, 3, stride, groups=half, act_layer=None),
            ConvNormAct(half, half, 1),
        )
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            keep, x = x.chunk(2, dim=1)
            out = torch.cat([keep, self.right(x)], dim=1)
        else:
            out = torch.cat([self.left(x), self.right(x)], dim=1)
        return self.shuffle(out)


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2 — Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN
    Architecture Design", ECCV 2018.

    Table 5: 3×3/2 conv (24) + 3×3/2 max-pool, stages 2–4 of 4/8/4 units (the first with
    stride 2), 1×1 conv (1024, 2048 for 2×) + BN + ReLU, global average pooling, FC.

    Deviations: He initialisation. Below ``SMALL_INPUT`` px the stem conv has stride 1 and
    there is no max-pool (total stride 8).
    """

    def __init__(
        self,
        width: str = "1.0",
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        if width not in _V2_CHANNELS:
            raise ValueError(f"width must be one of {sorted(_V2_CHANNELS)}, got {width!r}")
        *widths, last = _V2_CHANNELS[width]
        self.stem = _stem(in_channels, 24, input_size)
        units: list[nn.Module] = []
        cin = 24
        for cout, repeats in zip(widths, _V2_REPEATS):
            for i in range(repeats):
                units.append(ShuffleNetV2Unit(cin, cout, 2 if i == 0 else 1))
                cin = cout
        self.features = nn.Sequential(*units)
        self.last_conv = ConvNormAct(cin, last, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.last_conv(self.features(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


def _v2(width: str, num_classes: int, in_channels: int, input_size: int) -> nn.Module:
    return ShuffleNetV2(width, num_classes, in_channels, input_size)


@register_model(
    paper=_V2_PAPER, year=2018,
    result=PaperResult(60.3, "ImageNet", "Table 8: 39.7 % top-1 error"),
)
def shufflenet_v2_x0_5(
    *, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224
) -> nn.Module:
    """ShuffleNet V2 0.5× (Table 5); 1,366,792 params."""
    return _v2("0.5", num_classes, in_channels, input_size)


@register_model(
    paper=_V2_PAPER, year=2018,
    result=PaperResult(69.4, "ImageNet", "Table 8: 30.6 % top-1 error"),
)
def shufflenet_v2_x1_0(
    *, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224
) -> nn.Module:
    """ShuffleNet V2 1× (Table 5); 2,278,604 params."""
    return _v2("1.0", num_classes, in_channels, input_size)


@register_model(
    paper=_V2_PAPER, year=2018,
    result=PaperResult(72.6, "ImageNet", "Table 8: 27.4 % top-1 error"),
)
def shufflenet_v2_x1_5(
    *, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224
) -> nn.Module:
    """ShuffleNet V2 1.5× (Table 5); 3,503,624 params."""
    return _v2("1.5", num_classes, in_channels, input_size)


@register_model(
    paper=_V2_PAPER, year=2018,
    result=PaperResult(74.9, "ImageNet", "Table 8: 25.1 % top-1 error"),
)
def shufflenet_v2_x2_0(
    *, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224
) -> nn.Module:
    """ShuffleNet V2 2× (Table 5); 7,393,996 params."""
    return _v2("2.0", num_classes, in_channels, input_size)
