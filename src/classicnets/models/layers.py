"""Building blocks shared by several families (one implementation of each).

Blocks: :class:`ConvNormAct`, :class:`LocalResponseNorm` (the AlexNet formula),
:class:`SqueezeExcite`, :class:`CBAM`, :class:`StochasticDepth` (Huang et al.),
:class:`DropPath` (its inverted form used by ViTs), :func:`channel_shuffle`,
:class:`MultiHeadSelfAttention`, :func:`make_divisible`, :class:`ClassifierOutput`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CBAM",
    "ChannelAttention",
    "ClassifierOutput",
    "ConvNormAct",
    "DropPath",
    "LocalResponseNorm",
    "MultiHeadSelfAttention",
    "SpatialAttention",
    "SqueezeExcite",
    "StochasticDepth",
    "channel_shuffle",
    "init_weights",
    "make_divisible",
]

LayerFactory = Callable[..., nn.Module]


class ClassifierOutput(NamedTuple):
    """Training-mode output of a network with auxiliary heads (eval mode returns ``logits``)."""

    logits: Tensor
    aux_logits: tuple[Tensor, ...] = ()


def init_weights(model: nn.Module, *, conv_mode: str = "fan_out", linear_std: float = 0.01,
                 truncate_linear: bool = False) -> None:
    """He-normal convolutions, unit/zero norm layers, small-normal linear layers, zero biases.

    Only ``torch.nn.init`` calls, so models build on the meta device too.
    ``truncate_linear`` cuts the linear weights at two standard deviations.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=conv_mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if truncate_linear:
                nn.init.trunc_normal_(m.weight, std=linear_std, a=-2 * linear_std,
                                      b=2 * linear_std)
            else:
                nn.init.normal_(m.weight, 0.0, linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10 %.

    The rule of the MobileNet reference code, used by every width multiplier here.
    """
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class ConvNormAct(nn.Sequential):
    """Conv2d → norm → activation; ``norm_layer``/``act_layer`` may be ``None``.

    The conv has a bias only when there is no norm layer (the norm's shift makes it redundant),
    unless ``bias`` says otherwise. Padding defaults to "same" for odd kernels.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        *,
        groups: int = 1,
        dilation: int = 1,
        bias: bool | None = None,
        norm_layer: LayerFactory | None = nn.BatchNorm2d,
        act_layer: LayerFactory | None = nn.ReLU,
        inplace: bool = True,
    ) -> None:
        if padding is None:
            ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
            padding = tuple((k - 1) // 2 * dilation for k in ks)
        if bias is None:
            bias = norm_layer is None
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                dilation=dilation,
                groups=groups,
                bias=bias,
            )
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if act_layer is not None:
            try:
                layers.append(act_layer(inplace=inplace))
            except TypeError:  # activations without an inplace flag (GELU, Sigmoid, ...)
                layers.append(act_layer())
        super().__init__(*layers)
        self.out_channels = out_channels


class LocalResponseNorm(nn.Module):
    """Local response normalisation exactly as Krizhevsky et al. (2012), §3.3.

    ``b_i = a_i / (k + alpha * sum_{j=i-n/2}^{i+n/2} a_j^2) ** beta`` over ``n = size``
    neighbouring channels. Unlike :class:`torch.nn.LocalResponseNorm`, ``alpha`` multiplies
    the *sum* (the paper), not the mean, so the paper's ``alpha = 1e-4`` is used as printed.
    Defaults are the paper's: k=2, n=5, alpha=1e-4, beta=0.75.
    """

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: Tensor) -> Tensor:
        # torch's functional form averages the window, so scale alpha by n to get the sum.
        return F.local_response_norm(x, self.size, self.alpha * self.size, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al., 2018): GAP → 1×1 reduce → act → 1×1 expand → gate.

    ``rd_channels`` defaults to ``channels // reduction`` (the paper's r = 16). MobileNetV3
    passes its own width, ``nn.Hardsigmoid`` as gate.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        *,
        rd_channels: int | None = None,
        act_layer: LayerFactory = nn.ReLU,
        gate_layer: LayerFactory = nn.Sigmoid,
    ) -> None:
        super().__init__()
        rd = rd_channels or max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, rd, 1)
        self.act = act_layer(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1)
        self.gate = gate_layer()

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class ChannelAttention(nn.Module):
    """CBAM channel attention: avg- and max-pooled descriptors through one shared MLP, summed."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        rd = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(channels, rd), nn.ReLU(inplace=True), nn.Linear(rd, channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(avg + mx)[:, :, None, None]


class SpatialAttention(nn.Module):
    """CBAM spatial attention: channel-wise mean ‖ max → k×k conv (+BN) → sigmoid."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = ConvNormAct(2, 1, kernel_size, act_layer=None)

    def forward(self, x: Tensor) -> Tensor:
        desc = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(desc))


class CBAM(nn.Sequential):
    """Convolutional Block Attention Module (Woo et al., 2018): channel then spatial."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__(ChannelAttention(channels, reduction), SpatialAttention(kernel_size))


class StochasticDepth(nn.Module):
    """Stochastic depth for residual branches (Huang et al., 2016).

    Training: the branch is kept with probability ``survival_prob`` (one draw for the whole
    batch, as in the paper; ``mode="row"`` draws per sample) and dropped blocks reduce to their
    shortcut. Test: every branch is active, scaled by ``survival_prob`` (the paper's
    expectation rule). Wrap the residual branch output with it before the addition.
    """

    def __init__(self, survival_prob: float, mode: str = "batch") -> None:
        super().__init__()
        if not 0.0 < survival_prob <= 1.0:
            raise ValueError(f"survival_prob must be in (0, 1], got {survival_prob}")
        if mode not in ("batch", "row"):
            raise ValueError(f"mode must be 'batch' or 'row', got {mode!r}")
        self.survival_prob, self.mode = survival_prob, mode

    def forward(self, x: Tensor) -> Tensor:
        if self.survival_prob == 1.0:
            return x
        if not self.training:
            return x * self.survival_prob
        shape = (1,) * x.ndim if self.mode == "batch" else (x.shape[0],) + (1,) * (x.ndim - 1)
        keep = torch.empty(shape, device=x.device, dtype=x.dtype).bernoulli_(self.survival_prob)
        return x * keep

    def extra_repr(self) -> str:
        return f"survival_prob={self.survival_prob:.4f}, mode={self.mode}"


class DropPath(nn.Module):
    """Per-sample drop of a residual branch, rescaled by ``1/keep`` in training (the inverted
    form used by ViT/DeiT-style training); identity at test time."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device, dtype=x.dtype)
        return x * mask.bernoulli_(keep) / keep


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet's channel shuffle: view channels as (groups, C/groups), transpose, flatten."""
    b, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"{c} channels cannot be shuffled in {groups} groups")
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class MultiHeadSelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention (Vaswani et al., 2017, §3.2).

    Input ``(B, N, dim)``; Q/K/V come from one fused projection (same parameters as three),
    followed by the output projection; ``dim=512, num_heads=8`` has 1,050,624 parameters.
    Uses :func:`torch.nn.functional.scaled_dot_product_attention` (flash/memory-efficient
    kernels where available).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        *,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).unbind(2)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            dropout_p=self.attn_drop if self.training else 0.0,
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, d)))
