"""Xception — Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions",
CVPR 2017.

Inception modules pushed to the extreme: every convolution after the first two is a
depthwise-separable one, arranged in an entry flow, a middle flow repeated eight times and an
exit flow, with residual connections around every module but the first two convs and the last.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from classicnets.models.layers import ConvNormAct
from classicnets.models.registry import PaperResult, register_model, require_min_size

__all__ = ["SeparableConv2d", "Xception", "XceptionBlock", "xception"]

#: Below this input side the first conv runs with stride 1 (see Xception).
LOW_RES_INPUT = 80

_BatchNorm = partial(nn.BatchNorm2d, eps=1e-3)  # the released (Keras) model's epsilon
_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU}


class SeparableConv2d(nn.Sequential):
    """Depthwise 3×3 conv (one filter per channel) then pointwise 1×1 conv, no biases.

    By default there is no non-linearity in between: §4.7 (Figure 10) of the paper finds that
    an intermediate ReLU or ELU hurts; ``intermediate_act`` ("relu" or "elu") inserts one to
    reproduce that experiment.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        intermediate_act: str | None = None,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                in_channels,
                kernel_size,
                padding=kernel_size // 2,
                groups=in_channels,
                bias=False,
            )
        ]
        if intermediate_act is not None:
            layers.append(_ACTIVATIONS[intermediate_act]())
        layers.append(nn.Conv2d(in_channels, out_channels, 1, bias=False))
        super().__init__(*layers)


class XceptionBlock(nn.Module):
    """A residual Xception module (Figure 5): [ReLU → SeparableConv → BN] × n, then a 3×3/2
    max-pool when ``stride=2``, plus a shortcut (1×1/2 conv + BN when the shape changes).

    ``first_relu=False`` drops the leading ReLU (the first entry-flow module, whose input has
    just been through conv + BN + ReLU). ``residual=False`` removes the shortcut (the
    non-residual network of §4.7, Figure 9).
    """

    def __init__(
        self,
        in_channels: int,
        widths: list[int],
        stride: int = 1,
        first_relu: bool = True,
        *,
        residual: bool = True,
        intermediate_act: str | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for i, width in enumerate(widths):
            if i > 0 or first_relu:
                # Not in-place on the block input: the shortcut still needs it.
                layers.append(nn.ReLU(inplace=i > 0))
            layers += [SeparableConv2d(prev, width, 3, intermediate_act), _BatchNorm(width)]
            prev = width
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride=stride, padding=1))
        self.body = nn.Sequential(*layers)
        self.shortcut: nn.Module | None = None
        if residual:
            self.shortcut = (
                ConvNormAct(
                    in_channels, prev, 1, stride=stride, norm_layer=_BatchNorm, act_layer=None
                )
                if stride != 1 or in_channels != prev
                else nn.Identity()
            )
        self.out_channels = prev

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        return out if self.shortcut is None else out + self.shortcut(x)


class Xception(nn.Module):
    """Xception — François Chollet, "Xception: Deep Learning with Depthwise Separable
    Convolutions", CVPR 2017 (Figure 5).

    299 px. Entry flow: conv 3×3/2 32 → conv 3×3 64 → three residual modules of two separable
    convs (128, 256, 728) each ending in a 3×3/2 max-pool. Middle flow: eight residual modules
    of three 728-wide separable convs. Exit flow: residual module (728, 1024, max-pool) →
    separable conv 1536 → separable conv 2048 → global average pool → dropout 0.5 (the paper's
    ImageNet setting, §4.3) → logistic regression. Every conv is followed by BN; separable
    convs have no intermediate BN/ReLU and no biases. 22,855,952 parameters at 1000 classes
    (the paper's Table 3). The optional fully-connected layers (JFT only) are not included.

    Paper options: ``residual=False`` is the non-residual network of §4.7 (Figure 9);
    ``intermediate_act`` puts a ReLU or ELU between depthwise and pointwise convs (Figure 10).

    Details not in the paper follow the released Keras model: the first two convs are
    unpadded, BN epsilon 1e-3 (``bn_eps``; timm's port of those weights, legacy_xception,
    evaluates them with PyTorch's 1e-5).

    Small inputs: below 80 px the first conv has stride 1 (the network's only early stride-2
    stage before the residual modules), so 32 px inputs run the middle flow at 4×4. Same
    parameter count.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 299,
        *,
        residual: bool = True,
        intermediate_act: str | None = None,
        dropout: float = 0.5,
        bn_eps: float = 1e-3,
    ) -> None:
        super().__init__()
        if intermediate_act is not None and intermediate_act not in _ACTIVATIONS:
            raise ValueError(
                f"intermediate_act must be None or one of {sorted(_ACTIVATIONS)}, "
                f"got {intermediate_act!r}"
            )
        conv = partial(ConvNormAct, norm_layer=_BatchNorm, padding=0)
        block = partial(XceptionBlock, residual=residual, intermediate_act=intermediate_act)
        sep = partial(SeparableConv2d, kernel_size=3, intermediate_act=intermediate_act)
        stride1 = 1 if input_size < LOW_RES_INPUT else 2
        self.stem = nn.Sequential(conv(in_channels, 32, 3, stride=stride1), conv(32, 64, 3))
        self.entry_flow = nn.Sequential(
            block(64, [128, 128], stride=2, first_relu=False),
            block(128, [256, 256], stride=2),
            block(256, [728, 728], stride=2),
        )
        self.middle_flow = nn.Sequential(*(block(728, [728, 728, 728]) for _ in range(8)))
        self.exit_flow = nn.Sequential(
            block(728, [728, 1024], stride=2),
            sep(1024, 1536),
            _BatchNorm(1536),
            nn.ReLU(inplace=True),
            sep(1536, 2048),
            _BatchNorm(2048),
            nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2048, num_classes)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eps = bn_eps
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.exit_flow(self.middle_flow(self.entry_flow(self.stem(x))))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


@register_model(
    paper="Chollet, Xception: Deep Learning with Depthwise Separable Convolutions, CVPR",
    year=2017,
    num_classes=1000,
    in_channels=3,
    input_size=299,
    result=PaperResult(79.0, "ImageNet", "Table 1: 0.790 top-1, single crop"),
)
def xception(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 299,
    residual: bool = True,
    intermediate_act: str | None = None,
    dropout: float = 0.5,
    bn_eps: float = 1e-3,
) -> nn.Module:
    """Xception at 299 px (22,855,952 params).

    ``residual=False``: the paper's non-residual variant; ``intermediate_act`` ("relu" /
    "elu"): an activation between depthwise and pointwise convs (the paper's ablation);
    ``dropout`` before the classifier. Inputs below 80 px run the first conv with stride 1
    (see :class:`Xception`). ``bn_eps``: BatchNorm epsilon (1e-3 as Keras; timm's weights need
    1e-5).
    """
    # The two unpadded 3×3 convs need at least a 5 px input.
    require_min_size(input_size, 5, "xception")
    return Xception(
        num_classes,
        in_channels,
        input_size,
        residual=residual,
        intermediate_act=intermediate_act,
        dropout=dropout,
        bn_eps=bn_eps,
    )
