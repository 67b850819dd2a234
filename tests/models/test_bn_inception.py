"""BN-Inception (Ioffe & Szegedy, 2015): parameter count and the Figure 5 layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from classicnets.models import InputSizeError, create_model
from classicnets.models.bn_inception import BNInceptionModule


def _meta(**kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return create_model("bn_inception", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [({}, 11_295_240), ({"num_classes": 10}, 11_295_240 - 1025 * 990)],
)
def test_parameter_count(kwargs: dict[str, object], expected: int) -> None:
    assert sum(p.numel() for p in _meta(**kwargs).parameters()) == expected


def test_batch_norm_everywhere_and_no_5x5() -> None:
    model = _meta()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(bns) > 0
    assert all(c.bias is not None for c in convs)  # the released model keeps conv biases
    # 5×5 convolutions are replaced by two 3×3 (§4.2 / Figure 5)
    assert max(c.kernel_size[0] for c in convs[1:]) == 3
    assert model.dropout.p == 0.0  # "Remove Dropout" (§4.2.1)


def test_stride_two_modules_reduce_the_grid() -> None:
    model = _meta()
    blocks = dict(model.blocks.named_children())
    names = ("3a", "3b", "3c", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
    assert list(blocks) == [f"inception{n}" for n in names]
    sizes: dict[str, int] = {}
    for name, block in blocks.items():
        assert isinstance(block, BNInceptionModule)
        block.register_forward_hook(lambda m, i, o, n=name: sizes.update({n: o.shape[-1]}))
    out = model(torch.empty(1, 3, 224, 224, device="meta"))
    assert out.shape == (1, 1000)
    assert sizes["inception3b"] == 28 and sizes["inception3c"] == 14
    assert sizes["inception4d"] == 14 and sizes["inception4e"] == 7 and sizes["inception5b"] == 7
    for name in ("inception3c", "inception4e"):  # no 1×1 branch, pool passes through
        assert blocks[name].branch1 is None
        assert isinstance(blocks[name].branch_pool[0], nn.MaxPool2d)
        assert isinstance(blocks[name].branch_pool[1], nn.Identity)
    assert isinstance(blocks["inception5b"].branch_pool[0], nn.MaxPool2d)
    assert isinstance(blocks["inception5a"].branch_pool[0], nn.AvgPool2d)
    assert blocks["inception5b"].out_channels == model.fc.in_features == 1024


def test_low_resolution_stem() -> None:
    small = _meta(input_size=32)
    assert small.stem[0][0].stride == (1, 1)
    assert sum(isinstance(m, nn.MaxPool2d) for m in small.stem) == 1
    sizes: list[int] = []
    small.blocks.inception3a.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    small(torch.empty(1, 3, 32, 32, device="meta"))
    assert sizes == [16]
    with pytest.raises(InputSizeError):
        create_model("bn_inception", input_size=1)
