"""Highway networks: parameter counts from the paper's layer tables, the gate formula, the
identity limit of the carry gate, the negative gate-bias initialisation and the depth counts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from classicnets.models import InputSizeError, create_model
from classicnets.models.highway import HighwayLayer


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _affine(n_in: int, n_out: int, kernel: int = 1) -> int:
    """Weights + biases of one affine map (a linear layer or a k×k conv)."""
    return n_in * n_out * kernel * kernel + n_out


def _fc_formula(depth: int, width: int, n_in: int, classes: int) -> int:
    # plain first layer + (depth − 1) highway layers (H and T: one affine map each) + softmax
    return _affine(n_in, width) + (depth - 1) * 2 * _affine(width, width) + _affine(width, classes)


def _conv_formula(stages: list[tuple[int, int]], classes: int, head: int = 100) -> int:
    total, channels = 0, 3
    for width, highway_layers in stages:
        total += _affine(channels, width, 3)  # plain 3×3 conv entering the stage
        total += highway_layers * 2 * _affine(width, width, 3)  # H and T, 3×3 each
        channels = width
    return total + _affine(channels, head) + _affine(head, classes)


@pytest.mark.parametrize("depth", [10, 20, 50, 100])
def test_fc_parameter_count_matches_the_paper_layout(depth: int) -> None:
    with torch.device("meta"):
        model = create_model("highway_fc", depth=depth)
    assert _count(model) == _fc_formula(depth, 50, 28 * 28, 10)


def test_fc_canonical_count_and_per_layer_budget() -> None:
    assert _count(create_model("highway_fc")) == 85_660
    # §3.1: 50 highway units per layer ≈ 5000 parameters, like 71 plain units (71² + 71 = 5112)
    layer = HighwayLayer.linear(50)
    assert _count(layer) == 5100 and abs(_count(layer) - _affine(71, 71)) < 0.01 * 5112


@pytest.mark.parametrize(
    ("depth", "stages", "paper"),
    [
        (19, [(32, 4), (80, 5), (128, 5)], 2.3e6),
        (32, [(32, 9), (48, 9), (64, 9)], 1.25e6),
    ],
)
def test_conv_parameter_count_matches_the_layer_table(
    depth: int, stages: list[tuple[int, int]], paper: float
) -> None:
    with torch.device("meta"):
        model = create_model("highway_conv", depth=depth)
    assert _count(model) == _conv_formula(stages, 10)
    # Table 2 reports ≈2.3M (19 layers) and ≈1.25M (32 layers)
    assert abs(_count(model) - paper) / paper < 0.02


@pytest.mark.parametrize("depth", [19, 32])
def test_conv_learned_layer_count_equals_depth(depth: int) -> None:
    with torch.device("meta"):
        model = create_model("highway_conv", depth=depth)
    highway = [m for m in model.modules() if isinstance(m, HighwayLayer)]
    inside = {id(m) for h in highway for m in h.modules()}
    plain = [
        m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear) and id(m) not in inside
    ]
    assert len(highway) + len(plain) == depth


def test_fc_depth_counts_plain_and_highway_layers() -> None:
    model = create_model("highway_fc", depth=20)
    assert sum(isinstance(m, HighwayLayer) for m in model.modules()) == 19


def test_gate_formula_on_a_hand_example() -> None:
    layer = HighwayLayer.linear(2)
    with torch.no_grad():
        layer.transform.weight.copy_(torch.eye(2))  # H(x) = relu(x)
        layer.transform.bias.zero_()
        layer.gate.weight.zero_()
        layer.gate.bias.fill_(math.log(3.0))  # T = sigmoid(ln 3) = 3/4 everywhere
    x = torch.tensor([[1.0, -2.0]])
    # y = H·T + x·(1 − T) = [1, 0]·0.75 + [1, −2]·0.25 = [1.0, −0.5]
    torch.testing.assert_close(layer(x), torch.tensor([[1.0, -0.5]]))


def test_gate_formula_matches_the_definition_on_random_weights() -> None:
    torch.manual_seed(0)
    layer = HighwayLayer.conv(4, gate_bias_init=-1.0)
    x = torch.randn(2, 4, 5, 5)
    h = torch.relu(layer.transform(x))
    t = torch.sigmoid(layer.gate(x))
    torch.testing.assert_close(layer(x), h * t + x * (1 - t))


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_gate_bias_to_minus_infinity_gives_identity(kind: str) -> None:
    torch.manual_seed(0)
    layer = HighwayLayer.linear(8) if kind == "linear" else HighwayLayer.conv(8)
    x = torch.randn(3, 8) if kind == "linear" else torch.randn(3, 8, 4, 4)
    assert not torch.allclose(layer(x), x)
    with torch.no_grad():
        layer.gate.bias.fill_(-math.inf)  # T → 0: only the carry path C = 1 − T = 1 remains
    assert torch.equal(layer(x), x)


def test_whole_net_with_closed_gates_reduces_to_its_plain_layers() -> None:
    torch.manual_seed(0)
    model = create_model("highway_fc", depth=10).eval()
    for m in model.modules():
        if isinstance(m, HighwayLayer):
            nn.init.constant_(m.gate.bias, -math.inf)
    x = torch.randn(4, 1, 28, 28)
    expected = model.classifier(model.stem(x))
    torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("name", ["highway_fc", "highway_conv"])
def test_negative_gate_bias_initialisation(name: str) -> None:
    for bias in (-2.0, -1.0, -3.0):  # default, then the paper's range −1 … −3
        model = create_model(name, gate_bias_init=bias)
        layers = [m for m in model.modules() if isinstance(m, HighwayLayer)]
        assert layers
        for layer in layers:
            assert torch.all(layer.gate.bias == bias) and bias < 0
            assert torch.all(layer.transform.bias == 0)
    # with a negative bias and small inputs the gates start mostly closed (carry behaviour)
    layer = HighwayLayer.linear(50, gate_bias_init=-3.0)
    t = torch.sigmoid(layer.gate(torch.zeros(1, 50)))
    assert torch.all(t < 0.5)


def test_activation_option() -> None:
    model = create_model("highway_fc", activation="tanh")
    assert any(isinstance(m, nn.Tanh) for m in model.modules())
    with pytest.raises(ValueError, match="activation"):
        create_model("highway_fc", activation="swish")


def test_conv_depth_option_and_small_inputs() -> None:
    with pytest.raises(ValueError, match="depth"):
        create_model("highway_conv", depth=20)
    with pytest.raises(InputSizeError, match="smallest input size it accepts is 4"):
        create_model("highway_conv", input_size=3)


def test_fc_takes_any_input_shape() -> None:
    model = create_model("highway_fc", in_channels=3, input_size=32, num_classes=7)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert _count(model) == _fc_formula(10, 50, 3 * 32 * 32, 7)


def test_forward_of_the_32_layer_conv_net() -> None:
    # the canonical (19-layer) forward of both networks is test_zoo.py's
    model = create_model("highway_conv", depth=32).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
