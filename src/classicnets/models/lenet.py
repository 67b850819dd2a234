"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, Proc. IEEE 1998), modern and 1998 forms.

C1 (6 maps, 5×5) → S2 (2×2 subsampling) → C3 (16 maps, 5×5) → S4 → C5 (120 maps, 5×5 over the
5×5 S4 maps, i.e. fully connected) → F6 (84) → output. The 1998 paper adds four details that
the common modern variant drops; each is an option here:

* C3's partial connection table (Table I): 60 of the 96 possible 5×5 kernels;
* trainable subsampling: the sum of each 2×2 window times one coefficient plus one bias per
  map, then the squashing function;
* the squashing function f(a) = 1.7159·tanh(2a/3) (Appendix A), for which f(±1) = ±1;
* Euclidean radial basis function output units with fixed ±1 parameter vectors drawn as 7×12
  bitmaps of the digits (§II-B).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from classicnets.models.registry import PaperResult, register_model

__all__ = [
    "C3_TABLE",
    "DIGIT_BITMAPS",
    "LeNet5",
    "PartialConv2d",
    "RBFOutput",
    "ScaledTanh",
    "TrainableSubsampling",
]

_PAPER = (
    "LeCun, Bottou, Bengio, Haffner: Gradient-Based Learning Applied to Document Recognition, "
    "Proceedings of the IEEE 1998"
)

# Table I: which S2 maps (rows of the paper's table) feed each C3 map. Maps 0-5 take three
# contiguous maps, 6-11 four contiguous, 12-14 four non-contiguous, 15 all six: 60 kernels.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2),
    (1, 2, 3),
    (2, 3, 4),
    (3, 4, 5),
    (0, 4, 5),
    (0, 1, 5),
    (0, 1, 2, 3),
    (1, 2, 3, 4),
    (2, 3, 4, 5),
    (0, 3, 4, 5),
    (0, 1, 4, 5),
    (0, 1, 2, 5),
    (0, 1, 3, 4),
    (1, 2, 4, 5),
    (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)

# Stylised 7×12 bitmaps of the digits: the fixed RBF parameter vectors ('#' = +1, '.' = -1).
DIGIT_BITMAPS: tuple[str, ...] = (
    ".......|..###..|.#...#.|#.....#|#.....#|#.....#|#.....#|#.....#|#.....#|.#...#.|..###..|.......",
    ".......|...#...|..##...|.#.#...|...#...|...#...|...#...|...#...|...#...|...#...|.#####.|.......",
    ".......|..###..|.#...#.|#.....#|......#|.....#.|....#..|...#...|..#....|.#.....|#######|.......",
    ".......|.#####.|#.....#|......#|......#|..####.|......#|......#|......#|#.....#|.#####.|.......",
    ".......|....##.|...#.#.|..#..#.|.#...#.|#....#.|#######|.....#.|.....#.|.....#.|.....#.|.......",
    ".......|#######|#......|#......|######.|......#|......#|......#|......#|#.....#|.#####.|.......",
    ".......|..####.|.#.....|#......|#......|######.|#.....#|#.....#|#.....#|#.....#|.#####.|.......",
    ".......|#######|......#|.....#.|....#..|...#...|...#...|..#....|..#....|..#....|..#....|.......",
    ".......|.#####.|#.....#|#.....#|#.....#|.#####.|#.....#|#.....#|#.....#|#.....#|.#####.|.......",
    ".......|.#####.|#.....#|#.....#|#.....#|#.....#|.######|......#|......#|.....#.|.####..|.......",
)

VARIANTS = ("modern", "1998")
_DEFAULTS = {
    "modern": {
        "c3_connections": "full",
        "subsampling": "avg",
        "activation": "relu",
        "output": "linear",
    },
    "1998": {
        "c3_connections": "partial",
        "subsampling": "trainable",
        "activation": "scaled_tanh",
        "output": "rbf",
    },
}
_CHOICES = {
    "c3_connections": ("full", "partial"),
    "subsampling": ("avg", "max", "trainable"),
    "activation": ("relu", "tanh", "scaled_tanh", "sigmoid"),
    "output": ("linear", "rbf"),
}


class ScaledTanh(nn.Module):
    """LeCun's squashing function f(a) = A·tanh(S·a), A = 1.7159, S = 2/3 (Appendix A).

    Chosen so that f(1) = 1 and f(-1) = -1, with the maximal second derivative at a = ±1.
    """

    A = 1.7159
    S = 2.0 / 3.0

    def forward(self, x: Tensor) -> Tensor:
        return self.A * torch.tanh(self.S * x)


def _activation(name: str) -> nn.Module:
    return {
        "relu": nn.ReLU,
        "tanh": nn.Tanh,
        "scaled_tanh": ScaledTanh,
        "sigmoid": nn.Sigmoid,
    }[name]()


class TrainableSubsampling(nn.Module):
    """S2/S4 of the paper: each 2×2 window is summed, multiplied by a trainable coefficient
    and shifted by a trainable bias, one pair per feature map (the squashing follows)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(channels))
        self.bias = nn.Parameter(torch.empty(channels))

    def forward(self, x: Tensor) -> Tensor:
        window_sum = F.avg_pool2d(x, 2) * 4.0
        return window_sum * self.weight[:, None, None] + self.bias[:, None, None]


class PartialConv2d(nn.Module):
    """A convolution in which output map ``o`` sees only the input maps ``table[o]``.

    Only the connected kernels are parameters (``kernels``: one k×k kernel per connection, in
    table order); the dense weight is assembled in each forward pass with zeros elsewhere, so
    the unconnected kernels neither exist nor receive gradient.
    """

    def __init__(
        self, in_channels: int, table: tuple[tuple[int, ...], ...], kernel_size: int
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, len(table)
        self.kernel_size = kernel_size
        self.table = table
        flat = [o * in_channels + i for o, inputs in enumerate(table) for i in inputs]
        self.kernels = nn.Parameter(torch.empty(len(flat), kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(len(table)))
        self.register_buffer("index", torch.tensor(flat, dtype=torch.long), persistent=False)

    @property
    def connections(self) -> Tensor:
        """Boolean (out_channels, in_channels) connection matrix, True where a kernel exists."""
        return torch.tensor(
            [[i in inputs for i in range(self.in_channels)] for inputs in self.table],
            dtype=torch.bool,
        )

    def weight(self) -> Tensor:
        k = self.kernel_size
        dense = self.kernels.new_zeros(self.out_channels * self.in_channels, k, k)
        dense = dense.index_copy(0, self.index, self.kernels)
        return dense.view(self.out_channels, self.in_channels, k, k)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight(), self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"kernels={self.kernels.shape[0]}"
        )


class RBFOutput(nn.Module):
    """Euclidean RBF output units: y_i = Σ_j (x_j − w_ij)², with fixed (non-trainable) w.

    Returns ``-y`` so that the largest score is the nearest prototype and softmax
    cross-entropy applies: cross-entropy on −y is the paper's MAP criterion (eq. 9) without
    its constant "rubbish class" term. The prototypes are a buffer, not parameters. For 10
    classes they are the 7×12 digit bitmaps (±1); for another class count, random ±1 codes
    from a fixed seed (the paper mentions random codes as the alternative).
    """

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("centers", torch.empty(num_classes, in_features))
        with torch.no_grad():  # fixed values, written once; works on the meta device too
            self.centers.copy_(_rbf_codes(num_classes, in_features))

    def forward(self, x: Tensor) -> Tensor:
        return -((x[:, None, :] - self.centers) ** 2).sum(-1)


def _rbf_codes(num_classes: int, in_features: int) -> Tensor:
    if num_classes == len(DIGIT_BITMAPS) and in_features == 84:
        rows = [bitmap.replace("|", "") for bitmap in DIGIT_BITMAPS]
        return torch.tensor([[1.0 if c == "#" else -1.0 for c in row] for row in rows])
    gen = torch.Generator(device="cpu").manual_seed(1998)
    bits = torch.randint(0, 2, (num_classes, in_features), generator=gen, device="cpu")
    return bits.float() * 2.0 - 1.0


class LeNet5(nn.Module):
    """LeNet-5 — LeCun, Bottou, Bengio & Haffner, "Gradient-Based Learning Applied to Document
    Recognition", Proceedings of the IEEE, 1998 (§II-B, Fig. 2, Table I, Appendix A).

    ``variant="modern"`` (default) is the common modern form, 61,706 parameters: C1 6@5×5 →
    ReLU → 2×2 average pooling → C3 16@5×5 (all 6 inputs) → ReLU → average pooling → C5 120 →
    F6 84 → 10 linear outputs. ``variant="1998"`` is the paper's network, 60,000 trainable
    parameters (+840 fixed RBF prototypes): partial C3 table, trainable subsampling, scaled
    tanh after every layer up to F6, RBF output. ``c3_connections``, ``subsampling``,
    ``activation`` and ``output`` override single choices of the variant.

    Deviations from the paper:

    * inputs smaller than 32 px (MNIST's 28×28) are zero-padded to 32×32 inside the network,
      which is what the paper did to its 28×28 digits (centred in a 32×32 field, §III-A) but
      with zeros (the normalised background) rather than the paper's -0.1 level;
    * inputs larger than 32 px: C5's kernel grows to cover the whole S4 map, so C5 stays the
      fully connected layer it is at 32 px (the paper notes it would otherwise yield maps
      larger than 1×1);
    * RBF scores are returned as negative squared distances, trained with cross-entropy (the
      paper's eq. 9 adds a constant-penalty class); the digit bitmaps are drawn here in the
      spirit of the paper's Fig. 3, not copied pixel for pixel;
    * the modern variant uses PyTorch's default initialisation; the 1998 variant the paper's
      U(−2.4/F, 2.4/F), F = fan-in (Appendix C).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 32,
        *,
        variant: str = "modern",
        c3_connections: str | None = None,
        subsampling: str | None = None,
        activation: str | None = None,
        output: str | None = None,
    ) -> None:
        super().__init__()
        variant = str(variant)  # YAML / the command line read `variant: 1998` as an int
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        chosen = {
            "c3_connections": c3_connections,
            "subsampling": subsampling,
            "activation": activation,
            "output": output,
        }
        for key, value in chosen.items():
            if value is None:
                chosen[key] = _DEFAULTS[variant][key]
            elif value not in _CHOICES[key]:
                raise ValueError(f"{key} must be one of {_CHOICES[key]}, got {value!r}")
        self.variant = variant
        self.options = dict(chosen)
        act = chosen["activation"]

        pad = max(0, 32 - input_size)  # centre smaller inputs in a 32×32 field
        lo, hi = pad // 2, pad - pad // 2
        self.pad = nn.ZeroPad2d((lo, hi, lo, hi)) if pad else nn.Identity()
        side = max(32, input_size)
        s4 = ((side - 4) // 2 - 4) // 2  # 5 at 32 px

        trainable = chosen["subsampling"] == "trainable"
        pool = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}.get(chosen["subsampling"])
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["c1"] = nn.Conv2d(in_channels, 6, 5)
        layers["c1_act"] = _activation(act)
        layers["s2"] = TrainableSubsampling(6) if trainable else pool(2)  # type: ignore[misc]
        if trainable:  # the paper squashes the subsampling outputs too
            layers["s2_act"] = _activation(act)
        layers["c3"] = (
            PartialConv2d(6, C3_TABLE, 5)
            if chosen["c3_connections"] == "partial"
            else nn.Conv2d(6, 16, 5)
        )
        layers["c3_act"] = _activation(act)
        layers["s4"] = TrainableSubsampling(16) if trainable else pool(2)  # type: ignore[misc]
        if trainable:
            layers["s4_act"] = _activation(act)
        layers["c5"] = nn.Conv2d(16, 120, s4)  # covers the whole S4 map: fully connected
        layers["c5_act"] = _activation(act)
        layers["flatten"] = nn.Flatten()
        layers["f6"] = nn.Linear(120, 84)
        layers["f6_act"] = _activation(act)
        self.features = nn.Sequential(layers)
        self.output = (
            RBFOutput(84, num_classes) if chosen["output"] == "rbf" else nn.Linear(84, num_classes)
        )
        if variant == "1998":
            self._paper_init()

    def _paper_init(self) -> None:
        # Appendix C: U(-2.4/F, 2.4/F) with F the fan-in of the unit, biases included.
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                fan_in = m.weight[0].numel()
                for p in (m.weight, m.bias):
                    nn.init.uniform_(p, -2.4 / fan_in, 2.4 / fan_in)
            elif isinstance(m, TrainableSubsampling):
                for p in (m.weight, m.bias):
                    nn.init.uniform_(p, -2.4 / 4, 2.4 / 4)
            elif isinstance(m, PartialConv2d):
                k2 = m.kernel_size**2
                start = 0
                for o, inputs in enumerate(m.table):
                    bound = 2.4 / (len(inputs) * k2)
                    nn.init.uniform_(m.kernels[start : start + len(inputs)], -bound, bound)
                    nn.init.uniform_(m.bias[o : o + 1], -bound, bound)
                    start += len(inputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.features(self.pad(x)))


@register_model(
    paper=_PAPER, year=1998, num_classes=10, in_channels=1, input_size=32,
    result=PaperResult(99.05, "MNIST", "§III-C: 0.95 % test error, no distortions"),
)
def lenet5(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 32,
    variant: str = "modern",
    c3_connections: str | None = None,
    subsampling: str | None = None,
    activation: str | None = None,
    output: str | None = None,
) -> nn.Module:
    """LeNet-5: ``variant="modern"`` (61,706 params) or ``"1998"`` (60,000 trainable + 840 fixed).

    Single choices override the variant's (None = the variant's): ``c3_connections`` "full" |
    "partial" (Table I); ``subsampling`` "avg" | "max" | "trainable"; ``activation`` "relu" |
    "tanh" | "scaled_tanh" | "sigmoid"; ``output`` "linear" | "rbf" (scores = negative squared
    distances to fixed prototypes). Inputs below 32 px are zero-padded to 32.
    """
    return LeNet5(
        num_classes,
        in_channels,
        input_size,
        variant=variant,
        c3_connections=c3_connections,
        subsampling=subsampling,
        activation=activation,
        output=output,
    )
