"""Inception-v4 and Inception-ResNet-v1/v2 (Szegedy et al., 2017)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from classicnets.models import InputSizeError, create_model
from classicnets.models.inception_v4 import RELEASED_SCALES, ResidualInceptionBlock

NAMES = ("inception_v4", "inception_resnet_v1", "inception_resnet_v2")


def _meta(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "expected"),
    [("inception_v4", 42_679_816), ("inception_resnet_v2", 55_843_464)],
)
def test_parameter_count(name: str, expected: int) -> None:
    assert _params(_meta(name)) == expected


def test_inception_resnet_v1_parameter_count() -> None:
    # paper-derived reference (no official release): within 1 %
    assert _params(_meta("inception_resnet_v1")) == pytest.approx(22_756_328, rel=0.01)


@pytest.mark.parametrize(("name", "width"), [("inception_v4", 1536), ("inception_resnet_v2", 1536)])
def test_other_class_count(name: str, width: int) -> None:
    full = _params(_meta(name))
    assert _params(_meta(name, num_classes=10)) == full - (width + 1) * 990


def test_block_counts() -> None:
    v4 = _meta("inception_v4")
    assert (len(v4.inception_a), len(v4.inception_b), len(v4.inception_c)) == (4, 7, 3)
    r1, r2 = _meta("inception_resnet_v1"), _meta("inception_resnet_v2")
    assert (len(r1.blocks_a), len(r1.blocks_b), len(r1.blocks_c)) == (5, 10, 5)
    assert (len(r2.blocks_a), len(r2.blocks_b), len(r2.blocks_c)) == (10, 20, 10)
    # only the released v2's last block omits the ReLU after the addition
    assert [isinstance(b.act, nn.Identity) for b in r2.blocks_c] == [False] * 9 + [True]


def test_inception_v4_has_no_residual_connections_nor_shared_weights() -> None:
    v4 = _meta("inception_v4")
    assert not any(isinstance(m, ResidualInceptionBlock) for m in v4.modules())
    weights = [id(p) for p in v4.parameters()]
    assert len(weights) == len(set(weights))
    first = {id(block.branches[0][0].weight) for block in v4.inception_b}
    assert len(first) == 7
    # behaviour: with every conv zeroed and BN at zero shift a v4 block outputs zeros — there
    # is no identity path — whereas a residual block returns relu(x)
    block = create_model("inception_v4", input_size=32).inception_a[0].eval()
    for m in block.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.zeros_(m.weight)
    x = torch.randn(1, 384, 5, 5)
    with torch.no_grad():
        assert torch.count_nonzero(block(x)) == 0


def test_residual_connection_and_scaling() -> None:
    model = create_model("inception_resnet_v2", input_size=32, residual_scale=0.1).eval()
    block = model.blocks_c[-1]  # no activation after the sum: out = x + s·W(branches(x))
    x = torch.randn(2, 2080, 3, 3)
    with torch.no_grad():
        r1 = block(x) - x
        block.scale = 0.3
        r3 = block(x) - x
        assert torch.allclose(r3, 3 * r1, atol=1e-5, rtol=1e-4)
        assert r1.abs().max() > 0
        # zero the linear 1×1 expansion: the block reduces to its shortcut
        nn.init.zeros_(block.expand.weight)
        nn.init.zeros_(block.expand.bias)
        assert torch.equal(block(x), x)
        relu_block = model.blocks_a[0]
        nn.init.zeros_(relu_block.expand.weight)
        nn.init.zeros_(relu_block.expand.bias)
        y = torch.randn(2, 320, 4, 4)
        assert torch.equal(relu_block(y), torch.relu(y))
    # the expansion conv is linear with a bias and no BN (BN not on top of the summations)
    assert block.expand.bias is not None and block.expand.kernel_size == (1, 1)


@pytest.mark.parametrize("name", ["inception_resnet_v1", "inception_resnet_v2"])
def test_residual_scale_option(name: str) -> None:
    default = _meta(name)
    assert [default.blocks_a[0].scale, default.blocks_b[0].scale, default.blocks_c[0].scale] == (
        list(RELEASED_SCALES)
    )
    scaled = _meta(name, residual_scale=0.3)
    assert {m.scale for m in scaled.modules() if isinstance(m, ResidualInceptionBlock)} == {0.3}
    assert _params(scaled) == _params(default)
    with pytest.raises(ValueError, match="residual_scale"):
        create_model(name, residual_scale=0.0)


@pytest.mark.parametrize(
    ("name", "widths"),
    [
        ("inception_v4", (384, 1024, 1536)),
        ("inception_resnet_v1", (256, 896, 1792)),
        ("inception_resnet_v2", (320, 1088, 2080)),
    ],
)
def test_grid_sizes_at_299(name: str, widths: tuple[int, int, int]) -> None:
    model = _meta(name)
    stages = ("inception_a", "inception_b", "inception_c")
    if name != "inception_v4":
        stages = ("blocks_a", "blocks_b", "blocks_c")
    shapes: list[tuple[int, int]] = []
    for stage in stages:
        getattr(model, stage).register_forward_hook(
            lambda m, i, o: shapes.append((o.shape[1], o.shape[-1]))
        )
    assert model(torch.empty(1, 3, 299, 299, device="meta")).shape == (1, 1000)
    assert shapes == list(zip(widths, (35, 17, 8)))


@pytest.mark.parametrize("name", NAMES)
def test_low_resolution_stem(name: str) -> None:
    small, big = _meta(name, input_size=32), _meta(name)
    assert small.stem[0][0].stride == (1, 1) and big.stem[0][0].stride == (2, 2)
    assert _params(small) == _params(big)
    stage = small.inception_a if name == "inception_v4" else small.blocks_a
    sizes: list[int] = []
    stage.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    small(torch.empty(1, 3, 32, 32, device="meta"))
    assert sizes == [11 if name == "inception_v4" else 12]


@pytest.mark.parametrize(("name", "minimum"), [(NAMES[0], 23), (NAMES[1], 21), (NAMES[2], 21)])
def test_refuses_inputs_that_cannot_work(name: str, minimum: int) -> None:
    with pytest.raises(InputSizeError, match=f"smallest input size it accepts is {minimum}"):
        create_model(name, input_size=minimum - 1)
