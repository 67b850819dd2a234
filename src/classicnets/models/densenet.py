"""DenseNet-BC (Huang et al., CVPR 2017): ImageNet DenseNet-121/169/201/161 and the CIFAR nets.

Every layer of a dense block receives the concatenation of all earlier feature maps of the block
and adds ``k`` (the growth rate) new ones. "B" = bottleneck (BN-ReLU-1×1 conv to ``bn_size·k``
channels before the BN-ReLU-3×3 conv), "C" = compression (transition layers keep
``floor(θ·m)`` of ``m`` channels). The memory-efficient mode (Pleiss et al., 2017) recomputes the
concatenation + BN + ReLU + 1×1 conv in the backward pass instead of storing them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from classicnets.models.registry import PaperResult, register_model, require_min_size

__all__ = ["DenseBlock", "DenseLayer", "DenseNet", "Transition"]

_PAPER = (
    "Huang, Liu, van der Maaten, Weinberger: Densely Connected Convolutional Networks, CVPR 2017"
)
# ImageNet DenseNets take the paper's CIFAR stem (3×3 stride-1 conv, no max-pool) below this side
# (the same threshold as the ResNet family): at 128 px the ImageNet stem still leaves a 4×4 map
# after the last block; at 32 px it would leave 1×1 after the second transition.
SMALL_INPUT_THRESHOLD = 128


@contextlib.contextmanager
def _keep_bn_running_stats(norm: nn.BatchNorm2d) -> Iterator[None]:
    """Undo the running-statistics update of a recomputed BN forward.

    The checkpointed bottleneck runs BN a second time during backward; without this the
    running mean/var would take two momentum steps per training step.
    """
    if not (norm.training and norm.track_running_stats and norm.running_mean is not None):
        yield
        return
    saved = [b.detach().clone() for b in (norm.running_mean, norm.running_var)]
    tracked = None if norm.num_batches_tracked is None else norm.num_batches_tracked.clone()
    try:
        yield
    finally:
        with torch.no_grad():
            norm.running_mean.copy_(saved[0])
            norm.running_var.copy_(saved[1])
            if tracked is not None:
                norm.num_batches_tracked.copy_(tracked)


class DenseLayer(nn.Module):
    """One composite layer of DenseNet-B: BN-ReLU-Conv(1×1, bn_size·k) → BN-ReLU-Conv(3×3, k).

    Huang et al. (2017), §3 "Bottleneck layers". ``drop_rate`` is dropout after the 3×3 conv
    (the paper's CIFAR runs without augmentation use 0.2).
    """

    def __init__(
        self,
        in_channels: int,
        growth_rate: int,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        width = bn_size * growth_rate
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.memory_efficient = memory_efficient

    def bottleneck(self, *features: Tensor) -> Tensor:
        """Concatenation + BN + ReLU + 1×1 conv: the part whose activations grow with depth."""
        return self.conv1(F.relu(self.norm1(torch.cat(features, 1))))

    def _checkpoint_contexts(self) -> tuple[contextlib.AbstractContextManager[None], ...]:
        return contextlib.nullcontext(), _keep_bn_running_stats(self.norm1)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        needs_grad = torch.is_grad_enabled() and any(f.requires_grad for f in features)
        if self.memory_efficient and needs_grad:
            out = checkpoint(
                self.bottleneck,
                *features,
                use_reentrant=False,
                context_fn=self._checkpoint_contexts,
            )
        else:
            out = self.bottleneck(*features)
        out = self.conv2(F.relu(self.norm2(out)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return out


class DenseBlock(nn.ModuleList):
    """``num_layers`` dense layers; layer ``i`` sees ``in_channels + i·k`` channels."""

    def __init__(
        self,
        num_layers: int,
        in_channels: int,
        growth_rate: int,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__(
            DenseLayer(
                in_channels + i * growth_rate, growth_rate, bn_size, drop_rate, memory_efficient
            )
            for i in range(num_layers)
        )
        self.out_channels = in_channels + num_layers * growth_rate

    def forward(self, x: Tensor) -> Tensor:
        # Keep the list of maps and concatenate lazily: each layer gets all earlier outputs.
        features = [x]
        for layer in self:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """Transition layer between dense blocks: BN-ReLU-Conv(1×1) → 2×2 average pool, stride 2."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.AvgPool2d(2, 2),
        )
        self.out_channels = out_channels


class DenseNet(nn.Module):
    """DenseNet-BC — Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional
    Networks", CVPR 2017.

    Stem → dense blocks separated by transition layers (compression θ) → BN-ReLU → global
    average pool → linear classifier. Two stems:

    - ``"imagenet"`` (paper Table 1): 7×7 stride-2 conv with ``2k`` channels, BN, ReLU, 3×3
      stride-2 max-pool.
    - ``"cifar"`` (paper §3, "Implementation Details"): a single 3×3 stride-1 conv with ``2k``
      channels (DenseNet-BC), no BN/ReLU/pool — the first dense layer begins with BN-ReLU.

    Deviations from the paper: none in the layer layout. Weights: He (Kaiming) normal init for
    convolutions as in the paper's code, BN γ = 1, β = 0, classifier bias 0 (PyTorch's default
    uniform init for the classifier weight). ``memory_efficient`` (Pleiss et al., 2017) changes
    memory use only, not the function or its gradients.
    """

    def __init__(
        self,
        block_config: Sequence[int],
        *,
        growth_rate: int = 32,
        stem: str = "imagenet",
        bn_size: int = 4,
        compression: float = 0.5,
        drop_rate: float = 0.0,
        num_classes: int = 1000,
        in_channels: int = 3,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"compression θ must be in (0, 1], got {compression}")
        if bn_size < 1:
            raise ValueError(f"bn_size must be >= 1 (bottleneck width bn_size·k), got {bn_size}")
        channels = 2 * growth_rate  # the paper's stem width for DenseNet-BC
        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, channels, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        elif stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False))
        else:
            raise ValueError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")
        stages: list[nn.Module] = []
        for i, num_layers in enumerate(block_config):
            block = DenseBlock(
                num_layers, channels, growth_rate, bn_size, drop_rate, memory_efficient
            )
            stages.append(block)
            channels = block.out_channels
            if i < len(block_config) - 1:
                out = math.floor(compression * channels)
                stages.append(Transition(channels, out))
                channels = out
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(channels)
        self.classifier = nn.Linear(channels, num_classes)
        self.num_features = channels
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x))
        x = F.relu(self.norm(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _imagenet_densenet(
    name: str,
    block_config: Sequence[int],
    *,
    num_classes: int,
    in_channels: int,
    input_size: int,
    growth_rate: int,
    bn_size: int,
    compression: float,
    drop_rate: float,
    memory_efficient: bool,
    small_stem: bool | None,
) -> DenseNet:
    small = input_size < SMALL_INPUT_THRESHOLD if small_stem is None else small_stem
    # Least side that leaves a 1×1 map after the last transition: 8 px with the CIFAR stem
    # (three halvings); 29 px with the 7×7/2 + max-pool stem (only when forced small).
    require_min_size(input_size, 8 if small else 29, name)
    return DenseNet(
        block_config,
        growth_rate=growth_rate,
        stem="cifar" if small else "imagenet",
        bn_size=bn_size,
        compression=compression,
        drop_rate=drop_rate,
        num_classes=num_classes,
        in_channels=in_channels,
        memory_efficient=memory_efficient,
    )


def _cifar_densenet_bc(
    name: str,
    depth: int,
    *,
    num_classes: int,
    in_channels: int,
    input_size: int,
    growth_rate: int,
    bn_size: int,
    compression: float,
    drop_rate: float,
    memory_efficient: bool,
) -> DenseNet:
    # DenseNet-BC with depth L: 3 blocks of (L - 4) / 6 bottleneck layers (2 convs each),
    # plus the stem conv, 2 transition convs and the classifier.
    require_min_size(input_size, 4, name)  # two transitions: 4 px leaves a 1×1 map
    n = (depth - 4) // 6
    return DenseNet(
        (n, n, n),
        growth_rate=growth_rate,
        stem="cifar",
        bn_size=bn_size,
        compression=compression,
        drop_rate=drop_rate,
        num_classes=num_classes,
        in_channels=in_channels,
        memory_efficient=memory_efficient,
    )


@register_model(
    paper=_PAPER, year=2017,
    result=PaperResult(74.98, "ImageNet", "Table 3: 25.02 % top-1 error, single crop"),
)
def densenet121(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    growth_rate: int = 32,
    bn_size: int = 4,
    compression: float = 0.5,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
    small_stem: bool | None = None,
) -> nn.Module:
    """DenseNet-121 (BC, k = 32, blocks 6-12-24-16): 7,978,856 parameters at 1000 classes.

    Options: growth rate k, bottleneck width ``bn_size·k``, compression θ, dropout after each
    3×3 conv, memory-efficient checkpointing. Small inputs: below ``SMALL_INPUT_THRESHOLD``
    (128 px) the 7×7/2 stem and max-pool become the paper's CIFAR stem (one 3×3 stride-1 conv,
    2k channels); the four blocks and three transitions stay (32 px → final 4×4 map). Inputs
    under 8 px are refused; ``small_stem`` (True/False) overrides the automatic choice.
    """
    return _imagenet_densenet(
        "densenet121",
        (6, 12, 24, 16),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        growth_rate=growth_rate,
        bn_size=bn_size,
        compression=compression,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
        small_stem=small_stem,
    )


@register_model(
    paper=_PAPER, year=2017,
    result=PaperResult(76.2, "ImageNet", "Table 3: 23.80 % top-1 error, single crop"),
)
def densenet169(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    growth_rate: int = 32,
    bn_size: int = 4,
    compression: float = 0.5,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
    small_stem: bool | None = None,
) -> nn.Module:
    """DenseNet-169 (BC, k = 32, blocks 6-12-32-32): 14,149,480 parameters at 1000 classes.

    Same options and small-input stem (below 128 px) as :func:`densenet121`.
    """
    return _imagenet_densenet(
        "densenet169",
        (6, 12, 32, 32),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        growth_rate=growth_rate,
        bn_size=bn_size,
        compression=compression,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
        small_stem=small_stem,
    )


@register_model(
    paper=_PAPER, year=2017,
    result=PaperResult(77.42, "ImageNet", "Table 3: 22.58 % top-1 error, single crop"),
)
def densenet201(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    growth_rate: int = 32,
    bn_size: int = 4,
    compression: float = 0.5,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
    small_stem: bool | None = None,
) -> nn.Module:
    """DenseNet-201 (BC, k = 32, blocks 6-12-48-32): 20,013,928 parameters at 1000 classes.

    Same options and small-input stem (below 128 px) as :func:`densenet121`.
    """
    return _imagenet_densenet(
        "densenet201",
        (6, 12, 48, 32),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        growth_rate=growth_rate,
        bn_size=bn_size,
        compression=compression,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
        small_stem=small_stem,
    )


@register_model(
    paper=_PAPER, year=2017,
    result=PaperResult(None, "ImageNet", "not in Table 3 (k=48 net released with code)"),
)
def densenet161(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    growth_rate: int = 48,
    bn_size: int = 4,
    compression: float = 0.5,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
    small_stem: bool | None = None,
) -> nn.Module:
    """DenseNet-161 (BC, k = 48, stem 96 channels, blocks 6-12-36-24): 28,681,000 parameters.

    Same options and small-input stem (below 128 px) as :func:`densenet121`.
    """
    return _imagenet_densenet(
        "densenet161",
        (6, 12, 36, 24),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        growth_rate=growth_rate,
        bn_size=bn_size,
        compression=compression,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
        small_stem=small_stem,
    )


@register_model(
    paper=_PAPER, year=2017, num_classes=10, input_size=32,
    result=PaperResult(95.49, "CIFAR-10", "Table 2: 4.51 % error (C10+)"),
)
def densenet_bc_100_k12(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    growth_rate: int = 12,
    bn_size: int = 4,
    compression: float = 0.5,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> nn.Module:
    """CIFAR DenseNet-BC (L = 100, k = 12): 3 blocks of 16 bottleneck layers, 769,162 params.

    The paper's CIFAR/SVHN network (§3, Table 2: 4.51 % error on C10+). It has no ImageNet
    stem, so any input of 4 px or more runs through the same layers (global average pooling
    before the classifier); the paper used ``drop_rate=0.2`` only without augmentation.
    """
    return _cifar_densenet_bc(
        "densenet_bc_100_k12",
        100,
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        growth_rate=growth_rate,
        bn_size=bn_size,
        compression=compression,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
    )


@register_model(
    paper=_PAPER, year=2017, num_classes=10, input_size=32,
    result=PaperResult(96.38, "CIFAR-10", "Table 2: 3.62 % error (C10+)"),
)
def densenet_bc_250_k24(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    growth_rate: int = 24,
    bn_size: int = 4,
    compression: float = 0.5,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> nn.Module:
    """CIFAR DenseNet-BC (L = 250, k = 24): 3 blocks of 41 bottleneck layers, 15,324,406 params.

    Paper Table 2 (3.62 % error on C10+). Same input handling as :func:`densenet_bc_100_k12`.
    """
    return _cifar_densenet_bc(
        "densenet_bc_250_k24",
        250,
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        growth_rate=growth_rate,
        bn_size=bn_size,
        compression=compression,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
    )


@register_model(
    paper=_PAPER, year=2017, num_classes=10, input_size=32,
    result=PaperResult(96.54, "CIFAR-10", "Table 2: 3.46 % error (C10+)"),
)
def densenet_bc_190_k40(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    growth_rate: int = 40,
    bn_size: int = 4,
    compression: float = 0.5,
    drop_rate: float = 0.0,
    memory_efficient: bool = False,
) -> nn.Module:
    """CIFAR DenseNet-BC (L = 190, k = 40): 3 blocks of 31 bottleneck layers, 25,624,430 params.

    Paper Table 2 (3.46 % error on C10+). Same input handling as :func:`densenet_bc_100_k12`.
    """
    return _cifar_densenet_bc(
        "densenet_bc_190_k40",
        190,
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        growth_rate=growth_rate,
        bn_size=bn_size,
        compression=compression,
        drop_rate=drop_rate,
        memory_efficient=memory_efficient,
    )
