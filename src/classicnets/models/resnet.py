"""ResNet family: ImageNet ResNets, CIFAR ResNets, ResNeXt, Wide ResNet, stochastic depth.

The blocks here are shared by ``preact_resnet.py``, ``senet.py`` and ``cbam_resnet.py``:
:class:`BasicBlock` and :class:`Bottleneck` take an optional ``attention`` factory (SE, CBAM)
applied to the residual branch before the addition, a ``shortcut`` type ("A"/"B"/"C") and a
``survival_prob`` for stochastic depth; :class:`ResNet` assembles stem, stages and head for
both post- and pre-activation blocks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from classicnets.models.layers import ConvNormAct, StochasticDepth
from classicnets.models.registry import PaperResult, register_model

__all__ = [
    "SMALL_INPUT_THRESHOLD",
    "BasicBlock",
    "Bottleneck",
    "ResNeXt",
    "ResNet",
    "ResidualBlock",
    "WideResNet",
    "ZeroPadShortcut",
    "make_shortcut",
    "survival_probabilities",
    "use_small_stem",
]

AttentionFactory = Callable[[int], nn.Module]
ShortcutType = Literal["A", "B", "C"]
StemType = Literal["imagenet", "cifar"]

# Inputs below this side length get the CIFAR stem (3×3 stride-1 conv, no max-pool) in the
# ImageNet-style networks: the 7×7/2 conv + 3×3/2 max-pool would shrink a 32 px image to 8 px
# before the first block and to 1 px at the last stage. 128 keeps ImageNet-like inputs
# (≥ 128 px, final map ≥ 4×4) on the paper's stem and CIFAR/MNIST/STL/Tiny-ImageNet-sized
# inputs (≤ 96 px) on the small one.
SMALL_INPUT_THRESHOLD = 128

HE_2016 = "He, Zhang, Ren, Sun, Deep Residual Learning for Image Recognition, CVPR"
XIE_2017 = (
    "Xie, Girshick, Dollár, Tu, He, Aggregated Residual Transformations for Deep Neural "
    "Networks, CVPR"
)
ZAGORUYKO_2016 = "Zagoruyko, Komodakis, Wide Residual Networks, BMVC"


def use_small_stem(input_size: int, small_stem: bool | None) -> bool:
    """Whether an ImageNet-style ResNet uses the CIFAR stem: explicit, else by input size."""
    return input_size < SMALL_INPUT_THRESHOLD if small_stem is None else bool(small_stem)


def survival_probabilities(num_blocks: int, survival_prob_last: float) -> list[float]:
    """Huang et al.'s linear decay rule ``p_l = 1 - l/L * (1 - p_L)`` for blocks ``l = 1..L``.

    The first block is almost always kept, the last one with probability ``p_L``.
    """
    if not 0.0 < survival_prob_last <= 1.0:
        raise ValueError(f"survival_prob_last must be in (0, 1], got {survival_prob_last}")
    return [
        1.0 - (block / num_blocks) * (1.0 - survival_prob_last)
        for block in range(1, num_blocks + 1)
    ]


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut (He et al. 2016, §3.3): strided identity, extra channels zero-padded.

    Parameter-free. Spatial subsampling takes every ``stride``-th pixel (ceil of the size, the
    same as a padded 3×3/``stride`` conv gives); the new channels are appended as zeros.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(
                f"a zero-pad shortcut cannot reduce channels ({in_channels} -> {out_channels})"
            )
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads from the last dim backwards: (W, W, H, H, C_front, C_back).
        return F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def make_shortcut(
    in_channels: int,
    out_channels: int,
    stride: int,
    shortcut: ShortcutType,
    *,
    norm: bool = True,
) -> nn.Module:
    """The shortcut of a residual block, by He et al.'s options (§3.3, Table 3).

    "A": identity, zero-padded (and subsampled) where the shape changes — no parameters.
    "B": 1×1 projection (+BN when ``norm``) where the shape changes, identity elsewhere.
    "C": 1×1 projection on every block. Pre-activation blocks pass ``norm=False`` (their
    projection sees an already normalised input).
    """
    if shortcut not in ("A", "B", "C"):
        raise ValueError(f"shortcut must be 'A', 'B' or 'C', got {shortcut!r}")
    changes = stride != 1 or in_channels != out_channels
    if shortcut == "C" or (shortcut == "B" and changes):
        return ConvNormAct(
            in_channels,
            out_channels,
            1,
            stride,
            norm_layer=nn.BatchNorm2d if norm else None,
            act_layer=None,
            bias=False,
        )
    if changes:
        return ZeroPadShortcut(in_channels, out_channels, stride)
    return nn.Identity()


def _drop_path(survival_prob: float) -> nn.Module:
    # Identity when stochastic depth is off keeps the module tree (and printouts) clean.
    return StochasticDepth(survival_prob) if survival_prob < 1.0 else nn.Identity()


class ResidualBlock(nn.Module):
    """Common interface of every residual block of the family.

    ``branch`` is the residual function F (attention, if any, is its last module),
    ``shortcut`` the identity/projection path, ``drop_path`` the stochastic-depth gate
    (``nn.Identity`` when off). Post-activation: ``relu(shortcut(x) + drop_path(F(x)))``.
    """

    expansion: ClassVar[int] = 1
    preact: ClassVar[bool] = False

    branch: nn.Sequential
    shortcut: nn.Module
    drop_path: nn.Module

    @property
    def survival_prob(self) -> float:
        return getattr(self.drop_path, "survival_prob", 1.0)

    def residual(self, x: Tensor) -> Tensor:
        """F(x): the residual branch alone (attention included, stochastic depth excluded)."""
        return self.branch(x)

    def shortcut_path(self, x: Tensor) -> Tensor:
        """The shortcut alone: what a dropped block passes on (before the final ReLU)."""
        return self.shortcut(x)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.shortcut(x) + self.drop_path(self.branch(x)))

    def zero_init_last(self) -> None:
        """Zero the last BN's γ of the branch so the block starts as its shortcut (Goyal et al.)."""
        last = self.branch[-2] if "attn" in self.branch._modules else self.branch[-1]
        nn.init.zeros_(last[1].weight)


class BasicBlock(ResidualBlock):
    """Two 3×3 convs (He et al. 2016, Fig. 5 left); the stride sits on the first."""

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
        super().__init__()
        del stride_in_1x1  # no 1×1 conv here; accepted so all blocks share one signature
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64")
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv1=ConvNormAct(in_channels, planes, 3, stride),
            conv2=ConvNormAct(planes, planes, 3, act_layer=None),
        )
        if attention is not None:
            layers["attn"] = attention(planes)
        self.branch = nn.Sequential(layers)
        self.shortcut = make_shortcut(in_channels, planes, stride, shortcut)
        self.drop_path = _drop_path(survival_prob)


class Bottleneck(ResidualBlock):
    """1×1 reduce → 3×3 → 1×1 expand (×4) bottleneck (He et al. 2016, Fig. 5 right).

    ``width = int(planes · base_width / 64) · groups`` (ResNeXt's template, Xie et al. 2017,
    form (c): the 3×3 is a grouped conv of ``groups`` = cardinality). The stride sits on the
    3×3 ("ResNet v1.5", torchvision) unless ``stride_in_1x1`` (the paper / Caffe release).
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
        super().__init__()
        width = int(planes * base_width / 64) * groups
        out = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv1=ConvNormAct(in_channels, width, 1, s1),
            conv2=ConvNormAct(width, width, 3, s3, groups=groups),
            conv3=ConvNormAct(width, out, 1, act_layer=None),
        )
        if attention is not None:
            layers["attn"] = attention(out)
        self.branch = nn.Sequential(layers)
        self.shortcut = make_shortcut(in_channels, out, stride, shortcut)
        self.drop_path = _drop_path(survival_prob)


class ResNet(nn.Module):
    """Deep residual network — He, Zhang, Ren, Sun, "Deep Residual Learning for Image
    Recognition", CVPR 2016 (arXiv 2015). Also the CIFAR nets of its §4.2.

    Stem (7×7/2 conv + 3×3/2 max-pool, or the small-input 3×3/1 conv), stages of residual
    blocks (first stage stride 1, then stride 2), global average pooling and one FC layer.
    Blocks may be post-activation (this paper) or pre-activation (``block.preact``: the stem
    is a bare conv and a final BN→ReLU precedes the pooling). Stochastic depth (Huang et al.,
    "Deep Networks with Stochastic Depth", ECCV 2016): block ``l`` of ``L`` survives with
    ``p_l = 1 - l/L (1 - survival_prob_last)``; off when ``survival_prob_last = 1``.

    Deviations from the paper:
      - bottleneck stride on the 3×3 conv ("v1.5", torchvision layout) by default; the paper
        strides the first 1×1 — ``stride_in_1x1=True`` restores it (same parameter count);
      - inputs < 128 px (``SMALL_INPUT_THRESHOLD``) use a 3×3 stride-1 stem without max-pool
        in the ImageNet-style builders (the common CIFAR adaptation; ``small_stem`` forces it);
      - the option-A shortcut subsamples and zero-pads at the end of the channel axis;
      - stochastic depth multiplies the branch by 0/1 instead of skipping its computation, so
        a dropped block still updates its BN running statistics (the paper skips the block);
      - weights: He-normal (fan-out) convs, BN γ=1/β=0, PyTorch's default Linear init.
    """

    def __init__(
        self,
        block: type[ResidualBlock],
        layers: Sequence[int],
        *,
        widths: Sequence[int] = (64, 128, 256, 512),
        num_classes: int = 1000,
        in_channels: int = 3,
        stem: StemType = "imagenet",
        stem_width: int = 64,
        groups: int = 1,
        base_width: int = 64,
        shortcut: ShortcutType = "B",
        stride_in_1x1: bool = False,
        attention: AttentionFactory | None = None,
        survival_prob_last: float = 1.0,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError(f"{len(layers)} stage depths but {len(widths)} widths")
        if stem not in ("imagenet", "cifar"):
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        preact = block.preact
        # Pre-activation nets normalise at the start of every block, so the stem is a bare conv.
        norm, act = (None, None) if preact else (nn.BatchNorm2d, nn.ReLU)
        if stem == "imagenet":
            self.stem = nn.Sequential(
                ConvNormAct(
                    in_channels, stem_width, 7, 2, norm_layer=norm, act_layer=act, bias=False
                ),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            self.stem = nn.Sequential(
                ConvNormAct(
                    in_channels, stem_width, 3, 1, norm_layer=norm, act_layer=act, bias=False
                )
            )

        probs = survival_probabilities(sum(layers), survival_prob_last)
        stages: OrderedDict[str, nn.Module] = OrderedDict()
        channels, index = stem_width, 0
        for i, (depth, planes) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(depth):
                blocks.append(
                    block(
                        channels,
                        planes,
                        2 if i > 0 and j == 0 else 1,
                        groups=groups,
                        base_width=base_width,
                        shortcut=shortcut,
                        stride_in_1x1=stride_in_1x1,
                        attention=attention,
                        survival_prob=probs[index],
                    )
                )
                channels, index = planes * block.expansion, index + 1
            stages[f"layer{i + 1}"] = nn.Sequential(*blocks)
        self.stages = nn.Sequential(stages)
        # The last pre-activation unit needs its own BN→ReLU (He et al., ECCV 2016, §3.2).
        self.final_act = (
            nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
            if preact
            else nn.Identity()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = channels
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        if self.fc.weight.is_meta:
            # Meta tensors hold no values, and torch's meta ``normal_`` runs a slow Python
            # reference (~5 ms a call): skipping makes deep nets build quickly on meta.
            return
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He et al. initialise with the "MSRA" normal, fan-out as in their Torch code.
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for blk in self.residual_blocks():
                blk.zero_init_last()

    def residual_blocks(self) -> Iterator[ResidualBlock]:
        """All residual blocks in forward order (the ``l = 1..L`` of stochastic depth)."""
        for stage in self.stages:
            yield from stage

    def forward_features(self, x: Tensor) -> Tensor:
        return self.final_act(self.stages(self.stem(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.forward_features(x)).flatten(1))


class ResNeXt(ResNet):
    """ResNeXt — Xie, Girshick, Dollár, Tu, He, "Aggregated Residual Transformations for Deep
    Neural Networks", CVPR 2017.

    Bottlenecks in form (c) of Fig. 3: the C parallel paths are one grouped 3×3 conv with
    ``groups`` = cardinality, width ``int(planes · base_width / 64) · groups``. ImageNet nets
    (Table 1) use the torchvision layout; the CIFAR ResNeXt-29 (§5.3/appendix: 3 stages of 3
    bottlenecks, 64-channel 3×3 stem, outputs 256-512-1024) follows the released Torch code.

    Deviations: as :class:`ResNet` (stride on the 3×3 — which the ResNeXt release also
    does —, small-input stem below 128 px for the ImageNet nets, stochastic depth option).
    """


class WideResNet(ResNet):
    """Wide ResNet-50-2 — Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016, §ImageNet
    "WRN-50-2-bottleneck": ResNet-50 with the inner 1×1/3×3 widths of every bottleneck doubled
    (outer widths unchanged).

    Deviations: as :class:`ResNet` (torchvision layout with the stride on the 3×3, small-input
    stem below 128 px, stochastic depth option).
    """


# ---------------------------------------------------------------------------------------------
# builders


def _imagenet_net(
    block: type[ResidualBlock],
    layers: Sequence[int],
    *,
    num_classes: int,
    in_channels: int,
    input_size: int,
    small_stem: bool | None,
    cls: type[ResNet] = ResNet,
    **kwargs: object,
) -> ResNet:
    stem: StemType = "cifar" if use_small_stem(input_size, small_stem) else "imagenet"
    return cls(block, layers, num_classes=num_classes, in_channels=in_channels, stem=stem, **kwargs)


def _cifar_resnet(
    depth: int,
    *,
    num_classes: int,
    in_channels: int,
    shortcut: ShortcutType,
    zero_init_residual: bool,
    survival_prob_last: float,
) -> ResNet:
    # §4.2: 6n + 2 weighted layers, three stages of n two-conv blocks at 16/32/64 filters.
    n = (depth - 2) // 6
    return ResNet(
        BasicBlock,
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
    paper=HE_2016, year=2016,
    result=PaperResult(72.12, "ImageNet", "Table 2: 27.88 % top-1 error, 10-crop"),
)
def resnet18(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    shortcut: ShortcutType = "B",
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
    small_stem: bool | None = None,
) -> ResNet:
    """ResNet-18: basic blocks [2, 2, 2, 2] (Table 1); 11,689,512 parameters at 1000 classes.

    Inputs < 128 px get the 3×3 stride-1 stem without max-pool (``small_stem`` forces it on or
    off). ``shortcut``: "A" zero-pad / "B" projection where shapes change / "C" all projections.
    ``survival_prob_last`` < 1 enables stochastic depth (Huang et al. 2016; 0.5 in the paper).
    """
    return _imagenet_net(
        BasicBlock,
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
    paper=HE_2016, year=2016,
    result=PaperResult(75.48, "ImageNet", "Table 3: 24.52 % top-1 error (B), 10-crop"),
)
def resnet34(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    shortcut: ShortcutType = "B",
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
    small_stem: bool | None = None,
) -> ResNet:
    """ResNet-34: basic blocks [3, 4, 6, 3] (Table 1); 21,797,672 parameters at 1000 classes.

    Options as :func:`resnet18`.
    """
    return _imagenet_net(
        BasicBlock,
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


def _bottleneck_resnet(
    layers: Sequence[int],
    *,
    num_classes: int,
    in_channels: int,
    input_size: int,
    small_stem: bool | None,
    cls: type[ResNet] = ResNet,
    **kwargs: object,
) -> ResNet:
    return _imagenet_net(
        Bottleneck,
        layers,
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        cls=cls,
        **kwargs,
    )


@register_model(
    paper=HE_2016, year=2016,
    result=PaperResult(77.15, "ImageNet", "Table 3: 22.85 % top-1 error, 10-crop"),
)
def resnet50(
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
    """ResNet-50: bottlenecks [3, 4, 6, 3] (Table 1); 25,557,032 parameters at 1000 classes.

    ``stride_in_1x1=True`` puts the stride on the first 1×1 as in the paper ("v1"); the
    default strides the 3×3 ("v1.5"). Other options as :func:`resnet18`.
    """
    return _bottleneck_resnet(
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
    paper=HE_2016, year=2016,
    result=PaperResult(78.25, "ImageNet", "Table 3: 21.75 % top-1 error, 10-crop"),
)
def resnet101(
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
    """ResNet-101: bottlenecks [3, 4, 23, 3]; 44,549,160 parameters. Options as :func:`resnet50`."""
    return _bottleneck_resnet(
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
    paper=HE_2016, year=2016,
    result=PaperResult(78.57, "ImageNet", "Table 3: 21.43 % top-1 error, 10-crop"),
)
def resnet152(
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
    """ResNet-152: bottlenecks [3, 8, 36, 3]; 60,192,808 parameters. Options as :func:`resnet50`."""
    return _bottleneck_resnet(
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


# CIFAR ResNets (§4.2). They are defined on 32 px and keep their stride-1 3×3 stem at every
# input size (28 px works as is; large inputs work too, at a cost growing with the area).


@register_model(
    paper=HE_2016, year=2016, num_classes=10, input_size=32,
    result=PaperResult(91.25, "CIFAR-10", "Table 6: 8.75 % error"),
)
def resnet20(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    shortcut: ShortcutType = "A",
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
) -> ResNet:
    """CIFAR ResNet-20 (§4.2, n = 3): 16-32-64 filters, option-A shortcuts; 269,722 parameters.

    ``input_size`` is accepted for the common interface; the net is fully convolutional up to
    global pooling and keeps its 3×3 stride-1 stem at any size.
    """
    del input_size
    return _cifar_resnet(
        20,
        num_classes=num_classes,
        in_channels=in_channels,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=HE_2016, year=2016, num_classes=10, input_size=32,
    result=PaperResult(92.49, "CIFAR-10", "Table 6: 7.51 % error"),
)
def resnet32(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    shortcut: ShortcutType = "A",
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
) -> ResNet:
    """CIFAR ResNet-32 (§4.2, n = 5); 464,154 parameters. Options as :func:`resnet20`."""
    del input_size
    return _cifar_resnet(
        32,
        num_classes=num_classes,
        in_channels=in_channels,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=HE_2016, year=2016, num_classes=10, input_size=32,
    result=PaperResult(92.83, "CIFAR-10", "Table 6: 7.17 % error"),
)
def resnet44(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    shortcut: ShortcutType = "A",
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
) -> ResNet:
    """CIFAR ResNet-44 (§4.2, n = 7); 658,586 parameters. Options as :func:`resnet20`."""
    del input_size
    return _cifar_resnet(
        44,
        num_classes=num_classes,
        in_channels=in_channels,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=HE_2016, year=2016, num_classes=10, input_size=32,
    result=PaperResult(93.03, "CIFAR-10", "Table 6: 6.97 % error"),
)
def resnet56(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    shortcut: ShortcutType = "A",
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
) -> ResNet:
    """CIFAR ResNet-56 (§4.2, n = 9); 853,018 parameters. Options as :func:`resnet20`."""
    del input_size
    return _cifar_resnet(
        56,
        num_classes=num_classes,
        in_channels=in_channels,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=HE_2016, year=2016, num_classes=10, input_size=32,
    result=PaperResult(93.57, "CIFAR-10", "Table 6: 6.43 % error (best of 5)"),
)
def resnet110(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    shortcut: ShortcutType = "A",
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
) -> ResNet:
    """CIFAR ResNet-110 (§4.2, n = 18); 1,727,962 parameters. Options as :func:`resnet20`.

    With ``survival_prob_last=0.5`` it is Huang et al.'s 110-layer stochastic-depth net.
    """
    del input_size
    return _cifar_resnet(
        110,
        num_classes=num_classes,
        in_channels=in_channels,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=HE_2016, year=2016, num_classes=10, input_size=32,
    result=PaperResult(92.07, "CIFAR-10", "Table 6: 7.93 % error"),
)
def resnet1202(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    shortcut: ShortcutType = "A",
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
) -> ResNet:
    """CIFAR ResNet-1202 (§4.2, n = 200); 19,421,274 parameters. Options as :func:`resnet20`."""
    del input_size
    return _cifar_resnet(
        1202,
        num_classes=num_classes,
        in_channels=in_channels,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


# ResNeXt (Xie et al. 2017) and Wide ResNet-50-2 (Zagoruyko & Komodakis 2016).


@register_model(
    paper=XIE_2017, year=2017,
    result=PaperResult(77.8, "ImageNet", "Table 3: 22.2 % top-1 error, 224 crop"),
)
def resnext50_32x4d(
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
    """ResNeXt-50 (32×4d), Table 1: cardinality 32, 4 channels per path; 25,028,904 params.

    Options as :func:`resnet50`.
    """
    return _bottleneck_resnet(
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        cls=ResNeXt,
        groups=32,
        base_width=4,
        shortcut=shortcut,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=XIE_2017, year=2017,
    result=PaperResult(78.8, "ImageNet", "Table 3: 21.2 % top-1 error, 224 crop"),
)
def resnext101_32x4d(
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
    """ResNeXt-101 (32×4d); 44,177,704 parameters. Options as :func:`resnet50`."""
    return _bottleneck_resnet(
        (3, 4, 23, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        cls=ResNeXt,
        groups=32,
        base_width=4,
        shortcut=shortcut,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=XIE_2017, year=2017,
    result=PaperResult(None, "ImageNet", "not in the paper (torchvision's width)"),
)
def resnext101_32x8d(
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
    """ResNeXt-101 (32×8d); 88,791,336 parameters. Options as :func:`resnet50`."""
    return _bottleneck_resnet(
        (3, 4, 23, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        cls=ResNeXt,
        groups=32,
        base_width=8,
        shortcut=shortcut,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


def _resnext29(
    cardinality: int,
    *,
    num_classes: int,
    in_channels: int,
    shortcut: ShortcutType,
    zero_init_residual: bool,
    survival_prob_last: float,
) -> ResNet:
    # 29 = 3 stages × 3 blocks × 3 convs + stem + FC; 64 channels per path (d = 64).
    return ResNeXt(
        Bottleneck,
        (3, 3, 3),
        widths=(64, 128, 256),
        num_classes=num_classes,
        in_channels=in_channels,
        stem="cifar",
        stem_width=64,
        groups=cardinality,
        base_width=64,
        shortcut=shortcut,
        survival_prob_last=survival_prob_last,
        zero_init_residual=zero_init_residual,
    )


@register_model(
    paper=XIE_2017, year=2017, num_classes=10, input_size=32,
    result=PaperResult(96.35, "CIFAR-10", "Table 7: 3.65 % error"),
)
def resnext29_8x64d(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    shortcut: ShortcutType = "B",
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
) -> ResNet:
    """CIFAR ResNeXt-29 (8×64d), §5.3: 34,426,698 parameters (3.65 % CIFAR-10 error, Table 7).

    Keeps its 3×3 stride-1 stem at every input size (``input_size`` only for the interface).
    """
    del input_size
    return _resnext29(
        8,
        num_classes=num_classes,
        in_channels=in_channels,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=XIE_2017, year=2017, num_classes=10, input_size=32,
    result=PaperResult(96.42, "CIFAR-10", "Table 7: 3.58 % error"),
)
def resnext29_16x64d(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    shortcut: ShortcutType = "B",
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
) -> ResNet:
    """CIFAR ResNeXt-29 (16×64d): 68,155,210 parameters. Options as :func:`resnext29_8x64d`."""
    del input_size
    return _resnext29(
        16,
        num_classes=num_classes,
        in_channels=in_channels,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=ZAGORUYKO_2016, year=2016,
    result=PaperResult(78.1, "ImageNet", "§5 ImageNet: 21.9 % top-1 error, 224 crop"),
)
def wide_resnet50_2(
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
    """WRN-50-2-bottleneck: ResNet-50 with doubled bottleneck widths; 68,883,240 parameters.

    Options as :func:`resnet50`.
    """
    return _bottleneck_resnet(
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        cls=WideResNet,
        base_width=128,
        shortcut=shortcut,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )
