"""Inception-v3 (Szegedy et al., 2016): counts, factorised modules, aux head, low-res stem."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from classicnets.models import ClassifierOutput, InputSizeError, create_model
from classicnets.models.inception_v3 import InceptionB, InceptionC


def _meta(**kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return create_model("inception_v3", **kwargs)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, 23_834_568),
        ({"aux_logits": True}, 27_161_264),
        ({"num_classes": 10}, 23_834_568 - 2049 * 990),
    ],
)
def test_parameter_count(kwargs: dict[str, object], expected: int) -> None:
    assert _params(_meta(**kwargs)) == expected


def test_factorised_convolutions() -> None:
    model = _meta()
    kernels = {m.kernel_size for m in model.modules() if isinstance(m, nn.Conv2d)}
    assert (7, 7) not in kernels and {(1, 7), (7, 1), (1, 3), (3, 1)} <= kernels
    for block in model.mixed6:  # 17×17: n×n factorised into 1×n and n×1 (Figure 6)
        assert isinstance(block, InceptionB)
        assert {m.kernel_size for m in block.modules() if isinstance(m, nn.Conv2d)} == {
            (1, 1),
            (1, 7),
            (7, 1),
        }
    assert all(isinstance(b, InceptionC) for b in model.mixed7)
    # no conv biases: BN after every conv, with TensorFlow's epsilon
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_grid_sizes_at_299() -> None:
    model = _meta()
    sizes: dict[str, tuple[int, int]] = {}
    for name in ("stem", "mixed5", "mixed6", "mixed7"):
        getattr(model, name).register_forward_hook(
            lambda m, i, o, n=name: sizes.update({n: (o.shape[1], o.shape[-1])})
        )
    assert model(torch.empty(1, 3, 299, 299, device="meta")).shape == (1, 1000)
    assert sizes == {
        "stem": (192, 35),
        "mixed5": (288, 35),
        "mixed6": (768, 17),
        "mixed7": (2048, 8),
    }


def test_aux_head_in_training_mode_only() -> None:
    model = create_model("inception_v3", num_classes=6, input_size=32, aux_logits=True)
    x = torch.randn(2, 3, 32, 32)
    out = model.train()(x)
    assert isinstance(out, ClassifierOutput)
    assert out.logits.shape == (2, 6) and len(out.aux_logits) == 1
    assert out.aux_logits[0].shape == (2, 6)
    with torch.no_grad():
        out = model.eval()(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 6)
    # the paper's head at 299 px: 5×5/3 pool → 1×1 128 → 5×5 768 (unpadded) → FC
    head = _meta(aux_logits=True).aux
    assert (head.pool.kernel_size, head.pool.stride) == (5, 3)
    assert head.conv1[0].kernel_size == (5, 5) and head.conv1[0].padding == (0, 0)
    assert head.fc.in_features == 768


def test_low_resolution_stem() -> None:
    small = _meta(input_size=32)
    assert small.stem[0][0].stride == (1, 1)
    assert sum(isinstance(m, nn.MaxPool2d) for m in small.stem) == 1
    assert _params(small) == _params(_meta())
    sizes: list[int] = []
    small.mixed5.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    small(torch.empty(1, 3, 32, 32, device="meta"))
    assert sizes == [12]
    with pytest.raises(InputSizeError, match="smallest input size it accepts is 21"):
        create_model("inception_v3", input_size=20)
