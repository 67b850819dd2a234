"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) and torchvision's single-tower variant.

The paper's network at 227 px: five convolutional layers (96-256-384-384-256) and three fully
connected layers (4096-4096-1000). The two GPUs of the paper are the two "towers": conv2, conv4
and conv5 only see the kernel maps of their own tower (grouped convolutions, ``groups=2``), conv3
and the fully connected layers see both. Response normalisation follows the ReLU of conv1 and
conv2 (§3.3), overlapping 3×3/2 max-pooling follows both normalisation layers and conv5 (§3.4),
dropout 0.5 acts on the outputs of the first two fully connected layers (§4.2).

Also home of the feature-size arithmetic the other early-ConvNet families (ZFNet, NiN) share.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor, nn

from classicnets.models.layers import LocalResponseNorm
from classicnets.models.registry import PaperResult, register_model, require_min_size

__all__ = ["AlexNet", "TowerLRN", "conv_out_size", "pool_out_size"]

_PAPER = (
    "Krizhevsky, Sutskever, Hinton: ImageNet Classification with Deep Convolutional Neural "
    "Networks, NIPS 2012"
)
_OWT_PAPER = (
    "Krizhevsky: One weird trick for parallelizing convolutional neural networks, "
    "arXiv:1404.5997, 2014"
)
STEMS = ("auto", "paper", "small")
INITS = ("paper", "kaiming")


def conv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output side of a convolution (PyTorch's formula)."""
    return (size + 2 * padding - kernel) // stride + 1


def pool_out_size(
    size: int, kernel: int, stride: int, padding: int = 0, ceil_mode: bool = False
) -> int:
    """Output side of a max/avg pooling, including PyTorch's ceil-mode rule that the last
    window must start inside the input. Non-positive results mean the input is too small."""
    if size + 2 * padding < 1:
        return 0
    out = (size + 2 * padding - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def smallest_input(feature_size: object, limit: int = 1024) -> int:
    """The smallest side for which ``feature_size(side)`` (a callable) is at least 1."""
    for side in range(1, limit + 1):
        if feature_size(side) >= 1:  # type: ignore[operator]
            return side
    raise ValueError(f"no input side up to {limit} gives a non-empty feature map")


class TowerLRN(nn.Module):
    """Local response normalisation within each tower of a grouped network.

    In the paper each GPU normalises only over the kernel maps it holds, so with ``groups=2``
    the channel window never crosses the boundary between the two towers. ``groups=1`` is the
    plain :class:`~classicnets.models.layers.LocalResponseNorm` (k=2, n=5, α=1e-4, β=0.75).
    """

    def __init__(self, groups: int = 1) -> None:
        super().__init__()
        self.groups = groups
        self.lrn = LocalResponseNorm()

    def forward(self, x: Tensor) -> Tensor:
        if self.groups == 1:
            return self.lrn(x)
        b, c, h, w = x.shape
        return self.lrn(x.reshape(b * self.groups, c // self.groups, h, w)).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class AlexNet(nn.Module):
    """AlexNet — Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep
    Convolutional Neural Networks", NIPS 2012 (Fig. 2, §3–§5).

    ``groups=2`` is the paper's two-tower network (conv2/4/5 connected only within a tower,
    LRN within a tower), ``groups=1`` one tower of double width. With
    ``widths=(64, 192, 384, 256, 256)``, ``conv1_padding=2``, ``lrn=False``,
    ``torchvision_classifier=True`` it is the single-tower layout torchvision ships as
    ``alexnet`` (after Krizhevsky 2014, "One weird trick for parallelizing convolutional neural
    networks").

    Deviations from the paper:

    * the input is 227 px, not the 224 px the paper states (224 does not give its 55×55 conv1
      map; 227 does, as in every reimplementation);
    * the fully connected layers are sized from the final feature map (256·6·6 at 227 px), so
      other input sizes work;
    * small inputs (``stem="small"``, chosen by ``stem="auto"`` when the stride-4 layout cannot
      take the input, i.e. below 67 px for the paper network): conv1 runs at stride 1 with
      "same" padding (kernel unchanged, 11×11), everything else as in the paper; at 32 px the
      maps are 32-15-7-3 and FC6 takes 256·3·3 inputs;
    * ``init="kaiming"`` replaces the paper's N(0, 0.01) weights / unit biases (§5) by He
      initialisation with zero biases, for runs without the paper's long warm start;
    * the torchvision layout (``alexnet_owt``) has no adaptive 6×6 average pooling before FC6
      (the classifier is sized from the map instead; identical at 224 px) and takes the
      paper's initialisation by default rather than PyTorch's.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 227,
        *,
        groups: int = 2,
        lrn: bool = True,
        overlapping_pool: bool = True,
        dropout: float = 0.5,
        stem: str = "auto",
        init: str = "paper",
        widths: Sequence[int] = (96, 256, 384, 384, 256),
        conv1_padding: int = 0,
        torchvision_classifier: bool = False,
        name: str = "alexnet",
    ) -> None:
        super().__init__()
        if groups not in (1, 2):
            raise ValueError(f"groups must be 1 (one tower) or 2 (the paper's two), got {groups}")
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {stem!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        pool_k, pool_s = (3, 2) if overlapping_pool else (2, 2)

        def final_size(side: int, small: bool) -> int:
            n = side if small else conv_out_size(side, 11, 4, conv1_padding)
            for _ in range(3):  # pool1, pool2 (convs 2-5 keep the size), pool5
                n = pool_out_size(n, pool_k, pool_s)
            return n

        paper_min = smallest_input(lambda s: final_size(s, small=False))
        if stem == "auto":
            stem = "paper" if input_size >= paper_min else "small"
        small = stem == "small"
        if small:
            require_min_size(input_size, smallest_input(lambda s: final_size(s, True)), name)
        else:
            require_min_size(input_size, paper_min, f"{name} (stem='paper')")
        self.stem = stem
        self.groups = groups
        c1, c2, c3, c4, c5 = widths

        def lrn_layer() -> nn.Module:
            return TowerLRN(groups) if lrn else nn.Identity()

        def pool() -> nn.Module:
            return nn.MaxPool2d(pool_k, pool_s)

        conv1 = (
            nn.Conv2d(in_channels, c1, 11, 1, 5)
            if small
            else nn.Conv2d(in_channels, c1, 11, 4, conv1_padding)
        )
        self.features = nn.Sequential(
            OrderedDict(
                conv1=conv1,
                relu1=nn.ReLU(inplace=True),
                norm1=lrn_layer(),
                pool1=pool(),
                conv2=nn.Conv2d(c1, c2, 5, padding=2, groups=groups),
                relu2=nn.ReLU(inplace=True),
                norm2=lrn_layer(),
                pool2=pool(),
                conv3=nn.Conv2d(c2, c3, 3, padding=1),  # crosses the towers
                relu3=nn.ReLU(inplace=True),
                conv4=nn.Conv2d(c3, c4, 3, padding=1, groups=groups),
                relu4=nn.ReLU(inplace=True),
                conv5=nn.Conv2d(c4, c5, 3, padding=1, groups=groups),
                relu5=nn.ReLU(inplace=True),
                pool5=pool(),
            )
        )
        side = final_size(input_size, small)
        flat = c5 * side * side
        if torchvision_classifier:  # dropout on the inputs of FC6 and FC7
            head = OrderedDict(
                drop6=nn.Dropout(dropout),
                fc6=nn.Linear(flat, 4096),
                relu6=nn.ReLU(inplace=True),
                drop7=nn.Dropout(dropout),
                fc7=nn.Linear(4096, 4096),
                relu7=nn.ReLU(inplace=True),
            )
        else:  # the paper: dropout on the outputs of FC6 and FC7
            head = OrderedDict(
                fc6=nn.Linear(flat, 4096),
                relu6=nn.ReLU(inplace=True),
                drop6=nn.Dropout(dropout),
                fc7=nn.Linear(4096, 4096),
                relu7=nn.ReLU(inplace=True),
                drop7=nn.Dropout(dropout),
            )
        head["fc8"] = nn.Linear(4096, num_classes)
        self.classifier = nn.Sequential(head)
        self._init_weights(init)

    def _init_weights(self, init: str) -> None:
        # §5: N(0, 0.01) weights; biases 1 in conv2, conv4, conv5 and the hidden FC layers
        # (positive inputs to the ReLUs speed up the early phase), 0 elsewhere.
        ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
        for part in (self.features, self.classifier):
            for name, m in part.named_children():
                if not isinstance(m, nn.Conv2d | nn.Linear):
                    continue
                if init == "paper":
                    nn.init.normal_(m.weight, 0.0, 0.01)
                    nn.init.constant_(m.bias, 1.0 if name in ones else 0.0)
                else:
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


@register_model(
    paper=_PAPER, year=2012, num_classes=1000, in_channels=3, input_size=227,
    result=PaperResult(59.3, "ImageNet", "Table 2: 40.7 % top-1 error, 1 CNN"),
)
def alexnet(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 227,
    groups: int = 2,
    lrn: bool = True,
    overlapping_pool: bool = True,
    dropout: float = 0.5,
    stem: str = "auto",
    init: str = "paper",
) -> nn.Module:
    """The paper's AlexNet (60,965,224 parameters; ``groups=1``: 62,378,344).

    ``groups``: 2 = the two towers of the paper, 1 = one tower. ``lrn`` / ``overlapping_pool``:
    the §3.3/§3.4 ablations (off: no normalisation / 2×2 stride-2 pooling). ``stem``: "auto"
    (paper layout from 67 px, stride-1 conv1 below), "paper" or "small". ``init``: "paper"
    (§5) or "kaiming".
    """
    return AlexNet(
        num_classes,
        in_channels,
        input_size,
        groups=groups,
        lrn=lrn,
        overlapping_pool=overlapping_pool,
        dropout=dropout,
        stem=stem,
        init=init,
    )


@register_model(
    paper=_OWT_PAPER, year=2014, num_classes=1000, in_channels=3, input_size=224,
    result=PaperResult(None, "ImageNet", "no single-network top-1 figure recorded"),
)
def alexnet_owt(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    dropout: float = 0.5,
    stem: str = "auto",
    init: str = "paper",
) -> nn.Module:
    """torchvision's single-tower AlexNet (64-192-384-256-256, no LRN): 61,100,840 parameters.

    torchvision attributes the layout to Krizhevsky (2014), "One weird trick for parallelizing
    convolutional neural networks". ``stem``: "auto" (stride-4 conv1 from 63 px, stride 1
    below), "paper" or "small". Dropout sits before FC6 and FC7 as in torchvision.
    """
    return AlexNet(
        num_classes,
        in_channels,
        input_size,
        groups=1,
        lrn=False,
        dropout=dropout,
        stem=stem,
        init=init,
        widths=(64, 192, 384, 256, 256),
        conv1_padding=2,
        torchvision_classifier=True,
        name="alexnet_owt",
    )
