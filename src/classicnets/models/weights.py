"""Pretrained weights: the reference twins of our networks and the key map of each family.

A *twin* is a torchvision or timm network that computes the same function as one of ours: same
layers, same order, same padding and pooling, so that its published ImageNet weights, renamed
key by key, give our network the same logits. Every registered network is either in
:data:`TWINS` or in :data:`NO_TWIN` with the reason it has none. A :class:`KeyMap` renames our
state-dict keys into the reference's (one map per family); loading reads the reference's state
dict through it and exporting writes ours through it, so one map serves both directions.

``model.pretrained`` (the ``pretrained`` argument of :func:`~classicnets.models.create_model`):

* ``torchvision`` / ``torchvision:<weights name>`` (e.g. ``torchvision:IMAGENET1K_V1``):
  torchvision's weights API downloads and caches the file under ``$TORCH_HOME/hub/checkpoints``;
* ``timm`` / ``timm:<tag>``: timm downloads from the Hugging Face hub (``pip install timm``);
* a path to a ``.pth``/``.pt``/``.bin``/``.safetensors`` state dict (in our, torchvision's or
  timm's key names: recognised by its keys) or to a classicnets ``.ckpt`` (any network);
* ``true``: the first source listed for the network.

The classifier head is loaded only when its size matches ``num_classes``; otherwise it keeps
its fresh initialisation (fine-tuning). The data pipeline follows the weights through the
``${pretrained:...}`` interpolations of ``conf/data/*.yaml`` (:func:`data_setting`).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from classicnets.checkpoints import CheckpointError, load_file

__all__ = [
    "NO_TWIN",
    "TWINS",
    "KeyMap",
    "Preprocessing",
    "PretrainedError",
    "Twin",
    "data_setting",
    "from_reference",
    "load_pretrained",
    "preprocessing",
    "pretrained_column",
    "read_state_dict",
    "to_reference",
    "twins",
]

log = logging.getLogger(__name__)

SOURCES = ("torchvision", "timm")
STATE_DICT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION_MEAN = INCEPTION_STD = (0.5, 0.5, 0.5)


class PretrainedError(RuntimeError):
    """Weights that are missing, do not fit the network, or a network without a twin."""


# --------------------------------------------------------------------------- key maps

Replacement = str | Callable[[re.Match[str], nn.Module], str]


@dataclass(frozen=True)
class KeyMap:
    """Our state-dict keys → the reference's.

    ``rules`` are ``(pattern, replacement)`` pairs applied in order with ``re.sub`` to every
    key (a replacement may be a function of the match and our network, for indices that
    depend on its layout). ``head`` matches our classifier keys, which load only when their
    shapes match (``num_classes``). ``ref_only`` matches reference keys with no counterpart in
    our network as configured (e.g. torchvision's Inception-v3 aux head when ours is off);
    they are left out on loading. ``linear_as_conv`` matches our linear weights that the
    reference holds as 1×1 convolutions (same numbers, two more dimensions).
    """

    rules: tuple[tuple[str, Replacement], ...]
    head: str
    ref_only: str | None = None
    linear_as_conv: str | None = None

    def to_reference(self, net: nn.Module) -> dict[str, str]:
        """``{our key: reference key}`` for every key of ``net``'s state dict."""
        out: dict[str, str] = {}
        for key in net.state_dict():
            new = key
            for pattern, repl in self.rules:
                if callable(repl):
                    new = re.sub(pattern, lambda m, f=repl: f(m, net), new)
                else:
                    new = re.sub(pattern, repl, new)
            out[key] = new
        if len(set(out.values())) != len(out):
            raise PretrainedError("key map is not one-to-one (a bug in classicnets.weights)")
        return out


def _at(table: Mapping[int, str] | list[str], group: int = 1, suffix: str = ".") -> Replacement:
    """Replacement looking up the integer of match group ``group`` in ``table``."""

    def repl(m: re.Match[str], net: nn.Module) -> str:
        return f"{table[int(m[group])]}{suffix}"

    return repl


def _child_index(container: str) -> Replacement:
    """``<container>.<name>.`` → ``<container>.<position of name>.``: our named Sequential
    holds the reference's layers (ReLUs and pools included) in the same order."""

    def repl(m: re.Match[str], net: nn.Module) -> str:
        names = list(getattr(net, container)._modules)
        return f"{container}.{names.index(m[1])}."

    return repl


def _stage_unit(repeats: tuple[int, ...], template: str) -> Replacement:
    """Flat unit index → ``template.format(stage, unit)`` for stages of ``repeats`` units."""

    def repl(m: re.Match[str], net: nn.Module) -> str:
        i = int(m[1])
        for stage, n in enumerate(repeats):
            if i < n:
                return template.format(stage=stage, unit=i)
            i -= n
        raise PretrainedError(f"unit {m[1]} beyond the {sum(repeats)} of the reference")

    return repl


# ResNet, ResNeXt, Wide ResNet (torchvision's layout; timm's ResNet uses the same names).
_RESNET_BODY: tuple[tuple[str, Replacement], ...] = (
    (r"^stages\.", ""),
    (r"\.branch\.conv(\d)\.0\.", r".conv\1."),
    (r"\.branch\.conv(\d)\.1\.", r".bn\1."),
    (r"\.shortcut\.", ".downsample."),
)
RESNET = KeyMap(((r"^stem\.0\.0\.", "conv1."), (r"^stem\.0\.1\.", "bn1."), *_RESNET_BODY),
                head=r"fc\.")

# SE-ResNet / SE-ResNeXt: the released Caffe models as timm's legacy_* ports name them.
SENET = KeyMap(
    ((r"^stem\.0\.0\.", "layer0.conv1."), (r"^stem\.0\.1\.", "layer0.bn1."), *_RESNET_BODY,
     (r"\.branch\.attn\.", ".se_module."), (r"^fc\.", "last_linear.")),
    head=r"fc\.",
)

# Pre-activation ResNet as timm's resnetv2_*: BN-ReLU before each conv, projection on the
# pre-activated input, a final BN before the pooling.
PREACT_RESNET = KeyMap(
    (
        (r"^stem\.0\.0\.", "stem.conv."),
        (r"^stages\.layer(\d)\.(\d+)\.",
         lambda m, net: f"stages.{int(m[1]) - 1}.blocks.{m[2]}."),
        (r"\.pre\.0\.", ".norm1."),
        (r"\.branch\.conv1\.0\.", ".conv1."),
        (r"\.branch\.conv1\.1\.", ".norm2."),
        (r"\.branch\.conv2\.0\.", ".conv2."),
        (r"\.branch\.conv2\.1\.", ".norm3."),
        (r"\.branch\.conv3\.0\.", ".conv3."),
        (r"\.shortcut\.0\.", ".downsample.conv."),
        (r"^final_act\.0\.", "norm."),
        (r"^fc\.", "head.fc."),
    ),
    head=r"fc\.",
    linear_as_conv=r"fc\.weight$",  # timm's head
)

VGG = KeyMap(((r"^features\.(\w+)\.", _child_index("features")),
              (r"^classifier\.(\w+)\.", _child_index("classifier"))),
             head=r"classifier\.fc8\.")

# torchvision's features/classifier Sequentials (ours hold Identity placeholders for the LRN
# layers this variant does not have, so the positions are listed).
ALEXNET_OWT = KeyMap(
    ((r"^features\.conv(\d)\.", _at({1: "features.0", 2: "features.3", 3: "features.6",
                                     4: "features.8", 5: "features.10"})),
     (r"^classifier\.fc(\d)\.", _at({6: "classifier.1", 7: "classifier.4",
                                     8: "classifier.6"}))),
    head=r"classifier\.fc8\.",
)


def _densenet_stage(m: re.Match[str], net: nn.Module) -> str:
    stage, index = int(m[1]), int(m[2])
    if stage % 2 == 0:  # a dense block: its layers, numbered from 1
        return f"features.denseblock{stage // 2 + 1}.denselayer{index + 1}."
    part = {0: "norm", 2: "conv"}[index]  # a transition: BN (0), ReLU, 1×1 conv (2), pool
    return f"features.transition{stage // 2 + 1}.{part}."


DENSENET = KeyMap(
    ((r"^stem\.0\.", "features.conv0."), (r"^stem\.1\.", "features.norm0."),
     (r"^stages\.(\d+)\.(\d+)\.", _densenet_stage), (r"^norm\.", "features.norm5.")),
    head=r"classifier\.",
)

# ConvNormAct (conv 0, BN 1) → torchvision/timm's BasicConv2d (conv, bn): the last module index.
_CONV_BN = ((r"\.0\.(?=[a-z_]+$)", ".conv."), (r"\.1\.(?=[a-z_]+$)", ".bn."))

INCEPTION_V3 = KeyMap(
    (
        (r"^stem\.(\d)\.", _at({0: "Conv2d_1a_3x3", 1: "Conv2d_2a_3x3", 2: "Conv2d_2b_3x3",
                                4: "Conv2d_3b_1x1", 5: "Conv2d_4a_3x3"})),
        (r"^mixed5\.(\d)\.", _at(["Mixed_5b", "Mixed_5c", "Mixed_5d"])),
        (r"^reduction_a\.branch3\.", "Mixed_6a.branch3x3."),
        (r"^reduction_a\.", "Mixed_6a."),
        (r"^mixed6\.(\d)\.", _at(["Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"])),
        (r"^aux\.", "AuxLogits."),
        (r"^reduction_b\.", "Mixed_7a."),
        (r"^mixed7\.(\d)\.", _at(["Mixed_7b", "Mixed_7c"])),
        (r"\.branch1\.", ".branch1x1."),
        (r"\.branch_pool\.1\.", ".branch_pool."),
        (r"\.branch3\.1\.conv13\.", ".branch3x3_2a."),
        (r"\.branch3\.1\.conv31\.", ".branch3x3_2b."),
        (r"\.branch3dbl\.2\.conv13\.", ".branch3x3dbl_3a."),
        (r"\.branch3dbl\.2\.conv31\.", ".branch3x3dbl_3b."),
        (r"\.branch(3|5|7)\.(\d)\.",
         lambda m, net: f".branch{m[1]}x{m[1]}_{int(m[2]) + 1}."),
        (r"\.branch(3|7)dbl\.(\d)\.",
         lambda m, net: f".branch{m[1]}x{m[1]}dbl_{int(m[2]) + 1}."),
        (r"\.branch7x3\.(\d)\.", lambda m, net: f".branch7x7x3_{int(m[1]) + 1}."),
        *_CONV_BN,
    ),
    head=r"(aux\.)?fc\.",
    ref_only=r"AuxLogits\.",
)


def _present(block: nn.Module, names: tuple[str, ...]) -> list[str]:
    """The parts of ``block`` that hold weights (ours keeps absent ones as Identity)."""
    return [n for n in names if any(True for _ in getattr(block, n, nn.Identity()).parameters())]


def _mobilenet_v2_block(m: re.Match[str], net: nn.Module) -> str:
    # torchvision: features.<i+1>.conv = [expand ConvBNReLU (when t > 1), depthwise ConvBNReLU,
    # project conv, project BN]
    first = len(_present(net.blocks[int(m[1])], ("expand",)))
    part, index = m[2], int(m[3])
    pos = {"expand": f"0.{index}", "depthwise": f"{first}.{index}",
           "project": str(first + 1 + index)}[part]
    return f"features.{int(m[1]) + 1}.conv.{pos}."


MOBILENET_V2 = KeyMap(
    ((r"^stem\.", "features.0."),
     (r"^blocks\.(\d+)\.(expand|depthwise|project)\.(\d)\.", _mobilenet_v2_block),
     (r"^head\.", lambda m, net: f"features.{len(net.blocks) + 1}."),
     (r"^classifier\.", "classifier.1.")),
    head=r"classifier\.",
)


def _mobilenet_v3_block(m: re.Match[str], net: nn.Module) -> str:
    # torchvision: features.<i+1>.block = the present ones of [expand, depthwise, se, project]
    present = _present(net.blocks[int(m[1])], ("expand", "depthwise", "se", "project"))
    return f"features.{int(m[1]) + 1}.block.{present.index(m[2])}."


MOBILENET_V3 = KeyMap(
    ((r"^stem\.", "features.0."),
     (r"^blocks\.(\d+)\.(expand|depthwise|se|project)\.", _mobilenet_v3_block),
     (r"^last_conv\.", lambda m, net: f"features.{len(net.blocks) + 1}."),
     (r"^classifier\.", "classifier.3."),  # before head.0 → classifier.0 (rules run in order)
     (r"^head\.0\.", "classifier.0.")),
    head=r"classifier\.",
)

# timm's mobilenetv1_100: blocks grouped by stage (1, 2, 2, 6, 2 separable layers).
MOBILENET_V1 = KeyMap(
    ((r"^stem\.0\.", "conv_stem."), (r"^stem\.1\.", "bn1."),
     (r"^features\.(\d+)\.", _stage_unit((1, 2, 2, 6, 2), "blocks.{stage}.{unit}.")),
     (r"\.depthwise\.0\.", ".conv_dw."), (r"\.depthwise\.1\.", ".bn1."),
     (r"\.pointwise\.0\.", ".conv_pw."), (r"\.pointwise\.1\.", ".bn2.")),
    head=r"classifier\.",
)

SHUFFLENET_V2 = KeyMap(
    (
        (r"^stem\.0\.", "conv1."),
        (r"^features\.(\d+)\.", _stage_unit((4, 8, 4), "stage{stage}.{unit}.")),
        (r"^stage(\d)\.", lambda m, net: f"stage{int(m[1]) + 2}."),
        # branch1 = [dw conv, BN, 1×1 conv, BN, ReLU]; ours: [dw ConvBN, 1×1 ConvBNReLU]
        (r"\.left\.(\d)\.(\d)\.", lambda m, net: f".branch1.{2 * int(m[1]) + int(m[2])}."),
        # branch2 = [1×1 conv, BN, ReLU, dw conv, BN, 1×1 conv, BN, ReLU]
        (r"\.right\.(\d)\.(\d)\.",
         lambda m, net: f".branch2.{(0, 3, 5)[int(m[1])] + int(m[2])}."),
        (r"^last_conv\.", "conv5."),
        (r"^classifier\.", "fc."),
    ),
    head=r"classifier\.",
)

# torchvision: conv (0), ReLU (1), pool, Fire...; ours folds conv + ReLU into features.0.
SQUEEZENET = KeyMap(
    ((r"^features\.(\d+)\.",
      lambda m, net: f"features.{int(m[1]) + 1 if int(m[1]) else 0}."),
     (r"^features\.0\.0\.", "features.0."),
     (r"\.(squeeze|expand1x1|expand3x3)\.0\.", r".\1.")),
    head=r"classifier\.",
)

VIT_TORCHVISION = KeyMap(
    (
        (r"^cls_token$", "class_token"),
        (r"^pos_embed$", "encoder.pos_embedding"),
        (r"^patch_embed\.", "conv_proj."),
        (r"^blocks\.(\d+)\.", r"encoder.layers.encoder_layer_\1."),
        (r"\.norm1\.", ".ln_1."),
        (r"\.norm2\.", ".ln_2."),
        (r"\.attn\.qkv\.(weight|bias)$", r".self_attention.in_proj_\1"),
        (r"\.attn\.proj\.", ".self_attention.out_proj."),
        (r"^norm\.", "encoder.ln."),
        (r"^pre_logits\.0\.", "heads.pre_logits."),
        (r"^head\.", "heads.head."),
    ),
    head=r"head\.",
)

VIT_TIMM = KeyMap(
    ((r"^patch_embed\.", "patch_embed.proj."), (r"\.mlp\.0\.", ".mlp.fc1."),
     (r"\.mlp\.3\.", ".mlp.fc2.")),
    head=r"head\.",
)

INCEPTION_RESNET_V2 = KeyMap(
    (
        (r"^stem\.(\d)\.", _at({0: "conv2d_1a", 1: "conv2d_2a", 2: "conv2d_2b", 4: "conv2d_3b",
                                5: "conv2d_4a", 7: "mixed_5b"})),
        (r"^blocks_a\.", "repeat."),
        (r"^reduction_a\.", "mixed_6a."),
        (r"^blocks_b\.", "repeat_1."),
        (r"^reduction_b\.", "mixed_7a."),
        # the last 8×8 block (no ReLU after the sum) is timm's block8, the nine before repeat_2
        (r"^blocks_c\.(\d)\.", lambda m, net: "block8." if int(m[1]) == len(net.blocks_c) - 1
         else f"repeat_2.{m[1]}."),
        (r"^conv_head\.", "conv2d_7b."),
        (r"^head\.3\.", "classif."),
        (r"\.branches\.(\d)\.", r".branch\1."),
        (r"\.expand\.", ".conv2d."),
        *_CONV_BN,
    ),
    head=r"head\.3\.",
)

# timm's inception_v4 (the TF-slim release): one flat `features` Sequential; each block's
# branches are branch0..3, except Inception-C's split branches (branch1_0, branch1_1a/b, ...).
_V4_FEATURES = {"stem": (0, 1, 2, 3, 4, 5), "inception_a": 6, "reduction_a": 10,
                "inception_b": 11, "reduction_b": 18, "inception_c": 19}


def _v4_block(m: re.Match[str], net: nn.Module) -> str:
    part, index = m[1], int(m[2])
    start = _V4_FEATURES[part]
    return f"features.{start[index] if isinstance(start, tuple) else start + index}."


INCEPTION_V4 = KeyMap(
    (
        (r"^(stem|inception_a|inception_b|inception_c)\.(\d+)\.", _v4_block),
        (r"^(reduction_a|reduction_b)\.", lambda m, net: f"features.{_V4_FEATURES[m[1]]}."),
        # Inception-C: branch 1 = 1×1 then the 1×3 ‖ 3×1 split; branch 2 = 1×1, 3×1, 1×3, split
        (r"^(features\.(?:19|20|21))\.branches\.1\.0\.", r"\1.branch1_0."),
        (r"^(features\.(?:19|20|21))\.branches\.1\.1\.branches\.(\d)\.",
         lambda m, net: f"{m[1]}.branch1_1{'ab'[int(m[2])]}."),
        (r"^(features\.(?:19|20|21))\.branches\.2\.(\d)\.branches\.(\d)\.",
         lambda m, net: f"{m[1]}.branch2_3{'ab'[int(m[3])]}."),
        (r"^(features\.(?:19|20|21))\.branches\.2\.(\d)\.",
         lambda m, net: f"{m[1]}.branch2_{m[2]}."),
        # the stem's concatenations: the pool ‖ conv stages name their conv `conv`
        (r"^features\.(3|5)\.branches\.(\d)\.", lambda m, net: f"features.{m[1]}.conv."),
        (r"\.branches\.(\d)\.", r".branch\1."),
        (r"^head\.3\.", "last_linear."),
        *_CONV_BN,
    ),
    head=r"head\.3\.",
)

# timm's legacy_xception (the Keras port): blocks numbered 1-12, each a `rep` Sequential whose
# positions equal ours; a separable conv is (conv1 = depthwise, pointwise).
XCEPTION = KeyMap(
    (
        (r"^stem\.0\.0\.", "conv1."), (r"^stem\.0\.1\.", "bn1."),
        (r"^stem\.1\.0\.", "conv2."), (r"^stem\.1\.1\.", "bn2."),
        (r"^entry_flow\.(\d)\.", lambda m, net: f"block{int(m[1]) + 1}."),
        (r"^middle_flow\.(\d)\.", lambda m, net: f"block{int(m[1]) + 4}."),
        (r"^exit_flow\.0\.", "block12."),
        (r"^exit_flow\.(1|4)\.0\.", lambda m, net: f"conv{(int(m[1]) + 5) // 2}.conv1."),
        (r"^exit_flow\.(1|4)\.1\.", lambda m, net: f"conv{(int(m[1]) + 5) // 2}.pointwise."),
        (r"^exit_flow\.(2|5)\.", lambda m, net: f"bn{(int(m[1]) + 4) // 2}."),
        (r"\.body\.(\d)\.0\.", r".rep.\1.conv1."),
        (r"\.body\.(\d)\.1\.", r".rep.\1.pointwise."),
        (r"\.body\.(\d)\.", r".rep.\1."),
        (r"\.shortcut\.0\.", ".skip."),
        (r"\.shortcut\.1\.", ".skipbn."),
    ),
    head=r"fc\.",
)


# --------------------------------------------------------------------------- twins


@dataclass(frozen=True)
class Preprocessing:
    """What the weights were evaluated with: centre crop ``image_size`` after resizing the
    shorter side to ``resize_size``, normalised by ``mean``/``std``."""

    image_size: int
    resize_size: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    in_channels: int = 3


def _timm_prep(size: int, crop_pct: float, mean: tuple[float, ...] = IMAGENET_MEAN,
               std: tuple[float, ...] = IMAGENET_STD, interpolation: str = "bicubic",
               ) -> Preprocessing:
    # timm's eval transform: resize to floor(size / crop_pct), centre crop size
    return Preprocessing(size, math.floor(size / crop_pct), mean, std, interpolation)


@dataclass(frozen=True)
class Twin:
    """A reference network whose weights fit one of ours.

    ``requires``: our builder options the reference graph needs, ``{option: allowed values}``
    (other values build another function with the same tensor shapes, so no shape check would
    catch them). ``preprocessing``: timm's evaluation settings of its default weights; for
    torchvision ``None`` (read from torchvision's weights metadata), or an override.
    """

    source: str
    ref: str
    keymap: KeyMap
    requires: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    preprocessing: Preprocessing | None = None
    note: str = ""


_RESNET_REQ = {"stride_in_1x1": (False,), "shortcut": ("B",), "small_stem": (None, False)}
_SE_REQ = {"stride_in_1x1": (True,), "shortcut": ("B",), "small_stem": (None, False),
           "reduction": (16,), "caffe_pool": (True,)}


def _tv(ref: str, keymap: KeyMap, **kw: Any) -> Twin:
    return Twin("torchvision", ref, keymap, **kw)


def _timm(ref: str, keymap: KeyMap, prep: Preprocessing, **kw: Any) -> Twin:
    return Twin("timm", ref, keymap, preprocessing=prep, **kw)


TWINS: dict[str, tuple[Twin, ...]] = {
    **{n: (_tv(n, RESNET, requires=_RESNET_REQ),)
       for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2",
                 "resnext50_32x4d", "resnext101_32x8d")},
    "resnext101_32x4d": (_timm("resnext101_32x4d", RESNET, _timm_prep(224, 0.875,
                               interpolation="bilinear"), requires=_RESNET_REQ),),
    **{n: (_tv(n, VGG, requires={"dense": (False,)}),)
       for n in ("vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn",
                 "vgg19_bn")},
    "alexnet_owt": (_tv("alexnet", ALEXNET_OWT, requires={"stem": ("auto", "paper")}),),
    **{n: (_tv(n, DENSENET, requires={"small_stem": (None, False)}),)
       for n in ("densenet121", "densenet161", "densenet169", "densenet201")},
    # torchvision's weights were converted from Google's TensorFlow release, which takes inputs
    # scaled to [-1, 1]; its model converts ImageNet-normalised inputs to that
    # (transform_input). Ours has no such step, so the data are normalised with 0.5/0.5.
    "inception_v3": (_tv("inception_v3", INCEPTION_V3, preprocessing=Preprocessing(
        299, 342, INCEPTION_MEAN, INCEPTION_STD), requires={"pool_count_pad": (True,)},
        note="mean/std 0.5 in place of torchvision's transform_input; average pools that "
             "count the padding (model.pool_count_pad=true)"),),
    "mobilenet_v2": (_tv("mobilenet_v2", MOBILENET_V2),),
    "mobilenet_v3_large": (_tv("mobilenet_v3_large", MOBILENET_V3),),
    "mobilenet_v3_small": (_tv("mobilenet_v3_small", MOBILENET_V3),),
    **{n: (_tv(n, SHUFFLENET_V2),) for n in ("shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
                                            "shufflenet_v2_x1_5", "shufflenet_v2_x2_0")},
    **{n: (_tv(n, SQUEEZENET, requires={"bypass": ("none",), "small_stem": (None, False)}),)
       for n in ("squeezenet1_0", "squeezenet1_1")},
    "vit_b_16": (_tv("vit_b_16", VIT_TORCHVISION),
                 _timm("vit_base_patch16_224", VIT_TIMM, _timm_prep(
                     224, 0.9, INCEPTION_MEAN, INCEPTION_STD))),
    "vit_b_32": (_tv("vit_b_32", VIT_TORCHVISION),
                 _timm("vit_base_patch32_224", VIT_TIMM, _timm_prep(
                     224, 0.9, INCEPTION_MEAN, INCEPTION_STD))),
    "vit_l_16": (_tv("vit_l_16", VIT_TORCHVISION),
                 _timm("vit_large_patch16_224", VIT_TIMM, _timm_prep(
                     224, 0.9, INCEPTION_MEAN, INCEPTION_STD))),
    "vit_l_32": (_tv("vit_l_32", VIT_TORCHVISION),),
    "vit_h_14": (_tv("vit_h_14", VIT_TORCHVISION),),
    **{f"se_resnet{d}": (_timm(f"legacy_seresnet{d}", SENET, _timm_prep(
        224, 0.875, interpolation="bilinear"), requires=_SE_REQ,
        note="the release's stem max-pool (model.caffe_pool=true)"),) for d in (50, 101, 152)},
    "se_resnext50_32x4d": (_timm("legacy_seresnext50_32x4d", SENET, _timm_prep(
        224, 0.875, interpolation="bilinear"), requires={**_SE_REQ, "stride_in_1x1": (False,)},
        note="the release's stem max-pool (model.caffe_pool=true)"),),
    "mobilenet_v1": (_timm("mobilenetv1_100", MOBILENET_V1, _timm_prep(
        224, 0.875, INCEPTION_MEAN, INCEPTION_STD), requires={"width_mult": (1.0,)}),),
    **{f"preact_resnet{d}": (_timm(f"resnetv2_{d}", PREACT_RESNET, _timm_prep(
        224, 0.95, INCEPTION_MEAN, INCEPTION_STD), requires=_RESNET_REQ,
        note="" if d != 152 else "timm publishes no weights for resnetv2_152: a local file "
        "in its layout serves"),) for d in (50, 101, 152)},
    "inception_v4": (_timm("inception_v4", INCEPTION_V4, _timm_prep(
        299, 0.875, INCEPTION_MEAN, INCEPTION_STD)),),
    "inception_resnet_v2": (_timm("inception_resnet_v2", INCEPTION_RESNET_V2, _timm_prep(
        299, 0.8975, INCEPTION_MEAN, INCEPTION_STD), requires={"residual_scale": (None,)}),),
    "xception": (_timm("legacy_xception", XCEPTION, _timm_prep(
        299, 0.8975, INCEPTION_MEAN, INCEPTION_STD),
        requires={"residual": (True,), "intermediate_act": (None,), "bn_eps": (1e-5,)},
        note="BatchNorm epsilon 1e-5 (model.bn_eps=1e-5) as timm evaluates the weights"),),
}

_CIFAR = "a CIFAR network of its paper: neither torchvision nor timm publishes weights for it"
NO_TWIN: dict[str, str] = {
    "lenet5": "no reference implementation publishes LeNet-5 weights",
    "alexnet": "the paper's two-tower AlexNet (96-256-384-384-256, LRN, grouped conv2/4/5); "
               "torchvision's AlexNet is the one-weird-trick single tower: use alexnet_owt",
    "zfnet": "neither torchvision nor timm publishes ZFNet weights",
    "nin": "the released NiN is a Caffe model; neither torchvision nor timm ships it",
    "googlenet": "torchvision's GoogLeNet adds BatchNorm to every convolution and uses a 3×3 "
                 "conv in the '5×5' branch, without LRN: another network; no weights exist "
                 "for the paper's form in PyTorch",
    "bn_inception": "the released BN-Inception is a Caffe model; neither torchvision nor timm "
                    "ships it",
    "inception_resnet_v1": "no weights were released for Inception-ResNet-v1",
    "vgg11_lrn": "torchvision publishes VGG configurations A, B, D and E only (not A-LRN)",
    "vgg16_c": "torchvision publishes VGG configurations A, B, D and E only (not C)",
    "botnet50": "timm's BoTNets (botnet26t_256, botnet50ts_256) are other networks (SiLU, "
                "256 px, different stages); no weights exist for the paper's BoT50",
    **{n: "neither torchvision nor timm publishes CBAM weights" for n in (
        "cbam_resnet18", "cbam_resnet34", "cbam_resnet50", "cbam_resnet101")},
    **{n: "neither torchvision nor timm publishes ShuffleNet v1 weights"
       for n in ("shufflenet_v1_g3", "shufflenet_v1_g8")},
    **{n: "the released SE-ResNet-18/34 (timm's legacy_seresnet18/34) put a ReLU between the "
          "second BN and the SE gate, which these blocks (the paper's form) do not have"
       for n in ("se_resnet18", "se_resnet34")},
    "preact_resnet18": "timm has no pre-activation ResNet-18 (resnetv2 starts at 50 layers)",
    "highway_fc": "the paper's MNIST highway network: no published weights",
    "highway_conv": "the paper's CIFAR highway network: no published weights",
    **{n: _CIFAR for n in (
        "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202",
        "preact_resnet164", "preact_resnet1001", "resnext29_8x64d", "resnext29_16x64d",
        "densenet_bc_100_k12", "densenet_bc_190_k40", "densenet_bc_250_k24", "nin_cifar",
        "vit_small_patch4_32", "vit_tiny_patch4_32")},
}


def twins(name: str) -> tuple[Twin, ...]:
    """The reference twins of network ``name``; a network without one raises with the reason."""
    if name in TWINS:
        return TWINS[name]
    reason = NO_TWIN.get(name, "not checked against torchvision or timm")
    raise PretrainedError(
        f"{name} has no torchvision or timm twin whose weights fit it: {reason}. It can still "
        f"start from weights of your own: model.pretrained=<a classicnets .ckpt or .pth of "
        f"{name}>")


def pretrained_column(name: str) -> str:
    """The model pages' "pretrained weights" cell: each twin, with the options its weights
    need where they differ from the defaults."""
    if name not in TWINS:
        return "—"
    from classicnets.models.registry import get_model_info

    params = inspect.signature(get_model_info(name).builder).parameters
    cells = []
    for twin in TWINS[name]:
        needs = [f"{opt}={_yaml(allowed[0])}" for opt, allowed in twin.requires.items()
                 if opt in params and params[opt].default not in allowed]
        cells.append(f"{twin.source} `{twin.ref}`" + (f" ({', '.join(needs)})" if needs else ""))
    return ", ".join(cells)


def _yaml(value: Any) -> str:
    return {True: "true", False: "false", None: "null"}.get(value, str(value)) if not isinstance(
        value, float) else f"{value:g}"


def _twin(name: str, source: str) -> Twin:
    found = [t for t in twins(name) if t.source == source]
    if not found:
        have = ", ".join(t.source for t in twins(name))
        raise PretrainedError(f"{name} has no {source} twin (it has: {have}); "
                              f"set model.pretrained to one of those")
    return found[0]


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class _Spec:
    """A parsed ``model.pretrained``: a source (+ tag) or a file."""

    source: str | None = None
    tag: str | None = None
    path: Path | None = None


def _parse(name: str, pretrained: str | bool | os.PathLike) -> _Spec:
    if pretrained is True:
        return _Spec(twins(name)[0].source)
    text = str(pretrained)
    head, _, tag = text.partition(":")
    if head in SOURCES:
        return _Spec(head, tag or None)
    path = Path(os.path.expandvars(text)).expanduser()
    if path.suffix not in STATE_DICT_SUFFIXES:
        raise PretrainedError(
            f"model.pretrained={text!r} is neither a source ({', '.join(SOURCES)}, optionally "
            f"with :<weights name>) nor a state-dict file ({', '.join(STATE_DICT_SUFFIXES)})")
    return _Spec(path=path)


def _torchvision_weights(twin: Twin, tag: str | None) -> Any:
    from torchvision.models import get_model_weights

    enum = get_model_weights(twin.ref)
    if tag is None:
        return enum.DEFAULT
    try:
        return enum[tag]
    except KeyError:
        raise PretrainedError(
            f"torchvision has no weights {tag!r} for {twin.ref}; it has "
            f"{', '.join(w.name for w in enum)}") from None


def _timm_module() -> Any:
    try:
        import timm
    except ImportError:
        raise PretrainedError("model.pretrained=timm needs timm: pip install timm (or "
                              "pip install 'classicnets[timm]')") from None
    return timm


def _where(name: str, twin: Twin, tag: str | None = None) -> str:
    """Where the weights come from and which file to put where, for error messages."""
    if twin.source == "torchvision":
        weights = _torchvision_weights(twin, tag)
        fname = weights.url.rsplit("/", 1)[-1]
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        return (f"the torchvision file {fname} ({weights.url}): put it in {cache} (the cache "
                f"under TORCH_HOME) for model.pretrained=torchvision, or anywhere and set "
                f"model.pretrained=/path/to/{fname}")
    ref = twin.ref + (f".{tag}" if tag else "")
    where, fname = f"https://huggingface.co/timm/{ref}", "model.safetensors"
    try:  # timm's own record of where its default weights live (a hub repo or a URL)
        import timm

        cfg = timm.models.get_pretrained_cfg(ref if tag else timm.list_pretrained(ref + ".*")[0])
        if cfg.hf_hub_id:
            where = f"https://huggingface.co/{cfg.hf_hub_id}"
        elif cfg.url:
            where, fname = cfg.url, cfg.url.rsplit("/", 1)[-1]
    except Exception:  # timm absent or the tag unknown: the hub's usual place
        pass
    return (f"timm's weights of {ref} ({where}, file {fname}): timm keeps them in its cache "
            f"(HF_HOME or TORCH_HOME) for model.pretrained=timm; or put the file anywhere and "
            f"set model.pretrained=/path/to/{fname}")


def _download(name: str, spec: _Spec) -> tuple[dict[str, Tensor], Twin]:
    twin = _twin(name, spec.source or "")
    try:
        if twin.source == "torchvision":
            weights = _torchvision_weights(twin, spec.tag)
            # torch.hub caches under $TORCH_HOME/hub/checkpoints and reads the file from
            # there without the network on later runs
            return dict(weights.get_state_dict(progress=True, check_hash=True,
                                               weights_only=True)), twin
        timm = _timm_module()
        ref = twin.ref + (f".{spec.tag}" if spec.tag else "")
        return dict(timm.create_model(ref, pretrained=True).state_dict()), twin
    except PretrainedError:
        raise
    except Exception as err:  # network and hub errors come in many types
        raise PretrainedError(
            f"could not fetch the {twin.source} weights for {name} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Offline? Download "
            f"{_where(name, twin, spec.tag)}") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """A state dict from ``.safetensors``, ``.pth``/``.pt``/``.bin`` (plain, or wrapped under
    ``state_dict``/``model``) or a classicnets ``.ckpt`` (its network's weights)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file as load_safetensors

        return load_safetensors(str(path))  # tensors only: no code can be in the format
    # weights-only whatever the suffix; trust_checkpoint=true is the (logged) way past it
    obj = load_file(path, what="weights file")
    ours = isinstance(obj, dict) and "state_dict" in obj and "hyper_parameters" in obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise PretrainedError(f"{path} holds no state dict (a mapping of names to tensors)")
    if ours:  # a classicnets checkpoint: ImageClassifier keeps the network under `net.`
        obj = {k[4:]: v for k, v in obj.items() if k.startswith("net.")} or obj
    return dict(obj)


def _read_file(name: str, path: Path) -> dict[str, Tensor]:
    if not path.exists():
        hint = ""
        if name in TWINS:
            hint = f" For {name}, that is {_where(name, TWINS[name][0])}."
        raise PretrainedError(
            f"model.pretrained={path}: no such file. Put the state dict there (a .pth, "
            f".safetensors or classicnets .ckpt of {name}).{hint}")
    try:
        return read_state_dict(path)
    except (PretrainedError, CheckpointError):  # they name the file and what it is
        raise
    except Exception as err:  # torch.load / safetensors raise many types for a bad file
        raise PretrainedError(f"{path} could not be read as a state dict ({type(err).__name__}:"
                              f" {str(err).splitlines()[0] if str(err) else ''})") from None


# --------------------------------------------------------------------------- loading


def _check_options(name: str, twin: Twin, options: Mapping[str, Any]) -> None:
    from classicnets.models.registry import get_model_info

    params = inspect.signature(get_model_info(name).builder).parameters
    for opt, allowed in twin.requires.items():
        if opt not in params:  # an option this member of the family does not have
            continue
        value = options.get(opt, params[opt].default)
        if value not in allowed:
            want = " or ".join(repr(a) for a in allowed)
            raise PretrainedError(
                f"model.{opt}={value!r} builds another {name} than the {twin.source} "
                f"{twin.ref} whose weights were asked for (same tensor shapes, another "
                f"function); those weights need model.{opt}={want}")


def _mapping(net: nn.Module, keymap: KeyMap | None) -> dict[str, str]:
    return ({k: k for k in net.state_dict()} if keymap is None
            else keymap.to_reference(net))


def _fit(name: str, net: nn.Module, sd: Mapping[str, Tensor], keymap: KeyMap | None,
         what: str, options: Mapping[str, Any]) -> tuple[dict[str, Tensor], list[str]]:
    """Our state dict read from ``sd`` through ``keymap`` (None: our own key names).

    Returns (tensors by our key, head keys left at their initialisation because the number
    of classes differs). Anything else that does not fit raises with the details.
    """
    own = net.state_dict()
    mapping = _mapping(net, keymap)
    head = re.compile(keymap.head) if keymap is not None else None
    own_head = _head_keys(name, net, options) if keymap is None else set()
    conv = re.compile(keymap.linear_as_conv) if keymap and keymap.linear_as_conv else None
    out: dict[str, Tensor] = {}
    replaced, missing, mismatched = [], [], []
    for ours, ref in mapping.items():
        if ref not in sd:
            # files written before torch 0.4 have no BN batch counters; ours start at 0
            if not ours.endswith("num_batches_tracked"):
                missing.append(ref)
            continue
        tensor = sd[ref]
        if conv is not None and conv.match(ours) and tensor.ndim == 4:
            tensor = tensor.flatten(1)
        if tensor.shape != own[ours].shape:
            is_head = head.match(ours) if head is not None else ours in own_head
            if is_head:
                replaced.append(ours)
                continue
            mismatched.append(f"{ours} {tuple(own[ours].shape)} vs {ref} {tuple(tensor.shape)}")
            continue
        out[ours] = tensor
    used = set(mapping.values())
    ref_only = re.compile(keymap.ref_only) if keymap is not None and keymap.ref_only else None
    unexpected = [k for k in sd if k not in used and not (ref_only and ref_only.match(k))]
    if missing or mismatched or unexpected:
        parts = []
        if mismatched:
            parts.append(f"{len(mismatched)} tensors of another shape (first: {mismatched[0]})")
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
        raise PretrainedError(
            f"{what} do not fit {name} as configured: {'; '.join(parts)}. The weights fix the "
            f"architecture: build {name} at the weights' input size (data.image_size follows "
            f"model.pretrained unless overridden; small inputs switch some networks to their "
            f"small-input stem) and with its default options")
    return out, replaced


def _head_keys(name: str, net: nn.Module, options: Mapping[str, Any]) -> set[str]:
    """Our own weights (no key map): the head is what ``num_classes`` sizes, found by building
    the network on the meta device with one class more."""
    from classicnets.models.registry import get_model_info

    classes = int(options.get("num_classes", get_model_info(name).num_classes))
    with torch.device("meta"):
        other = get_model_info(name).builder(**{**options, "num_classes": classes + 1})
    theirs = other.state_dict()
    return {k for k, v in net.state_dict().items() if k in theirs and theirs[k].shape != v.shape}


def _detect(name: str, net: nn.Module, sd: Mapping[str, Tensor]) -> tuple[KeyMap | None, str]:
    """Which key names a state-dict file uses: ours, or one of the twins'."""
    keys = set(sd)
    candidates: list[tuple[KeyMap | None, str]] = [(None, f"classicnets {name}")]
    candidates += [(t.keymap, f"{t.source} {t.ref}") for t in TWINS.get(name, ())]
    scores = []
    for keymap, label in candidates:
        expected = set(_mapping(net, keymap).values())
        scores.append((len(keys & expected) / max(1, len(expected)), keymap, label))
    best = max(scores, key=lambda s: s[0])
    if best[0] < 0.5:
        tried = ", ".join(f"{label} ({score:.0%})" for score, _, label in scores)
        example = next(iter(sd), "<empty>")
        raise PretrainedError(
            f"the state dict's keys (e.g. {example!r}) are not those of {tried}; is the file "
            f"for another network?")
    return best[1], best[2]


def from_reference(net: nn.Module, name: str, state_dict: Mapping[str, Tensor],
                   source: str | None = None, options: Mapping[str, Any] | None = None
                   ) -> list[str]:
    """Load a reference (``source``: torchvision / timm) or our own state dict into ``net``.

    ``source=None`` recognises the key names; ``options`` are the builder options ``net`` was
    built with (they locate the head of our own weights). Returns the head keys left at their
    initialisation (another number of classes).
    """
    if source is None:
        keymap, what = _detect(name, net, state_dict)
    else:
        twin = _twin(name, source)
        keymap, what = twin.keymap, f"the {source} weights of {twin.ref}"
    tensors, replaced = _fit(name, net, state_dict, keymap, what, options or {})
    # a network built on the meta device (no memory, no init time) takes the tensors as they
    # are; replaced heads then stay on meta, so that is for full loads only
    assign = any(p.is_meta for p in net.parameters())
    with torch.no_grad():
        result = net.load_state_dict(tensors, strict=False, assign=assign)
    leftover = [k for k in result.missing_keys
                if k not in replaced and not k.endswith("num_batches_tracked")]
    if leftover:
        raise PretrainedError(f"{name}: {leftover[:3]} were not loaded")
    return replaced


def to_reference(net: nn.Module, name: str, source: str = "torchvision") -> dict[str, Tensor]:
    """Our network's state dict under the reference's key names (``source``'s twin), ready
    for ``load_state_dict`` of the torchvision/timm model."""
    keymap = _twin(name, source).keymap
    conv = re.compile(keymap.linear_as_conv) if keymap.linear_as_conv else None
    own, out = net.state_dict(), {}
    for ours, ref in keymap.to_reference(net).items():
        tensor = own[ours]
        out[ref] = tensor[..., None, None] if conv is not None and conv.match(ours) else tensor
    return out


def load_pretrained(net: nn.Module, name: str, pretrained: str | bool | os.PathLike,
                    options: Mapping[str, Any] | None = None) -> nn.Module:
    """Fill ``net`` (registered as ``name``, built with ``options``) with ``pretrained``."""
    spec = _parse(name, pretrained)
    if spec.path is not None:
        sd = _read_file(name, spec.path)
        replaced = from_reference(net, name, sd, options=options)
        origin = str(spec.path)
        if name in TWINS:
            keymap, _ = _detect(name, net, sd)
            for twin in TWINS[name]:
                if twin.keymap is keymap:
                    _check_options(name, twin, options or {})
    else:
        twin = _twin(name, spec.source or "")
        _check_options(name, twin, options or {})
        sd, twin = _download(name, spec)
        replaced = from_reference(net, name, sd, twin.source, options)
        origin = f"{twin.source} {twin.ref}" + (f" ({spec.tag})" if spec.tag else "")
    if replaced:
        log.info("%s: loaded %s; the classifier head (%s) keeps its fresh initialisation "
                 "(another number of classes)", name, origin, ", ".join(replaced))
    else:
        log.info("%s: loaded %s", name, origin)
    return net


# --------------------------------------------------------------------------- preprocessing


def preprocessing(name: str, pretrained: str | bool | os.PathLike) -> Preprocessing | None:
    """The evaluation settings that go with ``pretrained``; None when a file says nothing
    about them (a state dict of a network without a twin)."""
    spec = _parse(name, pretrained)
    if spec.path is not None:
        if spec.path.suffix == ".ckpt" and spec.path.is_file():
            return _checkpoint_preprocessing(str(spec.path), spec.path.stat().st_mtime)
        return _twin_preprocessing(TWINS[name][0], None) if name in TWINS else None
    return _twin_preprocessing(_twin(name, spec.source or ""), spec.tag)


def _twin_preprocessing(twin: Twin, tag: str | None) -> Preprocessing:
    if twin.preprocessing is not None:
        return twin.preprocessing
    t = _torchvision_weights(twin, tag).transforms()
    return Preprocessing(int(t.crop_size[0]), int(t.resize_size[0]), tuple(t.mean), tuple(t.std),
                         t.interpolation.value)


@lru_cache(maxsize=8)
def _checkpoint_preprocessing(path: str, mtime: float) -> Preprocessing | None:
    """A classicnets checkpoint's data settings (its evaluation transform, else its data
    module's hyperparameters); ``mtime`` keys the cache."""
    from classicnets.data.catalogue import get_spec

    ckpt = load_file(path, mmap=True)
    # Lightning saves a DataModule's state under its class name (data=shards: ShardDataModule)
    saved = (ckpt.get("ImageDataModule") or ckpt.get("ShardDataModule") or {}).get(
        "eval_transform")
    if saved:
        return Preprocessing(int(saved["image_size"]), int(saved["resize_size"]),
                             tuple(saved["mean"]), tuple(saved["std"]),
                             in_channels=int(saved["in_channels"]))
    hp = ckpt.get("datamodule_hyper_parameters")
    if not hp:
        return None
    spec = get_spec(hp.get("name", "digits"))
    size = int(hp.get("image_size") or spec.image_size)
    channels = int(hp.get("in_channels") or spec.in_channels)
    mean, std = hp.get("mean") or spec.mean, hp.get("std") or spec.std
    if len(mean) != channels:  # the DataModule's rule for converted channels
        mean = (sum(mean) / len(mean),) * channels
        std = (sum(std) / len(std),) * channels
    resize = int(hp.get("resize_size") or round(size * 256 / 224))
    return Preprocessing(size, resize, tuple(mean), tuple(std), in_channels=channels)


def data_setting(key: str, default: Any = None, *, _root_: Any) -> Any:
    """``${pretrained:<key>,<default>}`` in ``conf/data/*.yaml``: the weights' value of
    ``key`` (image_size, resize_size, mean, std, in_channels) when ``model.pretrained`` is set,
    else ``default``. An explicit data.<key> override replaces the interpolation itself.

    Configs without a model group (``eval.yaml``) take the normalisation and evaluation resize
    of the checkpoint they evaluate (``ckpt_path``), so a network fine-tuned with the weights'
    mean/std is tested with them too; sizes and channels stay the data's, which evaluate()
    checks against the network."""
    from omegaconf import OmegaConf

    model = _root_.get("model") if hasattr(_root_, "get") else None
    if model is None:
        if key not in ("mean", "std", "resize_size"):
            return default
        ckpt = None if OmegaConf.is_missing(_root_, "ckpt_path") else _root_.get("ckpt_path")
        path = Path(str(ckpt)) if ckpt else None
        if path is None or path.suffix != ".ckpt" or not path.is_file():
            return default
        try:
            prep = _checkpoint_preprocessing(str(path), path.stat().st_mtime)
        except Exception:  # not a loadable checkpoint: evaluate() reports that itself
            return default
    else:
        pretrained = model.get("pretrained")
        if not pretrained:
            return default
        try:
            prep = preprocessing(str(model.get("name")), pretrained)
        except PretrainedError:  # building the network raises it again, without the wrapping
            return default
    if prep is None:
        return default
    value = getattr(prep, key)
    return list(value) if isinstance(value, tuple) else value
