"""Network in Network: mlpconv layers, global average pooling instead of FC layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from classicnets.models import InputSizeError, create_model
from classicnets.models.nin import MLPConv


def _meta(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("nin", {}, 7_595_176),
        ("nin_cifar", {}, 966_986),
        # the class count only changes the last 1×1 conv: (1024 + 1)·K or (192 + 1)·K
        ("nin", {"num_classes": 10}, 7_595_176 - 1025 * 990),
        ("nin_cifar", {"num_classes": 100}, 966_986 + 193 * 90),
    ],
)
def test_parameter_counts(name: str, kwargs: dict, expected: int) -> None:
    assert sum(p.numel() for p in _meta(name, **kwargs).parameters()) == expected


def _mlpconv_table(model: nn.Module) -> list[tuple[int, tuple[int, ...]]]:
    table = []
    for block in model.features:
        if isinstance(block, MLPConv):
            convs = [m for m in block if isinstance(m, nn.Conv2d)]
            assert [c.kernel_size for c in convs[1:]] == [(1, 1), (1, 1)]  # the shared MLP
            table.append((convs[0].kernel_size[0], tuple(c.out_channels for c in convs)))
    return table


def test_imagenet_nin_layer_table() -> None:
    model = _meta("nin")
    assert _mlpconv_table(model) == [
        (11, (96, 96, 96)),
        (5, (256, 256, 256)),
        (3, (384, 384, 384)),
        (3, (1024, 1024, 1000)),
    ]
    assert model.features.mlpconv1.conv.stride == (4, 4)
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3 and all(p.ceil_mode for p in pools)
    drops = [n for n, m in model.features.named_children() if isinstance(m, nn.Dropout)]
    assert drops == ["drop3"]  # the released model drops out before the last mlpconv only


def test_cifar_nin_layer_table() -> None:
    model = _meta("nin_cifar")
    assert _mlpconv_table(model) == [(5, (192, 160, 96)), (5, (192, 192, 192)), (3, (192, 192, 10))]
    kinds = [type(m).__name__ for m in model.features if not isinstance(m, MLPConv)]
    assert kinds == ["MaxPool2d", "Dropout", "AvgPool2d", "Dropout"]


@pytest.mark.parametrize("name", ["nin", "nin_cifar"])
def test_global_average_pooling_replaces_the_fully_connected_layers(name: str) -> None:
    model = create_model(name, num_classes=7, input_size=32).eval()
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        maps = model.features(x)
        assert maps.shape[1] == 7 and maps.shape[-1] > 1  # one confidence map per class
        assert torch.allclose(model(x), maps.mean((2, 3)))
        assert (maps >= 0).all()  # final_relu: the released models rectify the class maps
    no_relu = _meta(name, num_classes=7, input_size=32, final_relu=False)
    assert not isinstance(list(no_relu.features.children())[-1][-1], nn.ReLU)


def test_feature_map_sizes_follow_the_released_model() -> None:
    sizes = []
    model = _meta("nin").eval()
    for name, layer in model.features.named_children():
        layer.register_forward_hook(lambda m, i, o, n=name: sizes.append((n, o.shape[-1])))
    model(torch.empty(1, 3, 224, 224, device="meta"))
    assert [s for n, s in sizes if n.startswith("mlpconv")] == [54, 27, 13, 6]


def test_small_inputs() -> None:
    model = _meta("nin", input_size=32)
    assert model.features.mlpconv1.conv.stride == (1, 1)
    assert model.features.mlpconv1.conv.padding == (5, 5)
    with pytest.raises(InputSizeError, match="accepts is 39"):
        create_model("nin", input_size=32, stem="paper")
    with pytest.raises(InputSizeError, match="accepts is 4"):
        create_model("nin_cifar", input_size=3)
