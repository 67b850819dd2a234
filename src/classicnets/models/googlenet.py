"""GoogLeNet (Inception v1) — Szegedy et al., "Going deeper with convolutions", CVPR 2015.

The network of the paper's Table 1 and Figure 3: true 5×5 branches, no batch normalisation,
local response normalisation in the stem, biases on every convolution, optional auxiliary
classifiers on inception (4a) and (4d).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from classicnets.models.layers import ClassifierOutput, ConvNormAct, LocalResponseNorm
from classicnets.models.registry import register_model, require_min_size

__all__ = ["GoogLeNet", "InceptionModule", "googlenet"]

#: Below this input side the stem runs without its first two stride-2 stages (see GoogLeNet).
LOW_RES_INPUT = 80

# Plain conv + ReLU with bias: the paper's network predates batch normalisation.
_Conv = partial(ConvNormAct, norm_layer=None)

# Table 1 of the paper: #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj.
_INCEPTION_CFG: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


def _caffe_lrn() -> LocalResponseNorm:
    # The BVLC replication's LRN (local_size 5, alpha 1e-4, beta 0.75, k 1). Caffe divides alpha
    # by the window size, while layers.LocalResponseNorm multiplies the plain sum: alpha / 5.
    return LocalResponseNorm(size=5, alpha=1e-4 / 5, beta=0.75, k=1.0)


def _pool_out(size: int) -> int:
    """Side after a 3×3/2 ceil-mode max-pool (Caffe's pooling arithmetic)."""
    return (size - 2) // 2 + 1


class InceptionModule(nn.Module):
    """The inception module with dimension reductions (Figure 2b of Szegedy et al., 2015).

    Four parallel branches concatenated along channels: 1×1; 1×1 → 3×3; 1×1 → 5×5 (a true
    5×5, not the two 3×3 of later versions); 3×3/1 max-pool → 1×1 projection.
    """

    def __init__(
        self, in_channels: int, c1: int, c3_red: int, c3: int, c5_red: int, c5: int, proj: int
    ) -> None:
        super().__init__()
        self.branch1 = _Conv(in_channels, c1, 1)
        self.branch3 = nn.Sequential(_Conv(in_channels, c3_red, 1), _Conv(c3_red, c3, 3))
        self.branch5 = nn.Sequential(_Conv(in_channels, c5_red, 1), _Conv(c5_red, c5, 5))
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1), _Conv(in_channels, proj, 1)
        )
        self.out_channels = c1 + c3 + c5 + proj

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x)], dim=1
        )


class AuxClassifier(nn.Module):
    """Auxiliary classifier of Szegedy et al. (2015), §5.

    5×5/3 average pooling (4×4 maps at 224 px), 1×1 conv with 128 filters + ReLU, FC 1024 +
    ReLU, dropout 0.7, linear classifier. The first FC is sized from the pooled map, so other
    input sizes keep working (2048 inputs at the canonical 224 px).
    """

    def __init__(
        self, in_channels: int, num_classes: int, map_size: int, dropout: float = 0.7
    ) -> None:
        super().__init__()
        pooled = (map_size - 5) // 3 + 1
        self.pool = nn.AvgPool2d(5, stride=3)
        self.conv = _Conv(in_channels, 128, 1)
        self.fc1 = nn.Linear(128 * pooled * pooled, 1024)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.dropout(self.act(self.fc1(x))))


class GoogLeNet(nn.Module):
    """GoogLeNet — Szegedy et al., "Going deeper with convolutions", CVPR 2015 (arXiv 2014).

    Table 1 / Figure 3 of the paper: conv 7×7/2 → max-pool 3×3/2 → LRN → conv 1×1 64 → conv
    3×3 192 → LRN → max-pool → inception 3a, 3b → max-pool → 4a–4e → max-pool → 5a, 5b →
    global average pool → dropout 0.4 → linear. 6,998,552 parameters at 1000 classes;
    13,378,280 with the two auxiliary classifiers (on 4a and 4d), which return their logits in
    training mode only (:class:`ClassifierOutput`); in eval mode the network returns a tensor.

    Deviations / unstated details:

    * LRN hyper-parameters (not given in the paper) and the ceil-mode pooling arithmetic are
      those of the BVLC Caffe replication (size 5, alpha 1e-4 averaged over the window, beta
      0.75, k 1); weights use its "xavier" filler (U(±sqrt(3/fan_in))), conv biases 0.2.
    * The final "avg pool 7×7" is a global average pool (identical at 224 px).
    * Inputs below 80 px (e.g. CIFAR 32 px, MNIST 28 px) use a low-resolution stem: conv1 with
      stride 1 and no max-pool after it (the first two stride-2 stages removed, the low-
      resolution rule of Szegedy et al. 2016, Table 2), so 32 px inputs reach inception (3a) at
      16×16. The parameter count is unchanged except the auxiliary heads' first FC, which is
      sized from their pooled map.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 224,
        *,
        aux_logits: bool = False,
        dropout: float = 0.4,
        aux_dropout: float = 0.7,
    ) -> None:
        super().__init__()
        low_res = input_size < LOW_RES_INPUT
        size = input_size if low_res else (input_size - 1) // 2 + 1  # conv1 7×7/2, pad 3
        stem: list[nn.Module] = [_Conv(in_channels, 64, 7, stride=1 if low_res else 2)]
        if not low_res:
            stem.append(nn.MaxPool2d(3, stride=2, ceil_mode=True))
            size = _pool_out(size)
        stem += [
            _caffe_lrn(),
            _Conv(64, 64, 1),
            _Conv(64, 192, 3),
            _caffe_lrn(),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
        ]
        size = _pool_out(size)
        self.stem = nn.Sequential(*stem)

        def make(name: str, in_ch: int) -> InceptionModule:
            return InceptionModule(in_ch, *_INCEPTION_CFG[name])

        self.inception3a = make("3a", 192)
        self.inception3b = make("3b", 256)
        self.pool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        size = _pool_out(size)
        self.inception4a = make("4a", 480)
        self.inception4b = make("4b", 512)
        self.inception4c = make("4c", 512)
        self.inception4d = make("4d", 512)
        self.inception4e = make("4e", 528)
        self.pool4 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception5a = make("5a", 832)
        self.inception5b = make("5b", 832)

        self.aux1: AuxClassifier | None = None
        self.aux2: AuxClassifier | None = None
        if aux_logits:
            self.aux1 = AuxClassifier(512, num_classes, size, aux_dropout)
            self.aux2 = AuxClassifier(528, num_classes, size, aux_dropout)

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                # Caffe's "xavier" filler: uniform with variance 1/fan_in.
                nn.init.kaiming_uniform_(m.weight, nonlinearity="linear")
                nn.init.constant_(m.bias, 0.2 if isinstance(m, nn.Conv2d) else 0.0)

    def forward(self, x: Tensor) -> Tensor | ClassifierOutput:
        x = self.stem(x)
        x = self.pool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux: list[Tensor] = []
        want_aux = self.training and self.aux1 is not None
        if want_aux:
            aux.append(self.aux1(x))
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        if want_aux:
            aux.append(self.aux2(x))
        x = self.pool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        return ClassifierOutput(logits, tuple(aux)) if want_aux else logits


def _min_input(aux_logits: bool) -> int:
    """Smallest input side the network accepts (low-resolution stem below 80 px)."""
    # With the low-resolution stem, 8 px is the smallest input whose ceil-mode pools all keep
    # a non-empty map; the auxiliary heads' 5×5/3 pool needs a 5 px map at (4a): input ≥ 20.
    return 20 if aux_logits else 8


@register_model(
    paper="Szegedy et al., Going deeper with convolutions, CVPR",
    year=2015,
    num_classes=1000,
    in_channels=3,
    input_size=224,
)
def googlenet(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    aux_logits: bool = False,
    dropout: float = 0.4,
    aux_dropout: float = 0.7,
) -> nn.Module:
    """GoogLeNet / Inception v1 (6,998,552 params; 13,378,280 with ``aux_logits=True``).

    ``aux_logits`` adds the two auxiliary classifiers (their losses weighted 0.3 in the paper);
    ``dropout`` is the 40 % dropout before the classifier, ``aux_dropout`` the auxiliary heads'
    70 %. Inputs below 80 px use the low-resolution stem (see :class:`GoogLeNet`).
    """
    require_min_size(input_size, _min_input(aux_logits), "googlenet")
    return GoogLeNet(
        num_classes,
        in_channels,
        input_size,
        aux_logits=aux_logits,
        dropout=dropout,
        aux_dropout=aux_dropout,
    )
