"""ZFNet (Zeiler & Fergus, ECCV 2014): AlexNet refined through deconvnet visualisation.

Conv1 shrinks from 11×11/4 to 7×7/2 and conv2 gets stride 2, which removes the aliasing and
dead filters the visualisations revealed (§4.1, Fig. 6); one tower, 384-384-256 in conv3–5.
The max-pools can hand back their *switches* (argmax positions), which the paper's deconvnet
uses to unpool a feature map back to the input (§2.1).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch.nn.functional as F
from torch import Size, Tensor, nn

from classicnets.models.alexnet import (
    INITS,
    STEMS,
    conv_out_size,
    pool_out_size,
    smallest_input,
)
from classicnets.models.layers import LocalResponseNorm
from classicnets.models.registry import PaperResult, register_model, require_min_size

__all__ = ["PoolSwitches", "ZFNet"]

_PAPER = "Zeiler, Fergus: Visualizing and Understanding Convolutional Networks, ECCV 2014"


class PoolSwitches(NamedTuple):
    """What a deconvnet needs to unpool one max-pooling layer.

    ``indices``: flat argmax position of every pooled unit within its input map (the
    "switches"); ``input_size``: spatial size of the pooled map's input, for
    :func:`torch.nn.functional.max_unpool2d` (ceil-mode pooling makes it ambiguous otherwise).
    """

    indices: Tensor
    input_size: Size


class ZFNet(nn.Module):
    """ZFNet — Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks",
    ECCV 2014 (Fig. 3).

    224 px: conv1 7×7/2 (96) → 110, max-pool 3×3/2 → 55, contrast normalisation; conv2 5×5/2
    (256) → 26, pool → 13, normalisation; conv3/conv4 3×3 (384), conv5 3×3 (256) → 13, pool
    → 6; FC 4096-4096-classes with dropout 0.5 on FC6/FC7. Pooling rounds up (Caffe/cuda-convnet
    convention), which the paper's 110-55-26-13-13-6 map sizes need.
    :meth:`forward_with_switches` also returns the pooling switches for deconvnet projection.

    Deviations from the paper:

    * the "contrast normalisation across feature maps" uses AlexNet's LRN constants (k=2, n=5,
      α=1e-4, β=0.75); the paper does not state its own;
    * the renormalisation of conv1 filters whose RMS exceeds 0.1 (§3) is a training-loop rule,
      not part of the network, and is not applied;
    * the fully connected layers are sized from the final feature map (256·6·6 at 224 px);
    * small inputs (``stem="small"``, chosen by ``stem="auto"`` when the stride-2 layout cannot
      take the input, i.e. below 47 px): conv1 and conv2 run at stride 1 with "same" padding
      (kernels unchanged); at 32 px the maps are 32-16-16-8-8-4 and FC6 takes 256·4·4 inputs;
    * ``init="kaiming"`` replaces the paper's N(0, 0.01) weights / zero biases (§3).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 224,
        *,
        dropout: float = 0.5,
        lrn: bool = True,
        stem: str = "auto",
        init: str = "paper",
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")

        def final_size(side: int, small: bool) -> int:
            n = side if small else conv_out_size(side, 7, 2, 1)
            n = pool_out_size(n, 3, 2, ceil_mode=True)
            n = n if small else conv_out_size(n, 5, 2, 0)
            if n < 1:
                return 0
            n = pool_out_size(n, 3, 2, ceil_mode=True)
            return pool_out_size(n, 3, 2, ceil_mode=True) if n >= 1 else 0

        paper_min = smallest_input(lambda s: final_size(s, small=False))
        if stem == "auto":
            stem = "paper" if input_size >= paper_min else "small"
        small = stem == "small"
        if small:
            require_min_size(input_size, smallest_input(lambda s: final_size(s, True)), "zfnet")
        else:
            require_min_size(input_size, paper_min, "zfnet (stem='paper')")
        self.stem = stem

        def pool() -> nn.MaxPool2d:
            return nn.MaxPool2d(3, 2, ceil_mode=True)

        def norm() -> nn.Module:
            return LocalResponseNorm() if lrn else nn.Identity()

        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, 96, 7, 1, 3)
                if small
                else nn.Conv2d(in_channels, 96, 7, 2, 1),
                relu1=nn.ReLU(inplace=True),
                pool1=pool(),
                norm1=norm(),  # Fig. 3: pool, then normalise
                conv2=nn.Conv2d(96, 256, 5, 1, 2) if small else nn.Conv2d(96, 256, 5, 2, 0),
                relu2=nn.ReLU(inplace=True),
                pool2=pool(),
                norm2=norm(),
                conv3=nn.Conv2d(256, 384, 3, padding=1),
                relu3=nn.ReLU(inplace=True),
                conv4=nn.Conv2d(384, 384, 3, padding=1),
                relu4=nn.ReLU(inplace=True),
                conv5=nn.Conv2d(384, 256, 3, padding=1),
                relu5=nn.ReLU(inplace=True),
                pool5=pool(),
            )
        )
        side = final_size(input_size, small)
        self.classifier = nn.Sequential(
            OrderedDict(
                fc6=nn.Linear(256 * side * side, 4096),
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
                if init == "paper":  # §3: weights 1e-2 (std of a zero-mean Gaussian), biases 0
                    nn.init.normal_(m.weight, 0.0, 0.01)
                else:
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))

    def forward_with_switches(self, x: Tensor) -> tuple[Tensor, dict[str, PoolSwitches]]:
        """Logits plus the switches of pool1, pool2 and pool5 (keyed by layer name).

        Same computation as :meth:`forward`; the switches let a deconvnet place each
        reconstruction at the location of the maximum it came from (the paper's §2.1).
        """
        switches: dict[str, PoolSwitches] = {}
        for name, layer in self.features.named_children():
            if isinstance(layer, nn.MaxPool2d):
                size = x.shape[-2:]
                x, idx = F.max_pool2d(
                    x,
                    layer.kernel_size,
                    layer.stride,
                    layer.padding,
                    layer.dilation,
                    ceil_mode=layer.ceil_mode,
                    return_indices=True,
                )
                switches[name] = PoolSwitches(idx, size)
            else:
                x = layer(x)
        return self.classifier(x.flatten(1)), switches


@register_model(
    paper=_PAPER, year=2014, num_classes=1000, in_channels=3, input_size=224,
    result=PaperResult(61.6, "ImageNet", "Table 2: 38.4 % top-1 val error, 1 convnet"),
)
def zfnet(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    dropout: float = 0.5,
    lrn: bool = True,
    stem: str = "auto",
    init: str = "paper",
) -> nn.Module:
    """ZFNet as in Fig. 3 of the paper: 62,357,608 parameters at 224 px.

    ``stem``: "auto" (the paper's stride-2 convs from 47 px, stride 1 below), "paper" or
    "small". ``lrn``: the contrast normalisation after pool1/pool2. ``init``: "paper" or
    "kaiming". ``model.forward_with_switches(x)`` returns the max-pooling switches.
    """
    return ZFNet(
        num_classes, in_channels, input_size, dropout=dropout, lrn=lrn, stem=stem, init=init
    )
