"""CBAM-ResNet (Woo et al., ECCV 2018): ResNets with channel-then-spatial attention per block.

The blocks are ``resnet.py``'s :class:`BasicBlock` / :class:`Bottleneck` with ``layers.CBAM`` as
their ``attention``, applied to the residual branch before the addition (Fig. 3 of the paper).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import nn

from classicnets.models.layers import CBAM, SpatialAttention
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

__all__ = ["CBAMResNet"]

WOO_2018 = "Woo, Park, Lee, Kweon, CBAM: Convolutional Block Attention Module, ECCV"


class CBAMResNet(ResNet):
    """CBAM-ResNet — Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module",
    ECCV 2018.

    Each residual branch ends with CBAM: channel attention (average- and max-pooled
    descriptors through one shared MLP C → C/r → C with biases, r = 16, summed, sigmoid), then
    spatial attention (channel-wise mean ‖ max → 7×7 conv + BN → sigmoid); the shortcut is
    added afterwards. Per block this adds ``2·C·(C/r) + C/r + C`` (MLP) ``+ 2·k² + 2``
    (spatial conv + BN) parameters. Layout otherwise torchvision's ResNet (the authors' code
    also strides the bottleneck's 3×3).

    Deviations from the paper / official code:
      - the spatial descriptor is ordered [mean, max] (the official code concatenates
        [max, mean]; only the conv's input-channel order differs);
      - the spatial gate's BN γ starts at 0 as in the official code (``spatial_bn_zero_init``),
        so every spatial map starts at sigmoid(0) = 0.5; other weights He-normal (fan-out)
        convs, PyTorch default Linear init (the official code He-inits the final FC);
      - inputs < 128 px get the 3×3 stride-1 stem without max-pool (CIFAR adaptation; the
        authors' CIFAR nets are not part of the paper's main tables);
      - stochastic depth option (Huang et al. 2016) as in :class:`~classicnets.models.resnet.
        ResNet`.
    """

    def __init__(self, *args: object, spatial_bn_zero_init: bool = True, **kwargs: object):
        super().__init__(*args, **kwargs)
        if spatial_bn_zero_init and not self.fc.weight.is_meta:
            for m in self.modules():
                if isinstance(m, SpatialAttention):
                    nn.init.zeros_(m.conv[1].weight)


def _cbam_net(
    block: type[ResidualBlock],
    layers: Sequence[int],
    *,
    num_classes: int,
    in_channels: int,
    input_size: int,
    small_stem: bool | None,
    reduction: int,
    spatial_kernel_size: int,
    **kwargs: object,
) -> ResNet:
    stem: StemType = "cifar" if use_small_stem(input_size, small_stem) else "imagenet"
    return CBAMResNet(
        block,
        layers,
        num_classes=num_classes,
        in_channels=in_channels,
        stem=stem,
        attention=partial(CBAM, reduction=reduction, kernel_size=spatial_kernel_size),
        **kwargs,
    )


@register_model(
    paper=WOO_2018, year=2018,
    result=PaperResult(70.73, "ImageNet", "Table 4: 29.27 % top-1 error"),
)
def cbam_resnet18(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    reduction: int = 16,
    spatial_kernel_size: int = 7,
    spatial_bn_zero_init: bool = True,
    shortcut: ShortcutType = "B",
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
    small_stem: bool | None = None,
) -> ResNet:
    """ResNet-18 + CBAM in every block; 11,779,392 parameters (official code).

    Inputs < 128 px get the 3×3 stride-1 stem without max-pool (``small_stem`` forces it).
    ``survival_prob_last`` < 1 enables stochastic depth.
    """
    return _cbam_net(
        BasicBlock,
        (2, 2, 2, 2),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        reduction=reduction,
        spatial_kernel_size=spatial_kernel_size,
        spatial_bn_zero_init=spatial_bn_zero_init,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=WOO_2018, year=2018,
    result=PaperResult(74.01, "ImageNet", "Table 4: 25.99 % top-1 error"),
)
def cbam_resnet34(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    reduction: int = 16,
    spatial_kernel_size: int = 7,
    spatial_bn_zero_init: bool = True,
    shortcut: ShortcutType = "B",
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
    small_stem: bool | None = None,
) -> ResNet:
    """ResNet-34 + CBAM; 21,960,468 parameters. Options as :func:`cbam_resnet18`."""
    return _cbam_net(
        BasicBlock,
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        reduction=reduction,
        spatial_kernel_size=spatial_kernel_size,
        spatial_bn_zero_init=spatial_bn_zero_init,
        shortcut=shortcut,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=WOO_2018, year=2018,
    result=PaperResult(77.34, "ImageNet", "Table 4: 22.66 % top-1 error"),
)
def cbam_resnet50(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    reduction: int = 16,
    spatial_kernel_size: int = 7,
    spatial_bn_zero_init: bool = True,
    shortcut: ShortcutType = "B",
    stride_in_1x1: bool = False,
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
    small_stem: bool | None = None,
) -> ResNet:
    """ResNet-50 + CBAM; 28,089,624 parameters. Options as :func:`cbam_resnet18`;
    ``stride_in_1x1`` moves the bottleneck stride to the first 1×1."""
    return _cbam_net(
        Bottleneck,
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        reduction=reduction,
        spatial_kernel_size=spatial_kernel_size,
        spatial_bn_zero_init=spatial_bn_zero_init,
        shortcut=shortcut,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )


@register_model(
    paper=WOO_2018, year=2018,
    result=PaperResult(78.49, "ImageNet", "Table 4: 21.51 % top-1 error"),
)
def cbam_resnet101(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    reduction: int = 16,
    spatial_kernel_size: int = 7,
    spatial_bn_zero_init: bool = True,
    shortcut: ShortcutType = "B",
    stride_in_1x1: bool = False,
    zero_init_residual: bool = False,
    survival_prob_last: float = 1.0,
    small_stem: bool | None = None,
) -> ResNet:
    """ResNet-101 + CBAM; 49,330,172 parameters. Options as :func:`cbam_resnet50`."""
    return _cbam_net(
        Bottleneck,
        (3, 4, 23, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        small_stem=small_stem,
        reduction=reduction,
        spatial_kernel_size=spatial_kernel_size,
        spatial_bn_zero_init=spatial_bn_zero_init,
        shortcut=shortcut,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
        survival_prob_last=survival_prob_last,
    )
