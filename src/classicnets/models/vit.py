"""Vision Transformer (Dosovitskiy et al., ICLR 2021) and small ViTs for 32-px data.

The image is cut into non-overlapping P×P patches (a P×P conv with stride P), each patch is
linearly embedded, a learned [class] token is prepended, learned 1-D position embeddings are
added, and the sequence goes through a pre-norm Transformer *encoder* (no decoder):
``x = x + MHSA(LN(x))``, ``x = x + MLP(LN(x))``, then a final LayerNorm; the classifier reads
the [class] token. Configurations are the paper's Table 1 (Base/Large/Huge), the small ones
use the DeiT widths (Touvron et al., 2021, Table 1).

Input sizes. The position embedding has one entry per patch, so it is built for the requested
``input_size`` (grid ``input_size // patch_size``). :func:`resize_pos_embed` resamples a learned
embedding to another grid (bicubic over the 2-D grid, [class] entry kept), as the paper does
when fine-tuning at a higher resolution (§3.2); :meth:`VisionTransformer.load_state_dict_resized`
applies it when loading, e.g., a 224-px checkpoint into a 384-px model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from classicnets.models.layers import DropPath, MultiHeadSelfAttention
from classicnets.models.registry import (
    InputSizeError,
    PaperResult,
    register_model,
    require_min_size,
)

__all__ = [
    "SMALL_INPUT_MAX",
    "SMALL_INPUT_PATCH",
    "EncoderBlock",
    "VisionTransformer",
    "resize_pos_embed",
]

# Small-input adaptation: at or below this side the 16/32/14-px patches of the ImageNet models
# would leave a 1×1–4×4 grid, so 4-px patches are used instead (the usual choice for ViTs
# trained on CIFAR-size images, e.g. Lee et al. 2021; 32 px → 8×8 tokens, 28 px → 7×7).
SMALL_INPUT_MAX = 64
SMALL_INPUT_PATCH = 4

_PAPER = (
    "Dosovitskiy et al., An Image is Worth 16x16 Words: Transformers for Image Recognition "
    "at Scale, ICLR 2021"
)
_DEIT = (
    "Dosovitskiy et al. 2021 (ViT) with the DeiT widths of Touvron et al., Training "
    "data-efficient image transformers & distillation through attention, ICML 2021"
)


def resize_pos_embed(
    pos_embed: Tensor,
    new_grid: int | tuple[int, int],
    *,
    num_prefix_tokens: int = 1,
    old_grid: int | tuple[int, int] | None = None,
    antialias: bool = False,
) -> Tensor:
    """Resample a learned position embedding ``(1, prefix + H·W, D)`` to a new patch grid.

    The patch entries are viewed as a ``D``-channel H×W image and resized bicubically
    (``align_corners=False``: each entry sits at the centre of its patch, so the grid keeps its
    place in the image, the paper's "2D interpolation ... according to their location in the
    original image"); the ``num_prefix_tokens`` leading entries ([class] token) are kept as
    they are. ``old_grid`` defaults to the square grid the length implies. Returns ``pos_embed``
    itself when the grid does not change.
    """
    new_hw = (new_grid, new_grid) if isinstance(new_grid, int) else tuple(new_grid)
    n_patches = pos_embed.shape[1] - num_prefix_tokens
    if old_grid is None:
        side = math.isqrt(n_patches)
        if side * side != n_patches:
            raise ValueError(
                f"{n_patches} patch positions do not form a square grid; pass old_grid=(H, W)"
            )
        old_hw = (side, side)
    else:
        old_hw = (old_grid, old_grid) if isinstance(old_grid, int) else tuple(old_grid)
        if old_hw[0] * old_hw[1] != n_patches:
            raise ValueError(f"old_grid {old_hw} does not hold {n_patches} positions")
    if old_hw == new_hw:
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    # (1, H·W, D) -> (1, D, H, W): the embedding dimensions are the channels of an image.
    grid = grid.reshape(1, *old_hw, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid.float(), size=new_hw, mode="bicubic", align_corners=False, antialias=antialias
    ).to(pos_embed.dtype)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_hw[0] * new_hw[1], dim)
    return torch.cat([prefix, grid], dim=1)


class EncoderBlock(nn.Module):
    """One pre-norm Transformer encoder layer (ViT Eq. 2–3): LN → MHSA → residual, LN → MLP.

    The MLP is Linear → GELU → Linear. Dropout follows every dense layer except the Q/K/V
    projection (paper, Appendix B.1); ``drop_path`` (stochastic depth) drops each residual
    branch per sample.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiHeadSelfAttention(
            dim, num_heads, attn_drop=attention_dropout, proj_drop=dropout
        )
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_dim, dim),
            nn.Dropout(dropout),
        )
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """Vision Transformer — Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for
    Image Recognition at Scale", ICLR 2021.

    Patch embedding by a ``patch_size``-strided conv, learned [class] token, learned 1-D
    position embedding, ``num_layers`` pre-norm encoder layers (:class:`EncoderBlock`), final
    LayerNorm, classifier on the [class] token. Encoder only.

    Deviations from the paper:

    - Head: one Linear layer (the paper's fine-tuning head, and what torchvision's parameter
      counts imply); the pre-training head with a tanh hidden layer is the option
      ``representation_size``. The head starts at zero, as in the paper's fine-tuning.
    - ``drop_path_rate`` (stochastic depth, linear in depth as in DeiT) is not in the paper;
      it defaults to 0.
    - Small inputs (``input_size <= 64``) use 4-px patches unless ``patch_size`` is given (see
      the builders); the encoder is unchanged.
    - Q/K/V come from one fused projection (:class:`~classicnets.models.layers.
      MultiHeadSelfAttention`), which has exactly the parameters of three separate ones.
    """

    def __init__(
        self,
        *,
        image_size: int,
        patch_size: int,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        mlp_dim: int,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        representation_size: int | None = None,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise InputSizeError(f"image_size {image_size} is not divisible by {patch_size}")
        self.image_size, self.patch_size, self.hidden_dim = image_size, patch_size, hidden_dim
        self.grid_size = image_size // patch_size
        self.num_prefix_tokens = 1
        self.patch_embed = nn.Conv2d(in_channels, hidden_dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.pos_embed = nn.Parameter(torch.empty(1, self.grid_size**2 + 1, hidden_dim))
        self.pos_drop = nn.Dropout(dropout)  # the paper drops right after adding positions
        # Stochastic depth grows linearly from 0 (first layer) to drop_path_rate (last).
        rates = [drop_path_rate * i / max(num_layers - 1, 1) for i in range(num_layers)]
        self.blocks = nn.Sequential(
            *(
                EncoderBlock(
                    hidden_dim,
                    num_heads,
                    mlp_dim,
                    dropout=dropout,
                    attention_dropout=attention_dropout,
                    drop_path=r,
                )
                for r in rates
            )
        )
        self.norm = nn.LayerNorm(hidden_dim, eps=1e-6)
        if representation_size is None:
            self.pre_logits: nn.Module = nn.Identity()
            head_in = hidden_dim
        else:
            self.pre_logits = nn.Sequential(nn.Linear(hidden_dim, representation_size), nn.Tanh())
            head_in = representation_size
        self.head = nn.Linear(head_in, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # The reference (JAX) initialisation: LeCun-normal patch embedding, N(0, 0.02)
        # positions, zero [class] token, Xavier-uniform dense layers with ~zero biases, zero head.
        fan_in = self.patch_embed.in_channels * self.patch_size**2
        nn.init.trunc_normal_(self.patch_embed.weight, std=math.sqrt(1.0 / fan_in))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.zeros_(self.cls_token)
        for block in self.blocks:
            # Xavier per projection: the fused Q/K/V weight is three (D, D) matrices.
            for w in block.attn.qkv.weight.chunk(3, dim=0):
                nn.init.xavier_uniform_(w)
            nn.init.zeros_(block.attn.qkv.bias)
            nn.init.xavier_uniform_(block.attn.proj.weight)
            nn.init.zeros_(block.attn.proj.bias)
            for layer in (block.mlp[0], block.mlp[3]):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.normal_(layer.bias, std=1e-6)
        if isinstance(self.pre_logits, nn.Sequential):
            nn.init.xavier_uniform_(self.pre_logits[0].weight)
            nn.init.zeros_(self.pre_logits[0].bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """The normalised token sequence ``(B, 1 + grid², hidden_dim)``."""
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"this ViT was built for {self.image_size}x{self.image_size} inputs (its position "
                f"embedding has a {self.grid_size}x{self.grid_size} grid) but got "
                f"{tuple(x.shape[-2:])}; build it with input_size={x.shape[-1]} and load weights "
                "with load_state_dict_resized()"
            )
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, grid², D), row-major patches
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = self.pos_drop(torch.cat([cls, x], dim=1) + self.pos_embed)
        return self.norm(self.blocks(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pre_logits(self.forward_features(x)[:, 0]))

    def load_state_dict_resized(
        self, state_dict: Mapping[str, Any], strict: bool = True, *, antialias: bool = False
    ) -> Any:
        """``load_state_dict`` after resampling ``pos_embed`` to this model's grid.

        For a checkpoint trained at another resolution with the same patch size (e.g. 224 →
        384 for ViT-B/16: 14×14 → 24×24 positions); see :func:`resize_pos_embed`.
        """
        state = dict(state_dict)
        if "pos_embed" in state and state["pos_embed"].shape != self.pos_embed.shape:
            state["pos_embed"] = resize_pos_embed(
                state["pos_embed"],
                self.grid_size,
                num_prefix_tokens=self.num_prefix_tokens,
                antialias=antialias,
            )
        return self.load_state_dict(state, strict=strict)


def _choose_patch(name: str, canonical: int, input_size: int, patch_size: int | None) -> int:
    """The patch side for ``input_size``; refuse sizes the patch grid cannot tile."""
    if patch_size is None:
        patch_size = SMALL_INPUT_PATCH if input_size <= SMALL_INPUT_MAX else canonical
        patch_size = min(patch_size, canonical)  # never coarser than the paper's patch
    if patch_size < 1:
        raise ValueError(f"patch_size must be positive, got {patch_size}")
    require_min_size(input_size, patch_size, name)
    if input_size % patch_size:
        lower = input_size // patch_size * patch_size  # >= patch_size: checked above
        upper = lower + patch_size
        nearest = lower if input_size - lower < upper - input_size else upper  # ties: larger
        raise InputSizeError(
            f"{name} with {patch_size}-px patches needs an input size divisible by {patch_size}; "
            f"got {input_size}. Nearest accepted size: {nearest} (accepted neighbours: {lower}, "
            f"{upper}); resize the data or pass model.patch_size"
        )
    return patch_size


def _vit(
    name: str,
    *,
    canonical_patch: int,
    num_layers: int,
    num_heads: int,
    hidden_dim: int,
    mlp_dim: int,
    num_classes: int,
    in_channels: int,
    input_size: int,
    patch_size: int | None,
    dropout: float,
    attention_dropout: float,
    drop_path_rate: float,
    representation_size: int | None,
) -> VisionTransformer:
    patch = _choose_patch(name, canonical_patch, input_size, patch_size)
    return VisionTransformer(
        image_size=input_size,
        patch_size=patch,
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        mlp_dim=mlp_dim,
        num_classes=num_classes,
        in_channels=in_channels,
        dropout=dropout,
        attention_dropout=attention_dropout,
        drop_path_rate=drop_path_rate,
        representation_size=representation_size,
    )


# name: (patch, layers, heads, hidden, mlp) — paper Table 1 (Base, Large, Huge).
_IMAGENET_CONFIGS = {
    "vit_b_16": (16, 12, 12, 768, 3072),
    "vit_b_32": (32, 12, 12, 768, 3072),
    "vit_l_16": (16, 24, 16, 1024, 4096),
    "vit_l_32": (32, 24, 16, 1024, 4096),
    "vit_h_14": (14, 32, 16, 1280, 5120),
}
# DeiT-Ti / DeiT-S widths (Touvron et al. 2021, Table 1), 4-px patches for 32-px images.
_SMALL_CONFIGS = {
    "vit_tiny_patch4_32": (4, 12, 3, 192, 768),
    "vit_small_patch4_32": (4, 12, 6, 384, 1536),
}


def _imagenet_vit(name: str, **kwargs: Any) -> VisionTransformer:
    patch, layers, heads, hidden, mlp = _IMAGENET_CONFIGS[name]
    return _vit(
        name,
        canonical_patch=patch,
        num_layers=layers,
        num_heads=heads,
        hidden_dim=hidden,
        mlp_dim=mlp,
        **kwargs,
    )


_ARGS_DOC = """
    ``patch_size=None`` uses the paper's patch, or 4-px patches when ``input_size <= 64``
    (32 px → 8×8 tokens, 28 px → 7×7); an ``input_size`` not divisible by the patch raises
    :class:`InputSizeError` naming the nearest accepted size. ``dropout`` (after every dense
    layer but Q/K/V, and after adding positions), ``attention_dropout`` (on the attention
    weights), ``drop_path_rate`` (stochastic depth, linear from 0 to the rate over the layers),
    ``representation_size`` (the pre-training tanh hidden layer before the head; None = a
    single Linear head).
"""


@register_model(
    paper=_PAPER, year=2021, num_classes=1000, in_channels=3, input_size=224,
    result=PaperResult(77.91, "ImageNet", "Table 5: ImageNet-1k pre-training, 384 px"),
)
def vit_b_16(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    patch_size: int | None = None,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    drop_path_rate: float = 0.0,
    representation_size: int | None = None,
) -> VisionTransformer:
    """ViT-B/16: 12 layers, 12 heads, width 768, MLP 3072, 16-px patches (86.6 M at 224)."""
    return _imagenet_vit(
        "vit_b_16",
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        patch_size=patch_size,
        dropout=dropout,
        attention_dropout=attention_dropout,
        drop_path_rate=drop_path_rate,
        representation_size=representation_size,
    )


@register_model(
    paper=_PAPER, year=2021, num_classes=1000, in_channels=3, input_size=224,
    result=PaperResult(73.38, "ImageNet", "Table 5: ImageNet-1k pre-training, 384 px"),
)
def vit_b_32(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    patch_size: int | None = None,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    drop_path_rate: float = 0.0,
    representation_size: int | None = None,
) -> VisionTransformer:
    """ViT-B/32: 12 layers, 12 heads, width 768, MLP 3072, 32-px patches (88.2 M at 224)."""
    return _imagenet_vit(
        "vit_b_32",
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        patch_size=patch_size,
        dropout=dropout,
        attention_dropout=attention_dropout,
        drop_path_rate=drop_path_rate,
        representation_size=representation_size,
    )


@register_model(
    paper=_PAPER, year=2021, num_classes=1000, in_channels=3, input_size=224,
    result=PaperResult(76.53, "ImageNet", "Table 5: ImageNet-1k pre-training, 384 px"),
)
def vit_l_16(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    patch_size: int | None = None,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    drop_path_rate: float = 0.0,
    representation_size: int | None = None,
) -> VisionTransformer:
    """ViT-L/16: 24 layers, 16 heads, width 1024, MLP 4096, 16-px patches (304.3 M at 224)."""
    return _imagenet_vit(
        "vit_l_16",
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        patch_size=patch_size,
        dropout=dropout,
        attention_dropout=attention_dropout,
        drop_path_rate=drop_path_rate,
        representation_size=representation_size,
    )


@register_model(
    paper=_PAPER, year=2021, num_classes=1000, in_channels=3, input_size=224,
    result=PaperResult(71.16, "ImageNet", "Table 5: ImageNet-1k pre-training, 384 px"),
)
def vit_l_32(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    patch_size: int | None = None,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    drop_path_rate: float = 0.0,
    representation_size: int | None = None,
) -> VisionTransformer:
    """ViT-L/32: 24 layers, 16 heads, width 1024, MLP 4096, 32-px patches (306.5 M at 224)."""
    return _imagenet_vit(
        "vit_l_32",
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        patch_size=patch_size,
        dropout=dropout,
        attention_dropout=attention_dropout,
        drop_path_rate=drop_path_rate,
        representation_size=representation_size,
    )


@register_model(
    paper=_PAPER, year=2021, num_classes=1000, in_channels=3, input_size=224,
    result=PaperResult(88.55, "ImageNet", "Table 2: JFT-300M pre-training"),
)
def vit_h_14(
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    patch_size: int | None = None,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    drop_path_rate: float = 0.0,
    representation_size: int | None = None,
) -> VisionTransformer:
    """ViT-H/14: 32 layers, 16 heads, width 1280, MLP 5120, 14-px patches (632.0 M at 224)."""
    return _imagenet_vit(
        "vit_h_14",
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        patch_size=patch_size,
        dropout=dropout,
        attention_dropout=attention_dropout,
        drop_path_rate=drop_path_rate,
        representation_size=representation_size,
    )


def _small_vit(name: str, **kwargs: Any) -> VisionTransformer:
    patch, layers, heads, hidden, mlp = _SMALL_CONFIGS[name]
    return _vit(
        name,
        canonical_patch=patch,
        num_layers=layers,
        num_heads=heads,
        hidden_dim=hidden,
        mlp_dim=mlp,
        **kwargs,
    )


@register_model(
    paper=_DEIT, year=2021, num_classes=10, in_channels=3, input_size=32,
    result=PaperResult(None, "CIFAR-10", "not in the papers (CIFAR-sized adaptation)"),
)
def vit_tiny_patch4_32(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    patch_size: int | None = None,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    drop_path_rate: float = 0.0,
    representation_size: int | None = None,
) -> VisionTransformer:
    """ViT-Tiny for 32-px images: the ViT encoder with DeiT-Ti widths (Touvron et al. 2021,
    Table 1: width 192, 12 layers, 3 heads, MLP 768) on 4-px patches (8×8 tokens at 32 px).
    The patch stays 4 px at every input size unless ``patch_size`` is given."""
    return _small_vit(
        "vit_tiny_patch4_32",
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        patch_size=patch_size,
        dropout=dropout,
        attention_dropout=attention_dropout,
        drop_path_rate=drop_path_rate,
        representation_size=representation_size,
    )


@register_model(
    paper=_DEIT, year=2021, num_classes=10, in_channels=3, input_size=32,
    result=PaperResult(None, "CIFAR-10", "not in the papers (CIFAR-sized adaptation)"),
)
def vit_small_patch4_32(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    patch_size: int | None = None,
    dropout: float = 0.0,
    attention_dropout: float = 0.0,
    drop_path_rate: float = 0.0,
    representation_size: int | None = None,
) -> VisionTransformer:
    """ViT-Small for 32-px images: the ViT encoder with DeiT-S widths (Touvron et al. 2021,
    Table 1: width 384, 12 layers, 6 heads, MLP 1536) on 4-px patches (8×8 tokens at 32 px).
    The patch stays 4 px at every input size unless ``patch_size`` is given."""
    return _small_vit(
        "vit_small_patch4_32",
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        patch_size=patch_size,
        dropout=dropout,
        attention_dropout=attention_dropout,
        drop_path_rate=drop_path_rate,
        representation_size=representation_size,
    )


for _fn in (vit_b_16, vit_b_32, vit_l_16, vit_l_32, vit_h_14):
    _fn.__doc__ = (_fn.__doc__ or "") + "\n" + _ARGS_DOC
for _fn in (vit_tiny_patch4_32, vit_small_patch4_32):
    _fn.__doc__ = (_fn.__doc__ or "") + "\n" + _ARGS_DOC
