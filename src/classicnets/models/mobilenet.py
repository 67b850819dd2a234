"""MobileNet V1, V2 and V3: depthwise-separable networks for mobile devices.

- V1 (Howard et al., 2017): a plain stack of depthwise-separable convolutions.
- V2 (Sandler et al., 2018): inverted residuals with linear bottlenecks.
- V3 (Howard et al., 2019): V2 blocks found by architecture search, plus squeeze-and-excite
  after the depthwise convolution and hard-swish in the later layers.

Small inputs (all three): below ``SMALL_INPUT`` px (CIFAR 32, MNIST 28, 64 px crops) the
stem convolution and the first stride-2 stage use stride 1, so the total stride drops from
32 to 8 and a 32×32 image still ends on a 4×4 map rather than 1×1 (the usual CIFAR
adaptation, e.g. MobileNetV2 on CIFAR). At and above ``SMALL_INPUT`` the ImageNet layout is
kept, so the paper's resolution multiplier (224/192/160/128 px) is just ``input_size``.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor, nn

from classicnets.models.layers import ConvNormAct, SqueezeExcite, init_weights, make_divisible
from classicnets.models.registry import PaperResult, register_model

__all__ = [
    "SMALL_INPUT",
    "DepthwiseSeparableConv",
    "InvertedResidual",
    "MobileNetV1",
    "MobileNetV2",
    "MobileNetV3",
    "MobileNetV3Block",
    "V3Layer",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
]

SMALL_INPUT = 96
"""Inputs smaller than this many pixels get the small-input (total stride 8) layout."""

_V1_PAPER = (
    "Howard et al., MobileNets: Efficient Convolutional Neural Networks for Mobile Vision "
    "Applications, arXiv 1704.04861"
)
_V2_PAPER = "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR"
_V3_PAPER = "Howard et al., Searching for MobileNetV3, ICCV"


def _first_strides(input_size: int) -> tuple[int, bool]:
    """(stem stride, whether the first stride-2 stage keeps its stride) for ``input_size``."""
    small = input_size < SMALL_INPUT
    return (1 if small else 2), not small


# --------------------------------------------------------------------------------------------
# MobileNet V1
# --------------------------------------------------------------------------------------------

# Table 1 of the paper: (output channels, stride) of the 13 depthwise-separable layers.
_V1_LAYERS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    *((512, 1),) * 5,
    (1024, 2),
    (1024, 1),  # printed "s2" in Table 1, but the map stays 7×7 there: a typo for s1
)


class DepthwiseSeparableConv(nn.Sequential):
    """3×3 depthwise conv + BN + ReLU, then 1×1 pointwise conv + BN + ReLU (paper Fig. 3)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = ConvNormAct(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pointwise = ConvNormAct(in_channels, out_channels, 1)


class MobileNetV1(nn.Module):
    """MobileNet (V1) — Howard et al., "MobileNets: Efficient Convolutional Neural Networks for
    Mobile Vision Applications", arXiv 2017.

    Table 1: a 3×3/2 conv with 32 filters, 13 depthwise-separable layers (64 … 1024 channels),
    global average pooling and one fully-connected layer; BN and ReLU after every conv. The
    width multiplier α scales every layer's channels (§3.3); the resolution multiplier ρ is the
    input size itself (the network is fully convolutional up to the global pooling).

    Deviations: the last depthwise layer has stride 1 (Table 1 prints s2 but keeps the 7×7
    map: a typo); channels ``α·M`` are rounded to a multiple of 8 (``make_divisible``), which
    changes nothing for the paper's α ∈ {1, 0.75, 0.5, 0.25}; below ``SMALL_INPUT`` px the stem
    and the first stride-2 layer use stride 1 (total stride 8 instead of 32).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 224,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        stem_stride, keep_first_stride = _first_strides(input_size)

        def ch(c: int) -> int:
            return make_divisible(c * width_mult, 8)

        self.stem = ConvNormAct(in_channels, ch(32), 3, stem_stride)
        layers: list[nn.Module] = []
        cin, reduced = ch(32), False
        for cout, stride in _V1_LAYERS:
            if stride == 2 and not keep_first_stride and not reduced:
                stride, reduced = 1, True  # small inputs: drop the first stride-2
            layers.append(DepthwiseSeparableConv(cin, ch(cout), stride))
            cin = ch(cout)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(self.stem(x))
        return self.classifier(torch.flatten(self.pool(x), 1))


@register_model(
    paper=_V1_PAPER, year=2017,
    result=PaperResult(70.6, "ImageNet", "Table 8: 1.0 MobileNet-224"),
)
def mobilenet_v1(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    width_mult: float = 1.0,
) -> nn.Module:
    """MobileNet V1 with width multiplier ``width_mult`` (α); 1.0-224 has 4,231,976 params."""
    return MobileNetV1(num_classes, in_channels, input_size, width_mult=width_mult)


# --------------------------------------------------------------------------------------------
# MobileNet V2
# --------------------------------------------------------------------------------------------

# Table 2 of the paper: expansion t, output channels c, repeats n, first stride s.
_V2_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """Bottleneck residual block of MobileNetV2 (paper Table 1 / Fig. 3b).

    1×1 expansion to ``t·k`` channels + BN + ReLU6 (skipped when t = 1), 3×3 depthwise conv
    (``groups`` = channels) + BN + ReLU6, 1×1 linear projection + BN with *no* activation (the
    linear bottleneck). Identity shortcut when stride is 1 and the widths match.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        self.expand_ratio = expand_ratio
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand: nn.Module = (
            ConvNormAct(in_channels, hidden, 1, act_layer=nn.ReLU6)
            if expand_ratio != 1
            else nn.Identity()
        )
        self.depthwise = ConvNormAct(hidden, hidden, 3, stride, groups=hidden, act_layer=nn.ReLU6)
        # Linear bottleneck (§3.2): a ReLU here would destroy information in the low-dim space.
        self.project = ConvNormAct(hidden, out_channels, 1, act_layer=None)

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 — Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks",
    CVPR 2018.

    Table 2: 3×3/2 conv (32), 17 inverted-residual bottlenecks (t, c, n, s as tabulated),
    1×1 conv to 1280, global average pooling, classifier; ReLU6 throughout, no activation
    after the projections. The width multiplier scales every layer (rounded to multiples of
    8) except the last 1×1 conv, which is only scaled when α > 1 (§5.1 / Appendix).

    Deviations: dropout (default 0.2) before the classifier, as in the released TF-slim model
    (keep-prob 0.8); the paper does not state it. Below ``SMALL_INPUT`` px the stem and the
    first stride-2 stage (c = 24) use stride 1 (total stride 8).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 224,
        width_mult: float = 1.0,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        stem_stride, keep_first_stride = _first_strides(input_size)

        def ch(c: float) -> int:
            return make_divisible(c * width_mult, 8)

        cin = ch(32)
        self.stem = ConvNormAct(in_channels, cin, 3, stem_stride, act_layer=nn.ReLU6)
        blocks: list[nn.Module] = []
        reduced = False
        for t, c, n, s in _V2_SETTINGS:
            stride = s
            if s == 2 and not keep_first_stride and not reduced:
                stride, reduced = 1, True
            for i in range(n):
                blocks.append(InvertedResidual(cin, ch(c), stride if i == 0 else 1, t))
                cin = ch(c)
        self.blocks = nn.Sequential(*blocks)
        last = make_divisible(1280 * max(1.0, width_mult), 8)
        self.head = ConvNormAct(cin, last, 1, act_layer=nn.ReLU6)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(last, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.dropout(torch.flatten(self.pool(x), 1)))


@register_model(
    paper=_V2_PAPER, year=2018,
    result=PaperResult(72.0, "ImageNet", "Table 4: MobileNetV2 (1.0)"),
)
def mobilenet_v2(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    width_mult: float = 1.0,
    dropout: float = 0.2,
) -> nn.Module:
    """MobileNetV2 with width multiplier ``width_mult``; 1.0-224 has 3,504,872 params."""
    return MobileNetV2(num_classes, in_channels, input_size, width_mult, dropout)


# --------------------------------------------------------------------------------------------
# MobileNet V3
# --------------------------------------------------------------------------------------------


class V3Layer(NamedTuple):
    """One bneck row of Tables 1/2: kernel, expansion size, output, SE, nonlinearity, stride."""

    kernel: int
    exp: int
    out: int
    se: bool
    hs: bool  # True: hard-swish ("HS"), False: ReLU ("RE")
    stride: int


_RE, _HS = False, True
# Table 1 (MobileNetV3-Large).
_V3_LARGE: tuple[V3Layer, ...] = (
    V3Layer(3, 16, 16, False, _RE, 1),
    V3Layer(3, 64, 24, False, _RE, 2),
    V3Layer(3, 72, 24, False, _RE, 1),
    V3Layer(5, 72, 40, True, _RE, 2),
    V3Layer(5, 120, 40, True, _RE, 1),
    V3Layer(5, 120, 40, True, _RE, 1),
    V3Layer(3, 240, 80, False, _HS, 2),
    V3Layer(3, 200, 80, False, _HS, 1),
    V3Layer(3, 184, 80, False, _HS, 1),
    V3Layer(3, 184, 80, False, _HS, 1),
    V3Layer(3, 480, 112, True, _HS, 1),
    V3Layer(3, 672, 112, True, _HS, 1),
    V3Layer(5, 672, 160, True, _HS, 2),
    V3Layer(5, 960, 160, True, _HS, 1),
    V3Layer(5, 960, 160, True, _HS, 1),
)
# Table 2 (MobileNetV3-Small).
_V3_SMALL: tuple[V3Layer, ...] = (
    V3Layer(3, 16, 16, True, _RE, 2),
    V3Layer(3, 72, 24, False, _RE, 2),
    V3Layer(3, 88, 24, False, _RE, 1),
    V3Layer(5, 96, 40, True, _HS, 2),
    V3Layer(5, 240, 40, True, _HS, 1),
    V3Layer(5, 240, 40, True, _HS, 1),
    V3Layer(5, 120, 48, True, _HS, 1),
    V3Layer(5, 144, 48, True, _HS, 1),
    V3Layer(5, 288, 96, True, _HS, 2),
    V3Layer(5, 576, 96, True, _HS, 1),
    V3Layer(5, 576, 96, True, _HS, 1),
)

# §6.1: "batch-normalization layers with average decay of 0.99" (TF's default epsilon 1e-3).
_V3Norm = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)


def _v3_se(channels: int) -> SqueezeExcite:
    # §5.3: SE bottleneck fixed to 1/4 of the expansion width, hard-sigmoid gate.
    return SqueezeExcite(
        channels,
        rd_channels=make_divisible(channels / 4, 8),
        act_layer=nn.ReLU,
        gate_layer=nn.Hardsigmoid,
    )


class MobileNetV3Block(nn.Module):
    """MobileNetV3 bneck (paper Fig. 4): 1×1 expand + BN + NL, k×k depthwise + BN + NL, SE
    (where the table marks it) *after* the depthwise conv, 1×1 linear projection + BN.

    The expansion is skipped when the expansion size equals the input width (first bneck);
    identity shortcut when stride is 1 and the widths match.
    """

    def __init__(
        self,
        in_channels: int,
        exp_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        use_se: bool,
        use_hs: bool,
    ) -> None:
        super().__init__()
        act = nn.Hardswish if use_hs else nn.ReLU
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand: nn.Module = (
            ConvNormAct(in_channels, exp_channels, 1, norm_layer=_V3Norm, act_layer=act)
            if exp_channels != in_channels
            else nn.Identity()
        )
        self.depthwise = ConvNormAct(
            exp_channels,
            exp_channels,
            kernel_size,
            stride,
            groups=exp_channels,
            norm_layer=_V3Norm,
            act_layer=act,
        )
        self.se: nn.Module = _v3_se(exp_channels) if use_se else nn.Identity()
        self.project = ConvNormAct(
            exp_channels, out_channels, 1, norm_layer=_V3Norm, act_layer=None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + out if self.use_residual else out


class MobileNetV3(nn.Module):
    """MobileNetV3 — Howard et al., "Searching for MobileNetV3", ICCV 2019.

    Tables 1 (Large) and 2 (Small): 3×3/2 conv (16, hard-swish), the bneck rows, 1×1 conv
    (6× the last width, BN, hard-swish), global average pooling, 1×1 conv without BN
    (1280 / 1024, hard-swish) and the classifier — the two post-pooling 1×1 convs act on a
    1×1 map, so they are written as ``nn.Linear``. SE after the depthwise conv where the table
    marks it (bottleneck = expansion/4 rounded to 8, ReLU, hard-sigmoid), ReLU or hard-swish
    per row, BN decay 0.99 (§6.1), dropout 0.2 before the classifier (§6.1: keep 0.8).

    Width multiplier (the paper gives no rule; this is the released TF models' one, e.g.
    0.75-Large has 3,993,528 params): channels rounded to multiples of 8, each expansion width
    a ratio of the block's scaled input, the 1280/1024 head scaled only when α > 1.

    Deviations: Table 2 marks SE on Small's final
    1×1 conv; the released models omit it, and so does the default here
    (``se_last_conv=True`` adds it). Below ``SMALL_INPUT`` px the stem and the first stride-2
    bneck use stride 1 (total stride 8).
    """

    def __init__(
        self,
        layers: tuple[V3Layer, ...],
        head_channels: int,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 224,
        width_mult: float = 1.0,
        dropout: float = 0.2,
        se_last_conv: bool = False,
    ) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"width_mult must be positive, got {width_mult}")
        stem_stride, keep_first_stride = _first_strides(input_size)

        def ch(c: float) -> int:
            return make_divisible(c * width_mult, 8)

        cin = ch(16)
        self.stem = ConvNormAct(
            in_channels, cin, 3, stem_stride, norm_layer=_V3Norm, act_layer=nn.Hardswish
        )
        blocks: list[nn.Module] = []
        reduced, table_in = False, 16
        for row in layers:
            stride = row.stride
            if stride == 2 and not keep_first_stride and not reduced:
                stride, reduced = 1, True
            # The released models define each expansion as a ratio of the block's input width,
            # so under α it follows the (rounded) scaled input: exp = ch_in · (exp / in).
            exp = make_divisible(cin * row.exp / table_in, 8)
            blocks.append(
                MobileNetV3Block(cin, exp, ch(row.out), row.kernel, stride, row.se, row.hs)
            )
            cin, table_in = ch(row.out), row.out
        self.blocks = nn.Sequential(*blocks)
        last_conv = make_divisible(6 * cin, 8)
        self.last_conv = ConvNormAct(cin, last_conv, 1, norm_layer=_V3Norm, act_layer=nn.Hardswish)
        self.last_se: nn.Module = _v3_se(last_conv) if se_last_conv else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        hidden = make_divisible(head_channels * max(1.0, width_mult), 8)
        self.head = nn.Sequential(
            nn.Linear(last_conv, hidden),  # "conv2d 1×1, NBN": a 1×1 conv with bias, no BN
            nn.Hardswish(inplace=True),
            nn.Dropout(dropout),
        )
        self.classifier = nn.Linear(hidden, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.last_se(self.last_conv(self.blocks(self.stem(x))))
        return self.classifier(self.head(torch.flatten(self.pool(x), 1)))


@register_model(
    paper=_V3_PAPER, year=2019,
    result=PaperResult(75.2, "ImageNet", "Table 3: Large 1.0"),
)
def mobilenet_v3_large(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    width_mult: float = 1.0,
    dropout: float = 0.2,
) -> nn.Module:
    """MobileNetV3-Large (paper Table 1); 1.0-224 has 5,483,032 params."""
    return MobileNetV3(_V3_LARGE, 1280, num_classes, in_channels, input_size, width_mult, dropout)


@register_model(
    paper=_V3_PAPER, year=2019,
    result=PaperResult(67.4, "ImageNet", "Table 3: Small 1.0"),
)
def mobilenet_v3_small(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    width_mult: float = 1.0,
    dropout: float = 0.2,
    se_last_conv: bool = False,
) -> nn.Module:
    """MobileNetV3-Small (paper Table 2); 1.0-224 has 2,542,856 params."""
    return MobileNetV3(
        _V3_SMALL,
        1024,
        num_classes,
        in_channels,
        input_size,
        width_mult,
        dropout,
        se_last_conv=se_last_conv,
    )
