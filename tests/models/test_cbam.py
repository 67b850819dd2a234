"""CBAM-ResNet (Woo et al., ECCV 2018): exact counts (official code), the per-block parameter
formula, the channel attention's max branch, the spatial attention, and CBAM's place on the
residual branch before the addition."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from classicnets.models import create_model
from classicnets.models.layers import CBAM, ChannelAttention, SpatialAttention

REFERENCE = {
    "cbam_resnet18": 11_779_392,
    "cbam_resnet34": 21_960_468,
    "cbam_resnet50": 28_089_624,
    "cbam_resnet101": 49_330_172,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cbam_params(c: int, r: int = 16, k: int = 7) -> int:
    """Shared MLP C→C/r→C with biases, plus the 2→1 k×k spatial conv (no bias) and its BN."""
    return (2 * c * (c // r) + c // r + c) + (2 * k * k + 2)


@pytest.mark.parametrize(("name", "expected"), REFERENCE.items())
def test_parameter_count(name: str, expected: int) -> None:
    with torch.device("meta"):
        assert n_params(create_model(name)) == expected


@pytest.mark.parametrize("name", ["cbam_resnet18", "cbam_resnet50"])
def test_cbam_adds_exactly_the_formula_per_block(name: str) -> None:
    with torch.device("meta"):
        net, plain = create_model(name), create_model(name.replace("cbam_", ""))
    for block, ref in zip(net.residual_blocks(), plain.residual_blocks(), strict=True):
        assert isinstance(block.branch.attn, CBAM)
        c = ref.branch[-1][0].out_channels
        assert n_params(block) - n_params(ref) == cbam_params(c)


def test_channel_attention_uses_average_and_max_pooling() -> None:
    ca = create_model("cbam_resnet18").stages.layer1[0].branch.attn[0].eval()
    assert isinstance(ca, ChannelAttention)
    torch.manual_seed(0)
    x = torch.randn(2, 64, 8, 8)
    x[:, :, 3, 5] += 10.0  # a spike: the max now differs strongly from the mean
    avg, mx = x.mean((2, 3)), x.amax((2, 3))
    assert not torch.allclose(avg, mx)
    with torch.no_grad():
        out = ca(x)
        gate = torch.sigmoid(ca.mlp(avg) + ca.mlp(mx))[:, :, None, None]
        torch.testing.assert_close(out, x * gate)
        # an avg-only (or avg-twice) attention would give something else
        assert not torch.allclose(out, x * torch.sigmoid(2 * ca.mlp(avg))[:, :, None, None])
        # moving mass between two pixels keeps every mean but raises the max → new gate
        y = x.clone()
        y[:, :, 0, 0] += 20.0
        y[:, :, 7, 7] -= 20.0
        torch.testing.assert_close(y.mean((2, 3)), avg)
        assert (y.amax((2, 3)) > mx).all()
        assert not torch.allclose(ca(y), y * gate)


def test_spatial_attention_is_mean_max_conv_bn_sigmoid() -> None:
    model = create_model("cbam_resnet18", spatial_bn_zero_init=False).eval()
    sa = model.stages.layer2[1].branch.attn[1]
    assert isinstance(sa, SpatialAttention)
    conv, bn = sa.conv[0], sa.conv[1]
    assert conv.kernel_size == (7, 7) and conv.in_channels == 2 and conv.bias is None
    x = torch.randn(2, 128, 6, 6)
    desc = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
    with torch.no_grad():
        expected = x * torch.sigmoid(bn(conv(desc)))
        torch.testing.assert_close(sa(x), expected)


def test_official_init_starts_spatial_gates_at_one_half() -> None:
    model = create_model("cbam_resnet18").eval()
    sa = model.stages.layer3[0].branch.attn[1]
    assert not sa.conv[1].weight.any()
    x = torch.randn(2, 256, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(sa(x), 0.5 * x)


def test_cbam_is_channel_then_spatial_on_the_branch_before_the_addition() -> None:
    class Silence(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros_like(x)

    model = create_model("cbam_resnet50", spatial_bn_zero_init=False).eval()
    block = model.stages.layer3[0]
    attn = block.branch.attn
    assert isinstance(attn[0], ChannelAttention) and isinstance(attn[1], SpatialAttention)
    x = torch.randn(2, 512, 4, 4)
    with torch.no_grad():
        h = block.branch[:-1](x)  # the convolutions of the residual branch
        torch.testing.assert_close(block.residual(x), attn[1](attn[0](h)))
        torch.testing.assert_close(block(x), F.relu(block.shortcut(x) + attn[1](attn[0](h))))
        block.branch.attn = Silence()
        torch.testing.assert_close(block(x), F.relu(block.shortcut(x)))
