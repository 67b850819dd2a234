"""SqueezeNet: exact parameter counts, Fire modules, bypass options, classifier and the
small-input stem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from classicnets.models import InputSizeError, create_model
from classicnets.models.squeezenet import Fire

REFERENCE = {"squeezenet1_0": 1_248_424, "squeezenet1_1": 1_235_496}
# Fire2..Fire9 input widths (the outputs of conv1 / the previous Fire module), Table 1
FIRE_INPUTS = {
    "squeezenet1_0": [96, 128, 128, 256, 256, 384, 384, 512],
    "squeezenet1_1": [64, 128, 128, 256, 256, 384, 384, 512],
}
FIRE_OUTPUTS = [128, 128, 256, 256, 384, 384, 512, 512]


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _fires(model: nn.Module) -> list[Fire]:
    return [m for m in model.modules() if isinstance(m, Fire)]


@pytest.mark.parametrize("name", list(REFERENCE))
def test_parameter_count_matches_reference(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name)
    assert _count(model) == REFERENCE[name]


@pytest.mark.parametrize("name", list(REFERENCE))
def test_fire_modules_follow_table_1(name: str) -> None:
    fires = _fires(create_model(name))
    assert [f.squeeze[0].in_channels for f in fires] == FIRE_INPUTS[name]
    assert [f.out_channels for f in fires] == FIRE_OUTPUTS
    for fire in fires:
        s = fire.squeeze[0].out_channels
        e1, e3 = fire.expand1x1[0], fire.expand3x3[0]
        assert fire.squeeze[0].kernel_size == (1, 1)
        assert e1.kernel_size == (1, 1) and e3.kernel_size == (3, 3)
        assert e1.out_channels == e3.out_channels == 4 * s  # squeeze ratio 0.125, pct3x3 0.5


def test_fire_concatenates_the_expand_branches() -> None:
    torch.manual_seed(0)
    fire = Fire(8, 2, 3, 5)
    x = torch.randn(2, 8, 6, 6)
    s = fire.squeeze(x)
    out = fire(x)
    assert out.shape == (2, 8, 6, 6)
    torch.testing.assert_close(out[:, :3], fire.expand1x1(s))
    torch.testing.assert_close(out[:, 3:], fire.expand3x3(s))


@pytest.mark.parametrize("name", list(REFERENCE))
def test_simple_bypass_adds_no_parameters_and_changes_the_output(name: str) -> None:
    torch.manual_seed(0)
    plain = create_model(name, num_classes=10, input_size=32).eval()
    bypass = create_model(name, num_classes=10, input_size=32, bypass="simple").eval()
    assert _count(bypass) == _count(plain)
    bypass.load_state_dict(plain.state_dict())  # same weights, same parameter names
    shortcuts = [i for i, f in enumerate(_fires(bypass), start=2) if f.shortcut is not None]
    assert shortcuts == [3, 5, 7, 9]
    assert all(isinstance(f.shortcut, nn.Identity) for f in _fires(bypass) if f.shortcut)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(plain(x), bypass(x))


def test_simple_bypass_is_the_identity_sum() -> None:
    torch.manual_seed(0)
    fire, bypassed = Fire(16, 4, 8, 8), Fire(16, 4, 8, 8, bypass="simple")
    bypassed.load_state_dict(fire.state_dict())
    x = torch.randn(1, 16, 5, 5)
    torch.testing.assert_close(bypassed(x), fire(x) + x)
    with pytest.raises(ValueError, match="equal widths"):
        Fire(16, 4, 16, 16, bypass="simple")


@pytest.mark.parametrize("name", list(REFERENCE))
def test_complex_bypass_adds_1x1_convs_around_the_even_fire_modules(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name, bypass="complex")
    even = list(zip(FIRE_INPUTS[name], FIRE_OUTPUTS))[0::2]  # Fire 2, 4, 6, 8
    extra = sum(c_in * c_out + c_out for c_in, c_out in even)
    assert _count(model) == REFERENCE[name] + extra
    convs = [f.shortcut for f in _fires(model) if isinstance(f.shortcut, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(1, 1)] * 4


def test_unknown_bypass_is_refused() -> None:
    with pytest.raises(ValueError, match="bypass"):
        create_model("squeezenet1_0", bypass="dense")


def test_classifier_is_a_conv_with_global_average_pooling() -> None:
    model = create_model("squeezenet1_0", num_classes=10)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    dropout, conv = model.classifier[0], model.classifier[1]
    assert isinstance(dropout, nn.Dropout) and dropout.p == 0.5
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.out_channels == 10
    assert any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.classifier)


@pytest.mark.parametrize(("name", "kernel"), [("squeezenet1_0", 7), ("squeezenet1_1", 3)])
def test_small_input_stem(name: str, kernel: int) -> None:
    big = create_model(name)
    conv1 = big.features[0][0]
    assert conv1.kernel_size == (kernel, kernel) and conv1.stride == (2, 2)
    assert isinstance(big.features[1], nn.MaxPool2d)
    small = create_model(name, input_size=32)
    conv1_small = small.features[0][0]
    assert conv1_small.kernel_size == (3, 3) and conv1_small.stride == (1, 1)
    assert conv1_small.out_channels == conv1.out_channels
    assert isinstance(small.features[1], Fire)  # the first max-pool is gone
    pools = sum(isinstance(m, nn.MaxPool2d) for m in small.features)
    assert pools == 2
    assert _count(big) - _count(small) == (kernel * kernel - 9) * 3 * conv1.out_channels
    # 32 px: two pools → 8×8 maps reach conv10
    assert small.features(torch.randn(1, 3, 32, 32)).shape[-1] == 8
    assert create_model(name, input_size=128).features[0][0].stride == (2, 2)
    assert create_model(name, input_size=224, small_stem=True).features[0][0].stride == (1, 1)


def test_too_small_inputs_are_refused_at_build_time() -> None:
    with pytest.raises(InputSizeError, match="smallest input size it accepts is 4"):
        create_model("squeezenet1_1", input_size=3)
    with pytest.raises(InputSizeError, match="smallest input size it accepts is 21"):
        create_model("squeezenet1_0", input_size=20, small_stem=False)
