"""ShuffleNet V1/V2: exact parameter counts, the channel shuffle and the units' structure."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from classicnets.models import create_model
from classicnets.models.layers import channel_shuffle
from classicnets.models.shufflenet import (
    ChannelShuffle,
    ShuffleNetV1,
    ShuffleNetV1Unit,
    ShuffleNetV2Unit,
)

REFERENCE = {
    "shufflenet_v1_g3": 1_864_728,  # official code, 1.0x
    "shufflenet_v1_g8": 2_433_768,  # official code, 1.0x
    "shufflenet_v2_x0_5": 1_366_792,  # torchvision
    "shufflenet_v2_x1_0": 2_278_604,
    "shufflenet_v2_x1_5": 3_503_624,
    "shufflenet_v2_x2_0": 7_393_996,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def channel_tensor(channels: int) -> torch.Tensor:
    """(1, C, 2, 2) tensor whose channel c holds the value c."""
    return torch.arange(channels, dtype=torch.float32).view(1, channels, 1, 1).expand(1, -1, 2, 2)


@pytest.mark.parametrize(("name", "expected"), REFERENCE.items())
def test_reference_parameter_counts(name: str, expected: int) -> None:
    assert n_params(meta(name)) == expected


# ------------------------------------------------------------------------- channel shuffle


@pytest.mark.parametrize(
    ("channels", "groups", "order"),
    [
        # 2 groups of 3, [0 1 2 | 3 4 5]: reshape (2, 3), transpose to (3, 2), flatten
        (6, 2, [0, 3, 1, 4, 2, 5]),
        # 3 groups of 4, [0..3 | 4..7 | 8..11]: one channel from each group in turn
        (12, 3, [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]),
        (4, 1, [0, 1, 2, 3]),
    ],
)
def test_channel_shuffle_permutation(channels: int, groups: int, order: list[int]) -> None:
    x = channel_tensor(channels)
    for out in (channel_shuffle(x, groups), ChannelShuffle(groups)(x)):
        assert out[0, :, 0, 0].tolist() == order
        assert torch.equal(out[0, :, 1, 1], out[0, :, 0, 0])  # spatial positions untouched


def test_channel_shuffle_sends_each_group_everywhere() -> None:
    # After shuffling g·n channels, each consecutive block of g channels (the input of one
    # group of the next group conv, when it has n groups) holds one channel of every group.
    g, n = 4, 3
    out = channel_shuffle(channel_tensor(g * n), g)[0, :, 0, 0].long()
    source_group = out // n
    for block in source_group.view(n, g):
        assert sorted(block.tolist()) == list(range(g))


# ------------------------------------------------------------------------- ShuffleNet V1


def _reached_input_groups(unit: ShuffleNetV1Unit, out_channel: int, groups: int) -> set[int]:
    """Input-channel groups whose values influence one output channel of the main branch."""
    unit.eval()
    x = torch.randn(1, 48, 8, 8, requires_grad=True)
    unit.branch(x)[:, out_channel].sum().backward()
    reached = x.grad.abs().sum((0, 2, 3)) > 0
    return {int(c) // (48 // groups) for c in torch.nonzero(reached).flatten()}


def test_v1_unit_shuffle_connects_the_groups() -> None:
    unit = ShuffleNetV1Unit(48, 48, groups=3, stride=1)
    # Fig. 2b: GConv 1×1 → BN/ReLU → shuffle → DWConv → GConv 1×1
    first, shuffle, dw, second = unit.branch
    assert first[0].groups == 3 and first[0].kernel_size == (1, 1)
    assert isinstance(shuffle, ChannelShuffle) and shuffle.groups == 3
    assert dw[0].groups == dw[0].in_channels == 12 and dw[0].kernel_size == (3, 3)
    assert second[0].groups == 3 and second[0].kernel_size == (1, 1)
    # with the shuffle one output channel sees all three input groups ...
    assert _reached_input_groups(unit, 0, 3) == {0, 1, 2}
    # ... without it, a stack of group convs never mixes the groups (paper Fig. 1a)
    unit.branch[1] = nn.Identity()
    assert _reached_input_groups(unit, 0, 3) == {0}


def test_v1_unit_shuffle_permutes_channels_in_the_block() -> None:
    unit = ShuffleNetV1Unit(48, 48, groups=3, stride=1).eval()
    captured: dict[str, torch.Tensor] = {}
    unit.branch[0].register_forward_hook(lambda _m, _a, out: captured.update(before=out))
    unit.branch[1].register_forward_hook(lambda _m, _a, out: captured.update(after=out))
    with torch.no_grad():
        unit(torch.randn(2, 48, 6, 6))
    # 12 bottleneck channels in 3 groups of 4: order 0 4 8 1 5 9 2 6 10 3 7 11
    order = [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    assert torch.equal(captured["after"], captured["before"][:, order])


def test_v1_stride2_unit_concatenates_avg_pooled_shortcut() -> None:
    unit = ShuffleNetV1Unit(24, 240, groups=3, stride=2, group_first=False).eval()
    assert unit.branch[-1][0].out_channels == 240 - 24  # main branch makes the difference
    x = torch.randn(2, 24, 14, 14)
    with torch.no_grad():
        out = unit(x)
    assert out.shape == (2, 240, 7, 7)
    torch.testing.assert_close(out[:, :24], F.relu(F.avg_pool2d(x, 3, 2, 1)))


def test_v1_stride1_unit_adds_identity() -> None:
    unit = ShuffleNetV1Unit(48, 48, groups=3, stride=1).eval()
    x = torch.randn(2, 48, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(unit(x), F.relu(x + unit.branch(x)))


@pytest.mark.parametrize(("name", "groups"), [("shufflenet_v1_g3", 3), ("shufflenet_v1_g8", 8)])
def test_v1_first_pointwise_of_stage2_is_not_grouped(name: str, groups: int) -> None:
    model = meta(name)
    units = [m for m in model.modules() if isinstance(m, ShuffleNetV1Unit)]
    assert len(units) == 16  # stages of 4, 8, 4
    first_groups = [u.branch[0][0].groups for u in units]
    assert first_groups == [1] + [groups] * 15
    assert all(u.branch[-1][0].groups == groups for u in units)
    assert [u.stride for u in units] == [2, 1, 1, 1, 2, *[1] * 7, 2, 1, 1, 1]


# released code's table: stage-4 width per (groups, width multiplier)
V1_FINAL = {
    3: {0.5: 480, 1.0: 960, 1.5: 1440, 2.0: 1920},
    8: {0.5: 768, 1.0: 1536, 1.5: 2304, 2.0: 3072},
}


@pytest.mark.parametrize("groups", [3, 8])
@pytest.mark.parametrize("width", [0.5, 1.0, 1.5, 2.0])
def test_v1_width_multiplier(groups: int, width: float) -> None:
    model = meta(f"shufflenet_v1_g{groups}", width_mult=width)
    assert model.classifier.in_features == V1_FINAL[groups][width]
    units = [m for m in model.modules() if isinstance(m, ShuffleNetV1Unit)]
    for u in units:  # bottleneck = 1/4 of the unit's output (§3.2)
        out = u.branch[-1][0].out_channels + (u.branch[0][0].in_channels if u.stride == 2 else 0)
        assert u.branch[0][0].out_channels == out // 4


def test_v1_unknown_width_is_refused() -> None:
    with pytest.raises(ValueError, match="channel table"):
        create_model("shufflenet_v1_g3", width_mult=0.75)


def test_v1_paper_table1_groups() -> None:
    # Table 1, stage-4 widths for g = 1, 2, 4 at 1×
    for g, width in ((1, 576), (2, 800), (4, 1088)):
        with torch.device("meta"):
            assert ShuffleNetV1(groups=g).classifier.in_features == width


# ------------------------------------------------------------------------- ShuffleNet V2


def test_v2_stride1_unit_split_and_shuffle() -> None:
    unit = ShuffleNetV2Unit(116, 116, stride=1).eval()
    assert unit.right[0][0].in_channels == 58  # the branch sees only half (channel split)
    x = torch.randn(2, 116, 7, 7)
    with torch.no_grad():
        out = unit(x)
        branch = unit.right(x[:, 58:])
    # concat [kept half, branch] then shuffle with 2 groups: kept half on even channels
    assert torch.equal(out[:, 0::2], x[:, :58])
    assert torch.equal(out[:, 1::2], branch)


def test_v2_stride2_unit_has_both_branches() -> None:
    unit = ShuffleNetV2Unit(24, 116, stride=2).eval()
    left_dw, left_pw = unit.left
    assert left_dw[0].groups == 24 and left_dw[0].stride == (2, 2) and left_pw[0].out_channels == 58
    assert unit.right[0][0].in_channels == 24  # no split: both branches take the whole input
    assert unit.right[1][0].stride == (2, 2) and unit.right[1][0].groups == 58
    x = torch.randn(2, 24, 14, 14)
    with torch.no_grad():
        out = unit(x)
        left, right = unit.left(x), unit.right(x)
    assert out.shape == (2, 116, 7, 7)
    assert torch.equal(out[:, 0::2], left) and torch.equal(out[:, 1::2], right)


@pytest.mark.parametrize(
    ("name", "widths"),
    [
        ("shufflenet_v2_x0_5", (48, 96, 192, 1024)),
        ("shufflenet_v2_x1_0", (116, 232, 464, 1024)),
        ("shufflenet_v2_x1_5", (176, 352, 704, 1024)),
        ("shufflenet_v2_x2_0", (244, 488, 976, 2048)),
    ],
)
def test_v2_channels_follow_table_5(name: str, widths: tuple[int, ...]) -> None:
    model = meta(name)
    units = [m for m in model.modules() if isinstance(m, ShuffleNetV2Unit)]
    assert [u.stride for u in units] == [2, 1, 1, 1, 2, *[1] * 7, 2, 1, 1, 1]
    stage_out = [2 * units[i].right[-1][0].out_channels for i in (0, 4, 12)]
    assert stage_out == list(widths[:3])
    assert model.classifier.in_features == widths[3]


@pytest.mark.parametrize("name", ["shufflenet_v1_g3", "shufflenet_v2_x1_0"])
def test_small_input_layout(name: str) -> None:
    # Below SMALL_INPUT px: stride-1 stem conv and no max-pool → total stride 8 (32 → 4×4).
    model = create_model(name, input_size=32).eval()
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.stem.modules())
    assert any(isinstance(m, nn.MaxPool2d) for m in meta(name).stem.modules())
    seen: list[int] = []
    model.pool.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[-1]))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert seen == [4]
