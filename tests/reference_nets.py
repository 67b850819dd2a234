"""Reference networks (torchvision, timm) with random weights, for the weights tests: nothing
is downloaded, and every tensor holds values that make a mapping error visible."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import Tensor, nn

from classicnets.models.weights import TWINS, Twin


def randomise(sd: dict[str, Tensor], seed: int = 0) -> None:
    """Fill a state dict in place with values that make every tensor matter: fan-in scaled
    weights, and norm scales, shifts and running statistics that differ per channel (the
    defaults 1/0 would hide a BN mapped onto the wrong one)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in sd.items():
            if not t.is_floating_point():
                continue
            if key.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif key.endswith(("running_mean", "bias")) or (
                    t.ndim == 1 and not key.endswith("weight")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.ndim == 1:  # a norm layer's scale
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.shape[0] == 1:  # class token, position embeddings
                t.copy_(torch.randn(t.shape, generator=g) * 0.02)
            else:
                t.copy_(torch.randn(t.shape, generator=g) / math.sqrt(t[0].numel()))


def build_reference(twin: Twin, **kwargs: object) -> nn.Module:
    """The reference network with random values, built without its (slow) initialisation."""
    with torch.device("meta"):
        if twin.source == "timm":
            import timm

            ref = timm.create_model(twin.ref, pretrained=False, **kwargs)
        else:
            import torchvision.models as tvm

            with warnings.catch_warnings():  # inception_v3's init_weights notice
                warnings.simplefilter("ignore")
                ref = getattr(tvm, twin.ref)(weights=None, **kwargs)
    ref.to_empty(device="cpu")
    sd = ref.state_dict()
    assert {n for n, _ in ref.named_buffers()} <= set(sd), "non-persistent buffers"
    randomise(sd)
    return ref.eval()


def fake_torchvision(monkeypatch: pytest.MonkeyPatch, name: str) -> dict[str, Tensor]:
    """torchvision's weights API returning random weights, as if downloaded."""
    from torchvision.models import get_model_weights

    sd = build_reference(TWINS[name][0]).state_dict()

    def get_state_dict(self: object, *args: object, **kwargs: object) -> dict[str, Tensor]:
        return sd

    monkeypatch.setattr(type(get_model_weights(name).DEFAULT), "get_state_dict", get_state_dict)
    return sd
