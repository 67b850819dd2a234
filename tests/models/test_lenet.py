"""LeNet-5: the modern and 1998 forms, C3's connection table, scaled tanh, RBF output."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from classicnets.models import create_model
from classicnets.models.lenet import C3_TABLE, DIGIT_BITMAPS, PartialConv2d, ScaledTanh


def _params(**kwargs: object) -> int:
    with torch.device("meta"):
        model = create_model("lenet5", **kwargs)
    return sum(p.numel() for p in model.parameters())


def test_modern_variant_has_61706_parameters() -> None:
    assert _params() == 61_706


def test_1998_variant_has_60000_trainable_parameters_plus_fixed_rbf() -> None:
    assert _params(variant="1998") == 60_000
    assert _params(variant=1998) == 60_000  # as YAML reads `variant: 1998`
    model = create_model("lenet5", variant="1998")
    centers = model.output.centers
    assert centers.numel() == 840 and not centers.requires_grad
    assert all(p is not centers for p in model.parameters())
    # 1998 layer by layer: C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164
    f = model.features
    counts = [sum(p.numel() for p in getattr(f, n).parameters()) for n in ("c1", "s2", "c3")]
    counts += [sum(p.numel() for p in getattr(f, n).parameters()) for n in ("s4", "c5", "f6")]
    assert counts == [156, 12, 1_516, 32, 48_120, 10_164]


def test_single_options_override_the_variant() -> None:
    assert _params(variant="1998", output="linear") == 60_850  # F6→10 linear: 850
    assert _params(c3_connections="partial") == 61_706 - 900  # 36 of 96 kernels gone
    with pytest.raises(ValueError, match="subsampling"):
        create_model("lenet5", subsampling="median")


def test_c3_table_has_the_papers_60_kernels() -> None:
    assert sum(len(inputs) for inputs in C3_TABLE) == 60
    conv = PartialConv2d(6, C3_TABLE, 5)
    assert conv.kernels.shape == (60, 5, 5)
    table = conv.connections
    assert table.shape == (16, 6) and int(table.sum()) == 60
    # Table I: maps 0-5 see 3 contiguous S2 maps, 6-11 four contiguous, 12-14 four
    # non-contiguous, 15 all six; and S2 map 0 feeds C3 maps 0, 4, 5, 6, 9, 10, 11, 12, 14, 15
    assert table.sum(1).tolist() == [3] * 6 + [4] * 9 + [6]
    assert table[:, 0].nonzero().flatten().tolist() == [0, 4, 5, 6, 9, 10, 11, 12, 14, 15]


def test_unconnected_s2_maps_do_not_reach_a_c3_map() -> None:
    conv = PartialConv2d(6, C3_TABLE, 5)
    torch.nn.init.normal_(conv.kernels)
    torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 6, 14, 14)
    base = conv(x)
    bumped = x.clone()
    bumped[:, 3] += 5.0  # S2 map 3 feeds C3 maps 1, 2, 3 but not 0
    out = conv(bumped)
    assert torch.equal(out[:, 0], base[:, 0])
    assert not torch.allclose(out[:, 1], base[:, 1])
    # the dense weight has exactly the connected kernels non-zero
    nonzero = conv.weight().abs().sum((2, 3)) > 0
    assert torch.equal(nonzero, conv.connections)


def test_scaled_tanh_is_lecuns_squashing_function() -> None:
    f = ScaledTanh()
    a = torch.tensor([-1.0, 0.0, 0.5, 1.0, 10.0])
    expected = torch.tensor([1.7159 * math.tanh(2 * v / 3) for v in a.tolist()])
    assert torch.allclose(f(a), expected)
    assert f(torch.tensor(1.0)).item() == pytest.approx(1.0, abs=1e-4)  # f(±1) = ±1
    assert f(torch.tensor(-1.0)).item() == pytest.approx(-1.0, abs=1e-4)
    assert f(torch.tensor(100.0)).item() == pytest.approx(1.7159)


def test_trainable_subsampling_is_coefficient_times_window_sum_plus_bias() -> None:
    model = create_model("lenet5", variant="1998")
    s2 = model.features.s2
    assert s2.weight.shape == (6,) and s2.bias.shape == (6,)
    x = torch.randn(1, 6, 4, 4)
    expected = x.unfold(2, 2, 2).unfold(3, 2, 2).sum((-1, -2)) * s2.weight[:, None, None]
    assert torch.allclose(s2(x), expected + s2.bias[:, None, None], atol=1e-6)


def test_rbf_scores_are_negative_squared_distances_to_digit_bitmaps() -> None:
    model = create_model("lenet5", variant="1998").eval()
    bitmap = torch.tensor([1.0 if c == "#" else -1.0 for c in DIGIT_BITMAPS[7].replace("|", "")])
    assert torch.equal(model.output.centers[7], bitmap)
    f6 = torch.randn(3, 84)
    expected = -(torch.cdist(f6, model.output.centers) ** 2)
    assert torch.allclose(model.output(f6), expected, rtol=1e-4, atol=1e-3)
    # an F6 state equal to a prototype scores 0, the maximum
    scores = model.output(model.output.centers[[2]])
    assert scores[0, 2] == 0 and scores.argmax() == 2
    # cross-entropy on these scores trains the layers below (the prototypes stay fixed)
    x = torch.randn(4, 1, 32, 32)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    assert model.features.f6.weight.grad is not None
    assert model.output.centers.grad is None


def test_other_class_counts_get_fixed_random_codes() -> None:
    a = create_model("lenet5", variant="1998", num_classes=26).output.centers
    b = create_model("lenet5", variant="1998", num_classes=26).output.centers
    assert a.shape == (26, 84) and torch.equal(a, b)
    assert set(a.unique().tolist()) == {-1.0, 1.0}


def test_28px_inputs_are_centred_in_a_32px_field() -> None:
    small = create_model("lenet5", input_size=28).eval()
    full = create_model("lenet5", input_size=32).eval()
    full.load_state_dict(small.state_dict())
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(small(x), full(F.pad(x, (2, 2, 2, 2))))


def test_larger_inputs_widen_c5_over_the_whole_s4_map() -> None:
    model = create_model("lenet5", input_size=64, in_channels=3, num_classes=4)
    assert model.features.c5.kernel_size == (13, 13)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 4)


def test_forward_of_the_1998_variant() -> None:
    # the default (modern) variant's canonical forward is test_zoo.py's
    model = create_model("lenet5", variant="1998")
    out = model(torch.randn(3, 1, 32, 32))
    assert out.shape == (3, 10) and torch.isfinite(out).all()
