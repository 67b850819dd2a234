"""Inception-v3 — Szegedy et al., "Rethinking the Inception Architecture for Computer Vision",
CVPR 2016.

Factorised convolutions (5×5 → two 3×3, n×n → 1×n + n×1), efficient grid-size reduction
(parallel stride-2 conv and pool), an auxiliary classifier on the 17×17 grid, 299 px input.
The layer widths are those of the released model, which the reference parameter count fixes.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from classicnets.models.layers import ClassifierOutput, ConvNormAct
from classicnets.models.registry import PaperResult, register_model, require_min_size

__all__ = ["InceptionV3", "inception_v3"]

#: Below this input side the stem runs without its first two stride-2 stages (paper Table 2).
LOW_RES_INPUT = 80

# Conv (no bias) → BN (TensorFlow's eps 1e-3) → ReLU.
_Conv = partial(ConvNormAct, norm_layer=partial(nn.BatchNorm2d, eps=1e-3))


def _valid(size: int, kernel: int = 3, stride: int = 1) -> int:
    """Side after an unpadded ("VALID") conv or pool."""
    return (size - kernel) // stride + 1


def _avg_pool() -> nn.AvgPool2d:
    # 3×3/1 "SAME" average pooling of the pool branches; padding is not counted (TF semantics).
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35×35 module (paper Figure 5): 1×1 | 1×1 → 5×5 | 1×1 → 3×3 → 3×3 | avg-pool → 1×1.

    The released model keeps one 5×5 branch next to the factorised double 3×3 branch.
    """

    def __init__(self, in_channels: int, pool_proj: int) -> None:
        super().__init__()
        self.branch1 = _Conv(in_channels, 64, 1)
        self.branch5 = nn.Sequential(_Conv(in_channels, 48, 1), _Conv(48, 64, 5))
        self.branch3dbl = nn.Sequential(
            _Conv(in_channels, 64, 1), _Conv(64, 96, 3), _Conv(96, 96, 3)
        )
        self.branch_pool = nn.Sequential(_avg_pool(), _Conv(in_channels, pool_proj, 1))
        self.out_channels = 64 + 64 + 96 + pool_proj

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [self.branch1(x), self.branch5(x), self.branch3dbl(x), self.branch_pool(x)], 1
        )


class ReductionA(nn.Module):
    """35 → 17 grid reduction (paper Figure 10): stride-2 3×3 | 1×1 → 3×3 → 3×3/2 | max-pool."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3 = _Conv(in_channels, 384, 3, stride=2, padding=0)
        self.branch3dbl = nn.Sequential(
            _Conv(in_channels, 64, 1), _Conv(64, 96, 3), _Conv(96, 96, 3, stride=2, padding=0)
        )
        self.branch_pool = nn.MaxPool2d(3, stride=2)
        self.out_channels = 384 + 96 + in_channels

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch3(x), self.branch3dbl(x), self.branch_pool(x)], 1)


class InceptionB(nn.Module):
    """17×17 module with 7×7 factorised into 1×7 and 7×1 (paper Figure 6, n = 7)."""

    def __init__(self, in_channels: int, c7: int) -> None:
        super().__init__()
        self.branch1 = _Conv(in_channels, 192, 1)
        self.branch7 = nn.Sequential(
            _Conv(in_channels, c7, 1), _Conv(c7, c7, (1, 7)), _Conv(c7, 192, (7, 1))
        )
        self.branch7dbl = nn.Sequential(
            _Conv(in_channels, c7, 1),
            _Conv(c7, c7, (7, 1)),
            _Conv(c7, c7, (1, 7)),
            _Conv(c7, c7, (7, 1)),
            _Conv(c7, 192, (1, 7)),
        )
        self.branch_pool = nn.Sequential(_avg_pool(), _Conv(in_channels, 192, 1))
        self.out_channels = 4 * 192

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [self.branch1(x), self.branch7(x), self.branch7dbl(x), self.branch_pool(x)], 1
        )


class ReductionB(nn.Module):
    """17 → 8 grid reduction: 1×1 → 3×3/2 | 1×1 → 1×7 → 7×1 → 3×3/2 | max-pool."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3 = nn.Sequential(
            _Conv(in_channels, 192, 1), _Conv(192, 320, 3, stride=2, padding=0)
        )
        self.branch7x3 = nn.Sequential(
            _Conv(in_channels, 192, 1),
            _Conv(192, 192, (1, 7)),
            _Conv(192, 192, (7, 1)),
            _Conv(192, 192, 3, stride=2, padding=0),
        )
        self.branch_pool = nn.MaxPool2d(3, stride=2)
        self.out_channels = 320 + 192 + in_channels

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch3(x), self.branch7x3(x), self.branch_pool(x)], 1)


class _SplitConv(nn.Module):
    """A 1×3 and a 3×1 conv side by side on the same input (the "expanded" outputs)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv13 = _Conv(in_channels, out_channels, (1, 3))
        self.conv31 = _Conv(in_channels, out_channels, (3, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.conv13(x), self.conv31(x)], 1)


class InceptionC(nn.Module):
    """8×8 module with expanded filter banks (paper Figure 7): outputs 2048 channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1 = _Conv(in_channels, 320, 1)
        self.branch3 = nn.Sequential(_Conv(in_channels, 384, 1), _SplitConv(384, 384))
        self.branch3dbl = nn.Sequential(
            _Conv(in_channels, 448, 1), _Conv(448, 384, 3), _SplitConv(384, 384)
        )
        self.branch_pool = nn.Sequential(_avg_pool(), _Conv(in_channels, 192, 1))
        self.out_channels = 320 + 768 + 768 + 192

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [self.branch1(x), self.branch3(x), self.branch3dbl(x), self.branch_pool(x)], 1
        )


class AuxHead(nn.Module):
    """Auxiliary classifier on the 17×17 grid (paper Figure 8).

    5×5/3 average pool → 1×1 conv 128 → 5×5 conv 768 → linear. When the grid is smaller than
    at 299 px (pooled map under 5×5) the pool window shrinks to the map and the 5×5 conv is
    zero-padded; a global average then feeds the linear layer (a no-op at 299 px).
    """

    def __init__(self, in_channels: int, num_classes: int, map_size: int) -> None:
        super().__init__()
        kernel = min(5, map_size)
        pooled = (map_size - kernel) // 3 + 1
        self.pool = nn.AvgPool2d(kernel, stride=3)
        self.conv0 = _Conv(in_channels, 128, 1)
        self.conv1 = _Conv(128, 768, 5, padding=0 if pooled >= 5 else 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(self.conv0(self.pool(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class InceptionV3(nn.Module):
    """Inception-v3 — Szegedy, Vanhoucke, Ioffe, Shlens & Wojna, "Rethinking the Inception
    Architecture for Computer Vision", CVPR 2016.

    299×299 input; stem (conv 3×3/2 32, 3×3 32, 3×3 64, max-pool, 1×1 80, 3×3 192, max-pool)
    → 3× 35×35 module → reduction → 4× 17×17 module (7×7 factorised) → reduction → 2× 8×8
    module → global average pool → dropout → linear. Conv → BN → ReLU everywhere, no conv
    biases. 23,834,568 parameters at 1000 classes; 27,161,264 with the auxiliary head, which
    returns its logits in training mode only (:class:`ClassifierOutput`).

    Deviations from the paper's Table 1 (which is approximate): the layer layout is that of
    the released model: the stem's 80-wide conv is 1×1 (Table 1 prints 3×3), the 35×35
    modules keep a 5×5 branch, the 17×17 stage has 4 modules plus the 17 → 8 reduction module
    (Table 1's "5×"), and the reductions are Figure 10 modules. The auxiliary head's FC is not
    batch-normalised ("BN-auxiliary", §4 and Table 3), as in the released model; its convs
    are. Dropout 0.2 before the classifier (the released model's keep-probability 0.8).

    Small inputs: below 80 px the stem runs without its first two stride-2 stages (first conv
    stride 1, no max-pool after the first conv block), the paper's own low-resolution
    network (§9, Table 2: "stride 1 and without pooling after the first layer"). 32 px inputs
    then reach the 35×35 modules at 12×12. The parameter count is unchanged.

    ``pool_count_pad=True`` makes the pool branches' 3×3 average pools count the zero padding
    at the borders, as torchvision's port does (its converted weights were evaluated that
    way); the default follows TensorFlow's SAME pooling of the release, which does not.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 299,
        *,
        aux_logits: bool = False,
        dropout: float = 0.2,
        pool_count_pad: bool = False,
    ) -> None:
        super().__init__()
        low_res = input_size < LOW_RES_INPUT
        stride1 = 1 if low_res else 2
        stem: list[nn.Module] = [
            _Conv(in_channels, 32, 3, stride=stride1, padding=0),
            _Conv(32, 32, 3, padding=0),
            _Conv(32, 64, 3),
        ]
        size = _valid(_valid(input_size, 3, stride1))
        if not low_res:
            stem.append(nn.MaxPool2d(3, stride=2))
            size = _valid(size, 3, 2)
        stem += [_Conv(64, 80, 1), _Conv(80, 192, 3, padding=0), nn.MaxPool2d(3, stride=2)]
        size = _valid(_valid(size), 3, 2)
        self.stem = nn.Sequential(*stem)

        self.mixed5 = nn.Sequential(InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64))
        self.reduction_a = ReductionA(288)  # → 768 channels
        size = _valid(size, 3, 2)
        self.mixed6 = nn.Sequential(*(InceptionB(768, c7) for c7 in (128, 160, 160, 192)))
        self.aux = AuxHead(768, num_classes, size) if aux_logits else None
        self.reduction_b = ReductionB(768)  # → 1280 channels
        self.mixed7 = nn.Sequential(InceptionC(1280), InceptionC(2048))

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2048, num_classes)
        for m in self.modules():
            if isinstance(m, nn.AvgPool2d):
                m.count_include_pad = pool_count_pad
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.01, a=-0.02, b=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor | ClassifierOutput:
        x = self.mixed6(self.reduction_a(self.mixed5(self.stem(x))))
        aux = self.aux(x) if self.training and self.aux is not None else None
        x = self.mixed7(self.reduction_b(x))
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        return ClassifierOutput(logits, (aux,)) if aux is not None else logits


@register_model(
    paper="Szegedy et al., Rethinking the Inception Architecture for Computer Vision, CVPR",
    year=2016,
    num_classes=1000,
    in_channels=3,
    input_size=299,
    result=PaperResult(78.8, "ImageNet", "Table 3: 21.2 % top-1 error, single crop"),
)
def inception_v3(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 299,
    aux_logits: bool = False,
    dropout: float = 0.2,
    pool_count_pad: bool = False,
) -> nn.Module:
    """Inception-v3 at 299 px (23,834,568 params; 27,161,264 with ``aux_logits=True``).

    ``aux_logits`` adds the 17×17 auxiliary classifier; ``dropout`` is the rate before the
    classifier. Inputs below 80 px use the paper's low-resolution stem (see
    :class:`InceptionV3`); below 21 px the 8×8 grid would vanish and the build is refused.
    ``pool_count_pad=True``: average pools that count the padding, as torchvision's port (its
    weights need it).
    """
    require_min_size(input_size, 21, "inception_v3")
    return InceptionV3(num_classes, in_channels, input_size, aux_logits=aux_logits, dropout=dropout,
                       pool_count_pad=pool_count_pad)
