"""Finding a network's layers by name, and the layers each visualisation uses by default.

Names are those of ``net.named_modules()`` (e.g. ``features.conv5`` in ZFNet, ``layer4.1.conv2``
in a ResNet): what ``print(net)`` shows. Defaults come from one traced forward pass, so they
follow the order in which layers really run, not the order in which they were defined.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["LayerError", "RunLayer", "find_layer", "first_conv", "last_spatial_conv",
           "run_order"]


class LayerError(ValueError):
    """A layer that does not exist or cannot serve the chosen visualisation."""


@dataclass(frozen=True)
class RunLayer:
    """A module as it ran in one forward pass: its name, itself and its output's shape."""

    name: str
    module: nn.Module
    output_shape: tuple[int, ...]


def find_layer(net: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; an unknown name lists the closest ones and the convs."""
    modules = dict(net.named_modules())
    if name in modules and name:
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    hint = f"closest: {', '.join(close)}; " if close else ""
    shown = ", ".join(convs[:12]) + (f", ... ({len(convs)} in all)" if len(convs) > 12 else "")
    raise LayerError(f"layer={name!r} is not a layer of {type(net).__name__}; {hint}"
                     f"its convolutional layers: {shown or 'none'} (names as print(net) "
                     "shows them)")


@contextmanager
def _recording(net: nn.Module, kind: type[nn.Module] | None) -> Iterator[list[RunLayer]]:
    """Record every module of ``kind`` (every leaf module when None) as it runs."""
    ran: list[RunLayer] = []
    handles = []
    for name, module in net.named_modules():
        if (kind is None and not any(module.children())) or (
                kind is not None and isinstance(module, kind)):
            def hook(mod: nn.Module, _args: tuple, out: object, name: str = name) -> None:
                shape = tuple(out.shape) if isinstance(out, Tensor) else ()
                ran.append(RunLayer(name, mod, shape))

            handles.append(module.register_forward_hook(hook))
    try:
        yield ran
    finally:
        for handle in handles:
            handle.remove()


def run_order(net: nn.Module, x: Tensor, kind: type[nn.Module] | None = nn.Conv2d
              ) -> list[RunLayer]:
    """The modules of ``kind`` (None: every leaf) in the order a forward pass of ``x`` runs
    them, with their output shapes."""
    with _recording(net, kind) as ran, torch.no_grad():
        net(x)
    return ran


def first_conv(net: nn.Module, x: Tensor) -> RunLayer:
    """The first convolution the input meets (the one whose filters are pixel patterns)."""
    convs = run_order(net, x)
    if not convs:
        raise LayerError(f"{type(net).__name__} has no convolutional layer (nn.Conv2d): there "
                         "are no filters or feature maps to show; use method=occlusion or "
                         "method=guided_backprop")
    return convs[0]


def last_spatial_conv(net: nn.Module, x: Tensor) -> RunLayer:
    """The last convolution whose output is still a map (more than 1×1): Grad-CAM's default,
    where the network's spatial information is most abstract but not yet pooled away."""
    spatial = [r for r in run_order(net, x)
               if len(r.output_shape) == 4 and r.output_shape[-1] * r.output_shape[-2] > 1]
    if not spatial:
        raise LayerError(f"{type(net).__name__} has no convolutional layer with a spatial "
                         "output, which Grad-CAM needs; use method=occlusion or "
                         "method=guided_backprop for this network")
    return spatial[-1]
