"""DenseNet-BC: exact parameter counts, dense connectivity arithmetic, compression, bottleneck,
the small-input stem and the memory-efficient (checkpointed) mode."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from classicnets.models import InputSizeError, create_model
from classicnets.models import densenet as dn

REFERENCE = {
    "densenet121": 7_978_856,
    "densenet169": 14_149_480,
    "densenet201": 20_013_928,
    "densenet161": 28_681_000,
    "densenet_bc_100_k12": 769_162,
    "densenet_bc_250_k24": 15_324_406,
    "densenet_bc_190_k40": 25_624_430,
}
# name -> (stem width source k, layers per block); the paper's Table 1 and §3 (L = 6n + 4).
LAYOUT = {
    "densenet121": (32, (6, 12, 24, 16)),
    "densenet169": (32, (6, 12, 32, 32)),
    "densenet201": (32, (6, 12, 48, 32)),
    "densenet161": (48, (6, 12, 36, 24)),
    "densenet_bc_100_k12": (12, (16, 16, 16)),
    "densenet_bc_250_k24": (24, (41, 41, 41)),
    "densenet_bc_190_k40": (40, (31, 31, 31)),
}


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta(name: str, **kwargs: object) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_parameter_count_matches_reference(name: str) -> None:
    assert _count(_meta(name)) == REFERENCE[name]


def test_other_class_count_follows_the_classifier_formula() -> None:
    # params(K) = params(1000) − (F + 1)·(1000 − K), F = 1024 for DenseNet-121.
    assert _count(_meta("densenet121", num_classes=10)) == 7_978_856 - 1025 * 990


@pytest.mark.parametrize("name", list(LAYOUT))
def test_channel_arithmetic_growth_and_compression(name: str) -> None:
    k, blocks = LAYOUT[name]
    channels = 2 * k  # DenseNet-BC stem: 2k maps
    for i, n in enumerate(blocks):
        channels += n * k  # each layer adds k maps to the concatenation
        if i < len(blocks) - 1:
            channels = math.floor(0.5 * channels)  # transition with θ = 0.5
    model = _meta(name)
    assert model.classifier.in_features == channels
    layers = [m for m in model.modules() if isinstance(m, dn.DenseLayer)]
    assert len(layers) == sum(blocks)
    # bottleneck: 1×1 conv to 4k, 3×3 conv to k
    assert {layer.conv1.out_channels for layer in layers} == {4 * k}
    assert {layer.conv2.out_channels for layer in layers} == {k}


def test_published_final_widths() -> None:
    widths = {"densenet121": 1024, "densenet169": 1664, "densenet201": 1920, "densenet161": 2208}
    for name, width in widths.items():
        assert _meta(name).classifier.in_features == width


def test_cifar_depth_formula() -> None:
    # L = 3 blocks · n layers · 2 convs + stem conv + 2 transition convs + classifier.
    for name, depth in (
        ("densenet_bc_100_k12", 100),
        ("densenet_bc_250_k24", 250),
        ("densenet_bc_190_k40", 190),
    ):
        model = _meta(name)
        convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
        assert convs + 1 == depth


def test_dense_layer_sees_all_earlier_maps() -> None:
    block = dn.DenseBlock(3, in_channels=5, growth_rate=4)
    assert [layer.conv1.in_channels for layer in block] == [5, 9, 13]
    x = torch.randn(2, 5, 6, 6)
    out = block(x)
    assert out.shape == (2, 5 + 3 * 4, 6, 6)
    assert torch.equal(out[:, :5], x)  # the input itself is carried into the concatenation


def test_compression_and_bottleneck_options_change_the_network() -> None:
    base = _meta("densenet_bc_100_k12")
    no_compression = _meta("densenet_bc_100_k12", compression=1.0)
    wider_bottleneck = _meta("densenet_bc_100_k12", bn_size=8)
    assert no_compression.classifier.in_features > base.classifier.in_features
    assert _count(no_compression) > _count(base)
    assert _count(wider_bottleneck) > _count(base)
    with pytest.raises(ValueError, match="compression"):
        create_model("densenet_bc_100_k12", compression=0.0)


def test_growth_rate_argument() -> None:
    model = _meta("densenet121", growth_rate=12)
    assert model.stem[0].out_channels == 24
    assert {m.conv2.out_channels for m in model.modules() if isinstance(m, dn.DenseLayer)} == {12}


def test_stems() -> None:
    big = _meta("densenet121")
    assert big.stem[0].kernel_size == (7, 7) and big.stem[0].stride == (2, 2)
    assert any(isinstance(m, nn.MaxPool2d) for m in big.stem)
    small = _meta("densenet121", input_size=32)
    assert small.stem[0].kernel_size == (3, 3) and small.stem[0].stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in small.modules())
    # only the stem conv changes (7×7 → 3×3) and the stem BN goes
    assert _count(big) - _count(small) == (49 - 9) * 3 * 64 + 2 * 64
    assert _meta("densenet121", input_size=127).stem[0].kernel_size == (3, 3)
    assert _meta("densenet121", input_size=128).stem[0].kernel_size == (7, 7)
    forced = _meta("densenet121", input_size=224, small_stem=True)
    assert forced.stem[0].kernel_size == (3, 3)
    cifar = _meta("densenet_bc_100_k12")
    assert len(cifar.stem) == 1 and cifar.stem[0].kernel_size == (3, 3)
    assert cifar.stem[0].out_channels == 24  # 2k


def test_too_small_inputs_are_refused_at_build_time() -> None:
    with pytest.raises(InputSizeError, match="smallest input size it accepts is 8"):
        create_model("densenet121", input_size=7)
    with pytest.raises(InputSizeError, match="smallest input size it accepts is 29"):
        create_model("densenet121", input_size=28, small_stem=False)
    with pytest.raises(InputSizeError, match="smallest input size it accepts is 4"):
        create_model("densenet_bc_100_k12", input_size=3)


def test_dropout_after_each_3x3_conv() -> None:
    torch.manual_seed(0)
    model = dn.DenseNet((2, 2), growth_rate=4, stem="cifar", drop_rate=0.5, num_classes=3)
    x = torch.randn(2, 3, 8, 8)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def _pair() -> tuple[nn.Module, nn.Module]:
    """A small DenseNet-BC and its memory-efficient twin with the same weights."""
    torch.manual_seed(0)
    plain = dn.DenseNet((3, 3), growth_rate=6, stem="cifar", num_classes=5)
    efficient = dn.DenseNet(
        (3, 3), growth_rate=6, stem="cifar", num_classes=5, memory_efficient=True
    )
    efficient.load_state_dict(plain.state_dict())
    return plain, efficient


def test_memory_efficient_gradients_equal_normal_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_checkpoint = dn.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(dn, "checkpoint", counting_checkpoint)
    plain, efficient = _pair()
    assert _count(plain) == _count(efficient)
    x = torch.randn(4, 3, 12, 12)
    for model in (plain, efficient):
        model.train()
        model(x).square().sum().backward()
    # every dense layer's bottleneck went through non-reentrant checkpointing
    assert calls == [False] * 6
    for (name, p), q in zip(plain.named_parameters(), efficient.parameters()):
        assert q.grad is not None, name
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=name)
    # the recomputed BN forward must not advance the running statistics a second time
    for (name, b), c in zip(plain.named_buffers(), efficient.buffers()):
        torch.testing.assert_close(c, b, msg=name)


def test_memory_efficient_mode_skips_checkpoint_without_grad(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    monkeypatch.setattr(dn, "checkpoint", lambda *a, **k: calls.append(1))
    _, efficient = _pair()
    with torch.no_grad():
        out = efficient.eval()(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 5) and not calls


def test_memory_efficient_is_reachable_from_builders() -> None:
    model = _meta("densenet121", memory_efficient=True)
    assert all(m.memory_efficient for m in model.modules() if isinstance(m, dn.DenseLayer))


@pytest.mark.slow
def test_memory_efficient_densenet121_gradients_match() -> None:
    torch.manual_seed(0)
    plain = create_model("densenet121", num_classes=10, input_size=32)
    efficient = create_model("densenet121", num_classes=10, input_size=32, memory_efficient=True)
    efficient.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    for model in (plain, efficient):
        model(x).logsumexp(1).sum().backward()
    for p, q in zip(plain.parameters(), efficient.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6)
