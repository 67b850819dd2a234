"""BN-Inception ("Inception v2") — Ioffe & Szegedy, "Batch Normalization: Accelerating Deep
Network Training by Reducing Internal Covariate Shift", ICML 2015.

GoogLeNet with batch normalisation after every convolution, each 5×5 replaced by two 3×3,
and the grid reductions folded into stride-2 inception modules (3c, 4e): the paper's
Figure 5, with the conv biases of the released Caffe model.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from classicnets.models.layers import ConvNormAct
from classicnets.models.registry import PaperResult, register_model, require_min_size

__all__ = ["BNInception", "BNInceptionModule", "bn_inception"]

#: Below this input side the stem runs without its first two stride-2 stages.
LOW_RES_INPUT = 80

# Conv → BN → ReLU; the released model keeps a bias on every conv even though BN follows.
_Conv = partial(ConvNormAct, bias=True)

# Figure 5: #1×1, #3×3 reduce, #3×3, double #3×3 reduce, double #3×3, pool, pool proj, stride.
# A 0 in "#1×1" means no such branch; a 0 in "pool proj" means the pool passes through.
_CFG: dict[str, tuple[int, int, int, int, int, str, int, int]] = {
    "3a": (64, 64, 64, 64, 96, "avg", 32, 1),
    "3b": (64, 64, 96, 64, 96, "avg", 64, 1),
    "3c": (0, 128, 160, 64, 96, "max", 0, 2),
    "4a": (224, 64, 96, 96, 128, "avg", 128, 1),
    "4b": (192, 96, 128, 96, 128, "avg", 128, 1),
    "4c": (160, 128, 160, 128, 160, "avg", 128, 1),
    "4d": (96, 128, 192, 160, 192, "avg", 128, 1),
    "4e": (0, 128, 192, 192, 256, "max", 0, 2),
    "5a": (352, 192, 320, 160, 224, "avg", 128, 1),
    "5b": (352, 192, 320, 192, 224, "max", 128, 1),
}


class BNInceptionModule(nn.Module):
    """One BN-Inception module (Ioffe & Szegedy 2015, Figure 5 and Appendix).

    Branches: 1×1; 1×1 → 3×3; 1×1 → 3×3 → 3×3 (the "double 3×3" that replaces GoogLeNet's
    5×5); pool → 1×1 projection. Stride-2 modules (3c, 4e) drop the 1×1 branch, stride the
    last conv of each 3×3 branch, and pass the max-pooled input straight through.
    """

    def __init__(
        self,
        in_channels: int,
        c1: int,
        c3_red: int,
        c3: int,
        d3_red: int,
        d3: int,
        pool: str,
        proj: int,
        stride: int = 1,
    ) -> None:
        super().__init__()
        self.branch1 = _Conv(in_channels, c1, 1) if c1 else None
        self.branch3 = nn.Sequential(
            _Conv(in_channels, c3_red, 1), _Conv(c3_red, c3, 3, stride=stride)
        )
        self.branch3dbl = nn.Sequential(
            _Conv(in_channels, d3_red, 1), _Conv(d3_red, d3, 3), _Conv(d3, d3, 3, stride=stride)
        )
        # Padding 1 keeps the pooled side equal to the strided convs' at any (odd) size.
        pool_layer = (
            nn.MaxPool2d(3, stride=stride, padding=1)
            if pool == "max"
            else nn.AvgPool2d(3, stride=stride, padding=1)
        )
        self.branch_pool = nn.Sequential(
            pool_layer, _Conv(in_channels, proj, 1) if proj else nn.Identity()
        )
        self.out_channels = c1 + c3 + d3 + (proj or in_channels)

    def forward(self, x: Tensor) -> Tensor:
        outs = [self.branch3(x), self.branch3dbl(x), self.branch_pool(x)]
        if self.branch1 is not None:
            outs.insert(0, self.branch1(x))
        return torch.cat(outs, dim=1)


class BNInception(nn.Module):
    """BN-Inception — Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training
    by Reducing Internal Covariate Shift", ICML 2015 (the network often called Inception v2).

    Figure 5 of the paper: conv 7×7/2 64 → max-pool 3×3/2 → conv 1×1 64 → conv 3×3 192 →
    max-pool 3×3/2 → inception 3a, 3b, 3c (stride 2) → 4a–4d, 4e (stride 2) → 5a, 5b →
    global average pool → linear. Every conv is followed by BN and ReLU. 11,295,240 parameters
    at 1000 classes.

    Deviations / choices:

    * Module widths are those of Figure 5's filter columns and the released model (4c and 4d
      output 608 channels, 4e 1056); the reference count 11,295,240 confirms them.
    * Conv biases are kept before BN, as in the released Caffe model (the paper's BN makes
      them redundant); BN uses eps 1e-5.
    * No dropout by default: §4.2.1 ("Remove Dropout") of the paper; ``dropout`` adds it back.
    * The stride-2 modules' max-pool is zero-padded (identical to Caffe's ceil-mode pool on
      even sides, and still matching the strided convs on odd ones).
    * Inputs below 80 px use a low-resolution stem: conv1 with stride 1 and no max-pool after
      it (the first two stride-2 stages removed, the low-resolution rule of Szegedy et al.
      2016, Table 2): 32 px inputs reach inception (3a) at 16×16. Same parameter count.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 224,
        *,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        low_res = input_size < LOW_RES_INPUT
        stem: list[nn.Module] = [_Conv(in_channels, 64, 7, stride=1 if low_res else 2)]
        if not low_res:
            stem.append(nn.MaxPool2d(3, stride=2, ceil_mode=True))
        stem += [_Conv(64, 64, 1), _Conv(64, 192, 3), nn.MaxPool2d(3, stride=2, ceil_mode=True)]
        self.stem = nn.Sequential(*stem)

        blocks: dict[str, nn.Module] = {}
        channels = 192
        for name, cfg in _CFG.items():
            block = BNInceptionModule(channels, *cfg)
            blocks[f"inception{name}"] = block
            channels = block.out_channels
        self.blocks = nn.Sequential()
        for name, block in blocks.items():
            self.blocks.add_module(name, block)

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


@register_model(
    paper="Ioffe & Szegedy, Batch Normalization: Accelerating Deep Network Training by "
    "Reducing Internal Covariate Shift, ICML",
    year=2015,
    num_classes=1000,
    in_channels=3,
    input_size=224,
    result=PaperResult(74.8, "ImageNet", "Table 3: 25.2 % top-1 error, single crop"),
)
def bn_inception(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    dropout: float = 0.0,
) -> nn.Module:
    """BN-Inception / "Inception v2" (11,295,240 params); ``dropout`` before the classifier
    (0 as in the paper). Inputs below 80 px use the low-resolution stem (see
    :class:`BNInception`)."""
    # Smallest input whose stem pool still sees a non-empty map (low-resolution stem).
    require_min_size(input_size, 2, "bn_inception")
    return BNInception(num_classes, in_channels, input_size, dropout=dropout)
