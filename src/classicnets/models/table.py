"""The model pages of the documentation (``docs/models/``), generated from the registry.

    python -m classicnets.models.table            # print the index table
    python -m classicnets.models.table --write    # rewrite docs/models/*.md
    python -m classicnets.models.table --check    # exit 1 when a page is stale

``docs/models/index.md`` lists every registered network; ``docs/models/<family>.md`` has one
page per family module: the module's docstring, then each builder with its paper, parameters,
multiply-accumulates (MACs), canonical and smallest input, the accuracy its paper reports, its
options (the builder's keyword arguments, described by the comments of ``conf/model/<name>.yaml``)
and the torchvision/timm twin whose weights ``model.pretrained`` loads. Every figure is computed
here, on the meta device (no memory, no initialisation), so the pages cannot drift from the code;
``tests/test_readme.py`` fails when they do.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import sys
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from classicnets.models.factory import create_model
from classicnets.models.registry import InputSizeError, ModelInfo, get_model_info, list_models
from classicnets.models.weights import NO_TWIN, TWINS, pretrained_column
from classicnets.paths import CONFIG_DIR, REPO_ROOT

__all__ = [
    "DOCS_DIR",
    "FAMILY_TITLES",
    "ModelFacts",
    "count_macs",
    "model_facts",
    "model_table",
    "render_pages",
    "stale_pages",
    "write_pages",
]

DOCS_DIR = REPO_ROOT / "docs" / "models"
GENERATED = ("<!-- Generated from the registry by `python -m classicnets.models.table --write`; "
             "do not edit by hand. -->")

# Page titles, one per family module (a new module without one is titled by its file name).
FAMILY_TITLES: dict[str, str] = {
    "lenet": "LeNet-5",
    "alexnet": "AlexNet",
    "zfnet": "ZFNet",
    "nin": "Network in Network",
    "vgg": "VGG",
    "googlenet": "GoogLeNet",
    "bn_inception": "BN-Inception",
    "highway": "Highway networks",
    "inception_v3": "Inception-v3",
    "resnet": "ResNet, ResNeXt, Wide ResNet",
    "preact_resnet": "Pre-activation ResNet",
    "squeezenet": "SqueezeNet",
    "densenet": "DenseNet",
    "inception_v4": "Inception-v4 and Inception-ResNet",
    "xception": "Xception",
    "mobilenet": "MobileNet v1, v2, v3",
    "senet": "SE-ResNet and SE-ResNeXt",
    "cbam_resnet": "CBAM-ResNet",
    "shufflenet": "ShuffleNet v1, v2",
    "attention": "BoTNet (self-attention)",
    "vit": "Vision Transformer",
}
_FROM_DATA = {"num_classes": "data.num_classes", "in_channels": "data.in_channels",
              "input_size": "data.image_size"}


# ---------------------------------------------------------------------------- figures
def count_macs(model: nn.Module, x: Tensor) -> int:
    """Multiply-accumulates of ``model(x)`` in eval mode: FlopCounterMode's FLOPs / 2 (it counts
    two FLOPs per multiply-add of convolutions, matmuls and attention, nothing else)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What the pages state about one network in its canonical configuration."""

    name: str
    params: int
    macs: int
    min_input: int  # the smallest input side the builder accepts (1: it refuses none)


def model_facts(name: str) -> ModelFacts:
    """Parameters and MACs at the canonical input, and the smallest input the builder takes,
    all counted on the meta device."""
    info = get_model_info(name)
    with torch.device("meta"):
        model = create_model(name)
        x = torch.empty(1, info.in_channels, info.input_size, info.input_size)
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, x)
    try:
        with torch.device("meta"):
            create_model(name, input_size=1)
        min_input = 1
    except InputSizeError as err:
        if err.minimum is None:
            raise
        min_input = err.minimum
    return ModelFacts(name, params, macs, min_input)


# ---------------------------------------------------------------------------- text helpers
_ROLE = re.compile(r":(?:func|class|meth|data|attr|mod|obj|exc):`~?([^`]+)`")


def _markdown(doc: str) -> str:
    """A docstring (reStructuredText roles, ``::`` literal blocks) as Markdown."""

    def role(m: re.Match[str]) -> str:
        target = m.group(1)
        return f"`{target.rsplit('.', 1)[-1]}`" if m.group(0).count("~") else f"`{target}`"

    text = _ROLE.sub(role, inspect.cleandoc(doc))
    return re.sub(r"(\S)::$", r"\1:", text, flags=re.M)


def _wrap(text: str, indent: str = "") -> str:
    """A generated paragraph or list item folded at 100 columns (code spans may break)."""
    return textwrap.fill(text, 100, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False)


def _value(value: object) -> str:
    """A builder default as it is written on the command line (``model.<option>=...``)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, tuple | list):
        return "[" + ",".join(_value(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _macs(macs: int) -> str:
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if macs >= scale:
            return f"{macs / scale:.3g} {unit}"
    return str(macs)


def _input(info: ModelInfo) -> str:
    return f"{info.in_channels}×{info.input_size}×{info.input_size}"


def _result(info: ModelInfo) -> str:
    r = info.result
    if r is None:
        return "—"
    if r.top1 is None:
        return f"none: {r.source}"
    return f"{r.top1:g} % ({r.dataset})"


def _pretrained(name: str) -> str:
    if name in TWINS:
        return pretrained_column(name)
    return f"none: {NO_TWIN.get(name, 'not checked against torchvision or timm')}"


def _title(family: str) -> str:
    return FAMILY_TITLES.get(family, family)


def _yaml_comments(name: str) -> dict[str, str]:
    """``option: comment`` from ``conf/model/<name>.yaml``: the comment after the key, else the
    comment lines just above it."""
    path = CONFIG_DIR / "model" / f"{name}.yaml"
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    above: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        m = re.match(r"^(\w+):[^#]*?(?:\s#\s*(.*))?$", line)
        if m:
            out[m.group(1)] = m.group(2) or " ".join(above)
        above = []
    return out


def _options(info: ModelInfo) -> list[str]:
    comments = _yaml_comments(info.name)
    rows = ["| option | default | type | what it does |", "|---|---|---|---|"]
    for p in inspect.signature(info.builder).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        default = "required" if p.default is inspect.Parameter.empty else f"`{_value(p.default)}`"
        kind = "" if p.annotation is inspect.Parameter.empty else str(p.annotation)
        kind = f"`{kind.replace(' | ', ' or ')}`" if kind else ""
        what = (f"set from the data: `{_FROM_DATA[p.name]}`" if p.name in _FROM_DATA
                else comments.get(p.name, ""))
        rows.append(f"| `{p.name}` | {default} | {kind} | {_cell(what)} |")
    return rows


# ---------------------------------------------------------------------------- pages
def _natural(name: str) -> list[int | str]:
    """``resnet18`` before ``resnet101``: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _ordered(names: Iterable[str]) -> list[ModelInfo]:
    return sorted((get_model_info(n) for n in names), key=lambda i: (i.year, _natural(i.name)))


def model_table(facts: Mapping[str, ModelFacts], *, links: bool = True) -> str:
    """The index table: every network with its family page, paper, year, parameters, MACs,
    canonical input, classes and the reference whose weights ``model.pretrained`` loads."""
    rows = ["| model | family | paper | year | parameters | MACs | canonical input | classes "
            "| pretrained weights |", "|---|---|---|---:|---:|---:|---|---:|---|"]
    for info in _ordered(facts):
        f = facts[info.name]
        family = (f"[{_title(info.family)}]({info.family}.md#{info.name})" if links
                  else _title(info.family))
        rows.append(
            f"| `{info.name}` | {family} | {_cell(info.paper)} | {info.year} | {f.params:,} | "
            f"{_macs(f.macs)} | {_input(info)} | {info.num_classes} | "
            f"{_cell(pretrained_column(info.name))} |")
    return "\n".join(rows)


def _index_page(facts: Mapping[str, ModelFacts]) -> str:
    first_year: dict[str, int] = {}
    for info in _ordered(facts):  # by year, then name: the same order in every process
        first_year.setdefault(info.family, info.year)
    families = list(first_year)
    lines = [
        GENERATED,
        "",
        "# Models",
        "",
        _wrap(f"{len(facts)} networks in {len(families)} families, each rebuilt from its paper. "
              "Every figure on these pages is computed from the code in its canonical "
              "configuration (the one the paper's parameter count describes): parameters as "
              "built; MACs are the multiply-accumulates of one image's forward pass "
              "(convolutions, linear layers, matrix products and attention; element-wise work, "
              "normalisation and pooling not counted, as in the papers); the smallest input is "
              "the side below which the builder refuses to build, naming that size (1 px: it "
              "refuses none)."),
        "",
        "Families:",
        "",
        *(f"- [{_title(fam)}]({fam}.md)" for fam in families),
        "",
        "Pick a network with `model=<name>` on the command line, or from Python:",
        "",
        "```python",
        "from classicnets.models import create_model, list_models",
        "net = create_model(\"resnet50\", num_classes=10, in_channels=3, input_size=32)"
        "  # CIFAR layout",
        "list_models(\"vit*\")",
        "```",
        "",
        _wrap("The \"pretrained weights\" column names the torchvision or timm twin whose "
              "published weights `model.pretrained` loads, with the options those weights need "
              "([Pretrained weights and fine-tuning](../pretrained.md)). To add a network, see "
              "[Adding a network](../adding-a-network.md)."),
        "",
        model_table(facts),
        "",
    ]
    return "\n".join(lines)


def _family_page(family: str, infos: list[ModelInfo], facts: Mapping[str, ModelFacts]) -> str:
    module = sys.modules[infos[0].builder.__module__]
    lines = [
        GENERATED,
        "",
        f"# {_title(family)}",
        "",
        _markdown(module.__doc__ or ""),
        "",
        f"Code: `src/classicnets/models/{family}.py`. All networks: [Models](index.md).",
        "",
        "| model | parameters | MACs | canonical input | smallest input | paper's top-1 "
        "| pretrained weights |",
        "|---|---:|---:|---|---:|---|---|",
    ]
    for info in infos:
        f = facts[info.name]
        lines.append(
            f"| [`{info.name}`](#{info.name}) | {f.params:,} | {_macs(f.macs)} | {_input(info)} | "
            f"{f.min_input} px | {_cell(_result(info))} | {_cell(pretrained_column(info.name))} |")
    for info in infos:
        f = facts[info.name]
        doc = _markdown(info.builder.__doc__ or "(no docstring)")
        paper = info.paper if str(info.year) in info.paper else f"{info.paper} ({info.year})"
        result = _result(info) + (f": {info.result.source}" if info.result
                                  and info.result.top1 is not None else "")
        facts_list = [
            f"Canonical configuration: {_input(info)} input, {info.num_classes} classes: "
            f"{f.params:,} parameters, {_macs(f.macs)} MACs ({f.macs:,}).",
            f"Smallest input: {f.min_input} px.",
            f"Paper's result: {result}.",
            f"Pretrained weights: {_pretrained(info.name)}.",
            f"Use: `python src/train.py model={info.name}` or `create_model(\"{info.name}\", "
            f"...)`; options are `model.<option>=...`.",
        ]
        lines += [
            "",
            f"## `{info.name}`",
            "",
            _wrap(f"*{paper.rstrip('.')}.*"),
            "",
            doc,
            "",
            *(_wrap(f"- {item}", "  ") for item in facts_list),
            "",
            *_options(info),
        ]
    lines.append("")
    return "\n".join(lines)


def render_pages(facts: Mapping[str, ModelFacts] | None = None) -> dict[str, str]:
    """``{file name: text}`` of every page under ``docs/models/`` (``index.md`` and one per
    family). ``facts`` defaults to :func:`model_facts` of every registered network."""
    if facts is None:
        facts = {n: model_facts(n) for n in list_models()}
    by_family: dict[str, list[ModelInfo]] = {}
    for info in _ordered(facts):
        by_family.setdefault(info.family, []).append(info)
    pages = {"index.md": _index_page(facts)}
    for family, infos in by_family.items():
        pages[f"{family}.md"] = _family_page(family, infos, facts)
    return pages


def stale_pages(pages: Mapping[str, str], root: Path = DOCS_DIR) -> list[str]:
    """Files under ``root`` that differ from ``pages``, are missing, or are not generated."""
    present = {p.name for p in root.glob("*.md")} if root.is_dir() else set()
    stale = [n for n, text in pages.items()
             if n not in present or (root / n).read_text(encoding="utf-8") != text]
    return sorted(stale + [n for n in present if n not in pages])


def write_pages(pages: Mapping[str, str], root: Path = DOCS_DIR) -> list[Path]:
    """Write ``pages`` into ``root`` and remove model pages no longer generated."""
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("*.md"):
        if old.name not in pages:
            old.unlink()
    written = []
    for name, text in pages.items():
        path = root / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite docs/models/*.md")
    group.add_argument("--check", action="store_true", help="exit 1 when a page is stale")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        print(model_table({n: model_facts(n) for n in list_models()}, links=False))
        return 0
    pages = render_pages()
    if args.check:
        stale = stale_pages(pages)
        for name in stale:
            print(f"stale: {DOCS_DIR / name}")
        if stale:
            print("run `python -m classicnets.models.table --write`")
        return 1 if stale else 0
    for path in write_pages(pages):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
