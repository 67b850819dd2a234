"""MobileNet V1/V2/V3: exact parameter counts and the papers' block structure."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from classicnets.models import create_model
from classicnets.models.layers import SqueezeExcite, make_divisible
from classicnets.models.mobilenet import (
    DepthwiseSeparableConv,
    InvertedResidual,
    MobileNetV3Block,
)

REFERENCE = {
    "mobilenet_v1": 4_231_976,  # timm mobilenetv1_100
    "mobilenet_v2": 3_504_872,  # torchvision
    "mobilenet_v3_large": 5_483_032,  # torchvision
    "mobilenet_v3_small": 2_542_856,  # torchvision
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def final_map(model: nn.Module, size: int) -> int:
    """Side of the feature map that reaches the global pooling for a ``size`` input."""
    seen: list[int] = []
    handle = model.pool.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[-1]))
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    handle.remove()
    return seen[0]


@pytest.mark.parametrize(("name", "expected"), REFERENCE.items())
def test_reference_parameter_counts(name: str, expected: int) -> None:
    assert n_params(meta(name)) == expected


@pytest.mark.parametrize(
    ("name", "features"),
    [("mobilenet_v1", 1024), ("mobilenet_v2", 1280), ("mobilenet_v3_large", 1280)],
)
def test_num_classes_changes_only_the_classifier(name: str, features: int) -> None:
    # Reference rule: params(K) = params(1000) - (F + 1) * (1000 - K).
    assert n_params(meta(name, num_classes=10)) == REFERENCE[name] - (features + 1) * 990


# ---------------------------------------------------------------------------------- V1


def v1_params(alpha: float, num_classes: int = 1000) -> int:
    """Paper Table 1 counted by hand: stem 3×3×3×αM conv + BN, then per depthwise-separable
    layer 3×3 depthwise (9·Cin) + BN (2·Cin) + 1×1 pointwise (Cin·Cout) + BN (2·Cout), FC."""
    widths = [int(c * alpha) for c in (32, 64, 128, 128, 256, 256, *[512] * 6, 1024, 1024)]
    stem = 27 * widths[0] + 2 * widths[0]
    layers = sum(9 * ci + 2 * ci + ci * co + 2 * co for ci, co in itertools.pairwise(widths))
    return stem + layers + (widths[-1] + 1) * num_classes


def test_v1_width_multiplier_matches_hand_count() -> None:
    # α = 0.5 by hand: stem 464; layers 752 + 2,528 + 4,928 + 9,152 + 18,048 + 34,688
    # + 5 × 68,864 + 134,912 + 268,800; FC 513 × 1000 → 1,331,592.
    assert v1_params(0.5) == 1_331_592
    assert n_params(meta("mobilenet_v1", width_mult=0.5)) == 1_331_592
    for alpha in (1.0, 0.75, 0.25):
        assert n_params(meta("mobilenet_v1", width_mult=alpha)) == v1_params(alpha)


@pytest.mark.parametrize(("alpha", "millions"), [(1.0, 4.2), (0.75, 2.6), (0.5, 1.3), (0.25, 0.5)])
def test_v1_width_multiplier_matches_paper_table_6(alpha: float, millions: float) -> None:
    assert round(n_params(meta("mobilenet_v1", width_mult=alpha)) / 1e6, 1) == millions


def test_v1_layers_are_depthwise_separable() -> None:
    model = meta("mobilenet_v1")
    layers = [m for m in model.modules() if isinstance(m, DepthwiseSeparableConv)]
    assert len(layers) == 13
    for layer in layers:
        dw, dw_bn, dw_act = layer.depthwise
        pw, pw_bn, pw_act = layer.pointwise
        assert dw.kernel_size == (3, 3) and dw.groups == dw.in_channels == dw.out_channels
        assert pw.kernel_size == (1, 1) and pw.groups == 1 and pw.in_channels == dw.out_channels
        assert isinstance(dw_bn, nn.BatchNorm2d) and isinstance(pw_bn, nn.BatchNorm2d)
        assert type(dw_act) is nn.ReLU and type(pw_act) is nn.ReLU


def test_v1_resolution_multiplier_is_the_input_size() -> None:
    model = create_model("mobilenet_v1", width_mult=0.25)
    assert final_map(model, 224) == 7
    assert final_map(model, 160) == 5  # ρ = 160/224: same weights, total stride 32
    assert final_map(model, 128) == 4


# ---------------------------------------------------------------------------------- V2


def test_v2_every_expanding_block_has_a_depthwise_conv() -> None:
    model = meta("mobilenet_v2")
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 17  # Table 2: 1 + 2 + 3 + 4 + 3 + 3 + 1
    expanding = [b for b in blocks if b.expand_ratio > 1]
    assert len(expanding) == 16
    for block in expanding:
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        expand_conv = convs[0]
        hidden = expand_conv.out_channels
        assert hidden == expand_conv.in_channels * block.expand_ratio
        depthwise = [c for c in convs if c.groups > 1]
        assert len(depthwise) == 1
        dw = depthwise[0]
        assert dw.kernel_size == (3, 3)
        assert dw.groups == dw.in_channels == dw.out_channels == hidden


def test_v2_bottleneck_is_linear() -> None:
    model = meta("mobilenet_v2")
    for block in (m for m in model.modules() if isinstance(m, InvertedResidual)):
        # expansion and depthwise end in ReLU6; the projection ends in BN with no activation
        if block.expand_ratio > 1:
            assert type(block.expand[-1]) is nn.ReLU6
        assert type(block.depthwise[-1]) is nn.ReLU6
        assert isinstance(block.project[0], nn.Conv2d) and block.project[0].kernel_size == (1, 1)
        assert isinstance(block.project[-1], nn.BatchNorm2d)
        assert not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in block.project.modules())


def test_v2_projection_output_can_be_negative() -> None:
    # A ReLU/ReLU6 after the projection would make a non-residual block's output >= 0.
    block = InvertedResidual(16, 24, stride=2, expand_ratio=6).eval()
    assert not block.use_residual
    with torch.no_grad():
        out = block(torch.randn(4, 16, 16, 16))
    assert out.shape == (4, 24, 8, 8)
    assert (out < 0).any()


def test_v2_residual_only_where_shapes_match() -> None:
    model = meta("mobilenet_v2")
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    # n - 1 residual blocks per stage of Table 2: 0 + 1 + 2 + 3 + 2 + 2 + 0
    assert sum(b.use_residual for b in blocks) == 10
    block = InvertedResidual(24, 24, stride=1, expand_ratio=6).eval()
    x = torch.randn(2, 24, 8, 8)
    with torch.no_grad():
        branch = block.project(block.depthwise(block.expand(x)))
        torch.testing.assert_close(block(x), x + branch)


def test_v2_width_multiplier_keeps_last_conv_below_one() -> None:
    # §5.1: α < 1 scales every layer except the very last 1×1 conv (1280); α > 1 scales it.
    assert meta("mobilenet_v2", width_mult=0.5).classifier.in_features == 1280
    assert meta("mobilenet_v2", width_mult=1.4).classifier.in_features == 1792
    small = meta("mobilenet_v2", width_mult=0.5)
    assert small.stem[0].out_channels == 16
    assert n_params(small) < n_params(meta("mobilenet_v2"))


def test_small_input_layout() -> None:
    # Below SMALL_INPUT px: stride-1 stem and first stride-2 stage → total stride 8.
    v2 = create_model("mobilenet_v2", input_size=32)
    assert v2.stem[0].stride == (1, 1)
    assert final_map(v2, 32) == 4
    assert final_map(create_model("mobilenet_v2"), 224) == 7
    for name in ("mobilenet_v1", "mobilenet_v3_large", "mobilenet_v3_small"):
        assert final_map(create_model(name, input_size=32), 32) == 4


# ---------------------------------------------------------------------------------- V3

# Paper Tables 1 and 2, bneck rows: (kernel, exp size, #out, SE, NL, stride).
TABLE_1 = [
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
]
TABLE_2 = [
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
]
ACT = {"RE": nn.ReLU, "HS": nn.Hardswish}


@pytest.mark.parametrize(
    ("name", "table"), [("mobilenet_v3_large", TABLE_1), ("mobilenet_v3_small", TABLE_2)]
)
def test_v3_blocks_follow_the_paper_table(name: str, table: list[tuple]) -> None:
    model = meta(name)
    blocks = [m for m in model.modules() if isinstance(m, MobileNetV3Block)]
    assert len(blocks) == len(table)
    for block, (k, exp, out, se, nl, s) in zip(blocks, table):
        dw = block.depthwise[0]
        assert dw.kernel_size == (k, k) and dw.stride == (s, s)
        assert dw.groups == dw.in_channels == dw.out_channels == exp
        assert block.project[0].out_channels == out
        assert not any(isinstance(m, (nn.ReLU, nn.Hardswish)) for m in block.project.modules())
        # the nonlinearity the table names, in both the expansion and the depthwise conv
        acts = [m for m in block.modules() if isinstance(m, (nn.ReLU, nn.Hardswish))]
        acts = [a for a in acts if not any(a is m for m in block.se.modules())]
        assert acts and all(type(a) is ACT[nl] for a in acts)
        assert isinstance(block.se, SqueezeExcite) == se


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "mobilenet_v3_small"])
def test_v3_squeeze_excite_after_depthwise(name: str) -> None:
    model = create_model(name).eval()
    blocks = [m for m in model.modules() if isinstance(m, MobileNetV3Block)]
    events: list[tuple[str, int, torch.Tensor]] = []  # (what, block index, tensor) in call order
    handles = []
    for i, block in enumerate(blocks):
        if not isinstance(block.se, SqueezeExcite):
            continue
        se = block.se
        assert se.fc1.out_channels == make_divisible(se.fc1.in_channels / 4, 8)
        assert type(se.act) is nn.ReLU and type(se.gate) is nn.Hardsigmoid
        handles += [
            block.depthwise.register_forward_hook(
                lambda _m, _a, out, i=i: events.append(("dw_out", i, out))
            ),
            se.register_forward_pre_hook(lambda _m, a, i=i: events.append(("se_in", i, a[0]))),
            block.project.register_forward_pre_hook(
                lambda _m, a, i=i: events.append(("project_in", i, a[0]))
            ),
        ]
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    for h in handles:
        h.remove()
    with_se = sorted({i for what, i, _ in events if what == "se_in"})
    assert len(with_se) == sum(isinstance(b.se, SqueezeExcite) for b in blocks) > 0
    for i in with_se:
        mine = [(what, t) for what, j, t in events if j == i]
        # depthwise conv, then SE, then the projection, in this order
        assert [what for what, _ in mine] == ["dw_out", "se_in", "project_in"]
        # SE reads exactly the depthwise output (after its BN + activation)
        assert torch.equal(mine[1][1], mine[0][1])


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "mobilenet_v3_small"])
def test_v3_stem_and_head_use_hardswish(name: str) -> None:
    model = meta(name)
    assert type(model.stem[-1]) is nn.Hardswish
    assert type(model.last_conv[-1]) is nn.Hardswish
    assert type(model.head[1]) is nn.Hardswish
    assert isinstance(model.stem[1], nn.BatchNorm2d) and model.stem[1].momentum == 0.01


def test_v3_small_last_conv_se_option() -> None:
    # Table 2's SE on the final 1×1 conv (576): fc1 576→144 and fc2 144→576 with biases.
    extra = 576 * 144 + 144 + 144 * 576 + 576
    with_se = meta("mobilenet_v3_small", se_last_conv=True)
    assert n_params(with_se) == REFERENCE["mobilenet_v3_small"] + extra


@pytest.mark.parametrize(
    ("name", "expected"),
    # the released TF MobileNetV3 0.75 checkpoints (e.g. timm tf_mobilenetv3_large_075)
    [("mobilenet_v3_large", 3_993_528), ("mobilenet_v3_small", 2_041_872)],
)
def test_v3_width_multiplier(name: str, expected: int) -> None:
    assert n_params(meta(name, width_mult=0.75)) == expected
