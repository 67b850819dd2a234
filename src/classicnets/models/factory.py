"""``create_model``: a registered network, optionally filled with pretrained weights.

The factory sits above both the registry (which builder) and the weights (which tensors), so
neither of those imports the other's caller: the registry imports nothing of ours.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from classicnets.models.registry import get_model_info
from classicnets.models.weights import load_pretrained

__all__ = ["create_model"]


def create_model(name: str, *, pretrained: str | bool | None = None, **kwargs: Any) -> nn.Module:
    """Build the registered network ``name`` with the builder's keyword arguments.

    ``pretrained``: ``"torchvision"``, ``"timm"`` (optionally ``:<weights name>``) or a path to
    a state dict or classicnets checkpoint (see :mod:`classicnets.models.weights`); the
    classifier head is kept fresh when ``num_classes`` differs from the weights'.
    """
    model = get_model_info(name).builder(**kwargs)
    if pretrained:
        load_pretrained(model, name, pretrained, kwargs)
    return model
