"""Which pixels a class score depends on, through captum: occlusion, Grad-CAM, guided backprop.

All three take the model that :func:`classicnets.inference.predict.load_trained` gives
(pixels in [0, 1] in, logits out, normalisation inside), so maps and baselines live in pixel
space. Layer names are those of the bare network (``trained.model.net``), as everywhere in
``analysis``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import Tensor, nn

from classicnets.analysis.layers import LayerError, find_layer, last_spatial_conv
from classicnets.inference.predict import NormalizedClassifier

M = TypeVar("M", bound=nn.Module)

__all__ = ["gradcam", "guided_backprop", "occlusion", "occlusion_window"]


def _without_inplace(model: M) -> M:
    """A copy whose in-place activations are not in place: captum's hooks need each layer's
    output intact (an in-place ReLU overwrites the output of the conv before it, and backward
    hooks refuse in-place outputs)."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    return twin.eval()


def _check_one(x: Tensor) -> None:
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"takes one image (1, C, H, W), got shape {tuple(x.shape)}")


def occlusion_window(image_size: int) -> int:
    """The grey square's default side: a sixth of the image (37 px at 224, 5 px at 32), small
    enough to hide a part of an object, not all of it."""
    return max(2, image_size // 6)


def occlusion(model: NormalizedClassifier, x: Tensor, target: int, *, window: int | None = None,
              stride: int | None = None, baseline: float | Sequence[float] = 0.5) -> Tensor:
    """ZFNet §4.2: slide a grey square (``baseline``: its value per channel, in [0, 1]) over
    ``x`` and record how much the probability of class ``target`` drops. Returns ``(H, W)``:
    each pixel's drop averaged over the square's positions that cover it (positive where the
    network needs what it sees)."""
    from captum.attr import Occlusion

    _check_one(x)
    c, h, w = x.shape[1:]
    window = window or occlusion_window(min(h, w))
    stride = stride or max(1, window // 2)
    if not 0 < window <= min(h, w) or stride < 1:
        raise ValueError(f"occlusion window={window} must lie in 1..{min(h, w)} and "
                         f"stride={stride} be at least 1")
    values = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).flatten()
    if values.numel() not in (1, c):
        raise ValueError(f"occlusion baseline needs 1 or {c} values, got {values.tolist()}")
    grey = values.view(1, -1, 1, 1).expand_as(x).contiguous()

    def probability(batch: Tensor) -> Tensor:
        return model(batch).softmax(dim=1)

    drop = Occlusion(probability).attribute(
        x, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
        baselines=grey, target=target, perturbations_per_eval=64)
    return drop[0].mean(dim=0).detach()  # the square covers all channels alike


def gradcam(model: NormalizedClassifier, x: Tensor, target: int, layer: str | None = None
            ) -> tuple[Tensor, str]:
    """Grad-CAM (Selvaraju et al., 2017) of class ``target`` at ``layer`` of ``model.net``
    (None: the last convolution with a spatial output), upsampled bilinearly to the input:
    ``((H, W), the layer's name)``."""
    from captum.attr import LayerAttribution, LayerGradCam

    _check_one(x)
    if layer is None:
        layer = last_spatial_conv(model.net, (x - model.mean) / model.std).name
    twin = _without_inplace(model)
    module = find_layer(twin.net, layer)
    cam = LayerGradCam(twin, module).attribute(x, target=target, relu_attributions=True)
    if not isinstance(cam, Tensor) or cam.ndim != 4:
        raise LayerError(f"layer={layer} gives no feature maps (N, C, H, W) for Grad-CAM; "
                         "choose a convolutional layer")
    up = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), "bilinear")
    return up[0, 0].detach(), layer


def guided_backprop(model: NormalizedClassifier, x: Tensor, target: int) -> Tensor:
    """Guided backpropagation (Springenberg et al., 2015) of class ``target``: ``(C, H, W)``.
    Only ReLUs that are modules (not ``F.relu`` calls) are guided, as captum documents."""
    from captum.attr import GuidedBackprop

    _check_one(x)
    twin = _without_inplace(model)
    with torch.enable_grad(), warnings.catch_warnings():
        # captum announces the ReLU hooks it sets and removes: that is how it works, not news
        warnings.filterwarnings("ignore", "Setting backward hooks on ReLU")
        grads = GuidedBackprop(twin).attribute(x.clone().requires_grad_(True), target=target)
    return grads[0].detach()
