"""VGG (Simonyan & Zisserman, ICLR 2015): configurations A, A-LRN, B, C, D, E of Table 1.

Stacks of 3×3 stride-1 "same" convolutions (C adds 1×1 convs in the last three stages), five
2×2 stride-2 max-pools, and three fully connected layers 4096-4096-classes with dropout 0.5 on
the first two. :meth:`VGG.to_dense` gives the fully-convolutional network of the paper's dense
evaluation (§3.2), which takes any input size and averages its class score map.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from classicnets.models.alexnet import pool_out_size
from classicnets.models.layers import LocalResponseNorm
from classicnets.models.registry import PaperResult, register_model

__all__ = ["CONFIGS", "VGG", "VGGDense"]

_PAPER = (
    "Simonyan, Zisserman: Very Deep Convolutional Networks for Large-Scale Image Recognition, "
    "ICLR 2015"
)
INITS = ("glorot", "kaiming")

# Table 1, one list per stage of (out_channels, kernel); "LRN" marks A-LRN's normalisation.
Stage = Sequence[tuple[int, int] | str]
CONFIGS: dict[str, tuple[Stage, ...]] = {
    "A": ([(64, 3)], [(128, 3)], [(256, 3)] * 2, [(512, 3)] * 2, [(512, 3)] * 2),
    "A-LRN": ([(64, 3), "LRN"], [(128, 3)], [(256, 3)] * 2, [(512, 3)] * 2, [(512, 3)] * 2),
    "B": ([(64, 3)] * 2, [(128, 3)] * 2, [(256, 3)] * 2, [(512, 3)] * 2, [(512, 3)] * 2),
    "C": (
        [(64, 3)] * 2,
        [(128, 3)] * 2,
        [(256, 3), (256, 3), (256, 1)],
        [(512, 3), (512, 3), (512, 1)],
        [(512, 3), (512, 3), (512, 1)],
    ),
    "D": ([(64, 3)] * 2, [(128, 3)] * 2, [(256, 3)] * 3, [(512, 3)] * 3, [(512, 3)] * 3),
    "E": ([(64, 3)] * 2, [(128, 3)] * 2, [(256, 3)] * 4, [(512, 3)] * 4, [(512, 3)] * 4),
}


def _feature_size(input_size: int) -> int:
    n = input_size
    for _ in range(5):
        n = pool_out_size(n, 2, 2, ceil_mode=True)
    return n


class VGG(nn.Module):
    """VGG — Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
    Recognition", ICLR 2015 (Table 1; dense evaluation §3.2).

    ``config`` is a column of Table 1 ("A", "A-LRN", "B", "C", "D", "E"); ``batch_norm`` inserts
    BatchNorm after every convolution (the later "_bn" variants of torchvision; conv biases kept,
    as there). :meth:`to_dense` converts FC6 to a k×k convolution (7×7 at 224 px) and FC7/FC8 to
    1×1 convolutions: identical scores at the training size, a spatially averaged class score
    map at larger sizes.

    Deviations from the paper:

    * the fully connected layers are sized from the final feature map, 512·7·7 at 224 px and
      512·1·1 at 32 px (the usual CIFAR adaptation: the convolutional stages unchanged, FC6
      fed by the 1×1 map);
    * max-pooling rounds up (``ceil_mode``, the Caffe convention of the released models):
      identical at multiples of 32 px, and 28 px inputs keep a 1×1 final map (28-14-7-4-2-1);
    * Glorot initialisation throughout (the paper's remark at the end of §3.1) instead of
      initialising the deeper nets from the trained net A; ``init="kaiming"`` uses He's;
    * A-LRN's normalisation uses AlexNet's constants (the paper says it does) and sits after
      the first conv's ReLU.
    """

    def __init__(
        self,
        config: str = "D",
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 224,
        *,
        batch_norm: bool = False,
        dropout: float = 0.5,
        init: str = "glorot",
    ) -> None:
        super().__init__()
        if config not in CONFIGS:
            raise ValueError(f"config must be one of {sorted(CONFIGS)}, got {config!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.config = config
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = in_channels
        for s, stage in enumerate(CONFIGS[config], start=1):
            i = 0
            for item in stage:
                if item == "LRN":
                    layers[f"norm{s}"] = LocalResponseNorm()
                    continue
                c_out, k = item  # type: ignore[misc]
                i += 1
                layers[f"conv{s}_{i}"] = nn.Conv2d(c_in, c_out, k, padding=k // 2)
                if batch_norm:
                    layers[f"bn{s}_{i}"] = nn.BatchNorm2d(c_out)
                layers[f"relu{s}_{i}"] = nn.ReLU(inplace=True)
                c_in = c_out
            layers[f"pool{s}"] = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.features = nn.Sequential(layers)
        self.feature_size = _feature_size(input_size)
        self.classifier = nn.Sequential(
            OrderedDict(
                fc6=nn.Linear(c_in * self.feature_size**2, 4096),
                relu6=nn.ReLU(inplace=True),
                drop6=nn.Dropout(dropout),
                fc7=nn.Linear(4096, 4096),
                relu7=nn.ReLU(inplace=True),
                drop7=nn.Dropout(dropout),
                fc8=nn.Linear(4096, num_classes),
            )
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                if init == "glorot":
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))

    def to_dense(self) -> VGGDense:
        """A fully-convolutional copy for dense evaluation (§3.2): FC6 → k×k conv (k = the
        final map side the classifier was sized for, 7 at 224 px), FC7/FC8 → 1×1 convs.

        The copy owns its weights (later training of either network does not affect the
        other) and keeps this network's train/eval mode.
        """
        return VGGDense(self)


class VGGDense(nn.Module):
    """The fully-convolutional VGG of the dense evaluation in Simonyan & Zisserman (ICLR 2015),
    §3.2: the fully connected layers become convolutions, the class score map they produce
    on an uncropped image is averaged over space. Build it with :meth:`VGG.to_dense` (or the
    builders' ``dense=True``).

    Deviation from the paper: the horizontal-flip test augmentation (averaging the posteriors
    of an image and its mirror) is left to the evaluation code.
    """

    def __init__(self, net: VGG) -> None:
        super().__init__()
        fc6, fc7, fc8 = net.classifier.fc6, net.classifier.fc7, net.classifier.fc8
        k = net.feature_size
        c = fc6.in_features // (k * k)
        self.config = net.config
        self.features = copy.deepcopy(net.features)
        self.classifier = nn.Sequential(
            OrderedDict(
                fc6=nn.Conv2d(c, fc6.out_features, k),
                relu6=nn.ReLU(inplace=True),
                drop6=nn.Dropout(net.classifier.drop6.p),
                fc7=nn.Conv2d(fc7.in_features, fc7.out_features, 1),
                relu7=nn.ReLU(inplace=True),
                drop7=nn.Dropout(net.classifier.drop7.p),
                fc8=nn.Conv2d(fc8.in_features, fc8.out_features, 1),
            )
        )
        with torch.no_grad():
            # Flatten order of (C, k, k) maps is channel-major, so a reshape is the conversion.
            for fc, conv in zip((fc6, fc7, fc8), self.classifier[::3]):
                conv.weight.copy_(fc.weight.reshape(conv.weight.shape))
                conv.bias.copy_(fc.bias)
        self.train(net.training)

    def score_map(self, x: Tensor) -> Tensor:
        """Class scores at every position, shape (B, classes, h, w); 1×1 at the training size."""
        return self.classifier(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        # §3.2: "the class score map is spatially averaged (sum-pooled)".
        return self.score_map(x).mean((2, 3))


def _build(
    config: str,
    num_classes: int,
    in_channels: int,
    input_size: int,
    batch_norm: bool,
    dropout: float,
    init: str,
    dense: bool,
) -> nn.Module:
    net = VGG(
        config,
        num_classes,
        in_channels,
        input_size,
        batch_norm=batch_norm,
        dropout=dropout,
        init=init,
    )
    return net.to_dense() if dense else net


def _register(
    name: str, result: PaperResult | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    return register_model(
        name=name,
        paper=_PAPER,
        year=2015,
        num_classes=1000,
        in_channels=3,
        input_size=224,
        result=result,
    )


@_register("vgg11", PaperResult(70.4, "ImageNet", "Table 3: 29.6 % top-1 error, S=256"))
def vgg11(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    dropout: float = 0.5,
    init: str = "glorot",
    dense: bool = False,
) -> nn.Module:
    """VGG-11, configuration A of Table 1: 132,863,336 parameters at 224 px.

    ``dense=True``: the fully-convolutional form of the dense evaluation (§3.2).
    ``init``: "glorot" (§3.1) or "kaiming".
    """
    return _build("A", num_classes, in_channels, input_size, False, dropout, init, dense)


@_register("vgg11_lrn", PaperResult(70.3, "ImageNet", "Table 3: 29.7 % top-1 error, S=256"))
def vgg11_lrn(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    dropout: float = 0.5,
    init: str = "glorot",
    dense: bool = False,
) -> nn.Module:
    """VGG-11 with LRN after the first conv (configuration A-LRN of Table 1): 132,863,336
    parameters at 224 px.

    ``dense=True``: the fully-convolutional form of the dense evaluation (§3.2).
    ``init``: "glorot" (§3.1) or "kaiming".
    """
    return _build("A-LRN", num_classes, in_channels, input_size, False, dropout, init, dense)


@_register("vgg13", PaperResult(71.3, "ImageNet", "Table 3: 28.7 % top-1 error, S=256"))
def vgg13(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    dropout: float = 0.5,
    init: str = "glorot",
    dense: bool = False,
) -> nn.Module:
    """VGG-13, configuration B of Table 1: 133,047,848 parameters at 224 px.

    ``dense=True``: the fully-convolutional form of the dense evaluation (§3.2).
    ``init``: "glorot" (§3.1) or "kaiming".
    """
    return _build("B", num_classes, in_channels, input_size, False, dropout, init, dense)


@_register("vgg16_c", PaperResult(72.7, "ImageNet", "Table 3: 27.3 % top-1 error, S in [256;512]"))
def vgg16_c(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    dropout: float = 0.5,
    init: str = "glorot",
    dense: bool = False,
) -> nn.Module:
    """VGG-16 with 1×1 convs ending stages 3–5 (configuration C of Table 1): 133,638,952
    parameters at 224 px.

    ``dense=True``: the fully-convolutional form of the dense evaluation (§3.2).
    ``init``: "glorot" (§3.1) or "kaiming".
    """
    return _build("C", num_classes, in_channels, input_size, False, dropout, init, dense)


@_register("vgg16", PaperResult(74.4, "ImageNet", "Table 3: 25.6 % top-1 error, S in [256;512]"))
def vgg16(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    dropout: float = 0.5,
    init: str = "glorot",
    dense: bool = False,
) -> nn.Module:
    """VGG-16, configuration D of Table 1: 138,357,544 parameters at 224 px.

    ``dense=True``: the fully-convolutional form of the dense evaluation (§3.2).
    ``init``: "glorot" (§3.1) or "kaiming".
    """
    return _build("D", num_classes, in_channels, input_size, False, dropout, init, dense)


@_register("vgg19", PaperResult(74.5, "ImageNet", "Table 3: 25.5 % top-1 error, S in [256;512]"))
def vgg19(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    dropout: float = 0.5,
    init: str = "glorot",
    dense: bool = False,
) -> nn.Module:
    """VGG-19, configuration E of Table 1: 143,667,240 parameters at 224 px.

    ``dense=True``: the fully-convolutional form of the dense evaluation (§3.2).
    ``init``: "glorot" (§3.1) or "kaiming".
    """
    return _build("E", num_classes, in_channels, input_size, False, dropout, init, dense)


@_register("vgg11_bn", PaperResult(None, "ImageNet", "BN variants postdate the paper"))
def vgg11_bn(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    dropout: float = 0.5,
    init: str = "glorot",
    dense: bool = False,
) -> nn.Module:
    """VGG-11 with BatchNorm (configuration A) of Table 1: 132,868,840 parameters at 224 px.

    ``dense=True``: the fully-convolutional form of the dense evaluation (§3.2).
    ``init``: "glorot" (§3.1) or "kaiming".
    """
    return _build("A", num_classes, in_channels, input_size, True, dropout, init, dense)


@_register("vgg13_bn", PaperResult(None, "ImageNet", "BN variants postdate the paper"))
def vgg13_bn(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    dropout: float = 0.5,
    init: str = "glorot",
    dense: bool = False,
) -> nn.Module:
    """VGG-13 with BatchNorm (configuration B) of Table 1: 133,053,736 parameters at 224 px.

    ``dense=True``: the fully-convolutional form of the dense evaluation (§3.2).
    ``init``: "glorot" (§3.1) or "kaiming".
    """
    return _build("B", num_classes, in_channels, input_size, True, dropout, init, dense)


@_register("vgg16_bn", PaperResult(None, "ImageNet", "BN variants postdate the paper"))
def vgg16_bn(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    dropout: float = 0.5,
    init: str = "glorot",
    dense: bool = False,
) -> nn.Module:
    """VGG-16 with BatchNorm (configuration D) of Table 1: 138,365,992 parameters at 224 px.

    ``dense=True``: the fully-convolutional form of the dense evaluation (§3.2).
    ``init``: "glorot" (§3.1) or "kaiming".
    """
    return _build("D", num_classes, in_channels, input_size, True, dropout, init, dense)


@_register("vgg19_bn", PaperResult(None, "ImageNet", "BN variants postdate the paper"))
def vgg19_bn(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    dropout: float = 0.5,
    init: str = "glorot",
    dense: bool = False,
) -> nn.Module:
    """VGG-19 with BatchNorm (configuration E) of Table 1: 143,678,248 parameters at 224 px.

    ``dense=True``: the fully-convolutional form of the dense evaluation (§3.2).
    ``init``: "glorot" (§3.1) or "kaiming".
    """
    return _build("E", num_classes, in_channels, input_size, True, dropout, init, dense)
