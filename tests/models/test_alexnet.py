"""AlexNet (two towers), torchvision's single-tower AlexNet and ZFNet (pooling switches)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from classicnets.models import InputSizeError, create_model
from classicnets.models.layers import LocalResponseNorm


def _params(name: str, **kwargs: object) -> int:
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("alexnet", {}, 60_965_224),
        ("alexnet", {"groups": 1}, 62_378_344),
        ("alexnet_owt", {}, 61_100_840),
        ("zfnet", {}, 62_357_608),
        # params(K) = params(1000) − 4097·(1000 − K)
        ("alexnet", {"num_classes": 10}, 60_965_224 - 4097 * 990),
    ],
)
def test_parameter_counts(name: str, kwargs: dict, expected: int) -> None:
    assert _params(name, **kwargs) == expected


def _meta(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs).eval()


def _map_sizes(model: nn.Module, size: int) -> dict[str, int]:
    """Side of every conv/pool output, by a shape-only forward on the meta device."""
    sizes: dict[str, int] = {}
    for name, layer in model.features.named_children():
        if name.startswith(("conv", "pool")):
            layer.register_forward_hook(lambda m, i, o, n=name: sizes.__setitem__(n, o.shape[-1]))
    with torch.no_grad():
        model.to("meta")(
            torch.empty(1, model.features.conv1.in_channels, size, size, device="meta")
        )
    return sizes


def test_alexnet_layout_of_the_paper() -> None:
    model = _meta("alexnet")
    f = model.features
    sizes = _map_sizes(model, 227)
    assert [sizes[k] for k in ("conv1", "pool1", "pool2", "conv5", "pool5")] == [55, 27, 13, 13, 6]
    assert [f.conv2.groups, f.conv3.groups, f.conv4.groups, f.conv5.groups] == [2, 1, 2, 2]
    assert [f.conv1.out_channels, f.conv2.out_channels, f.conv3.out_channels] == [96, 256, 384]
    # §3.3: normalisation after the ReLU of conv1 and conv2, then overlapping pooling (§3.4)
    names = list(f._modules)
    assert names[:8] == ["conv1", "relu1", "norm1", "pool1", "conv2", "relu2", "norm2", "pool2"]
    lrn = f.norm1.lrn
    assert isinstance(lrn, LocalResponseNorm)
    assert (lrn.k, lrn.size, lrn.alpha, lrn.beta) == (2.0, 5, 1e-4, 0.75)
    assert (f.pool1.kernel_size, f.pool1.stride) == (3, 2)
    drops = [m.p for m in model.classifier if isinstance(m, nn.Dropout)]
    assert drops == [0.5, 0.5]


def test_alexnet_ablation_options() -> None:
    model = _meta("alexnet", lrn=False, overlapping_pool=False)
    assert isinstance(model.features.norm1, nn.Identity)
    assert (model.features.pool1.kernel_size, model.features.pool1.stride) == (2, 2)
    assert _map_sizes(model, 227)["pool5"] == 6  # s = z = 2 keeps the 6×6 map


def _tower_halves(conv: nn.Conv2d) -> list[nn.Conv2d]:
    """Two independent one-tower convs holding the grouped conv's halves."""
    c_in, c_out = conv.in_channels // 2, conv.out_channels // 2
    halves = []
    for t in range(2):
        half = nn.Conv2d(c_in, c_out, conv.kernel_size, conv.stride, conv.padding)
        with torch.no_grad():
            half.weight.copy_(conv.weight[t * c_out : (t + 1) * c_out])
            half.bias.copy_(conv.bias[t * c_out : (t + 1) * c_out])
        halves.append(half)
    return halves


# At 67 px the network keeps the paper's stride-4 layout (and its conv weights) with a 1×1
# final map, so the numerical tests below stay cheap.
PAPER_MIN = 67


@pytest.fixture(scope="module")
def alexnet_99() -> nn.Module:
    """The paper layout at 99 px (maps 23-11-5-2), He-initialised so activations are O(1)."""
    return create_model("alexnet", num_classes=10, input_size=99, init="kaiming").eval()


def test_grouped_layers_equal_two_independent_towers(alexnet_99: nn.Module) -> None:
    model = alexnet_99
    assert model.stem == "paper"
    for name, side in (("conv2", 27), ("conv4", 13), ("conv5", 13)):
        conv = getattr(model.features, name)
        assert conv.groups == 2
        towers = _tower_halves(conv)
        assert towers[0].in_channels == conv.in_channels // 2
        x = torch.randn(2, conv.in_channels, side, side)
        halves = x.chunk(2, dim=1)
        expected = torch.cat([towers[t](halves[t]) for t in range(2)], dim=1)
        with torch.no_grad():
            assert torch.allclose(conv(x), expected, atol=1e-5)


def test_two_tower_alexnet_equals_the_papers_two_gpu_computation(alexnet_99: nn.Module) -> None:
    """Run the paper's Fig. 2 explicitly, one GPU per tower, with weights from the model."""
    f = alexnet_99.features
    x = torch.randn(2, 3, 99, 99)  # maps 23-11-5-2
    lrn, pool = LocalResponseNorm(), nn.MaxPool2d(3, 2)

    def conv1_half(t: int) -> nn.Conv2d:  # each GPU holds 48 of conv1's 96 kernels
        half = nn.Conv2d(3, 48, 11, 4)
        with torch.no_grad():
            half.weight.copy_(f.conv1.weight[48 * t : 48 * (t + 1)])
            half.bias.copy_(f.conv1.bias[48 * t : 48 * (t + 1)])
        return half

    def conv3_half(t: int) -> nn.Conv2d:  # conv3 reads both towers
        half = nn.Conv2d(256, 192, 3, padding=1)
        with torch.no_grad():
            half.weight.copy_(f.conv3.weight[192 * t : 192 * (t + 1)])
            half.bias.copy_(f.conv3.bias[192 * t : 192 * (t + 1)])
        return half

    c2, c4, c5 = (_tower_halves(getattr(f, n)) for n in ("conv2", "conv4", "conv5"))
    with torch.no_grad():
        p2 = []
        for t in range(2):  # LRN normalises over the maps of one GPU only
            p1 = pool(lrn(F.relu(conv1_half(t)(x))))
            p2.append(pool(lrn(F.relu(c2[t](p1)))))
        both = torch.cat(p2, dim=1)
        out = []
        for t in range(2):
            h = F.relu(conv3_half(t)(both))
            h = F.relu(c4[t](h))
            out.append(pool(F.relu(c5[t](h))))
        expected = torch.cat(out, dim=1)
        assert expected.shape == (2, 256, 2, 2) and expected.abs().max() > 1e-2
        assert torch.allclose(f(x), expected, rtol=1e-4, atol=1e-5)


def test_lrn_stays_within_a_tower() -> None:
    model = _meta("alexnet")
    x = torch.rand(1, 96, 5, 5)
    y = model.features.norm1(x)
    bumped = x.clone()
    bumped[:, 48] += 10.0  # first map of tower 2: neighbours 46, 47 belong to tower 1
    y2 = model.features.norm1(bumped)
    assert torch.equal(y2[:, :48], y[:, :48])
    assert not torch.allclose(y2[:, 49], y[:, 49])


def test_paper_init() -> None:
    model = create_model("alexnet", num_classes=10, input_size=PAPER_MIN)
    f, c = model.features, model.classifier
    for m in (f.conv2, f.conv4, f.conv5, c.fc6, c.fc7):
        assert torch.all(m.bias == 1.0)
    for m in (f.conv1, f.conv3, c.fc8):
        assert torch.all(m.bias == 0.0)
    assert f.conv3.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_small_inputs_use_a_stride_1_stem() -> None:
    model = _meta("alexnet", num_classes=10, input_size=32)
    assert model.stem == "small" and model.features.conv1.stride == (1, 1)
    sizes = _map_sizes(model, 32)
    assert [sizes[k] for k in ("conv1", "pool1", "pool2", "pool5")] == [32, 15, 7, 3]
    assert model.classifier.fc6.in_features == 256 * 3 * 3
    assert _meta("alexnet", input_size=PAPER_MIN).stem == "paper"
    with pytest.raises(InputSizeError, match="smallest input size it accepts is 67"):
        create_model("alexnet", input_size=32, stem="paper")
    with pytest.raises(InputSizeError, match="accepts is 63"):
        create_model("alexnet_owt", input_size=32, stem="paper")


def test_alexnet_owt_layout() -> None:
    model = _meta("alexnet_owt")
    f = model.features
    widths = [getattr(f, f"conv{i}").out_channels for i in range(1, 6)]
    assert widths == [64, 192, 384, 256, 256]
    assert not any(isinstance(m, nn.Module) and "LRN" in type(m).__name__ for m in f.modules())
    assert all(getattr(f, f"conv{i}").groups == 1 for i in range(1, 6))
    assert _map_sizes(model, 224)["pool5"] == 6


def test_zfnet_feature_map_sizes() -> None:
    model = _meta("zfnet")
    sizes = _map_sizes(model, 224)
    order = ("conv1", "pool1", "conv2", "pool2", "conv5", "pool5")
    assert [sizes[k] for k in order] == [110, 55, 26, 13, 13, 6]
    f = model.features
    assert (f.conv1.kernel_size, f.conv1.stride) == ((7, 7), (2, 2))
    assert (f.conv2.kernel_size, f.conv2.stride) == ((5, 5), (2, 2))
    assert [f.conv3.out_channels, f.conv4.out_channels, f.conv5.out_channels] == [384, 384, 256]


@pytest.mark.parametrize("size", [64, 32])  # the paper's stride-2 layout, the small stem
def test_zfnet_switches(size: int) -> None:
    model = create_model("zfnet", num_classes=10, input_size=size, init="kaiming").eval()
    assert model.stem == ("paper" if size == 64 else "small")
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        logits, switches = model.forward_with_switches(x)
        assert torch.allclose(logits, model(x))
        assert list(switches) == ["pool1", "pool2", "pool5"]
        h = x
        for name, layer in model.features.named_children():
            before, h = h, layer(h)
            if name not in switches:
                continue
            indices, input_size = switches[name]
            assert indices.shape == h.shape and input_size == before.shape[-2:]
            # the switches point at the maxima: reading them back gives the pooled map
            assert torch.equal(before.flatten(2).gather(2, indices.flatten(2)), h.flatten(2))
            # and a deconvnet unpooling puts each maximum back where it came from
            unpooled = F.max_unpool2d(h, indices, 3, 2, output_size=input_size)
            mask = unpooled != 0
            assert mask.any() and torch.equal(unpooled[mask], before[mask])


def test_zfnet_small_inputs() -> None:
    model = _meta("zfnet", num_classes=10, input_size=32)
    assert model.stem == "small"
    assert model.features.conv1.stride == (1, 1) and model.features.conv2.stride == (1, 1)
    assert model.classifier.fc6.in_features == 256 * 4 * 4
    with pytest.raises(InputSizeError, match="accepts is 47"):
        create_model("zfnet", input_size=32, stem="paper")
