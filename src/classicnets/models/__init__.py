"""The network zoo: one module per family, each registering its builders on import."""

from __future__ import annotations

import importlib
import pkgutil

from classicnets.models.factory import create_model
from classicnets.models.layers import ClassifierOutput
from classicnets.models.registry import (
    InputSizeError,
    ModelInfo,
    UnknownModelError,
    get_model_info,
    list_models,
    register_model,
)

__all__ = [
    "ClassifierOutput",
    "InputSizeError",
    "ModelInfo",
    "UnknownModelError",
    "create_model",
    "get_model_info",
    "list_models",
    "register_model",
]

# Every family file registers itself; importing them here means a new file needs no edit.
for _mod in pkgutil.iter_modules(__path__):
    if _mod.name not in ("factory", "layers", "registry", "table", "weights"):
        importlib.import_module(f"{__name__}.{_mod.name}")
