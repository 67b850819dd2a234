"""The benchmark's sections, one module each, and the registry that runs them.

A section is one function ``measure(ctx: Context) -> SectionReport``: it times its variants
(with :mod:`classicnets.benchmark.measure`), and returns its rows of ``benchmark.csv`` and its
part of ``benchmark.md`` (a title and the lines below it). Adding one is a new module here plus
one entry below (and its block of settings in ``conf/benchmark.yaml``); the order of the
entries is the order of ``sections=[...]``'s default and the numbers of the Markdown parts.
"""

from __future__ import annotations

from collections.abc import Callable

from classicnets.benchmark.sections import (
    data,
    decode,
    epoch,
    memory,
    shards,
    template,
    towers,
    twins,
)
from classicnets.benchmark.sections.common import Context
from classicnets.benchmark.tables import SectionReport

__all__ = ["REGISTRY", "SECTIONS", "Context", "SectionReport"]

REGISTRY: dict[str, Callable[[Context], SectionReport]] = {
    "template": template.measure,
    "data": data.measure,
    "twins": twins.measure,
    "epoch": epoch.measure,
    "towers": towers.measure,
    "decode": decode.measure,
    "memory": memory.measure,
    "shards": shards.measure,
}

SECTIONS = tuple(REGISTRY)
