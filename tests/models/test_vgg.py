"""VGG configurations A–E (Table 1) and the dense evaluation of §3.2."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from classicnets.models import create_model
from classicnets.models.layers import LocalResponseNorm
from classicnets.models.vgg import VGG, VGGDense

COUNTS = {
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840,
    "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
    "vgg11_lrn": 132_863_336,
    "vgg16_c": 133_638_952,
}


def _meta(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("name", "expected"), COUNTS.items())
def test_parameter_counts(name: str, expected: int) -> None:
    assert _params(_meta(name)) == expected
    assert _params(_meta(name, dense=True)) == expected  # dense evaluation reshapes only


def test_other_class_counts() -> None:
    # the reference's example: VGG-16 with 10 classes = 138,357,544 − 4097·990
    assert _params(_meta("vgg16", num_classes=10)) == 134_301_514


@pytest.mark.parametrize(
    ("name", "depth"),
    [("vgg11", 11), ("vgg13", 13), ("vgg16_c", 16), ("vgg16", 16), ("vgg19", 19)],
)
def test_depth_counts_weight_layers(name: str, depth: int) -> None:
    model = _meta(name)
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(layers) == depth
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert all(c.stride == (1, 1) and c.padding == (c.kernel_size[0] // 2,) * 2 for c in convs)


def test_configuration_details() -> None:
    c = _meta("vgg16_c")
    ones = [
        n
        for n, m in c.features.named_children()
        if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
    ]
    assert ones == ["conv3_3", "conv4_3", "conv5_3"]
    lrn = _meta("vgg11_lrn").features
    names = list(lrn._modules)
    assert isinstance(lrn.norm1, LocalResponseNorm)
    assert names[:4] == ["conv1_1", "relu1_1", "norm1", "pool1"]
    bn = _meta("vgg16_bn").features
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn) == 13
    assert bn.conv1_1.bias is not None  # torchvision's _bn models keep the conv biases
    pools = [m for m in _meta("vgg19").features if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 5 and all((p.kernel_size, p.stride) == (2, 2) for p in pools)


def test_small_inputs_size_the_classifier_from_the_final_map() -> None:
    assert _meta("vgg16", input_size=32).classifier.fc6.in_features == 512
    assert _meta("vgg16", input_size=28, in_channels=1).classifier.fc6.in_features == 512
    assert _meta("vgg16", input_size=64).classifier.fc6.in_features == 512 * 2 * 2
    assert _meta("vgg16").classifier.fc6.in_features == 512 * 7 * 7


@pytest.fixture(scope="module")
def small_vgg() -> VGG:
    """Configuration A sized for 64 px (2×2 final map, FC6 = 2×2 conv when dense)."""
    torch.manual_seed(0)
    return create_model("vgg11", num_classes=5, input_size=64, init="kaiming").eval()


def test_dense_form_is_fully_convolutional(small_vgg: VGG) -> None:
    dense = small_vgg.to_dense()
    assert isinstance(dense, VGGDense) and not dense.training
    assert not any(isinstance(m, nn.Linear) for m in dense.modules())
    assert dense.classifier.fc6.kernel_size == (2, 2)
    assert dense.classifier.fc7.kernel_size == dense.classifier.fc8.kernel_size == (1, 1)
    # a copy: the dense net does not share weights with the original
    assert dense.features.conv1_1.weight.data_ptr() != small_vgg.features.conv1_1.weight.data_ptr()


def test_dense_evaluation_equals_the_network_at_the_training_size(small_vgg: VGG) -> None:
    dense = small_vgg.to_dense()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(dense(x), small_vgg(x), rtol=1e-4, atol=1e-5)
        assert dense.score_map(x).shape == (1, 5, 1, 1)


def test_dense_evaluation_averages_the_score_map_at_larger_sizes(small_vgg: VGG) -> None:
    dense = small_vgg.to_dense()
    x = torch.randn(1, 3, 96, 96)  # 3×3 final map → 2×2 class score map
    with torch.no_grad():
        scores = dense(x)
        score_map = dense.score_map(x)
    assert scores.shape == (1, 5)
    assert score_map.shape == (1, 5, 2, 2)
    assert torch.allclose(scores, score_map.mean((2, 3)))
    assert not torch.allclose(score_map[..., 0, 0], score_map[..., 1, 1])  # a real map


def test_dense_builder_option() -> None:
    model = _meta("vgg11", num_classes=3, input_size=32, dense=True)
    assert isinstance(model, VGGDense) and model.classifier.fc6.kernel_size == (1, 1)
    assert model(torch.empty(1, 3, 48, 48, device="meta")).shape == (1, 3)


@pytest.mark.slow
def test_dense_evaluation_at_224_and_256() -> None:
    """The paper's case: FC6 becomes a 7×7 conv; 224 px identical, 256 px a 2×2 map."""
    model = create_model("vgg11", num_classes=4, init="kaiming").eval()
    dense = model.to_dense()
    assert dense.classifier.fc6.kernel_size == (7, 7)
    with torch.no_grad():
        x = torch.randn(1, 3, 224, 224)
        assert torch.allclose(dense(x), model(x), rtol=1e-4, atol=1e-5)
        big = torch.randn(1, 3, 256, 256)
        score_map = dense.score_map(big)
        assert score_map.shape == (1, 4, 2, 2)
        assert torch.allclose(dense(big), score_map.mean((2, 3)))
