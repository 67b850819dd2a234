"""GoogLeNet (Szegedy et al., 2015): parameter counts, paper details, auxiliary heads."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from classicnets.models import ClassifierOutput, InputSizeError, create_model
from classicnets.models.googlenet import AuxClassifier, InceptionModule
from classicnets.models.layers import LocalResponseNorm


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta(**kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return create_model("googlenet", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, 6_998_552),
        ({"aux_logits": True}, 13_378_280),
        # params(K) = params(1000) − (1024 + 1)·(1000 − K)
        ({"num_classes": 10}, 6_998_552 - 1025 * 990),
    ],
)
def test_parameter_count(kwargs: dict[str, object], expected: int) -> None:
    assert _params(_meta(**kwargs)) == expected


def test_paper_inception_v1_details() -> None:
    model = _meta()
    modules = [m for m in model.modules() if isinstance(m, InceptionModule)]
    assert len(modules) == 9  # 3a, 3b, 4a–4e, 5a, 5b
    # a true 5×5 branch in every module (not the two 3×3 of later versions)
    assert all(m.branch5[1][0].kernel_size == (5, 5) for m in modules)
    assert [m.out_channels for m in modules] == [256, 480, 512, 512, 512, 528, 832, 832, 1024]
    # no batch norm, biases on every conv, LRN twice in the stem (Figure 3)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 57 and all(c.bias is not None for c in convs)
    assert sum(isinstance(m, LocalResponseNorm) for m in model.stem) == 2
    assert model.fc.in_features == 1024


def test_aux_heads_follow_the_paper() -> None:
    model = _meta(aux_logits=True)
    for head, in_ch in ((model.aux1, 512), (model.aux2, 528)):  # on 4a and 4d
        assert isinstance(head, AuxClassifier)
        assert head.conv[0].in_channels == in_ch and head.conv[0].out_channels == 128
        assert (head.pool.kernel_size, head.pool.stride) == (5, 3)
        assert head.fc1.in_features == 4 * 4 * 128 and head.fc1.out_features == 1024
        assert head.dropout.p == 0.7


def test_aux_logits_in_training_mode_only() -> None:
    model = create_model("googlenet", num_classes=5, input_size=64, aux_logits=True)
    x = torch.randn(3, 3, 64, 64)
    model.train()
    out = model(x)
    assert isinstance(out, ClassifierOutput)
    assert out.logits.shape == (3, 5)
    assert len(out.aux_logits) == 2
    assert all(a.shape == (3, 5) for a in out.aux_logits)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and not isinstance(out, ClassifierOutput)
    assert out.shape == (3, 5)


def test_without_aux_heads_training_output_is_a_tensor() -> None:
    model = create_model("googlenet", num_classes=4, input_size=32).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4)


def _stem_pools(model: nn.Module) -> int:
    return sum(isinstance(m, nn.MaxPool2d) for m in model.stem)


def test_low_resolution_stem() -> None:
    small, big = _meta(input_size=32), _meta()
    assert small.stem[0][0].stride == (1, 1) and big.stem[0][0].stride == (2, 2)
    assert [_stem_pools(small), _stem_pools(big)] == [1, 2]
    assert _params(small) == _params(big)  # only strides change
    # 32 px reaches inception (3a) at 16×16 (224 px: 28×28)
    seen: dict[str, int] = {}
    small.inception3a.register_forward_hook(lambda m, i, o: seen.update(s=o.shape[-1]))
    small(torch.empty(1, 3, 32, 32, device="meta"))
    assert seen["s"] == 16


def test_refuses_inputs_that_cannot_work() -> None:
    with pytest.raises(InputSizeError, match="smallest input size it accepts is 8"):
        create_model("googlenet", input_size=7)
    with pytest.raises(InputSizeError, match="smallest input size it accepts is 20"):
        create_model("googlenet", input_size=19, aux_logits=True)
