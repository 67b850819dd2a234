"""Which registered networks are too large for the fast test tier."""

from __future__ import annotations

from functools import cache

import torch

from classicnets.models import create_model, list_models

BIG = 70_000_000  # canonical parameter count above which per-model runs are marked slow


@cache
def canonical_params(name: str) -> int:
    with torch.device("meta"):
        model = create_model(name)
    return sum(p.numel() for p in model.parameters())


BIG_MODELS = frozenset(n for n in list_models() if canonical_params(n) > BIG)
