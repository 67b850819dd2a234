"""SE-ResNet / SE-ResNeXt (Hu et al., CVPR 2018): exact counts (timm legacy models), the SE
parameter formula per block, SE on the residual branch before the addition, stride placement."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from classicnets.models import create_model
from classicnets.models.layers import SqueezeExcite

REFERENCE = {
    "se_resnet18": 11_778_592,
    "se_resnet34": 21_958_868,
    "se_resnet50": 28_088_024,
    "se_resnet101": 49_326_872,
    "se_resnet152": 66_821_848,
    "se_resnext50_32x4d": 27_559_896,
}
PLAIN = {
    "se_resnet18": "resnet18",
    "se_resnet34": "resnet34",
    "se_resnet50": "resnet50",
    "se_resnet101": "resnet101",
    "se_resnet152": "resnet152",
    "se_resnext50_32x4d": "resnext50_32x4d",
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def se_params(c: int, r: int = 16) -> int:
    """1×1 conv C→C/r and C/r→C, both with biases: 2·C·(C/r) + C/r + C."""
    return 2 * c * (c // r) + c // r + c


@pytest.mark.parametrize(("name", "expected"), REFERENCE.items())
def test_parameter_count(name: str, expected: int) -> None:
    with torch.device("meta"):
        assert n_params(create_model(name)) == expected


@pytest.mark.parametrize("name", ["se_resnet18", "se_resnet50", "se_resnext50_32x4d"])
def test_se_adds_exactly_the_formula_per_block(name: str) -> None:
    with torch.device("meta"):
        se_net, plain = create_model(name), create_model(PLAIN[name])
    pairs = list(zip(se_net.residual_blocks(), plain.residual_blocks(), strict=True))
    for se_block, block in pairs:
        c = block.branch[-1][0].out_channels  # output width of the plain branch
        assert isinstance(se_block.branch.attn, SqueezeExcite)
        assert n_params(se_block) - n_params(block) == se_params(c)
    assert n_params(se_net) - n_params(plain) == sum(
        se_params(b.branch[-1][0].out_channels) for _, b in pairs
    )


def test_reduction_option() -> None:
    with torch.device("meta"):
        model = create_model("se_resnet50", reduction=8)
    se = model.stages.layer4[0].branch.attn
    assert se.fc1.out_channels == 2048 // 8 and se.fc1.bias is not None


def test_se_gate_is_squeeze_then_excite() -> None:
    se = create_model("se_resnet18").stages.layer1[0].branch.attn.eval()
    x = torch.randn(2, 64, 8, 8)
    s = x.mean((2, 3), keepdim=True)
    expected = x * torch.sigmoid(se.fc2(F.relu(se.fc1(s))))
    torch.testing.assert_close(se(x), expected)


def test_se_acts_on_the_residual_branch_before_the_addition() -> None:
    class Silence(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(x)

    model = create_model("se_resnet50").eval()
    block = model.stages.layer2[0]
    x = torch.randn(2, 256, 8, 8)
    with torch.no_grad():
        with_se = block(x)
        block.branch.attn = Silence()  # a gate of 0 removes the whole residual
        torch.testing.assert_close(block(x), F.relu(block.shortcut(x)))
    assert not torch.allclose(with_se, F.relu(block.shortcut(x)))


def test_stride_placement_of_the_released_models() -> None:
    with torch.device("meta"):
        se50 = create_model("se_resnet50").stages.layer2[0].branch
        sx50 = create_model("se_resnext50_32x4d").stages.layer2[0].branch
    assert se50.conv1[0].stride == (2, 2) and se50.conv2[0].stride == (1, 1)
    assert sx50.conv1[0].stride == (1, 1) and sx50.conv2[0].stride == (2, 2)
    assert sx50.conv2[0].groups == 32
