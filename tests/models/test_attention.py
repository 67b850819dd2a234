"""Self-attention: the shared MHSA block (Vaswani et al. 2017) and BoTNet (Srinivas et al. 2021)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from classicnets.models import create_model
from classicnets.models.attention import (
    Bottleneck,
    RelPosSelfAttention2d,
    attention_map_sizes,
)
from classicnets.models.layers import MultiHeadSelfAttention

RESNET50 = 25_557_032  # reference table (torchvision resnet50), 1000 classes, 224 px


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- the shared multi-head self-attention block ----------------------------------------------


def test_mhsa_parameter_count() -> None:
    # d_model 512, 8 heads (d_k = 64): Q, K, V, O projections with bias = 4·(512² + 512)
    block = MultiHeadSelfAttention(512, 8)
    assert _count(block) == 1_050_624 == 4 * (512 * 512 + 512)


def test_mhsa_matches_manual_scaled_dot_product() -> None:
    torch.manual_seed(0)
    dim, heads, n = 32, 4, 7
    block = MultiHeadSelfAttention(dim, heads).eval()
    for p in block.parameters():
        nn.init.normal_(p, std=0.3)
    x = torch.randn(2, n, dim)
    w_q, w_k, w_v = block.qkv.weight.split(dim)
    b_q, b_k, b_v = block.qkv.bias.split(dim)
    d_k = dim // heads
    outs = []
    for h in range(heads):
        sl = slice(h * d_k, (h + 1) * d_k)
        q = x @ w_q[sl].T + b_q[sl]
        k = x @ w_k[sl].T + b_k[sl]
        v = x @ w_v[sl].T + b_v[sl]
        outs.append(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d_k), dim=-1) @ v)
    expected = torch.cat(outs, dim=-1) @ block.proj.weight.T + block.proj.bias
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


# ---- BoTNet ----------------------------------------------------------------------------------


def _bot50_formula(num_classes: int, in_channels: int, stem: str, sizes: tuple[int, int]) -> int:
    """BoT50 = ResNet-50 − c5's three 3×3 convs + Q/K/V 1×1 convs + relative tables."""
    width, head_dim = 512, 512 // 4
    params = RESNET50 - 2049 * (1000 - num_classes)  # the classifier
    if stem == "small":  # 3×3 stem conv instead of 7×7
        params += 64 * in_channels * 9 - 64 * 3 * 49
    params -= 3 * width * width * 9  # c5 3×3 convs removed
    params += 3 * width * 3 * width  # Q, K, V 1×1 convs (no bias, no output projection)
    first, other = sizes
    params += head_dim * (2 * (2 * first - 1) + 2 * 2 * (2 * other - 1))  # r^h and r^w
    return params


def test_botnet50_parameter_count() -> None:
    with torch.device("meta"):
        model = create_model("botnet50")
    assert _count(model) == _bot50_formula(1000, 3, "imagenet", (14, 7)) == 20_852_008
    # the paper lists BoT50 at 20.8 M and ResNet-50 at 25.5 M: counts truncated to 0.1 M
    assert _count(model) // 100_000 == 208 and RESNET50 // 100_000 == 255


@pytest.mark.parametrize(("in_ch", "size", "sizes"), [(3, 32, (8, 4)), (1, 28, (7, 4))])
def test_botnet50_small_input_count(in_ch: int, size: int, sizes: tuple[int, int]) -> None:
    with torch.device("meta"):
        model = create_model("botnet50", num_classes=10, in_channels=in_ch, input_size=size)
    assert model.attention_sizes == sizes
    assert _count(model) == _bot50_formula(10, in_ch, "small", sizes)


def test_botnet50_without_relative_positions() -> None:
    with torch.device("meta"):
        model = create_model("botnet50", relative_position=False)
    assert _count(model) == 20_852_008 - 128 * (2 * 27 + 2 * 2 * 13)


@pytest.mark.parametrize(
    ("size", "expected"),
    [(224, (14, 7)), (256, (16, 8)), (200, (13, 7)), (128, (8, 4)), (32, (8, 4)), (28, (7, 4))],
)
def test_attention_map_size_follows_input_size(size: int, expected: tuple[int, int]) -> None:
    assert attention_map_sizes(size) == expected
    with torch.device("meta"):
        model = create_model("botnet50", input_size=size)
    first, other = expected
    mhsa = [m for m in model.modules() if isinstance(m, RelPosSelfAttention2d)]
    assert [m.feat_size for m in mhsa] == [(first, first), (other, other), (other, other)]
    assert mhsa[0].rel_h.shape == (2 * first - 1, 128) and mhsa[0].rel_w.shape[0] == 2 * first - 1
    assert mhsa[1].rel_h.shape == (2 * other - 1, 128)


def test_only_c5_uses_attention_and_stride_is_an_avg_pool() -> None:
    with torch.device("meta"):
        model = create_model("botnet50")
    for stage in (model.layer1, model.layer2, model.layer3):
        assert all(isinstance(b.conv2, nn.Conv2d) and b.conv2.kernel_size == (3, 3) for b in stage)
    stages = (model.layer1, model.layer2, model.layer3, model.layer4)
    assert [len(s) for s in stages] == [3, 4, 6, 3]
    first, *rest = model.layer4
    assert isinstance(first.conv2[0], RelPosSelfAttention2d) and first.conv2[0].num_heads == 4
    pool = first.conv2[1]
    assert isinstance(pool, nn.AvgPool2d) and pool.kernel_size == 2 and pool.stride == 2
    for block in rest:
        assert len(block.conv2) == 1 and isinstance(block.conv2[0], RelPosSelfAttention2d)
    assert not any(
        isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in model.layer4.modules()
    )


def test_stride_two_bot_block_halves_the_map() -> None:
    block = Bottleneck(64, 16, stride=2, attention_size=6, num_heads=4).eval()
    with torch.no_grad():
        assert block(torch.randn(2, 64, 6, 6)).shape == (2, 64, 3, 3)
    odd = Bottleneck(64, 16, stride=2, attention_size=5).eval()
    with torch.no_grad():  # ceil-mode pooling keeps step with the stride-2 shortcut
        assert odd(torch.randn(2, 64, 5, 5)).shape == (2, 64, 3, 3)


def test_relative_attention_matches_manual_computation() -> None:
    """softmax((q·k + q·(r^h[y_k − y_q] + r^w[x_k − x_q])) / √d) v, position by position."""
    torch.manual_seed(0)
    dim, heads, h, w = 8, 2, 3, 4
    attn = RelPosSelfAttention2d(dim, (h, w), heads).eval()
    x = torch.randn(2, dim, h, w)
    d = dim // heads
    qkv = torch.einsum("oc,bchw->bohw", attn.qkv.weight[:, :, 0, 0], x)
    q, k, v = qkv.split(dim, dim=1)
    expected = torch.zeros(2, dim, h, w)
    for n in range(heads):
        ch = slice(n * d, (n + 1) * d)
        for yq in range(h):
            for xq in range(w):
                qv = q[:, ch, yq, xq]  # (B, d)
                logits = torch.zeros(2, h, w)
                for yk in range(h):
                    for xk in range(w):
                        r = attn.rel_h[yk - yq + h - 1] + attn.rel_w[xk - xq + w - 1]
                        logits[:, yk, xk] = (qv * (k[:, ch, yk, xk] + r)).sum(-1) / math.sqrt(d)
                weights = torch.softmax(logits.reshape(2, -1), dim=-1)
                expected[:, ch, yq, xq] = torch.einsum("bn,bdn->bd", weights, v[:, ch].flatten(2))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_relative_logits_depend_only_on_offsets() -> None:
    attn = RelPosSelfAttention2d(4, 5, 1)
    q = torch.ones(1, 1, 5, 5, 4)  # the same query everywhere
    logits = attn.relative_logits(q).reshape(5, 5, 5, 5)
    # query (1, 1) → key (2, 3) and query (2, 0) → key (3, 2): same offset (+1, +2)
    torch.testing.assert_close(logits[1, 1, 2, 3], logits[2, 0, 3, 2])
    assert not torch.allclose(logits[1, 1, 2, 3], logits[1, 1, 3, 2])


def test_wrong_input_size_fails_clearly() -> None:
    model = create_model("botnet50", num_classes=10, input_size=32).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="built for a 8x8 map got 16x16"):
        model(torch.randn(1, 3, 64, 64))


def test_zero_init_residual_option() -> None:
    model = create_model("botnet50", num_classes=10, input_size=32, zero_init_residual=True)
    assert all(torch.all(b.bn3.weight == 0) for b in model.modules() if isinstance(b, Bottleneck))
