"""Pre-activation ResNets (He et al., ECCV 2016): BN → ReLU → conv, nothing after the addition.

Blocks subclass :class:`classicnets.models.resnet.ResidualBlock` and the network is the shared
:class:`~classicnets.models.resnet.ResNet` with ``block.preact`` set (bare-conv stem, final
BN→ReLU before pooling); shortcuts, stochastic depth and attention come from ``resnet.py``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from classicnets.models.layers import ConvNormAct
from classicnets.models.registry import PaperResult, register_model
from classicnets.models.resnet import (
    AttentionFactory,
    ResidualBlock,
    ResNet,
    ShortcutType,
    StemType,
    _drop_path,
    make_shortcut,
    use_small_stem,
)

__all__ = ["PreActBasicBlock", "PreActBottleneck", "PreActResNet"]

HE_2016_IDENTITY = "He, Zhang, Ren, Sun, Identity Mappings in Deep Residual Networks, ECCV"


def _bare_conv(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1
) -> ConvNormAct:
    # The branch's last conv: no BN/ReLU after it (the next unit pre-activates).
    return ConvNormAct(
        in_channels,
        out_channels,
        kernel_size,
        stride,
        groups=groups,
        norm_layer=None,
        act_layer=None,
        bias=False,
    )


class _PreActBlock(ResidualBlock):
    """Full pre-activation unit (Fig. 4(e)): ``x + F(relu(bn(x)))``, no activation after it.

    Where the shortcut is not the identity (projection or zero-pad), it takes the
    pre-activated input, as in the authors' code, so both paths see a normalised signal.
    """

    preact = True

    def __init__(self, in_channels: int, survival_prob: float) -> None:
        super().__init__()
        self.pre = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True))
        self.drop_path = _drop_path(survival_prob)

    def residual(self, x: Tensor) -> Tensor:
        return self.branch(self.pre(x))

    def shortcut_path(self, x: Tensor) -> Tensor:
        return x if isinstance(self.shortcut, nn.Identity) else self.shortcut(self.pre(x))

    def forward(self, x: Tensor) -> Tensor:
        # relu is in-place inside ``pre``; BN's output is a fresh tensor, so ``x`` is intact.
        pre = self.pre(x)
        shortcut = x if isinstance(self.shortcut, nn.Identity) else self.shortcut(pre)
        return shortcut + self.drop_path(self.branch(pre))

    def zero_init_last(self) -> None:
        """No BN ends the branch, so zero its last conv: the unit starts as its shortcut."""
        last = self.branch[-2] if "attn" in self.branch._modules else self.branch[-1]
        nn.init.zeros_(last[0].weight)


class PreActBasicBlock(_PreActBlock):
    """Pre-activation basic unit: BN-ReLU-3×3 conv-BN-ReLU-3×3 conv (+ optional attention)."""

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        *,
        groups: int = 1,
        base_width: int = 64,
        shortcut: ShortcutType = "B",
        stride_in_1x1: bool = False,
        attention: AttentionFactory | None = None,
        survival_prob: float = 1.0,
    ) -> None:
        super().__init__(in_channels, survival_prob)
        del stride_in_1x1
        if groups != 1 or base_width != 64:
            raise ValueError("PreActBasicBlock supports only groups=1 and base_width=64")
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv1=ConvNormAct(in_channels, planes, 3, stride),  # conv → BN → ReLU
            conv2=_bare_conv(planes, planes, 3),
        )
        if attention is not None:
            layers["attn"] = attention(planes)
        self.branch = nn.Sequential(layers)
        self.shortcut = make_shortcut(in_channels, planes, stride, shortcut, norm=False)


class PreActBottleneck(_PreActBlock):
    """Pre-activation bottleneck: BN-ReLU-1×1, BN-ReLU-3×3, BN-ReLU-1×1 (×4 expansion).

    Stride on the 3×3 (as in the authors' Torch code and timm's ResNetV2) unless
    ``stride_in_1x1``; ``groups``/``base_width`` as in :class:`~classicnets.models.resnet.
    Bottleneck`.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        *,
        groups: int = 1,
        base_width: int = 64,
        shortcut: ShortcutType = "B",
        stride_in_1x1: bool = False,
        attention: AttentionFactory | None = None,
        survival_prob: float = 1.0,
    ) -> None:
        super().__init__(in_channels, survival_prob)
        width = int(planes * base_width / 64) * groups
        out = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv1=ConvNormAct(in_channels, width, 1, s1),
            conv2=ConvNormAct(width, width, 3, s3, groups=groups),
            conv3=_bare_conv(width, out, 1),
        )
        if attention is not None:
            layers["attn"] = attention(out)
        self.branch = nn.Sequential(layers)
        self.shortcut = make_shortcut(in_channels, out, stride, shortcut, norm=False)


class PreActResNet(ResNet):
    """Pre-activation ResNet — He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual
    Networks", ECCV 2016.

    Every unit computes ``x + F(x)`` with ``F`` = (BN → ReLU → conv) × 2 or × 3 (Fig. 4(e));
    nothing follows the addition, so the shortcut path is a clean identity from stem to head.
    The stem is a bare conv (the first unit normalises), and an extra BN → ReLU follows the
    last unit (§3.2). Projection shortcuts are plain 1×1 convs on the pre-activated input.

    Deviations from the paper:
      - ImageNet nets: 7×7/2 conv → 3×3/2 max-pool with the BN → ReLU in the first unit
        (timm ResNetV2 order; the authors' Torch code puts BN → ReLU before the max-pool, same
        parameter count); inputs < 128 px get the 3×3 stride-1 stem without max-pool;
      - ``preact_resnet18`` is the ResNet-18 layout in pre-activation form (the widely used
        Kuang-Liu-style CIFAR net) *with* the paper's final BN → ReLU, which that code omits;
      - stochastic depth option (Huang et al. 2016) as in :class:`~classicnets.models.resnet.
        ResNet`, with the same caveat (dropped branches still update BN statistics).
    """


def _imagenet_preact(
    block: type[ResidualBlock],
    layers: Sequence[int],
    *,
    num_classes: int,
    in_channels: int,
    input_size: int,
    small_stem: bool | None,
    **kwargs: object,
) -> ResNet:
    stem: StemType = "cifar" if use_small_stem(input_size, small_stem) else "imagenet"
    return PreActResNet(
        block, layers, num_classes=num_classes, in_channels=in_channels, stem=stem, **kwargs
    )


@register_model(
    paper=HE_2016_IDENTITY, year=2016, num_classes=10, input_size=32,
    result=PaperResult(None, "CIFAR-10", "not in the paper (18-layer form)"),
)
def preact_resnet18(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    shortcut: ShortcutType = "B",
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
    small_stem: bool | None = None,
) -> ResNet:
    """Pre-activation ResNet-18, CIFAR style: 3×3 64-channel stem, basic units [2, 2, 2, 2] at
    64-128-256-512 channels; 11,172,170 parameters at 10 classes.

    At ≥ 128 px it takes the ImageNet stem (7×7/2 conv + max-pool) like :func:`resnet18`;
    ``small_stem`` forces the choice. ``survival_prob_last`` < 1 enables stochastic depth.
    """
    return _imagenet_preact(
        PreActBasicBlock,
        (2, 2, 2, 2),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=HE_2016_IDENTITY, year=2016,
    result=PaperResult(None, "ImageNet", "not in the paper's ImageNet table"),
)
def preact_resnet50(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    shortcut: ShortcutType = "B",
    stride_in_1x1: bool = False,
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
    small_stem: bool | None = None,
) -> ResNet:
    """Pre-activation ResNet-50 (ImageNet, bottlenecks [3, 4, 6, 3], final BN);
    25,549,352 parameters (= timm ``resnetv2_50``).

    Inputs < 128 px get the 3×3 stride-1 stem without max-pool.
    """
    return _imagenet_preact(
        PreActBottleneck,
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        shortcut=shortcut,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=HE_2016_IDENTITY, year=2016,
    result=PaperResult(None, "ImageNet", "not in the paper's ImageNet table"),
)
def preact_resnet101(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    shortcut: ShortcutType = "B",
    stride_in_1x1: bool = False,
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
    small_stem: bool | None = None,
) -> ResNet:
    """Pre-activation ResNet-101 ([3, 4, 23, 3]); 44,541,480 parameters (timm
    ``resnetv2_101``). Options as :func:`preact_resnet50`."""
    return _imagenet_preact(
        PreActBottleneck,
        (3, 4, 23, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        shortcut=shortcut,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=HE_2016_IDENTITY, year=2016,
    result=PaperResult(None, "ImageNet", "not recorded (Table 5 tests 320-px crops)"),
)
def preact_resnet152(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    shortcut: ShortcutType = "B",
    stride_in_1x1: bool = False,
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
    small_stem: bool | None = None,
) -> ResNet:
    """Pre-activation ResNet-152 ([3, 8, 36, 3]); 60,185,128 parameters (timm
    ``resnetv2_152``). Options as :func:`preact_resnet50`."""
    return _imagenet_preact(
        PreActBottleneck,
        (3, 8, 36, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        shortcut=shortcut,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


def _cifar_preact(
    depth: int,
    *,
    num_classes: int,
    in_channels: int,
    shortcut: ShortcutType,
    zero_init_residual: bool,
    survival_prob_last: float,
) -> ResNet:
    # 9n + 2 layers: three stages of n bottlenecks, inner widths 16/32/64, outputs ×4.
    n = (depth - 2) // 9
    return PreActResNet(
        PreActBottleneck,
        (n, n, n),
        widths=(16, 32, 64),
        num_classes=num_classes,
        in_channels=in_channels,
        stem="cifar",
        stem_width=16,
        shortcut=shortcut,
        survival_prob_last=survival_prob_last,
        zero_init_residual=zero_init_residual,
    )


@register_model(
    paper=HE_2016_IDENTITY, year=2016, num_classes=10, input_size=32,
    result=PaperResult(94.54, "CIFAR-10", "Table 4: 5.46 % error"),
)
def preact_resnet164(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    shortcut: ShortcutType = "B",
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
) -> ResNet:
    """CIFAR pre-activation ResNet-164 (bottleneck, n = 18, outputs 64/128/256);
    1,703,258 parameters.

    Keeps its 3×3 stride-1 stem at every input size (``input_size`` only for the interface).
    """
    del input_size
    return _cifar_preact(
        164,
        num_classes=num_classes,
        in_channels=in_channels,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=HE_2016_IDENTITY, year=2016, num_classes=10, input_size=32,
    result=PaperResult(95.08, "CIFAR-10", "Table 4: 4.92 % error"),
)
def preact_resnet1001(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    shortcut: ShortcutType = "B",
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
) -> ResNet:
    """CIFAR pre-activation ResNet-1001 (bottleneck, n = 111); 10,327,706 parameters.

    Options as :func:`preact_resnet164`.
    """
    del input_size
    return _cifar_preact(
        1001,
        num_classes=num_classes,
        in_channels=in_channels,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )
