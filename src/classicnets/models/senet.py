"""SE-ResNet and SE-ResNeXt (Hu et al., CVPR 2018): ResNets with a squeeze-and-excitation gate.

The blocks are ``resnet.py``'s :class:`BasicBlock` / :class:`Bottleneck` with
``layers.SqueezeExcite`` as their ``attention``: the gate rescales the residual branch's
channels before the addition (Fig. 3 right of the paper).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import nn

from classicnets.models.layers import SqueezeExcite
from classicnets.models.registry import PaperResult, register_model
from classicnets.models.resnet import (
    BasicBlock,
    Bottleneck,
    ResidualBlock,
    ResNet,
    ShortcutType,
    StemType,
    use_small_stem,
)

__all__ = ["SEResNet"]

HU_2018 = "Hu, Shen, Sun, Squeeze-and-Excitation Networks, CVPR"


class SEResNet(ResNet):
    """SE-ResNet / SE-ResNeXt — Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018.

    Every residual block ends its branch with an SE gate: global average pooling ("squeeze"),
    1×1 conv C → C/r, ReLU, 1×1 conv C/r → C (both with biases), sigmoid, channel-wise
    rescale ("excitation"), r = 16 — then the shortcut is added. An SE gate adds
    ``2·C·(C/r) + C/r + C`` parameters to a block with C output channels.

    Layout of the released models (timm ``legacy_seresnet*``/``legacy_seresnext50_32x4d``):
    SE-ResNet bottlenecks stride their first 1×1 conv (Caffe style, ``stride_in_1x1=True``);
    SE-ResNeXt strides its grouped 3×3. 7×7/2 stem with BN and ReLU, 1×1 projection shortcuts
    with BN where the shape changes.

    Deviations from the released models:
      - the stem max-pool is 3×3/2 with padding 1 (torchvision); the release uses an unpadded
        ceil-mode pool — same 56×56 output at 224 px, windows shifted by one pixel
        (``caffe_pool=True`` in the bottleneck builders restores it);
      - the released SE-ResNet-18/34 blocks put a ReLU between the second BN and the SE gate;
        these basic blocks keep the paper's form (BN → SE → add → ReLU; no parameter change);
      - inputs < 128 px get the 3×3 stride-1 stem without max-pool (CIFAR adaptation);
      - He-normal (fan-out) init for all convs, SE's included, zero biases;
      - stochastic depth option (Huang et al. 2016) as in :class:`~classicnets.models.resnet.
        ResNet`.
    """


def _se_net(
    block: type[ResidualBlock],
    layers: Sequence[int],
    *,
    num_classes: int,
    in_channels: int,
    input_size: int,
    small_stem: bool | None,
    reduction: int,
    caffe_pool: bool = False,
    **kwargs: object,
) -> ResNet:
    stem: StemType = "cifar" if use_small_stem(input_size, small_stem) else "imagenet"
    net = SEResNet(
        block,
        layers,
        num_classes=num_classes,
        in_channels=in_channels,
        stem=stem,
        attention=partial(SqueezeExcite, reduction=reduction),
        **kwargs,
    )
    if caffe_pool and stem == "imagenet":  # the release's unpadded ceil-mode max-pool
        net.stem[1] = nn.MaxPool2d(3, stride=2, ceil_mode=True)
    return net


@register_model(
    paper=HU_2018, year=2018,
    result=PaperResult(None, "ImageNet", "not in the CVPR paper's Table 2"),
)
def se_resnet18(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    reduction: int = 16,
    shortcut: ShortcutType = "B",
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
    small_stem: bool | None = None,
) -> ResNet:
    """SE-ResNet-18: ResNet-18 with SE (r = ``reduction``) in every block; 11,778,592 params.

    Inputs < 128 px get the 3×3 stride-1 stem without max-pool (``small_stem`` forces it).
    ``survival_prob_last`` < 1 enables stochastic depth.
    """
    return _se_net(
        BasicBlock,
        (2, 2, 2, 2),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        reduction=reduction,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=HU_2018, year=2018,
    result=PaperResult(None, "ImageNet", "not in the CVPR paper's Table 2"),
)
def se_resnet34(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    reduction: int = 16,
    shortcut: ShortcutType = "B",
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
    small_stem: bool | None = None,
) -> ResNet:
    """SE-ResNet-34; 21,958,868 parameters. Options as :func:`se_resnet18`."""
    return _se_net(
        BasicBlock,
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        reduction=reduction,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=HU_2018, year=2018,
    result=PaperResult(76.71, "ImageNet", "Table 2: 23.29 % top-1 error, single crop"),
)
def se_resnet50(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    reduction: int = 16,
    shortcut: ShortcutType = "B",
    stride_in_1x1: bool = True,
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
    small_stem: bool | None = None,
    caffe_pool: bool = False,
) -> ResNet:
    """SE-ResNet-50 (Table 1 of the paper); 28,088,024 parameters.

    Stride on the first 1×1 conv as in the released model (``stride_in_1x1=False`` moves it
    to the 3×3). ``caffe_pool=True``: the released model's unpadded ceil-mode stem max-pool
    (its weights, timm's legacy_seresnet*, need it). Other options as :func:`se_resnet18`.
    """
    return _se_net(
        Bottleneck,
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        reduction=reduction,
        shortcut=shortcut,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
        caffe_pool=caffe_pool,
    )


@register_model(
    paper=HU_2018, year=2018,
    result=PaperResult(77.62, "ImageNet", "Table 2: 22.38 % top-1 error, single crop"),
)
def se_resnet101(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    reduction: int = 16,
    shortcut: ShortcutType = "B",
    stride_in_1x1: bool = True,
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
    small_stem: bool | None = None,
    caffe_pool: bool = False,
) -> ResNet:
    """SE-ResNet-101; 49,326,872 parameters. Options as :func:`se_resnet50`."""
    return _se_net(
        Bottleneck,
        (3, 4, 23, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        reduction=reduction,
        shortcut=shortcut,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
        caffe_pool=caffe_pool,
    )


@register_model(
    paper=HU_2018, year=2018,
    result=PaperResult(78.43, "ImageNet", "Table 2: 21.57 % top-1 error, single crop"),
)
def se_resnet152(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    reduction: int = 16,
    shortcut: ShortcutType = "B",
    stride_in_1x1: bool = True,
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
    small_stem: bool | None = None,
    caffe_pool: bool = False,
) -> ResNet:
    """SE-ResNet-152; 66,821,848 parameters. Options as :func:`se_resnet50`."""
    return _se_net(
        Bottleneck,
        (3, 8, 36, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        reduction=reduction,
        shortcut=shortcut,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
        caffe_pool=caffe_pool,
    )


@register_model(
    paper=HU_2018, year=2018,
    result=PaperResult(78.9, "ImageNet", "Table 2: 21.10 % top-1 error, single crop"),
)
def se_resnext50_32x4d(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    reduction: int = 16,
    shortcut: ShortcutType = "B",
    stride_in_1x1: bool = False,
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
    small_stem: bool | None = None,
    caffe_pool: bool = False,
) -> ResNet:
    """SE-ResNeXt-50 (32×4d) (Table 1 of the paper); 27,559,896 parameters.

    The released SE-ResNeXt strides the grouped 3×3 (unlike the released SE-ResNets), hence
    ``stride_in_1x1=False`` by default; ``caffe_pool`` as :func:`se_resnet50`. Other options
    as :func:`se_resnet18`.
    """
    return _se_net(
        Bottleneck,
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        reduction=reduction,
        groups=32,
        base_width=4,
        shortcut=shortcut,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
        caffe_pool=caffe_pool,
    )
