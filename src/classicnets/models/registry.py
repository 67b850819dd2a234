"""Model registry: ``@register_model`` on each builder, ``get_model_info``, ``list_models``
(``create_model`` is in :mod:`classicnets.models.factory`: it needs the weights too).

Every builder is a function taking keyword-only ``num_classes``, ``in_channels`` and
``input_size`` (the side of the square input) plus its own options; calling it with no
argument builds the paper's canonical configuration. The registry also records where each
network comes from (paper, year), its canonical input, and the accuracy its paper reports
(:class:`PaperResult`), which the model pages of the docs (:mod:`classicnets.models.table`),
the zoo report and the tests read.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = [
    "InputSizeError",
    "ModelInfo",
    "PaperResult",
    "UnknownModelError",
    "get_model_info",
    "list_models",
    "register_model",
    "require_min_size",
]


class UnknownModelError(KeyError):
    """Raised by :func:`create_model` for a name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class InputSizeError(ValueError):
    """Raised at build time when a network cannot take the requested ``input_size``;
    ``minimum`` is the smallest size it accepts, where one bound says it (None otherwise)."""

    def __init__(self, message: str, minimum: int | None = None) -> None:
        super().__init__(message)
        self.minimum = minimum


@dataclass(frozen=True)
class PaperResult:
    """The accuracy a network's paper reports, as printed there.

    ``top1``: top-1 accuracy in percent (100 − the printed error), or None when the paper gives
    no figure for this network (``source`` then says why); ``dataset``: what it was measured on
    ("ImageNet" = ILSVRC-2012 validation unless ``source`` says otherwise, "CIFAR-10" = test
    set with the standard augmentation, "MNIST"); ``source``: table and test setting.
    """

    top1: float | None
    dataset: str
    source: str


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one builder."""

    name: str
    builder: Callable[..., nn.Module]
    paper: str
    year: int
    num_classes: int
    in_channels: int
    input_size: int
    family: str
    result: PaperResult | None = None

    @property
    def canonical_kwargs(self) -> dict[str, int]:
        return {
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "input_size": self.input_size,
        }


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    fn: Callable[..., nn.Module] | None = None,
    *,
    name: str | None = None,
    paper: str,
    year: int,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size: int = 224,
    result: PaperResult | None = None,
) -> Any:
    """Register a builder under ``name`` (default: the function's name).

    ``paper``/``year`` cite the source; ``num_classes``/``in_channels``/``input_size`` state the
    canonical configuration whose parameter count the reference table gives; ``result`` is the
    accuracy the paper reports for that configuration (None: not recorded).
    """

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or builder.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is registered twice")
        family = builder.__module__.rsplit(".", 1)[-1]
        _REGISTRY[key] = ModelInfo(
            key, builder, paper, year, num_classes, in_channels, input_size, family, result
        )
        return builder

    return wrap(fn) if fn is not None else wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (e.g. ``"resnet*"``), sorted."""
    _ensure_loaded()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; unknown names raise :class:`UnknownModelError`."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        if not close:  # fall back to a prefix match so "resnet" still suggests something
            close = [n for n in sorted(_REGISTRY) if n.startswith(name[:4])][:5]
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} (`classicnets.models.list_models()` lists all "
            f"{len(_REGISTRY)} names; on the command line pick one with model=<name>)"
        ) from None


def require_min_size(input_size: int, minimum: int, model: str) -> None:
    """Refuse an input the network cannot take, naming the smallest one it accepts."""
    if input_size < minimum:
        raise InputSizeError(
            f"{model} cannot take {input_size}x{input_size} inputs: the smallest input size it "
            f"accepts is {minimum} (set model.input_size / data.image_size >= {minimum})",
            minimum,
        )


def _ensure_loaded() -> None:
    # Importing the package registers every family module.
    import classicnets.models  # noqa: F401
