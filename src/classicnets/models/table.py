"""The README's model table, generated from the registry.

    python -m classicnets.models.table            # print it
    python -m classicnets.models.table --write    # refresh README.md between the markers
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from classicnets.models.factory import create_model
from classicnets.models.registry import get_model_info, list_models
from classicnets.models.weights import pretrained_column

START, END = "<!-- model-table:start -->", "<!-- model-table:end -->"
README = Path(__file__).resolve().parents[3] / "README.md"


def _params(name: str) -> int:
    with torch.device("meta"):  # no memory, no init time, even for ViT-H
        model = create_model(name)
    return sum(p.numel() for p in model.parameters())


def model_table() -> str:
    """Markdown table: name, paper, year, parameters, canonical input, classes, and the
    reference whose published weights ``model.pretrained`` loads (—: none fits)."""
    rows = ["| model | paper | year | parameters | canonical input | classes "
            "| pretrained weights |", "|---|---|---:|---:|---|---:|---|"]
    infos = sorted((get_model_info(n) for n in list_models()), key=lambda i: (i.year, i.name))
    for info in infos:
        rows.append(
            f"| `{info.name}` | {info.paper} | {info.year} | {_params(info.name):,} | "
            f"{info.in_channels}×{info.input_size}×{info.input_size} | {info.num_classes} | "
            f"{pretrained_column(info.name)} |")
    return "\n".join(rows)


def render_readme(text: str) -> str:
    """``text`` with the table between the markers replaced by the current one."""
    if START not in text or END not in text:
        raise ValueError(f"README has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{model_table()}\n{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update README.md in place")
    args = parser.parse_args()
    if args.write:
        README.write_text(render_readme(README.read_text()))
        print(f"updated {README}")
    else:
        print(model_table())


if __name__ == "__main__":
    main()
