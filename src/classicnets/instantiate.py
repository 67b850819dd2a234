"""Hydra instantiation that lets our own errors through as themselves."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

__all__ = ["instantiate_clean"]


def instantiate_clean(cfg: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that re-raises our own errors (bad size, unknown name, missing
    data) as themselves, not buried in Hydra's InstantiationException."""
    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        if cause is not None and type(cause).__module__.startswith("classicnets"):
            raise cause from None
        raise
