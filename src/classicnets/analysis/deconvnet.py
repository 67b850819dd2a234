"""Zeiler & Fergus's deconvnet (ECCV 2014, §2.1): a layer's strongest activations in pixels.

On the forward pass every max-pool's *switches* (where each pooled maximum came from) are
recorded. A chosen layer's activations are then all zeroed except the ones to examine, and the
signal is sent back down through the layers below, each reversed as in the paper:

* max-pooling → unpooling: each value goes back to its switch position, zeros elsewhere;
* ReLU → ReLU (the reconstruction is rectified on the way down too);
* convolution → transposed convolution with the same filters (no bias).

Beyond the paper, average pooling and zero padding are reversed by their transposes (each
pooled value spread evenly over its window; the padding cut off), and normalisation and
dropout layers are passed through, as the paper does with its contrast normalisation. This
works on networks that are a plain chain of such layers up to the chosen one (LeNet-5, AlexNet,
ZFNet, VGG, NiN, and the stem of most others); a skip connection or a branch is refused with
the layers that can be used instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Size, Tensor, nn

from classicnets.analysis.layers import LayerError, find_layer
from classicnets.models.alexnet import TowerLRN
from classicnets.models.layers import LocalResponseNorm

__all__ = ["KEEP", "Projection", "Step", "default_layer", "project", "record_path", "unpool"]

KEEP = ("activation", "map")
# reversed by sending the signal back unchanged (the paper ignores its normalisation layers)
_PASS = (nn.Identity, nn.Dropout, nn.Dropout2d, LocalResponseNorm, nn.LocalResponseNorm,
         TowerLRN, nn.BatchNorm2d, nn.GroupNorm)
# linear maps, reversed by their transposes
_LINEAR = (nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.ZeroPad2d)
# rectified on the way down (the paper's ReLU; ReLU6 rectifies the same way)
_RECTIFY = (nn.ReLU, nn.ReLU6)
_KNOWN = (nn.MaxPool2d, *_RECTIFY, *_LINEAR, *_PASS)


@dataclass(frozen=True)
class Step:
    """One layer of the forward pass, with what reversing it needs."""

    name: str
    module: nn.Module
    input_shape: Size
    switches: Tensor | None = None  # max-pools: flat argmax within the input map, per unit


@dataclass(frozen=True)
class Projection:
    """``images[i]``: the projection to the input of feature map ``channels[i]`` of ``layer``
    (``(k, C, H, W)``, in the network's normalised input space), whose strongest activation
    was ``values[i]`` at ``positions[i]`` (row, column in the map)."""

    layer: str
    images: Tensor
    channels: list[int]
    values: list[float]
    positions: list[tuple[int, int]]


class _Reached(Exception):
    """Stops the forward pass once the chosen layer has run: nothing above it is needed."""


def unpool(pooled: Tensor, switches: Tensor, input_size: tuple[int, int] | Size) -> Tensor:
    """Put every pooled value back where its maximum was (``switches``: flat indices within
    each ``input_size`` map, as ``max_pool2d(..., return_indices=True)`` gives); zeros
    elsewhere. Values whose switches coincide (overlapping pools, e.g. ZFNet's 3×3/2) are
    summed, where ``max_unpool2d`` would keep only one of them."""
    n, c = pooled.shape[:2]
    h, w = int(input_size[0]), int(input_size[1])
    flat = pooled.new_zeros(n, c, h * w)
    flat.scatter_add_(2, switches.expand(n, -1, -1, -1).flatten(2), pooled.flatten(2))
    return flat.view(n, c, h, w)


def _step_modules(module: nn.Module) -> list[nn.Module]:
    """The layers a forward pass goes through, one step each: leaves, and known layers as a
    whole (AlexNet's TowerLRN reshapes around the LRN inside it)."""
    steps = []
    for child in module.children():
        if isinstance(child, _KNOWN) or not any(child.children()):
            steps.append(child)
        else:
            steps.extend(_step_modules(child))
    return steps


def _chain_broken(net: nn.Module, name: str, previous: str | None) -> LayerError:
    after = f"the output of {previous}" if previous else "the network's input"
    return LayerError(
        f"deconvnet reverses a plain chain of layers (convolution, ReLU, pooling, as in "
        f"LeNet-5, AlexNet, ZFNet, VGG), but in {type(net).__name__} the input of {name} is "
        f"not {after} (a skip connection, a branch or a computation outside a layer lies "
        f"between them); choose layer={previous} or a layer before it, or use "
        "method=guided_backprop, which works on any network")


def record_path(net: nn.Module, x: Tensor, layer: str | None) -> tuple[list[Step], Tensor]:
    """Run ``net`` on ``x`` up to ``layer`` (None: as far as the layers form a chain) and
    return the layers passed, with the max-pools' switches, and the last layer's output."""
    target = find_layer(net, layer) if layer is not None else None
    steps: list[Step] = []
    last: dict[str, Tensor] = {"out": x}
    names = {m: n for n, m in net.named_modules()}

    def hook(module: nn.Module, args: tuple, output: object) -> None:
        name = names[module]
        if isinstance(output, tuple):  # MaxPool2d(return_indices=True)
            output = output[0]
        if module in step_set:
            if not args or args[0] is not last["out"] or not isinstance(output, Tensor):
                if target is None:  # the chain ends here: the default layer lies below
                    raise _Reached
                raise _chain_broken(net, name, steps[-1].name if steps else None)
            inp = args[0]
            switches = None
            if isinstance(module, nn.MaxPool2d):
                # the switches, exactly as the layer pooled (ZFNet's forward_with_switches
                # computes the same): padding, dilation and ceil mode included
                _, switches = F.max_pool2d(inp, module.kernel_size, module.stride,
                                           module.padding, module.dilation,
                                           ceil_mode=module.ceil_mode, return_indices=True)
            steps.append(Step(name, module, inp.shape, switches))
            last["out"] = output
        if module is target:
            last["out"] = output.detach().clone()  # before an in-place ReLU above changes it
            raise _Reached

    step_set = set(_step_modules(net) if any(net.children()) else [net])
    watched = step_set | ({target} if target is not None else set())
    handles = [m.register_forward_hook(hook) for m in watched]
    try:
        with torch.no_grad():
            net(x)
        if target is not None:
            raise LayerError(f"layer={layer} did not run in the forward pass (an auxiliary "
                             "head runs only in training); choose a layer on the main path")
    except _Reached:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return steps, last["out"]


def default_layer(net: nn.Module, x: Tensor) -> str:
    """The last convolution with a spatial output on the chain from the input: the deepest
    layer the deconvnet can project from."""
    steps, _ = record_path(net, x, None)
    known = [isinstance(s.module, _KNOWN) for s in steps]
    usable = known.index(False) if False in known else len(steps)  # up to one we can reverse
    convs = [s.name for i, s in enumerate(steps[:usable])
             if isinstance(s.module, nn.Conv2d) and _spatial(steps, i)]
    if not convs:
        raise LayerError(f"{type(net).__name__} has no convolutional layer that the input "
                         "reaches through a plain chain of layers; use method=guided_backprop")
    return convs[-1]


def _spatial(steps: list[Step], i: int) -> bool:
    # a step's output shape is the next step's input shape; the last step is the chain's end
    shape = steps[i + 1].input_shape if i + 1 < len(steps) else None
    return shape is None or (len(shape) == 4 and shape[-1] * shape[-2] > 1)


def _transpose(forward: object, input_shape: Size, signal: Tensor) -> Tensor:
    """``signal`` through the transpose of a linear map: the gradient of ⟨map(v), signal⟩
    with respect to v. For a bias-free convolution this is exactly the transposed
    convolution with the same filters (stride, padding, dilation and groups included)."""
    with torch.enable_grad():
        probe = signal.new_zeros((signal.shape[0], *input_shape[1:]), requires_grad=True)
        (back,) = torch.autograd.grad(forward(probe), probe, signal)  # type: ignore[operator]
    return back


def _check_reversible(step: Step) -> None:
    if not isinstance(step.module, _KNOWN):
        raise LayerError(
            f"deconvnet cannot reverse {step.name} ({type(step.module).__name__}): it reverses "
            "Conv2d, ReLU, ReLU6, MaxPool2d, AvgPool2d, padding, normalisation and dropout "
            "layers; "
            "choose a layer below it or use method=guided_backprop")


def _reverse(step: Step, signal: Tensor) -> Tensor:
    _check_reversible(step)
    module = step.module
    if isinstance(module, nn.MaxPool2d):
        assert step.switches is not None
        return unpool(signal, step.switches, step.input_shape[-2:])
    if isinstance(module, _RECTIFY):
        return F.relu(signal)
    if isinstance(module, nn.Conv2d):
        weight = module.weight.detach()
        return _transpose(lambda v: module._conv_forward(v, weight, None), step.input_shape,
                          signal)
    if isinstance(module, _LINEAR):
        return _transpose(module, step.input_shape, signal)
    return signal  # a pass-through layer


def project(net: nn.Module, x: Tensor, layer: str | None = None, *, top_k: int = 9,
            keep: str = "activation") -> Projection:
    """Project the ``top_k`` strongest feature maps of ``layer`` (by their largest activation;
    None: :func:`default_layer`) for the single input ``x`` (``(1, C, H, W)``, normalised as
    the network expects) back to the input, one projection per map.

    ``keep="activation"`` keeps only the map's strongest activation (the paper's Fig. 2);
    ``keep="map"`` keeps the whole map. Everything else in the layer is zeroed.
    """
    if keep not in KEEP:
        raise ValueError(f"keep={keep!r}: choose one of {', '.join(KEEP)}")
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"project takes one image (1, C, H, W), got shape {tuple(x.shape)}")
    name = layer if layer is not None else default_layer(net, x)
    steps, act = record_path(net, x, name)
    if act.ndim != 4:
        raise LayerError(f"layer={name} gives shape {tuple(act.shape)}, not feature maps "
                         "(N, C, H, W); choose a convolutional or pooling layer")
    for step in steps:  # refuse before any work is done
        _check_reversible(step)
    peak, where = act[0].flatten(1).max(dim=1)
    chosen = peak.argsort(descending=True)[: min(top_k, act.shape[1])]
    signal = act.new_zeros(len(chosen), *act.shape[1:])
    width = act.shape[-1]
    for i, c in enumerate(chosen.tolist()):
        if keep == "activation":
            signal[i, c].view(-1)[where[c]] = peak[c]
        else:
            signal[i, c] = act[0, c]
    for step in reversed(steps):
        signal = _reverse(step, signal)
    return Projection(name, signal.detach(), chosen.tolist(),
                      [float(peak[c]) for c in chosen],
                      [divmod(int(where[c]), width) for c in chosen])
