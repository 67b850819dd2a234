"""SqueezeNet (Iandola et al., 2016): AlexNet-level accuracy with 50× fewer parameters.

Built from Fire modules: a 1×1 "squeeze" conv feeding parallel 1×1 and 3×3 "expand" convs
whose outputs are concatenated. v1.0 is the paper's Table 1; v1.1 is the authors' released
revision (same accuracy, 2.4× less computation: 3×3 conv1 with 64 filters, pools moved earlier).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from classicnets.models.layers import ConvNormAct
from classicnets.models.registry import PaperResult, register_model, require_min_size

__all__ = ["Fire", "SqueezeNet"]

_PAPER = (
    "Iandola, Han, Moskewicz, Ashraf, Dally, Keutzer: SqueezeNet: AlexNet-level accuracy with "
    "50x fewer parameters and <0.5MB model size, arXiv:1602.07360 2016"
)
# Below this input side the stride-2 conv1 and the first max-pool give way to a 3×3 stride-1 conv
# (the zoo-wide threshold of the ResNet family).
SMALL_INPUT_THRESHOLD = 128

# Fire modules 2..9 as (squeeze, expand1x1, expand3x3) — paper Table 1 (same for v1.1).
_FIRE_CONFIG: tuple[tuple[int, int, int], ...] = (
    (16, 64, 64),
    (16, 64, 64),
    (32, 128, 128),
    (32, 128, 128),
    (48, 192, 192),
    (48, 192, 192),
    (64, 256, 256),
    (64, 256, 256),
)
# version -> (conv1 channels, conv1 kernel, Fire modules followed by a 3×3/2 max-pool)
_VERSIONS: dict[str, tuple[int, int, tuple[int, ...]]] = {
    "1_0": (96, 7, (4, 8)),  # maxpool1 after conv1, maxpool4, maxpool8
    "1_1": (64, 3, (3, 5)),  # maxpool1 after conv1, then after fire3 and fire5
}
BYPASS_MODES = ("none", "simple", "complex")
_MIN_SIZE_PAPER_STEM = {"1_0": 21, "1_1": 17}


class Fire(nn.Module):
    """Fire module: squeeze 1×1 (s) → ReLU → [expand 1×1 (e1) ‖ expand 3×3 (e3)] → ReLU.

    ``shortcut`` (optional) adds a bypass around the module, as in the paper's §6: ``"simple"``
    is the identity (needs in = out channels, adds no parameters); ``"complex"`` is a 1×1 conv
    with bias to the output width.
    """

    def __init__(
        self, in_channels: int, squeeze: int, expand1x1: int, expand3x3: int, bypass: str = "none"
    ) -> None:
        super().__init__()
        out_channels = expand1x1 + expand3x3
        self.squeeze = ConvNormAct(in_channels, squeeze, 1, norm_layer=None)
        self.expand1x1 = ConvNormAct(squeeze, expand1x1, 1, norm_layer=None)
        self.expand3x3 = ConvNormAct(squeeze, expand3x3, 3, norm_layer=None)
        self.shortcut: nn.Module | None
        if bypass == "none":
            self.shortcut = None
        elif bypass == "simple":
            if in_channels != out_channels:
                raise ValueError(
                    f"simple bypass needs equal widths, got {in_channels}→{out_channels}"
                )
            self.shortcut = nn.Identity()
        elif bypass == "complex":
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1)
        else:
            raise ValueError(f"bypass must be one of {BYPASS_MODES}, got {bypass!r}")
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        s = self.squeeze(x)
        y = torch.cat((self.expand1x1(s), self.expand3x3(s)), 1)
        return y if self.shortcut is None else y + self.shortcut(x)


class SqueezeNet(nn.Module):
    """SqueezeNet — Iandola, Han, Moskewicz, Ashraf, Dally, Keutzer, "SqueezeNet: AlexNet-level
    accuracy with 50x fewer parameters and <0.5MB model size", arXiv 2016.

    conv1 → ReLU → 3×3/2 max-pool → Fire2..Fire9 (two more 3×3/2 max-pools) → dropout 0.5 →
    conv10 (1×1, one channel per class) → ReLU → global average pool. No fully connected layer.
    Version ``"1_0"`` is the paper's Table 1 (conv1 96@7×7/2, pools after conv1, Fire4, Fire8);
    ``"1_1"`` the authors' released v1.1 (conv1 64@3×3/2, pools after conv1, Fire3, Fire5).

    ``bypass``: ``"simple"`` adds identity shortcuts around Fire 3, 5, 7, 9 (where input and
    output widths match; no parameters), ``"complex"`` additionally 1×1-conv shortcuts around
    Fire 2, 4, 6, 8 (paper §6, Fig. 2).

    ``small_input`` (chosen by the builders below 128 px): conv1 becomes a 3×3 stride-1 conv
    (padding 1, same width) and the max-pool after it is dropped; the two later pools stay, so
    a 32 px input reaches conv10 at 8×8.

    Deviations: max-pools use ceil rounding as in the authors' Caffe model; weights use Glorot
    (Xavier) uniform init (the released model's "xavier" filler) and conv10 Gaussian std 0.01,
    biases 0.
    """

    def __init__(
        self,
        version: str = "1_0",
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        bypass: str = "none",
        dropout: float = 0.5,
        small_input: bool = False,
    ) -> None:
        super().__init__()
        if version not in _VERSIONS:
            raise ValueError(f"version must be one of {sorted(_VERSIONS)}, got {version!r}")
        if bypass not in BYPASS_MODES:
            raise ValueError(f"bypass must be one of {BYPASS_MODES}, got {bypass!r}")
        stem_width, stem_kernel, pool_after = _VERSIONS[version]
        layers: list[nn.Module] = []
        if small_input:
            layers.append(ConvNormAct(in_channels, stem_width, 3, norm_layer=None))
        else:
            layers += [
                ConvNormAct(in_channels, stem_width, stem_kernel, 2, 0, norm_layer=None),
                nn.MaxPool2d(3, 2, ceil_mode=True),
            ]
        channels = stem_width
        for index, (s, e1, e3) in enumerate(_FIRE_CONFIG, start=2):
            # Odd Fire modules (3, 5, 7, 9) keep their width: identity bypass; even ones change
            # it: only the complex bypass (with a 1×1 conv) goes around them.
            if bypass == "none":
                mode = "none"
            elif index % 2 == 1:
                mode = "simple"
            else:
                mode = "complex" if bypass == "complex" else "none"
            fire = Fire(channels, s, e1, e3, bypass=mode)
            layers.append(fire)
            channels = fire.out_channels
            if index in pool_after:
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        final_conv = nn.Conv2d(channels, num_classes, 1)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            final_conv,
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, std=0.01)
                else:
                    nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _squeezenet(
    name: str,
    version: str,
    *,
    num_classes: int,
    in_channels: int,
    input_size: int,
    bypass: str,
    dropout: float,
    small_stem: bool | None,
) -> SqueezeNet:
    small = input_size < SMALL_INPUT_THRESHOLD if small_stem is None else small_stem
    # Least side every max-pool accepts: small stem, two 3×3/2 ceil-mode pools: 4 → 2 → 1;
    # paper stem (only when forced below the threshold): conv1 /2 and three pools.
    require_min_size(input_size, 4 if small else _MIN_SIZE_PAPER_STEM[version], name)
    return SqueezeNet(
        version,
        num_classes=num_classes,
        in_channels=in_channels,
        bypass=bypass,
        dropout=dropout,
        small_input=small,
    )


@register_model(
    paper=_PAPER, year=2016,
    result=PaperResult(57.5, "ImageNet", "Table 2: 57.5 % top-1"),
)
def squeezenet1_0(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    bypass: str = "none",
    dropout: float = 0.5,
    small_stem: bool | None = None,
) -> nn.Module:
    """SqueezeNet v1.0 (paper Table 1): 1,248,424 parameters at 1000 classes.

    ``bypass``: ``"none"`` | ``"simple"`` | ``"complex"`` (paper §6). Below 128 px conv1 is a
    3×3 stride-1 conv and the first max-pool is dropped (``small_stem`` True/False overrides
    the choice); under 4 px is refused.
    """
    return _squeezenet(
        "squeezenet1_0",
        "1_0",
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        bypass=bypass,
        dropout=dropout,
        small_stem=small_stem,
    )


@register_model(
    paper=_PAPER, year=2016,
    result=PaperResult(None, "ImageNet", "v1.1 was released with the code only"),
)
def squeezenet1_1(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    bypass: str = "none",
    dropout: float = 0.5,
    small_stem: bool | None = None,
) -> nn.Module:
    """SqueezeNet v1.1 (the authors' released revision): 1,235,496 parameters at 1000 classes.

    Same options and small-input adaptation as :func:`squeezenet1_0`.
    """
    return _squeezenet(
        "squeezenet1_1",
        "1_1",
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        bypass=bypass,
        dropout=dropout,
        small_stem=small_stem,
    )
