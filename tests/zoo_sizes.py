"""Which registered networks are too large for the fast test tier."""

from __future__ import annotations

from functools import cache

import torch

from classicnets.models import create_model, list_models

BIG = 70_000_000  # canonical parameter count above which per-model runs are marked slow
# above this, a training run needs ~10 GB: such runs share one xdist worker (never two at once)
HUGE = 200_000_000


@cache
def canonical_params(name: str) -> int:
    with torch.device("meta"):
        model = create_model(name)
    return sum(p.numel() for p in model.parameters())


BIG_MODELS = frozenset(n for n in list_models() if canonical_params(n) > BIG)
HUGE_MODELS = frozenset(n for n in BIG_MODELS if canonical_params(n) > HUGE)


def model_marks(name: str) -> list:
    """pytest marks for a per-model test: slow when big, one worker at a time when huge."""
    import pytest

    marks = [pytest.mark.slow] if name in BIG_MODELS else []
    if name in HUGE_MODELS:
        marks.append(pytest.mark.xdist_group("huge_models"))
    return marks
