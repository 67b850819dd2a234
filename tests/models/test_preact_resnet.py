"""Pre-activation ResNets (He et al., ECCV 2016): exact counts, BN→ReLU→conv units with nothing
after the addition, the final BN→ReLU, bare-conv stem, and stochastic depth at test time."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from classicnets.models import create_model
from classicnets.models.preact_resnet import PreActBasicBlock, PreActBottleneck, PreActResNet

REFERENCE = {
    "preact_resnet50": 25_549_352,  # = timm resnetv2_50
    "preact_resnet101": 44_541_480,
    "preact_resnet152": 60_185_128,
    "preact_resnet164": 1_703_258,
    "preact_resnet1001": 10_327_706,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_params(name: str, **kwargs: object) -> int:
    with torch.device("meta"):
        return n_params(create_model(name, **kwargs))


def preact_resnet18_params(num_classes: int = 10) -> int:
    """ResNet-18's layer table in pre-activation form, counted by hand.

    3×3 stem conv 3→64 (no bias, no BN); per basic unit BN(c_in), 3×3 conv c_in→c, BN(c),
    3×3 conv c→c; a bias-free 1×1 projection where the width changes (first unit of stages
    2-4); final BN(512); FC 512→K with bias. BN contributes γ and β: 2 per channel.
    """
    total = 3 * 64 * 9
    c_in = 64
    for width in (64, 128, 256, 512):
        for _ in range(2):
            total += 2 * c_in + c_in * width * 9 + 2 * width + width * width * 9
            if c_in != width:
                total += c_in * width
            c_in = width
    return total + 2 * 512 + 512 * num_classes + num_classes


@pytest.mark.parametrize(("name", "expected"), REFERENCE.items())
def test_parameter_count(name: str, expected: int) -> None:
    assert meta_params(name) == expected


def test_preact_resnet18_count_from_the_layer_table() -> None:
    assert preact_resnet18_params() == 11_172_170  # the same sum done on paper
    assert meta_params("preact_resnet18") == preact_resnet18_params()
    assert meta_params("preact_resnet18", num_classes=100) == preact_resnet18_params(100)


def test_unit_is_bn_relu_conv_with_nothing_after_the_addition() -> None:
    with torch.device("meta"):
        model = create_model("preact_resnet164")
    assert isinstance(model, PreActResNet)
    for block in model.residual_blocks():
        assert isinstance(block, PreActBottleneck)
        assert [type(m) for m in block.pre] == [nn.BatchNorm2d, nn.ReLU]
        assert isinstance(block.branch.conv1[0], nn.Conv2d)
        # the branch ends on a bare conv: no BN/ReLU before the addition
        assert [type(m) for m in block.branch.conv3] == [nn.Conv2d]
    block = PreActBottleneck(128, 32).eval()  # an identity-shortcut unit of stage 2
    x = torch.randn(2, 128, 8, 8)
    with torch.no_grad():
        out = block(x)
        torch.testing.assert_close(out, block.shortcut_path(x) + block.residual(x))
        torch.testing.assert_close(block.shortcut_path(x), x)  # clean identity
    assert (out < 0).any()  # no ReLU after the addition


def test_projection_sees_the_preactivated_input_and_has_no_bn() -> None:
    block = create_model("preact_resnet18").stages.layer2[0].eval()
    assert isinstance(block, PreActBasicBlock)
    assert [type(m) for m in block.shortcut] == [nn.Conv2d]
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        pre = torch.relu(block.pre[0](x))
        torch.testing.assert_close(block.shortcut_path(x), block.shortcut[0](pre))


def test_bare_stem_and_final_bn_relu() -> None:
    for name in ("preact_resnet18", "preact_resnet50", "preact_resnet164"):
        with torch.device("meta"):
            model = create_model(name)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in model.stem.modules())
        assert [type(m) for m in model.final_act] == [nn.BatchNorm2d, nn.ReLU]
    big = create_model("preact_resnet18", input_size=224)
    assert big.stem[0][0].kernel_size == (7, 7) and isinstance(big.stem[1], nn.MaxPool2d)
    small = create_model("preact_resnet50", input_size=64)
    assert small.stem[0][0].kernel_size == (3, 3) and len(small.stem) == 1


def test_zero_init_residual_makes_units_start_as_identity() -> None:
    model = create_model("preact_resnet18", zero_init_residual=True).eval()
    block = model.stages.layer3[1]
    x = torch.randn(2, 256, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)


def test_stochastic_depth_at_test_time_scales_the_residual() -> None:
    model = create_model("preact_resnet18", survival_prob_last=0.5).eval()
    blocks = list(model.residual_blocks())
    assert [b.survival_prob for b in blocks] == pytest.approx([1 - i / 16 for i in range(1, 9)])
    for block in (blocks[0], blocks[2], blocks[-1]):  # identity, projection, last
        x = torch.randn(2, block.pre[0].num_features, 4, 4)
        with torch.no_grad():
            out = block(x)
            torch.testing.assert_close(out, block(x), rtol=0, atol=0)
            expected = block.shortcut_path(x) + block.survival_prob * block.residual(x)
            torch.testing.assert_close(out, expected)


def test_dropped_unit_is_exactly_its_shortcut() -> None:
    model = create_model("preact_resnet164", survival_prob_last=1e-9).train()
    block = list(model.residual_blocks())[-1]
    x = torch.randn(2, 256, 8, 8)
    torch.testing.assert_close(block(x), x, rtol=0, atol=0)
