"""Self-attention in a convolutional network: BoTNet (Srinivas et al., CVPR 2021).

BoT50 is ResNet-50 whose last stage (c5) has its three spatial 3×3 convolutions replaced by
multi-head self-attention (MHSA) over the whole feature map, with 2-D relative position logits
(height and width, as in the paper's Figure 4), 4 heads. The first c5 block downsamples with a
2×2 average pool after the attention (the paper's choice, since MHSA has no stride).

Why a dedicated attention module rather than ``layers.MultiHeadSelfAttention``: the BoT layer
adds *content-position* logits ``q·r`` (which depend on the query, so they are not a fixed
bias), it works on a (B, C, H, W) map with 1×1-conv projections without bias, and it has no
output projection (the block's following 1×1 convolution plays that role). The shared block
would add an output projection (+787,968 parameters over c5) and miss the relative logits.
The attention arithmetic is the same scaled dot-product (it is computed here with
:func:`torch.nn.functional.scaled_dot_product_attention`, the relative logits entering as the
additive mask).

Size dependence: the relative embeddings have ``2H−1`` and ``2W−1`` rows for an H×W map, so
they are built for the ``input_size`` given to the builder. The attention sees:

- ImageNet stem (``input_size >= 128``): ⌈s/16⌉ in the first c5 block (14×14 at 224 px) and
  ⌈s/32⌉ in the other two (7×7);
- small-input stem (``input_size < 128``): ⌈s/4⌉ and ⌈s/8⌉ (8×8 and 4×4 at 32 px, 7×7 and 4×4
  at 28 px).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from classicnets.models.registry import PaperResult, register_model, require_min_size

__all__ = [
    "SMALL_INPUT_BELOW",
    "BoTNet",
    "Bottleneck",
    "RelPosSelfAttention2d",
    "attention_map_sizes",
]

# Below this input side the ImageNet stem (7×7/2 conv + max-pool, ÷4) would leave c5 with an
# attention map smaller than 8×8, so a CIFAR-style stem (3×3/1 conv, no max-pool) is used: at
# 32 px the attention then sees 8×8, the same as the ImageNet stem gives at 128 px.
SMALL_INPUT_BELOW = 128

_PAPER = (
    "Srinivas, Lin, Parmar, Shlens, Abbeel, Vaswani, Bottleneck Transformers for Visual "
    "Recognition, CVPR 2021"
)


def _down(size: int) -> int:
    """Side after any stride-2 layer used here (7×7/2 p3, 3×3/2 p1, 1×1/2, 2×2/2 ceil-pool)."""
    return (size + 1) // 2


def attention_map_sizes(input_size: int) -> tuple[int, int]:
    """(first c5 block, other c5 blocks) feature-map sides the BoT50 attention sees."""
    # ImageNet stem: 7×7/2 conv + 3×3/2 max-pool; small-input stem: 3×3/1 conv, no max-pool.
    s = _down(_down(input_size)) if input_size >= SMALL_INPUT_BELOW else input_size
    s = _down(_down(s))  # c3, c4 downsample
    return s, _down(s)


class RelPosSelfAttention2d(nn.Module):
    """All-to-all MHSA over an H×W map with 2-D relative position logits (BoTNet, Figure 4).

    ``logit(i, j) = (q_i · k_j + q_i · (r^h_{y_j − y_i} + r^w_{x_j − x_i})) / √d``, with
    ``d = dim / num_heads``; ``r^h`` (``2H−1`` rows) and ``r^w`` (``2W−1`` rows) of width ``d``
    are learned and shared by the heads (as in the authors' code). Q, K, V come from 1×1
    convolutions without bias; there is no output projection. Input and output ``(B, dim, H, W)``
    with ``(H, W) = feat_size``; ``relative_position=False`` gives content-only attention (the
    paper's "no position encoding" ablation).
    """

    def __init__(
        self,
        dim: int,
        feat_size: int | tuple[int, int],
        num_heads: int = 4,
        *,
        relative_position: bool = True,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.feat_size = (feat_size, feat_size) if isinstance(feat_size, int) else feat_size
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=qkv_bias)
        h, w = self.feat_size
        if relative_position:
            self.rel_h: nn.Parameter | None = nn.Parameter(torch.empty(2 * h - 1, self.head_dim))
            self.rel_w: nn.Parameter | None = nn.Parameter(torch.empty(2 * w - 1, self.head_dim))
        else:
            self.rel_h = self.rel_w = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.qkv.weight, std=self.dim**-0.5)
        if self.qkv.bias is not None:
            nn.init.zeros_(self.qkv.bias)
        for emb in (self.rel_h, self.rel_w):
            if emb is not None:
                nn.init.normal_(emb, std=self.head_dim**-0.5)

    @staticmethod
    def _table(emb: Tensor, n: int) -> Tensor:
        """(n_query, n_key, d): row ``k − q + n − 1`` of a (2n−1, d) relative table."""
        pos = torch.arange(n, device=emb.device)
        return emb[pos[None, :] - pos[:, None] + n - 1]

    def relative_logits(self, q: Tensor) -> Tensor:
        """Content-position logits ``q · r`` as (B, heads, N, N) for q (B, heads, H, W, d)."""
        b, n, h, w, _ = q.shape
        lh = torch.einsum("bnhwd,hkd->bnhwk", q, self._table(self.rel_h, h))  # key row k
        lw = torch.einsum("bnhwd,wld->bnhwl", q, self._table(self.rel_w, w))  # key column l
        return (lh[..., :, None] + lw[..., None, :]).reshape(b, n, h * w, h * w)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        if (h, w) != self.feat_size:
            raise ValueError(
                f"relative position attention built for a {self.feat_size[0]}x"
                f"{self.feat_size[1]} map got {h}x{w}: build the network with the input_size "
                "you feed it"
            )
        qkv = self.qkv(x).view(b, 3, self.num_heads, self.head_dim, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, heads, N, d), row-major positions
        mask = None
        if self.rel_h is not None:
            scaled = (q * self.head_dim**-0.5).view(b, self.num_heads, h, w, self.head_dim)
            mask = self.relative_logits(scaled)  # the same 1/√d scale as the content logits
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.transpose(-1, -2).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.num_heads}, feat_size={self.feat_size}"


class Bottleneck(nn.Module):
    """ResNet bottleneck 1×1 → 3×3 → 1×1 (×4), or the BoT block when ``attention_size`` is set.

    The BoT block replaces the 3×3 conv by :class:`RelPosSelfAttention2d` over the
    ``attention_size`` map, followed by a 2×2 average pool when ``stride == 2``; BN + ReLU
    follow it as they followed the conv. Convolutional blocks put the stride on the 3×3 (the
    torchvision "v1.5" layout). Projection shortcut (1×1 conv + BN) where the shape changes.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        *,
        attention_size: int | None = None,
        num_heads: int = 4,
        relative_position: bool = True,
    ) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        if attention_size is None:
            self.conv2: nn.Module = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        else:
            mhsa = RelPosSelfAttention2d(
                width, attention_size, num_heads, relative_position=relative_position
            )
            # ceil_mode keeps the side equal to the stride-2 shortcut's for odd maps.
            pool = [nn.AvgPool2d(2, 2, ceil_mode=True)] if stride == 2 else []
            self.conv2 = nn.Sequential(mhsa, *pool)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class BoTNet(nn.Module):
    """BoTNet — Srinivas et al., "Bottleneck Transformers for Visual Recognition", CVPR 2021.

    BoT50: the ResNet-50 body (stages of 3, 4, 6, 3 bottlenecks, widths 64–512, ×4 expansion)
    with the three c5 blocks as BoT blocks (MHSA, 4 heads, 2-D relative position logits; the
    first block downsamples by a 2×2 average pool after the attention), global average pool,
    Linear classifier. 20.85 M parameters at 224 px (paper: 20.8 M).

    Deviations from the paper:

    - Small inputs (``input_size < 128``): 3×3 stride-1 stem conv without max-pool, so c5's
      attention works on an 8×8 map at 32 px (⌈s/4⌉, then ⌈s/8⌉); the paper trains only at
      ImageNet/COCO sizes.
    - The relative embeddings are sized from ``input_size`` at build time (they are 27+27 and
      13+13 rows at 224 px); inputs of another size are refused in forward.
    - Convolutional bottlenecks put the stride on the 3×3 conv (torchvision layout).
    - ``zero_init_residual`` (γ = 0 on each block's last BN) defaults to off.
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size: int = 224,
        num_heads: int = 4,
        relative_position: bool = True,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        if input_size >= SMALL_INPUT_BELOW:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
            )
        self.attention_sizes = attention_map_sizes(input_size)
        channels = 64
        stages: list[nn.Module] = []
        for i, (depth, width) in enumerate(zip(layers, (64, 128, 256, 512))):
            blocks: list[nn.Module] = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                attn: dict[str, Any] = {}
                if i == 3:  # c5: Bottleneck Transformer blocks
                    attn = {
                        "attention_size": self.attention_sizes[0 if j == 0 else 1],
                        "num_heads": num_heads,
                        "relative_position": relative_position,
                    }
                blocks.append(Bottleneck(channels, width, stride, **attn))
                channels = width * Bottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # the attention projections keep their own initialisation
            if isinstance(m, RelPosSelfAttention2d):
                m.reset_parameters()
            if zero_init_residual and isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
        bound = 1.0 / math.sqrt(self.fc.in_features)
        nn.init.uniform_(self.fc.weight, -bound, bound)
        nn.init.uniform_(self.fc.bias, -bound, bound)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.layer4(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.forward_features(x)), 1))


@register_model(
    paper=_PAPER, year=2021, num_classes=1000, in_channels=3, input_size=224,
    result=PaperResult(None, "ImageNet", "not recorded (paper's ImageNet runs vary recipes)"),
)
def botnet50(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    num_heads: int = 4,
    relative_position: bool = True,
    zero_init_residual: bool = False,
) -> BoTNet:
    """BoT50 (Srinivas et al. 2021): ResNet-50 with MHSA (4 heads, 2-D relative positions)
    in place of the 3×3 convs of c5; 20,852,008 parameters at 224 px / 1000 classes.

    The attention map size follows ``input_size`` (14×14 then 7×7 at 224 px); below 128 px the
    stem is a 3×3 stride-1 conv without max-pool (8×8 then 4×4 at 32 px). ``num_heads``: heads
    of each MHSA; ``relative_position=False``: content-only attention (paper ablation);
    ``zero_init_residual``: zero γ in each block's last BN.
    """
    require_min_size(input_size, 8, "botnet50")  # keeps c5's attention map at least 2×2
    return BoTNet(
        (3, 4, 6, 3),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        num_heads=num_heads,
        relative_position=relative_position,
        zero_init_residual=zero_init_residual,
    )
