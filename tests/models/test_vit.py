"""Vision Transformer (Dosovitskiy et al., 2021): counts, structure, position-embedding resize."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from classicnets.models import InputSizeError, create_model
from classicnets.models.layers import DropPath, MultiHeadSelfAttention
from classicnets.models.vit import EncoderBlock, VisionTransformer, resize_pos_embed

# Reference table (torchvision counts), 1000 classes, 224 px.
IMAGENET_COUNTS = {
    "vit_b_16": 86_567_656,
    "vit_b_32": 88_224_232,
    "vit_l_16": 304_326_632,
    "vit_l_32": 306_535_400,
    "vit_h_14": 632_045_800,
}
# Paper Table 1: layers, hidden D, MLP size, heads; and the patch side.
TABLE1 = {
    "vit_b_16": (12, 768, 3072, 12, 16),
    "vit_b_32": (12, 768, 3072, 12, 32),
    "vit_l_16": (24, 1024, 4096, 16, 16),
    "vit_l_32": (24, 1024, 4096, 16, 32),
    "vit_h_14": (32, 1280, 5120, 16, 14),
    "vit_tiny_patch4_32": (12, 192, 768, 3, 4),  # DeiT-Ti widths
    "vit_small_patch4_32": (12, 384, 1536, 6, 4),  # DeiT-S widths
}


def _meta(name: str, **kwargs: object) -> VisionTransformer:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _vit_formula(layers: int, d: int, mlp: int, patch: int, c: int, grid: int, k: int) -> int:
    """Parameters of a ViT, written out from the architecture."""
    embed = c * patch * patch * d + d  # patch conv + bias
    tokens = d + (grid * grid + 1) * d  # [class] token + positions
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * mlp + mlp) + (mlp * d + d)
    return embed + tokens + layers * block + 2 * d + (d * k + k)


@pytest.mark.parametrize("name", list(IMAGENET_COUNTS))
def test_imagenet_parameter_counts(name: str) -> None:
    model = _meta(name)
    assert _count(model) == IMAGENET_COUNTS[name]
    layers, d, mlp, _, patch = TABLE1[name]
    assert _count(model) == _vit_formula(layers, d, mlp, patch, 3, 224 // patch, 1000)


def test_other_class_count_follows_the_reference_rule() -> None:
    # params(K) = params(1000) - (F + 1)(1000 - K) with F = 768 for ViT-B
    assert _count(_meta("vit_b_16", num_classes=10)) == 86_567_656 - 769 * 990


@pytest.mark.parametrize("name", ["vit_tiny_patch4_32", "vit_small_patch4_32"])
def test_small_vit_counts(name: str) -> None:
    layers, d, mlp, _, patch = TABLE1[name]
    model = _meta(name)
    assert model.patch_size == 4 and model.grid_size == 8
    assert _count(model) == _vit_formula(layers, d, mlp, patch, 3, 8, 10)
    # 1×28×28 with 4-px patches: a 7×7 grid
    mnist = _meta(name, in_channels=1, input_size=28)
    assert mnist.grid_size == 7
    assert _count(mnist) == _vit_formula(layers, d, mlp, patch, 1, 7, 10)


@pytest.mark.parametrize("name", list(TABLE1))
def test_configuration_matches_the_paper_table(name: str) -> None:
    layers, d, mlp, heads, patch = TABLE1[name]
    model = _meta(name)
    assert model.patch_size == patch and model.patch_embed.stride == (patch, patch)
    assert len(model.blocks) == layers and model.hidden_dim == d
    for block in model.blocks:
        assert isinstance(block, EncoderBlock)
        assert isinstance(block.attn, MultiHeadSelfAttention) and block.attn.num_heads == heads
        assert block.mlp[0].out_features == mlp and isinstance(block.mlp[1], nn.GELU)
    # encoder only: no decoder / cross-attention anywhere
    assert not any("decoder" in n for n, _ in model.named_modules())
    assert isinstance(model.head, nn.Linear) and isinstance(model.pre_logits, nn.Identity)


def test_pre_training_head_option() -> None:
    model = _meta("vit_b_16", representation_size=768)
    extra = 768 * 768 + 768
    assert _count(model) == IMAGENET_COUNTS["vit_b_16"] + extra
    assert isinstance(model.pre_logits[1], nn.Tanh)


def test_builder_sizes_the_grid_for_the_input() -> None:
    model = _meta("vit_b_16", input_size=384)
    assert model.grid_size == 24 and model.pos_embed.shape == (1, 24 * 24 + 1, 768)
    # only the position embedding grows: 576 - 196 more positions of width 768
    assert _count(model) == IMAGENET_COUNTS["vit_b_16"] + (576 - 196) * 768


@pytest.mark.parametrize(
    ("name", "size", "patch", "grid"),
    [
        ("vit_b_16", 32, 4, 8),
        ("vit_b_32", 28, 4, 7),
        ("vit_h_14", 64, 4, 16),
        ("vit_b_16", 96, 16, 6),  # above the small-input threshold: the paper's patch
        ("vit_h_14", 28, 4, 7),
    ],
)
def test_small_input_patch_override(name: str, size: int, patch: int, grid: int) -> None:
    model = _meta(name, input_size=size)
    assert (model.patch_size, model.grid_size) == (patch, grid)
    layers = len(model.blocks)
    assert layers == TABLE1[name][0]  # same encoder at every input size


def test_explicit_patch_size_wins() -> None:
    model = _meta("vit_b_16", input_size=32, patch_size=8)
    assert (model.patch_size, model.grid_size) == (8, 4)


def test_indivisible_input_is_refused_with_the_nearest_size() -> None:
    with pytest.raises(InputSizeError, match=r"Nearest accepted size: 224"):
        create_model("vit_b_16", input_size=230)
    with pytest.raises(InputSizeError, match=r"Nearest accepted size: 240"):
        create_model("vit_b_16", input_size=236)
    with pytest.raises(InputSizeError, match=r"divisible by 4.*Nearest accepted size: 32"):
        create_model("vit_tiny_patch4_32", input_size=31)
    with pytest.raises(InputSizeError, match="smallest input size"):
        create_model("vit_tiny_patch4_32", input_size=2)


def test_drop_path_schedule_is_linear_and_dropout_is_placed() -> None:
    model = _meta("vit_tiny_patch4_32", drop_path_rate=0.2, dropout=0.1, attention_dropout=0.05)
    rates = [b.drop_path1.drop_prob for b in model.blocks]
    expected = [0.2 * i / 11 for i in range(12)]
    assert rates == pytest.approx(expected) and rates[0] == 0.0
    assert all(isinstance(b.drop_path2, DropPath) for b in model.blocks)
    block = model.blocks[0]
    assert block.attn.attn_drop == 0.05 and block.attn.proj_drop.p == 0.1
    assert [m.p for m in block.mlp if isinstance(m, nn.Dropout)] == [0.1, 0.1]
    assert model.pos_drop.p == 0.1


def test_pre_norm_residual_block() -> None:
    """x + MHSA(LN(x)), then + MLP(LN(x)): recompute one block by hand."""
    block = EncoderBlock(32, 4, 64).eval()
    for p in block.parameters():
        nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 5, 32)
    y = x + block.attn(F.layer_norm(x, (32,), block.norm1.weight, block.norm1.bias, 1e-6))
    h = F.layer_norm(y, (32,), block.norm2.weight, block.norm2.bias, 1e-6)
    mlp = block.mlp[3](F.gelu(block.mlp[0](h)))
    torch.testing.assert_close(block(x), y + mlp)


def test_head_reads_the_class_token() -> None:
    model = create_model("vit_tiny_patch4_32", num_classes=4).eval()
    nn.init.normal_(model.head.weight)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 65, 192)
        torch.testing.assert_close(model(x), model.head(feats[:, 0]))
        before = model(x)
        model.cls_token.add_(1.0)
        assert not torch.allclose(model(x), before)


def test_wrong_input_size_fails_clearly() -> None:
    model = create_model("vit_tiny_patch4_32")
    with pytest.raises(ValueError, match="built for 32x32"):
        model(torch.randn(1, 3, 64, 64))


# ---- position-embedding interpolation ------------------------------------------------------


def test_resize_shape_and_class_token_kept() -> None:
    pos = torch.randn(1, 1 + 14 * 14, 16)
    out = resize_pos_embed(pos, 24)
    assert out.shape == (1, 1 + 24 * 24, 16)
    assert torch.equal(out[:, 0], pos[:, 0])


def test_resize_identity_when_size_unchanged() -> None:
    pos = torch.randn(1, 1 + 7 * 7, 8)
    assert resize_pos_embed(pos, 7) is pos
    assert resize_pos_embed(pos, (7, 7)) is pos


def test_resize_constant_grid_stays_constant() -> None:
    pos = torch.cat([torch.zeros(1, 1, 3), torch.full((1, 49, 3), 2.5)], dim=1)
    out = resize_pos_embed(pos, 12)
    torch.testing.assert_close(out[:, 1:], torch.full((1, 144, 3), 2.5))


def test_resize_smooth_grid_interpolates_at_patch_centres() -> None:
    """A smooth field sampled at patch centres resamples to the field at the new centres."""

    def field(n: int) -> torch.Tensor:
        u = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # patch centres in [0, 1]
        yy, xx = torch.meshgrid(u, u, indexing="ij")
        channels = [torch.sin(math.pi * xx) * torch.cos(math.pi * yy), xx + 2 * yy]
        return torch.stack(channels, dim=-1).reshape(1, n * n, 2)

    old, new = 14, 24
    pos = torch.cat([torch.full((1, 1, 2), 7.0, dtype=torch.float64), field(old)], dim=1)
    out = resize_pos_embed(pos, new)[:, 1:].reshape(new, new, 2)
    want = field(new).reshape(new, new, 2)
    err = (out - want).abs()
    # interior: cubic accuracy; the border rows/columns see the clamped edge
    assert err[3:-3, 3:-3].max() < 0.015
    assert err.max() < 0.05
    # and downsampling a 24-grid to 14 recovers the 14-grid samples as well
    back = resize_pos_embed(torch.cat([pos[:, :1], field(new)], dim=1), old)[:, 1:]
    back_err = (back.reshape(old, old, 2) - field(old).reshape(old, old, 2)).abs()
    assert back_err[2:-2, 2:-2].max() < 0.02


def test_resize_rejects_non_square_without_grid() -> None:
    with pytest.raises(ValueError, match="square"):
        resize_pos_embed(torch.randn(1, 1 + 12, 4), 4)
    out = resize_pos_embed(torch.randn(1, 1 + 12, 4), (6, 8), old_grid=(3, 4))
    assert out.shape == (1, 1 + 48, 4)


def test_load_state_dict_resized_moves_a_checkpoint_to_a_larger_input() -> None:
    small = create_model("vit_tiny_patch4_32", num_classes=3)  # 8×8 grid
    large = create_model("vit_tiny_patch4_32", num_classes=3, input_size=48)  # 12×12 grid
    state = small.state_dict()
    with pytest.raises(RuntimeError):
        large.load_state_dict(state)
    large.load_state_dict_resized(state)
    torch.testing.assert_close(large.pos_embed, resize_pos_embed(small.pos_embed, 12))
    torch.testing.assert_close(large.blocks[3].attn.qkv.weight, small.blocks[3].attn.qkv.weight)
    with torch.no_grad():
        assert large.eval()(torch.randn(1, 3, 48, 48)).shape == (1, 3)


# ---- forward at the canonical sizes ---------------------------------------------------------


def test_tiny_forward_backward_at_canonical_size() -> None:
    model = create_model("vit_tiny_patch4_32", drop_path_rate=0.1, dropout=0.1)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert model.pos_embed.grad is not None
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))  # no randomness at test time
