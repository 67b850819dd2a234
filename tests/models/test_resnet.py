"""ResNet family (resnet.py): exact parameter counts, shortcut options A/B/C, bottleneck stride
placement, the small-input stem, zero-init residuals, ResNeXt/Wide widths and stochastic depth
(which every builder of the family — plain, pre-activation, SE, CBAM — offers)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from classicnets.models import create_model, list_models
from classicnets.models.resnet import (
    SMALL_INPUT_THRESHOLD,
    ResNet,
    ZeroPadShortcut,
    survival_probabilities,
)

REFERENCE = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    "resnet1202": 19_421_274,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x4d": 44_177_704,
    "resnext101_32x8d": 88_791_336,
    "resnext29_8x64d": 34_426_698,
    "resnext29_16x64d": 68_155_210,
    "wide_resnet50_2": 68_883_240,
}
CIFAR_DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}
# Every builder of the ResNet family group (resnet.py, preact_resnet.py, senet.py, cbam_resnet.py).
FAMILY = sorted(
    set(REFERENCE)
    | set(list_models("preact_resnet*"))
    | set(list_models("se_res*"))
    | set(list_models("cbam_resnet*"))
)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def meta_params(name: str, **kwargs: object) -> int:
    with torch.device("meta"):
        return n_params(create_model(name, **kwargs))


@pytest.mark.parametrize(("name", "expected"), REFERENCE.items())
def test_parameter_count(name: str, expected: int) -> None:
    assert meta_params(name) == expected


def test_class_count_changes_only_the_classifier() -> None:
    # params(K) = params(1000) - (F + 1)(1000 - K), F = 2048 for ResNet-50
    assert meta_params("resnet50", num_classes=10) == 25_557_032 - 2049 * 990


def _projection(cin: int, cout: int) -> int:
    return cin * cout + 2 * cout  # 1×1 conv without bias + BN


def test_shortcut_options_change_only_the_shortcut_parameters() -> None:
    # B: projections only where ResNet-18 changes shape (first block of stages 2-4).
    changing = [(64, 128), (128, 256), (256, 512)]
    identity = [(64, 64), (64, 64), (128, 128), (256, 256), (512, 512)]
    base = REFERENCE["resnet18"]
    assert meta_params("resnet18", shortcut="A") == base - sum(_projection(*c) for c in changing)
    assert meta_params("resnet18", shortcut="C") == base + sum(_projection(*c) for c in identity)
    with pytest.raises(ValueError, match="shortcut"):
        create_model("resnet18", shortcut="D")


def test_zero_pad_shortcut_is_subsampled_identity_plus_zeros() -> None:
    x = torch.randn(2, 16, 9, 9)
    out = ZeroPadShortcut(16, 32, stride=2)(x)
    assert out.shape == (2, 32, 5, 5)  # same as a padded 3×3 stride-2 conv on 9 px
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2])
    assert not out[:, 16:].any()


def test_cifar_resnets_are_6n_plus_2_layers_with_parameter_free_shortcuts() -> None:
    for name, depth in CIFAR_DEPTHS.items():
        model = create_model(name)
        assert isinstance(model, ResNet)
        blocks = list(model.residual_blocks())
        assert len(blocks) == (depth - 2) // 2  # two 3×3 convs per block
        assert all(n_params(b.shortcut) == 0 for b in blocks)  # option A
        assert any(isinstance(b.shortcut, ZeroPadShortcut) for b in blocks)
        branch_convs = sum(isinstance(m, nn.Conv2d) for b in blocks for m in b.branch.modules())
        assert 1 + branch_convs + 1 == depth  # stem conv + branch convs + FC
        assert [stage[0].branch.conv1[0].out_channels for stage in model.stages] == [16, 32, 64]
        assert model.stem[0][0].kernel_size == (3, 3) and model.stem[0][0].stride == (1, 1)


def test_bottleneck_stride_placement() -> None:
    v15 = create_model("resnet50").stages.layer2[0].branch
    assert v15.conv1[0].stride == (1, 1) and v15.conv2[0].stride == (2, 2)
    v1 = create_model("resnet50", stride_in_1x1=True).stages.layer2[0].branch
    assert v1.conv1[0].stride == (2, 2) and v1.conv2[0].stride == (1, 1)
    assert meta_params("resnet50", stride_in_1x1=True) == REFERENCE["resnet50"]


def test_small_inputs_get_the_cifar_stem() -> None:
    big = create_model("resnet18", input_size=SMALL_INPUT_THRESHOLD)
    assert big.stem[0][0].kernel_size == (7, 7) and big.stem[0][0].stride == (2, 2)
    assert any(isinstance(m, nn.MaxPool2d) for m in big.stem)
    small = create_model("resnet18", input_size=SMALL_INPUT_THRESHOLD - 1)
    assert small.stem[0][0].kernel_size == (3, 3) and small.stem[0][0].stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in small.stem)
    # 32 px keeps a 4×4 map at the last stage instead of collapsing to 1×1
    small.eval()
    with torch.no_grad():
        assert small.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 512, 4, 4)
    with torch.device("meta"):
        forced = create_model("resnet18", input_size=224, small_stem=True)
    assert forced.stem[0][0].kernel_size == (3, 3)
    # the 3×3 stem has 3·64·(9 - 49) fewer weights than the 7×7 one
    assert meta_params("resnet18", input_size=32) == REFERENCE["resnet18"] - 3 * 64 * 40


def test_zero_init_residual_makes_blocks_start_as_their_shortcut() -> None:
    model = create_model("resnet50", zero_init_residual=True).eval()
    for block in model.residual_blocks():
        assert not block.branch.conv3[1].weight.any()
    block = model.stages.layer2[0]  # a projection block
    x = torch.randn(2, 256, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.relu(block.shortcut(x)))
    default = create_model("resnet50")
    assert all(b.branch.conv3[1].weight.eq(1).all() for b in default.residual_blocks())


def test_resnext_and_wide_resnet_widths() -> None:
    with torch.device("meta"):
        x50, x101, x29, wide = [
            create_model(n)
            for n in ("resnext50_32x4d", "resnext101_32x8d", "resnext29_8x64d", "wide_resnet50_2")
        ]
    x50 = x50.stages.layer1[0].branch.conv2[0]
    assert x50.groups == 32 and x50.in_channels == 128  # 32 paths × 4 channels
    x101 = x101.stages.layer1[0].branch.conv2[0]
    assert x101.groups == 32 and x101.in_channels == 256
    first = x29.stages.layer1[0].branch
    assert first.conv2[0].groups == 8 and first.conv2[0].in_channels == 512
    assert [s[-1].branch.conv3[0].out_channels for s in x29.stages] == [256, 512, 1024]
    assert x29.stem[0][0].kernel_size == (3, 3) and x29.stem[0][0].out_channels == 64
    wide = wide.stages.layer1[0].branch
    assert wide.conv2[0].in_channels == 128 and wide.conv3[0].out_channels == 256


# --- stochastic depth (Huang et al. 2016) -----------------------------------------------------


def test_survival_schedule_is_linear_decay() -> None:
    probs = survival_probabilities(54, 0.5)
    assert probs[0] == pytest.approx(1 - 0.5 / 54)  # first block
    assert probs[26] == pytest.approx(0.75)  # l = 27 = L/2
    assert probs[-1] == pytest.approx(0.5)  # last block: p_L
    model = create_model("resnet110", survival_prob_last=0.5)
    got = [b.survival_prob for b in model.residual_blocks()]
    assert got == pytest.approx([1 - (i / 54) * 0.5 for i in range(1, 55)])
    assert all(
        isinstance(m, nn.Identity)
        for m in (b.drop_path for b in create_model("resnet110").residual_blocks())
    )
    with pytest.raises(ValueError):
        survival_probabilities(10, 0.0)


def test_stochastic_depth_adds_no_parameters() -> None:
    assert meta_params("resnet110", survival_prob_last=0.5) == 1_727_962


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            n, marks=[pytest.mark.slow] if n in ("resnet1202", "preact_resnet1001") else []
        )
        for n in FAMILY
    ],
)
def test_every_family_builder_offers_stochastic_depth(name: str) -> None:
    with torch.device("meta"):
        plain = create_model(name)
        dropped = create_model(name, survival_prob_last=0.5)
    assert n_params(dropped) == n_params(plain)
    probs = [b.survival_prob for b in dropped.residual_blocks()]
    assert probs[-1] == pytest.approx(0.5) and probs == sorted(probs, reverse=True)


def test_dropped_block_equals_its_shortcut() -> None:
    model = create_model("resnet20", survival_prob_last=1e-9).train()
    block = list(model.residual_blocks())[-1]  # survives with probability 1e-9
    x = torch.randn(4, 64, 8, 8)
    torch.testing.assert_close(block(x), F.relu(block.shortcut_path(x)), rtol=0, atol=0)


def test_network_with_every_block_dropped_is_its_shortcut_chain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = create_model("resnet20", survival_prob_last=0.5).train()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        h = model.stem(x)
        for block in model.residual_blocks():
            h = F.relu(block.shortcut_path(h))
        expected = model.fc(model.pool(h).flatten(1))
        # force every Bernoulli draw to "drop"
        monkeypatch.setattr(torch.Tensor, "bernoulli_", lambda self, *a, **k: self.zero_())
        torch.testing.assert_close(model(x), expected)


def test_kept_block_in_training_is_unscaled(monkeypatch: pytest.MonkeyPatch) -> None:
    model = create_model("resnet20", survival_prob_last=0.5).train()
    block = list(model.residual_blocks())[-1]
    x = torch.randn(4, 64, 8, 8)
    monkeypatch.setattr(torch.Tensor, "bernoulli_", lambda self, *a, **k: self.fill_(1))
    with torch.no_grad():
        expected = F.relu(block.shortcut_path(x) + block.residual(x))
        torch.testing.assert_close(block(x), expected)


def test_eval_is_deterministic_and_scales_the_residual_by_p() -> None:
    model = create_model("resnet20", survival_prob_last=0.5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
        for block in (model.stages.layer2[0], list(model.residual_blocks())[-1]):
            h = torch.randn(2, block.branch.conv1[0].in_channels, 8, 8)
            p = block.survival_prob
            expected = F.relu(block.shortcut_path(h) + p * block.residual(h))
            torch.testing.assert_close(block(h), expected)
