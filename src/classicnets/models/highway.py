"""Highway networks (Srivastava, Greff & Schmidhuber, 2015): gated layers that carry their input.

A highway layer computes ``y = H(x)·T(x) + x·(1 − T(x))`` with the transform gate
``T(x) = sigmoid(W_T x + b_T)`` and the carry gate tied to it, ``C = 1 − T``. Initialising
``b_T`` negative (the paper: −1 to −3, deeper nets more negative) makes every layer start close
to the identity, which is what lets plain SGD train nets of 100 layers and more.

Two networks of "Training Very Deep Networks" (NeurIPS 2015) are registered:

- ``highway_fc``: the fully connected MNIST nets of §3.1 ("Optimization"): a plain fully
  connected layer, then ``depth − 1`` highway layers of 50 units, then the softmax layer.
- ``highway_conv``: the convolutional CIFAR-10 nets of Table 2 (19 and 32 layers).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from classicnets.models.registry import PaperResult, register_model, require_min_size

__all__ = ["HighwayConvNet", "HighwayFC", "HighwayLayer"]

_PAPER = (
    "Srivastava, Greff, Schmidhuber: Training Very Deep Networks, NeurIPS 2015 "
    "(first as Highway Networks, arXiv:1505.00387)"
)

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}

# Layer tables of the convolutional CIFAR nets: per stage (width, number of highway layers).
# Every stage starts with one plain 3×3 conv that sets the width; 2×2 max-pools between stages.
HIGHWAY_CONV_STAGES: dict[int, tuple[tuple[int, int], ...]] = {
    # The authors' released 19-layer CIFAR net (flukeskywalker/highway-networks,
    # cifar10-19layers): Table 2's "Highway B (Fitnet B)", ≈2.3M parameters.
    19: ((32, 4), (80, 5), (128, 5)),
    # Table 2's 32-layer net (≈1.25M parameters, 91.20 %). Its layer table is not published;
    # this is a RECONSTRUCTION: the 19-layer layout with 9 highway layers per stage and widths
    # 32-48-64, chosen to land on the reported ≈1.25M (1,255,270 at 10 classes).
    32: ((32, 9), (48, 9), (64, 9)),
}
HIGHWAY_CONV_HEAD = 100  # channels of the final 1×1 conv in the released net


def _activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}"
        ) from None


class HighwayLayer(nn.Module):
    """One highway layer (Srivastava et al., 2015): ``y = H(x)·T(x) + x·(1 − T(x))``.

    ``transform`` (H's affine map) and ``gate`` (T's affine map) are both ``nn.Linear`` or
    both size-preserving ``nn.Conv2d`` — the convolutional form of the paper uses the same
    kernel for both. H = ``activation(transform(x))``, T = ``sigmoid(gate(x))``; the gate bias
    starts at ``gate_bias_init`` (negative: carry behaviour first). Weights: Glorot (Xavier)
    uniform, as in the authors' released code; H's bias 0.
    """

    def __init__(
        self,
        transform: nn.Linear | nn.Conv2d,
        gate: nn.Linear | nn.Conv2d,
        *,
        activation: str = "relu",
        gate_bias_init: float = -2.0,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.gate = gate
        self.act = _activation(activation)
        self.gate_bias_init = gate_bias_init
        for m in (transform, gate):
            nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(transform.bias)
        nn.init.constant_(gate.bias, gate_bias_init)

    @classmethod
    def linear(
        cls, width: int, *, activation: str = "relu", gate_bias_init: float = -2.0
    ) -> HighwayLayer:
        """Fully connected highway layer of ``width`` units (2·(width² + width) parameters)."""
        return cls(
            nn.Linear(width, width),
            nn.Linear(width, width),
            activation=activation,
            gate_bias_init=gate_bias_init,
        )

    @classmethod
    def conv(
        cls,
        channels: int,
        kernel_size: int = 3,
        *,
        activation: str = "relu",
        gate_bias_init: float = -2.0,
    ) -> HighwayLayer:
        """Convolutional highway layer: H and T are ``kernel_size`` convs, "same" padding."""
        pad = kernel_size // 2
        return cls(
            nn.Conv2d(channels, channels, kernel_size, padding=pad),
            nn.Conv2d(channels, channels, kernel_size, padding=pad),
            activation=activation,
            gate_bias_init=gate_bias_init,
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.transform(x))
        t = torch.sigmoid(self.gate(x))
        return h * t + x * (1.0 - t)

    def extra_repr(self) -> str:
        return f"gate_bias_init={self.gate_bias_init}"


class HighwayFC(nn.Module):
    """Fully connected highway network of Srivastava, Greff & Schmidhuber, "Training Very Deep
    Networks" (NeurIPS 2015), §3.1 — the MNIST optimisation experiments.

    Layout (paper): the flattened input → one plain fully connected layer of ``width`` units
    → ``depth − 1`` highway layers of ``width`` units → linear softmax layer. ``depth`` counts
    the plain layer and the highway layers (the paper's 10/20/50/100; not the output layer).
    The paper used 50 highway units per layer (≈5000 parameters per layer).

    Deviations: the paper chose the activation (tanh or ReLU) and the gate bias per run by
    random search; here they are arguments (defaults ReLU, −2). Any input shape works: the
    input is flattened to ``in_channels·input_size²`` features.
    """

    def __init__(
        self,
        *,
        depth: int = 10,
        width: int = 50,
        num_classes: int = 10,
        in_features: int = 784,
        activation: str = "relu",
        gate_bias_init: float = -2.0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1 (the plain first layer), got {depth}")
        self.stem = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, width), _activation(activation)
        )
        self.layers = nn.Sequential(
            *(
                HighwayLayer.linear(width, activation=activation, gate_bias_init=gate_bias_init)
                for _ in range(depth - 1)
            )
        )
        self.classifier = nn.Linear(width, num_classes)
        for m in (self.stem[1], self.classifier):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.layers(self.stem(x)))


class HighwayConvNet(nn.Module):
    """Convolutional highway network for CIFAR — Srivastava, Greff & Schmidhuber, "Training
    Very Deep Networks" (NeurIPS 2015), Table 2 (the comparison with FitNets).

    Per stage: a plain 3×3 conv + ReLU setting the width, then highway layers whose H and T
    are 3×3 convs (H with ReLU); 2×2 max-pool between stages; then a 1×1 conv (100 channels)
    + ReLU, global average pooling and a linear classifier. Dropout ``drop_rate`` on the
    input, after each max-pool and before the classifier, as in the released net (0.2).
    ``stages`` is one of :data:`HIGHWAY_CONV_STAGES` (19 layers: the authors' released net;
    32 layers: a documented reconstruction, see there).

    Deviations: the released net ends in an 8×8 average pool (32 px input); global average
    pooling equals it at 32 px and lets any input of 4 px or more through (28 px MNIST: maps
    28 → 14 → 7). The released 1×1 conv has 100 channels even in the CIFAR-10 net; kept.
    No batch normalisation, as in the paper.
    """

    def __init__(
        self,
        stages: Sequence[tuple[int, int]],
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        head_channels: int = HIGHWAY_CONV_HEAD,
        gate_bias_init: float = -2.0,
        drop_rate: float = 0.2,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(drop_rate)]
        channels = in_channels
        for i, (width, num_highway) in enumerate(stages):
            if i > 0:
                layers += [nn.MaxPool2d(2, 2), nn.Dropout(drop_rate)]
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            layers += [
                HighwayLayer.conv(width, 3, gate_bias_init=gate_bias_init)
                for _ in range(num_highway)
            ]
            channels = width
        layers += [nn.Conv2d(channels, head_channels, 1), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(head_channels, num_classes)
        for m in self.features:
            if isinstance(m, nn.Conv2d):  # plain convs; highway layers initialise themselves
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.classifier.weight, std=0.05)  # the released net's Gaussian(0.05)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x).mean((2, 3))
        return self.classifier(self.dropout(x))


@register_model(
    paper=_PAPER, year=2015, num_classes=10, in_channels=1, input_size=28,
    result=PaperResult(None, "MNIST", "§3.1 reports training loss only"),
)
def highway_fc(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
    depth: int = 10,
    width: int = 50,
    activation: str = "relu",
    gate_bias_init: float = -2.0,
) -> nn.Module:
    """Fully connected highway net of §3.1 (MNIST): depth 10 (1 plain + 9 highway), 50 units.

    The paper's depths are 10, 20, 50 and 100 (``depth``); 85,660 parameters at the canonical
    1×28×28, 10 classes. Any input size: the image is flattened.
    """
    return HighwayFC(
        depth=depth,
        width=width,
        num_classes=num_classes,
        in_features=in_channels * input_size * input_size,
        activation=activation,
        gate_bias_init=gate_bias_init,
    )


@register_model(
    paper=_PAPER, year=2015, num_classes=10, in_channels=3, input_size=32,
    result=PaperResult(92.4, "CIFAR-10", "Table 2: 92.40 %, 19 layers"),
)
def highway_conv(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    depth: int = 19,
    gate_bias_init: float = -2.0,
    drop_rate: float = 0.2,
) -> nn.Module:
    """Convolutional CIFAR highway net of Table 2: ``depth`` 19 (default) or 32.

    19 layers = the authors' released net (32-80-128 wide, 2,256,838 parameters at 10
    classes, paper ≈2.3M); 32 layers = reconstruction (32-48-64 wide, 1,255,270, paper
    ≈1.25M). Gate bias −2 as in the released CIFAR net. Global average pooling: inputs of
    4 px or more (two 2×2 max-pools).
    """
    if depth not in HIGHWAY_CONV_STAGES:
        raise ValueError(f"depth must be one of {sorted(HIGHWAY_CONV_STAGES)}, got {depth}")
    require_min_size(input_size, 4, "highway_conv")
    return HighwayConvNet(
        HIGHWAY_CONV_STAGES[depth],
        num_classes=num_classes,
        in_channels=in_channels,
        gate_bias_init=gate_bias_init,
        drop_rate=drop_rate,
    )
