"""Xception (Chollet, 2017): Table 3 parameter count, separable convs, residual flows."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from classicnets.models import InputSizeError, create_model
from classicnets.models.xception import SeparableConv2d, XceptionBlock


def _meta(**kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return create_model("xception", **kwargs)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_matches_table_3() -> None:
    assert _params(_meta()) == 22_855_952
    assert _params(_meta(num_classes=10)) == 22_855_952 - 2049 * 990
    # the intermediate-activation ablation adds no parameters
    assert _params(_meta(intermediate_act="elu")) == 22_855_952


def test_depthwise_separable_convolutions() -> None:
    model = _meta()
    seps = [m for m in model.modules() if isinstance(m, SeparableConv2d)]
    for sep in seps:
        depthwise, pointwise = sep[0], sep[-1]
        assert depthwise.groups == depthwise.in_channels == depthwise.out_channels
        assert depthwise.kernel_size == (3, 3) and pointwise.kernel_size == (1, 1)
        assert len(sep) == 2  # no non-linearity between them by default
    # "36 convolutional layers forming the feature extraction base" (§3): 2 convs + 34 separable
    assert len(model.stem) + len(seps) == 36
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert len(model.middle_flow) == 8


def test_residual_modules() -> None:
    model = _meta()
    blocks = [m for m in model.modules() if isinstance(m, XceptionBlock)]
    assert len(blocks) == 12  # 3 entry + 8 middle + 1 exit
    assert all(b.shortcut is not None for b in blocks)
    assert all(isinstance(b.shortcut, nn.Identity) for b in model.middle_flow)
    # behaviour: with the residual branch's last BN zeroed a middle block is the identity
    block = create_model("xception", input_size=32).middle_flow[0].eval()
    nn.init.zeros_(block.body[-1].weight)
    nn.init.zeros_(block.body[-1].bias)
    x = torch.randn(2, 728, 4, 4)
    with torch.no_grad():
        assert torch.equal(block(x), x)
    plain = _meta(residual=False)
    assert all(b.shortcut is None for b in plain.modules() if isinstance(b, XceptionBlock))
    assert _params(plain) < _params(model)


def test_intermediate_activation_option() -> None:
    model = _meta(intermediate_act="relu")
    seps = [m for m in model.modules() if isinstance(m, SeparableConv2d)]
    assert all(isinstance(s[1], nn.ReLU) for s in seps)
    with pytest.raises(ValueError, match="intermediate_act"):
        create_model("xception", intermediate_act="tanh")


def test_grid_sizes_at_299() -> None:
    model = _meta()
    shapes: list[tuple[int, int]] = []
    for stage in (model.entry_flow, model.middle_flow, model.exit_flow):
        stage.register_forward_hook(lambda m, i, o: shapes.append((o.shape[1], o.shape[-1])))
    assert model(torch.empty(1, 3, 299, 299, device="meta")).shape == (1, 1000)
    assert shapes == [(728, 19), (728, 19), (2048, 10)]


def test_low_resolution_stem() -> None:
    small = _meta(input_size=32)
    assert small.stem[0][0].stride == (1, 1) and _meta().stem[0][0].stride == (2, 2)
    sizes: list[int] = []
    small.middle_flow.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    small(torch.empty(1, 3, 32, 32, device="meta"))
    assert sizes == [4]
    with pytest.raises(InputSizeError, match="smallest input size it accepts is 5"):
        create_model("xception", input_size=4)
