"""Shared blocks of models/layers.py checked against their papers' formulas by hand."""

from __future__ import annotations

import pytest
import torch

from classicnets.models.layers import (
    DropPath,
    LocalResponseNorm,
    SqueezeExcite,
    StochasticDepth,
    init_weights,
    make_divisible,
)


def test_lrn_hand_computed_small_window() -> None:
    # a = [1, 2, 3] at one pixel, n = 3, alpha = 0.1, beta = 1, k = 1:
    # b0 = 1 / (1 + 0.1·(1 + 4)), b1 = 2 / (1 + 0.1·(1 + 4 + 9)), b2 = 3 / (1 + 0.1·(4 + 9))
    x = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    out = LocalResponseNorm(size=3, alpha=0.1, beta=1.0, k=1.0)(x).flatten()
    assert torch.allclose(out, torch.tensor([1 / 1.5, 2 / 2.4, 3 / 2.3]))


def test_lrn_alexnet_constants_sum_not_mean() -> None:
    # paper constants k = 2, n = 5, alpha = 1e-4, beta = 0.75; channel 3 of [1..7] sees 2..6
    x = torch.arange(1.0, 8.0).view(1, 7, 1, 1)
    out = LocalResponseNorm()(x).flatten()
    expected = 4.0 / (2.0 + 1e-4 * (4 + 9 + 16 + 25 + 36)) ** 0.75
    assert out[3].item() == pytest.approx(expected, rel=1e-6)
    # torch's own module divides alpha by n: ours must differ from it by exactly that factor
    theirs = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(x).flatten()
    assert not torch.allclose(out, theirs)
    assert torch.allclose(out, torch.nn.LocalResponseNorm(5, 5e-4, 0.75, 2.0)(x).flatten())


def test_squeeze_excite_parameters_and_gate() -> None:
    se = SqueezeExcite(64, reduction=16)
    assert sum(p.numel() for p in se.parameters()) == 64 * 4 + 4 + 4 * 64 + 64
    x = torch.randn(2, 64, 5, 5)
    s = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean((2, 3), keepdim=True)))))
    assert torch.allclose(se(x), x * s)


def test_stochastic_depth_train_and_test_rules() -> None:
    sd = StochasticDepth(0.8)
    x = torch.ones(4, 3)
    sd.eval()
    assert torch.equal(sd(x), x * 0.8)  # expectation rule at test time
    sd.train()
    torch.manual_seed(0)
    outs = torch.stack([sd(x) for _ in range(2000)])
    per_call = outs.flatten(1)
    assert ((per_call == 0).all(1) | (per_call == 1).all(1)).all()  # whole batch kept or not
    assert abs((per_call[:, 0] == 1).double().mean().item() - 0.8) < 0.03
    with pytest.raises(ValueError, match="survival_prob"):
        StochasticDepth(0.0)


def test_drop_path_is_inverted_and_identity_at_eval() -> None:
    dp = DropPath(0.25)
    x = torch.ones(10_000, 2)
    out = dp(x)
    values = out.unique()
    assert len(values) == 2 and values[0] == 0 and values[1].item() == pytest.approx(1 / 0.75)
    assert abs(out.mean().item() - 1.0) < 0.03
    dp.eval()
    assert torch.equal(dp(x), x)


def test_make_divisible_rule() -> None:
    assert make_divisible(32 * 0.75) == 24
    assert make_divisible(10) == 16  # 8 would lose more than 10 %
    assert make_divisible(3, min_value=8) == 8


def test_init_weights_works_on_meta() -> None:
    with torch.device("meta"):
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                  torch.nn.Linear(4, 2))
    init_weights(net)
    real = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                               torch.nn.Linear(4, 2))
    init_weights(real, linear_std=0.01, truncate_linear=True)
    assert real[2].weight.abs().max() <= 0.02 and torch.equal(real[0].bias, torch.zeros(4))
