"""Inception-v4, Inception-ResNet-v1 and Inception-ResNet-v2 — Szegedy, Ioffe, Vanhoucke &
Alemi, "Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning",
AAAI 2017.

Inception-v4 is a pure Inception network (no residual connections); the two Inception-ResNet
networks add a scaled residual connection around every inception block.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from classicnets.models.layers import ConvNormAct, init_weights
from classicnets.models.registry import PaperResult, register_model, require_min_size

__all__ = [
    "InceptionResNetV1",
    "InceptionResNetV2",
    "InceptionV4",
    "ResidualInceptionBlock",
    "inception_resnet_v1",
    "inception_resnet_v2",
    "inception_v4",
]

_PAPER = (
    "Szegedy et al., Inception-v4, Inception-ResNet and the Impact of Residual Connections "
    "on Learning, AAAI"
)

#: Below this input side the stems run without their first two stride-2 stages.
LOW_RES_INPUT = 80
#: Smallest inputs with the low-resolution stems: the 8×8 grid must keep at least one pixel
#: (Inception-v4's stem loses two more pixels in its unpadded 3×3 convs).
MIN_INPUT_V4 = 23
MIN_INPUT_RESNET = 21

# Conv (no bias) → BN (TensorFlow's eps 1e-3) → ReLU.
_Conv = partial(ConvNormAct, norm_layer=partial(nn.BatchNorm2d, eps=1e-3))


def _avg_pool() -> nn.AvgPool2d:
    # 3×3/1 "SAME" average pooling; padding is not counted (TF semantics).
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


class _Concat(nn.Module):
    """Parallel branches on one input, concatenated along channels."""

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


class _Classifier(nn.Sequential):
    """Global average pool → dropout (the paper's keep 0.8) → linear."""

    def __init__(self, in_features: int, num_classes: int, dropout: float) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Dropout(dropout),
            nn.Linear(in_features, num_classes),
        )


# --------------------------------------------------------------------------- Inception-v4


def _v4_stem(in_channels: int, low_res: bool) -> nn.Sequential:
    """Figure 3: the stem shared by Inception-v4 and (in the paper) Inception-ResNet-v2.

    299 → 35×35×384. ``low_res`` runs the first conv and the first pool ‖ conv stage with
    stride 1 (still unpadded), the early stride-2 stages of the low-resolution rule.
    """
    s = 1 if low_res else 2
    return nn.Sequential(
        _Conv(in_channels, 32, 3, stride=s, padding=0),
        _Conv(32, 32, 3, padding=0),
        _Conv(32, 64, 3),
        _Concat(nn.MaxPool2d(3, stride=s), _Conv(64, 96, 3, stride=s, padding=0)),  # → 160
        _Concat(
            nn.Sequential(_Conv(160, 64, 1), _Conv(64, 96, 3, padding=0)),
            nn.Sequential(
                _Conv(160, 64, 1),
                _Conv(64, 64, (1, 7)),  # the release's order of the two factors
                _Conv(64, 64, (7, 1)),
                _Conv(64, 96, 3, padding=0),
            ),
        ),  # → 192
        _Concat(_Conv(192, 192, 3, stride=2, padding=0), nn.MaxPool2d(3, stride=2)),  # → 384
    )


def _inception_a(c: int = 384) -> nn.Module:
    """Figure 4: 35×35 block, 384 → 384."""
    return _Concat(
        _Conv(c, 96, 1),
        nn.Sequential(_Conv(c, 64, 1), _Conv(64, 96, 3)),
        nn.Sequential(_Conv(c, 64, 1), _Conv(64, 96, 3), _Conv(96, 96, 3)),
        nn.Sequential(_avg_pool(), _Conv(c, 96, 1)),
    )


def _reduction_a(c: int, k: int, l: int, m: int, n: int) -> nn.Module:  # noqa: E741 (paper)
    """Figure 7: 35 → 17 reduction with the filter counts k, l, m, n of Table 1."""
    return _Concat(
        _Conv(c, n, 3, stride=2, padding=0),
        nn.Sequential(_Conv(c, k, 1), _Conv(k, l, 3), _Conv(l, m, 3, stride=2, padding=0)),
        nn.MaxPool2d(3, stride=2),
    )


def _inception_b(c: int = 1024) -> nn.Module:
    """Figure 5: 17×17 block, 1024 → 1024."""
    return _Concat(
        _Conv(c, 384, 1),
        nn.Sequential(_Conv(c, 192, 1), _Conv(192, 224, (1, 7)), _Conv(224, 256, (7, 1))),
        nn.Sequential(  # the release starts this branch with 7×1
            _Conv(c, 192, 1),
            _Conv(192, 192, (7, 1)),
            _Conv(192, 224, (1, 7)),
            _Conv(224, 224, (7, 1)),
            _Conv(224, 256, (1, 7)),
        ),
        nn.Sequential(_avg_pool(), _Conv(c, 128, 1)),
    )


def _reduction_b_v4(c: int = 1024) -> nn.Module:
    """Figure 8: 17 → 8 reduction of Inception-v4, 1024 → 1536."""
    return _Concat(
        nn.Sequential(_Conv(c, 192, 1), _Conv(192, 192, 3, stride=2, padding=0)),
        nn.Sequential(
            _Conv(c, 256, 1),
            _Conv(256, 256, (1, 7)),
            _Conv(256, 320, (7, 1)),
            _Conv(320, 320, 3, stride=2, padding=0),
        ),
        nn.MaxPool2d(3, stride=2),
    )


class _SplitConv(_Concat):
    """A 1×3 and a 3×1 conv side by side on the same input."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            _Conv(in_channels, out_channels, (1, 3)), _Conv(in_channels, out_channels, (3, 1))
        )


def _inception_c(c: int = 1536) -> nn.Module:
    """Figure 6: 8×8 block, 1536 → 1536."""
    return _Concat(
        _Conv(c, 256, 1),
        nn.Sequential(_Conv(c, 384, 1), _SplitConv(384, 256)),
        nn.Sequential(
            _Conv(c, 384, 1), _Conv(384, 448, (3, 1)), _Conv(448, 512, (1, 3)), _SplitConv(512, 256)
        ),
        nn.Sequential(_avg_pool(), _Conv(c, 256, 1)),
    )


class InceptionV4(nn.Module):
    """Inception-v4 — Szegedy, Ioffe, Vanhoucke & Alemi, "Inception-v4, Inception-ResNet and the
    Impact of Residual Connections on Learning", AAAI 2017 (Figure 9).

    299 px: stem (Figure 3) → 4× Inception-A → Reduction-A (k, l, m, n = 192, 224, 256, 384)
    → 7× Inception-B → Reduction-B → 3× Inception-C → average pool → dropout (keep 0.8) →
    linear. No residual connections; every repeated block has its own weights. Conv → BN →
    ReLU, no conv biases. 42,679,816 parameters at 1000 classes.

    Deviations: the order of the 1×7 / 7×1 (and 1×3 / 3×1) factors inside a branch follows the
    released (TF-slim) model where the figures differ — the stem's 1×7 before 7×1, and 7×1
    (3×1) first in the deepest branch of Inception-B (C); the parameter count is the same
    either way, and the released weights (timm's inception_v4) fit only this order.

    Small inputs: below 80 px the first conv and the first pool ‖ conv stage of the stem use
    stride 1 (the two early stride-2 stages removed, the low-resolution rule of Szegedy et al.
    2016, Table 2): 32 px inputs reach Inception-A at 11×11. Same parameter count; inputs
    below 23 px are refused.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 299,
        *,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.stem = _v4_stem(in_channels, input_size < LOW_RES_INPUT)
        self.inception_a = nn.Sequential(*(_inception_a() for _ in range(4)))
        self.reduction_a = _reduction_a(384, 192, 224, 256, 384)  # → 1024
        self.inception_b = nn.Sequential(*(_inception_b() for _ in range(7)))
        self.reduction_b = _reduction_b_v4()  # → 1536
        self.inception_c = nn.Sequential(*(_inception_c() for _ in range(3)))
        self.head = _Classifier(1536, num_classes, dropout)
        init_weights(self, conv_mode="fan_in", truncate_linear=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.inception_a(self.stem(x))
        x = self.inception_b(self.reduction_a(x))
        x = self.inception_c(self.reduction_b(x))
        return self.head(x)


# ------------------------------------------------------------------------- Inception-ResNet


class ResidualInceptionBlock(nn.Module):
    """An Inception-ResNet block: ``act(x + scale · W(concat(branches(x))))``.

    ``W`` is the linear 1×1 "filter-expansion" conv (bias, no BN, no activation) that brings
    the concatenated branches back to the input width (Figures 10–13 / 16–19). ``scale`` is
    the residual scaling of §3.3 (factors 0.1–0.3 stabilise training of wide networks).
    ``activate=False`` leaves out the ReLU after the addition (the last block of the released
    Inception-ResNet-v2).
    """

    def __init__(
        self,
        branches: list[nn.Module],
        branch_channels: int,
        channels: int,
        scale: float,
        activate: bool = True,
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)
        self.expand = nn.Conv2d(branch_channels, channels, 1, bias=True)
        self.scale = scale
        self.act = nn.ReLU(inplace=True) if activate else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        residual = self.expand(torch.cat([b(x) for b in self.branches], dim=1))
        return self.act(x + self.scale * residual)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


#: Per-block residual scales of the released Inception-ResNet code (A, B, C blocks).
RELEASED_SCALES = (0.17, 0.10, 0.20)


def _scales(residual_scale: float | None) -> tuple[float, float, float]:
    if residual_scale is None:
        return RELEASED_SCALES
    if not 0.0 < residual_scale <= 1.0:
        raise ValueError(f"residual_scale must be in (0, 1], got {residual_scale}")
    return (residual_scale,) * 3


def _ir1_stem(in_channels: int, low_res: bool) -> nn.Sequential:
    """Figure 14: the Inception-ResNet-v1 stem, 299 → 35×35×256."""
    s = 1 if low_res else 2
    layers: list[nn.Module] = [
        _Conv(in_channels, 32, 3, stride=s, padding=0),
        _Conv(32, 32, 3, padding=0),
        _Conv(32, 64, 3),
    ]
    if not low_res:
        layers.append(nn.MaxPool2d(3, stride=2))
    layers += [
        _Conv(64, 80, 1),
        _Conv(80, 192, 3, padding=0),
        _Conv(192, 256, 3, stride=2, padding=0),
    ]
    return nn.Sequential(*layers)


def _ir1_block_a(scale: float, c: int = 256) -> ResidualInceptionBlock:
    """Figure 10: 35×35 Inception-ResNet-A of v1."""
    branches = [
        _Conv(c, 32, 1),
        nn.Sequential(_Conv(c, 32, 1), _Conv(32, 32, 3)),
        nn.Sequential(_Conv(c, 32, 1), _Conv(32, 32, 3), _Conv(32, 32, 3)),
    ]
    return ResidualInceptionBlock(branches, 96, c, scale)


def _ir1_block_b(scale: float, c: int = 896) -> ResidualInceptionBlock:
    """Figure 11: 17×17 Inception-ResNet-B of v1."""
    branches = [
        _Conv(c, 128, 1),
        nn.Sequential(_Conv(c, 128, 1), _Conv(128, 128, (1, 7)), _Conv(128, 128, (7, 1))),
    ]
    return ResidualInceptionBlock(branches, 256, c, scale)


def _ir1_block_c(scale: float, c: int = 1792) -> ResidualInceptionBlock:
    """Figure 13: 8×8 Inception-ResNet-C of v1."""
    branches = [
        _Conv(c, 192, 1),
        nn.Sequential(_Conv(c, 192, 1), _Conv(192, 192, (1, 3)), _Conv(192, 192, (3, 1))),
    ]
    return ResidualInceptionBlock(branches, 384, c, scale)


def _ir_reduction_b(c: int, widths: tuple[int, int, int, int]) -> nn.Module:
    """Figure 12 / 18: 17 → 8 reduction of the Inception-ResNet networks.

    ``widths``: the stride-2 outputs of the three conv branches, and the double-3×3 branch's
    middle width. v1: (384, 256, 256, 256); released v2: (384, 288, 320, 288).
    """
    w1, w2, w3, w3_mid = widths
    return _Concat(
        nn.Sequential(_Conv(c, 256, 1), _Conv(256, w1, 3, stride=2, padding=0)),
        nn.Sequential(_Conv(c, 256, 1), _Conv(256, w2, 3, stride=2, padding=0)),
        nn.Sequential(
            _Conv(c, 256, 1), _Conv(256, w3_mid, 3), _Conv(w3_mid, w3, 3, stride=2, padding=0)
        ),
        nn.MaxPool2d(3, stride=2),
    )


class InceptionResNetV1(nn.Module):
    """Inception-ResNet-v1 — Szegedy, Ioffe, Vanhoucke & Alemi, "Inception-v4, Inception-ResNet
    and the Impact of Residual Connections on Learning", AAAI 2017 (Figure 15).

    299 px: stem (Figure 14) → 5× Inception-ResNet-A (Figure 10) → Reduction-A (k, l, m, n =
    192, 192, 256, 384) → 10× Inception-ResNet-B (Figure 11) → Reduction-B (Figure 12) → 5×
    Inception-ResNet-C (Figure 13) → average pool → dropout (keep 0.8) → linear. BN follows
    every ordinary conv but not the summations (§3.2); the 1×1 filter-expansion convs are
    linear with a bias. 22,756,328 parameters at 1000 classes (no official release exists, so
    the count is derived from the figures).

    ``residual_scale``: ``None`` uses the released Inception-ResNet code's per-block scales
    (0.17, 0.10, 0.20 for A, B, C); a float scales every residual by it (§3.3 recommends
    0.1–0.3). The paper figures do not fix these numbers, nor the BN epsilon (1e-3 here).

    Small inputs: below 80 px the first conv has stride 1 and the max-pool after the first
    conv block is removed (the low-resolution rule of Szegedy et al. 2016, Table 2): 32 px
    inputs reach the A blocks at 12×12. Same parameter count; inputs below 21 px are refused.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 299,
        *,
        residual_scale: float | None = None,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        sa, sb, sc = _scales(residual_scale)
        self.stem = _ir1_stem(in_channels, input_size < LOW_RES_INPUT)
        self.blocks_a = nn.Sequential(*(_ir1_block_a(sa) for _ in range(5)))
        self.reduction_a = _reduction_a(256, 192, 192, 256, 384)  # → 896
        self.blocks_b = nn.Sequential(*(_ir1_block_b(sb) for _ in range(10)))
        self.reduction_b = _ir_reduction_b(896, (384, 256, 256, 256))  # → 1792
        self.blocks_c = nn.Sequential(*(_ir1_block_c(sc) for _ in range(5)))
        self.head = _Classifier(1792, num_classes, dropout)
        init_weights(self, conv_mode="fan_in", truncate_linear=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks_a(self.stem(x))
        x = self.blocks_b(self.reduction_a(x))
        x = self.blocks_c(self.reduction_b(x))
        return self.head(x)


def _ir2_stem(in_channels: int, low_res: bool) -> nn.Sequential:
    """The released Inception-ResNet-v2 stem, 299 → 35×35×320.

    conv 3×3/2 32, 3×3 32, 3×3 64, max-pool, 1×1 80, 3×3 192, max-pool, then the "Mixed_5b"
    inception module (1×1 96 | 1×1 48 → 5×5 64 | 1×1 64 → 3×3 96 → 3×3 96 | avg → 1×1 64).
    """
    s = 1 if low_res else 2
    layers: list[nn.Module] = [
        _Conv(in_channels, 32, 3, stride=s, padding=0),
        _Conv(32, 32, 3, padding=0),
        _Conv(32, 64, 3),
    ]
    if not low_res:
        layers.append(nn.MaxPool2d(3, stride=2))
    layers += [
        _Conv(64, 80, 1),
        _Conv(80, 192, 3, padding=0),
        nn.MaxPool2d(3, stride=2),
        _Concat(
            _Conv(192, 96, 1),
            nn.Sequential(_Conv(192, 48, 1), _Conv(48, 64, 5)),
            nn.Sequential(_Conv(192, 64, 1), _Conv(64, 96, 3), _Conv(96, 96, 3)),
            nn.Sequential(_avg_pool(), _Conv(192, 64, 1)),
        ),
    ]
    return nn.Sequential(*layers)


def _ir2_block_a(scale: float, c: int = 320) -> ResidualInceptionBlock:
    """35×35 Inception-ResNet-A of v2 (Figure 16, released widths)."""
    branches = [
        _Conv(c, 32, 1),
        nn.Sequential(_Conv(c, 32, 1), _Conv(32, 32, 3)),
        nn.Sequential(_Conv(c, 32, 1), _Conv(32, 48, 3), _Conv(48, 64, 3)),
    ]
    return ResidualInceptionBlock(branches, 128, c, scale)


def _ir2_block_b(scale: float, c: int = 1088) -> ResidualInceptionBlock:
    """17×17 Inception-ResNet-B of v2 (Figure 17, released widths)."""
    branches = [
        _Conv(c, 192, 1),
        nn.Sequential(_Conv(c, 128, 1), _Conv(128, 160, (1, 7)), _Conv(160, 192, (7, 1))),
    ]
    return ResidualInceptionBlock(branches, 384, c, scale)


def _ir2_block_c(scale: float, c: int = 2080, activate: bool = True) -> ResidualInceptionBlock:
    """8×8 Inception-ResNet-C of v2 (Figure 19, released widths)."""
    branches = [
        _Conv(c, 192, 1),
        nn.Sequential(_Conv(c, 192, 1), _Conv(192, 224, (1, 3)), _Conv(224, 256, (3, 1))),
    ]
    return ResidualInceptionBlock(branches, 448, c, scale, activate)


class InceptionResNetV2(nn.Module):
    """Inception-ResNet-v2 — Szegedy, Ioffe, Vanhoucke & Alemi, "Inception-v4, Inception-ResNet
    and the Impact of Residual Connections on Learning", AAAI 2017, in the layout of the
    authors' released (TF-slim) model.

    299 px: stem (with the "Mixed_5b" inception module, 320 channels) → 10× Inception-ResNet-A
    → Reduction-A (k, l, m, n = 256, 256, 384, 384) → 20× Inception-ResNet-B → Reduction-B →
    10× Inception-ResNet-C (the last without the ReLU after its addition) → 1×1 conv 1536 →
    average pool → dropout (keep 0.8) → linear. 55,843,464 parameters at 1000 classes.

    Deviations from the paper's figures (the released model's widths, which the reference
    count fixes): the stem of Figure 3 is replaced by the released stem ending in a 320-wide
    inception module; A/B/C blocks expand to 320/1088/2080 channels (Figures 16, 17 and 19
    print 384/1154/2048), 10/20/10 blocks are used instead of Figure 15's 5/10/5, and a final
    1×1 conv to 1536 precedes the pooling. The branch widths inside the blocks and the
    reductions (Table 1's k, l, m, n = 256, 256, 384, 384; Figure 18) are the paper's.

    ``residual_scale``: ``None`` uses the released per-block scales (0.17, 0.10, 0.20 for A,
    B, C, and 1.0 for the last C block, which TF-slim builds with its default scale); a float
    scales every residual by it (§3.3 recommends 0.1–0.3).

    Small inputs: below 80 px the first conv has stride 1 and the max-pool after the first
    conv block is removed (the low-resolution rule of Szegedy et al. 2016, Table 2): 32 px
    inputs reach the A blocks at 12×12. Same parameter count; inputs below 21 px are refused.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 299,
        *,
        residual_scale: float | None = None,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        sa, sb, sc = _scales(residual_scale)
        self.stem = _ir2_stem(in_channels, input_size < LOW_RES_INPUT)
        self.blocks_a = nn.Sequential(*(_ir2_block_a(sa) for _ in range(10)))
        self.reduction_a = _reduction_a(320, 256, 256, 384, 384)  # → 1088
        self.blocks_b = nn.Sequential(*(_ir2_block_b(sb) for _ in range(20)))
        self.reduction_b = _ir_reduction_b(1088, (384, 288, 320, 288))  # → 2080
        # the release's last block: no ReLU after the sum and block8's default scale of 1.0
        last = 1.0 if residual_scale is None else sc
        self.blocks_c = nn.Sequential(
            *(_ir2_block_c(sc) for _ in range(9)), _ir2_block_c(last, activate=False)
        )
        self.conv_head = _Conv(2080, 1536, 1)
        self.head = _Classifier(1536, num_classes, dropout)
        init_weights(self, conv_mode="fan_in", truncate_linear=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks_a(self.stem(x))
        x = self.blocks_b(self.reduction_a(x))
        x = self.blocks_c(self.reduction_b(x))
        return self.head(self.conv_head(x))


# ------------------------------------------------------------------------------- builders


@register_model(
    paper=_PAPER, year=2017, num_classes=1000, in_channels=3, input_size=299,
    result=PaperResult(80.0, "ImageNet", "Table 2: 20.0 % top-1 error, single crop"),
)
def inception_v4(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 299,
    dropout: float = 0.2,
) -> nn.Module:
    """Inception-v4 (42,679,816 params), no residual connections; ``dropout`` before the
    classifier (keep 0.8 in the paper). Inputs below 80 px use the low-resolution stem."""
    require_min_size(input_size, MIN_INPUT_V4, "inception_v4")
    return InceptionV4(num_classes, in_channels, input_size, dropout=dropout)


@register_model(
    paper=_PAPER, year=2017, num_classes=1000, in_channels=3, input_size=299,
    result=PaperResult(78.7, "ImageNet", "Table 2: 21.3 % top-1 error, single crop"),
)
def inception_resnet_v1(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 299,
    residual_scale: float | None = None,
    dropout: float = 0.2,
) -> nn.Module:
    """Inception-ResNet-v1 (22,756,328 params), 5/10/5 blocks as in the paper's Figure 15.

    ``residual_scale``: ``None`` = the released per-block scales (0.17 / 0.10 / 0.20), or one
    factor for every block (the paper suggests 0.1–0.3). Inputs below 80 px use the
    low-resolution stem.
    """
    require_min_size(input_size, MIN_INPUT_RESNET, "inception_resnet_v1")
    return InceptionResNetV1(
        num_classes, in_channels, input_size, residual_scale=residual_scale, dropout=dropout
    )


@register_model(
    paper=_PAPER, year=2017, num_classes=1000, in_channels=3, input_size=299,
    result=PaperResult(80.1, "ImageNet", "Table 2: 19.9 % top-1 error, single crop"),
)
def inception_resnet_v2(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 299,
    residual_scale: float | None = None,
    dropout: float = 0.2,
) -> nn.Module:
    """Inception-ResNet-v2 in the released 10/20/10 layout (55,843,464 params).

    ``residual_scale``: ``None`` = the released per-block scales (0.17 / 0.10 / 0.20; 1.0 for
    the last block), or one factor for every block (the paper suggests 0.1–0.3). Inputs below
    80 px use the low-resolution stem.
    """
    require_min_size(input_size, MIN_INPUT_RESNET, "inception_resnet_v2")
    return InceptionResNetV2(
        num_classes, in_channels, input_size, residual_scale=residual_scale, dropout=dropout
    )
